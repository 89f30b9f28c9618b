"""PLY export: the standard 3DGS layout, exact round trips, coloured points, atomic writes."""

import numpy as np
import pytest
import torch
from plyfile import PlyData

from engine import colour
from engine.export import gaussian_property_names, read_gaussians_ply, write_gaussians_ply, write_points_ply
from engine.pointcloud import PointCloud
from engine.splat.gaussians import Gaussians


def random_gaussians(n: int, degree: int, seed: int = 0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    k = (degree + 1) ** 2 - 1
    return Gaussians(
        means=torch.randn(n, 3, generator=g),
        quats=torch.randn(n, 4, generator=g),
        scales=torch.randn(n, 3, generator=g) - 3,
        opacities=torch.randn(n, generator=g),
        sh0=torch.randn(n, 1, 3, generator=g),
        shN=torch.randn(n, k, 3, generator=g),
    )


def test_gaussian_ply_has_exactly_the_3dgs_properties_in_order(tmp_path):
    path = tmp_path / "g.ply"
    write_gaussians_ply(path, random_gaussians(7, degree=3))
    ply = PlyData.read(str(path))
    assert [e.name for e in ply.elements] == ["vertex"]
    names = [p.name for p in ply["vertex"].properties]
    expected = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
                + [f"f_rest_{i}" for i in range(45)]
                + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
    assert names == expected == gaussian_property_names(15)
    assert all(p.val_dtype in ("f4", "float32", "float") for p in ply["vertex"].properties)
    assert not ply.text and ply.byte_order == "<"


def test_gaussian_ply_values_are_pre_activation_and_channel_major(tmp_path):
    gs = random_gaussians(5, degree=1)
    path = tmp_path / "g.ply"
    write_gaussians_ply(path, gs)
    v = PlyData.read(str(path))["vertex"]
    assert np.array_equal(v["opacity"], gs.opacities.numpy())  # logit, not sigmoid
    assert np.array_equal(v["scale_1"], gs.scales[:, 1].numpy())  # log scale
    assert np.array_equal(v["rot_0"], gs.quats[:, 0].numpy())  # w first, not normalised
    # colours in display space (engine/colour.py): f_dc of the sRGB-encoded linear DC colour
    sh0, shN = colour.sh_to_display(gs.sh0, gs.shN)
    assert np.array_equal(v["f_dc_2"], sh0[:, 0, 2].numpy())
    linear = 0.5 + colour.SH_C0 * gs.sh0[:, 0, 2].numpy().astype(np.float64)
    assert np.allclose(0.5 + colour.SH_C0 * v["f_dc_2"], colour.linear_to_srgb(linear), atol=1e-6)
    # f_rest_{c * K + k} is coefficient k of channel c (K = 3 at degree 1)
    assert np.array_equal(v["f_rest_1"], shN[:, 1, 0].numpy())
    assert np.array_equal(v["f_rest_3"], shN[:, 0, 1].numpy())
    assert np.array_equal(v["f_rest_8"], shN[:, 2, 2].numpy())
    assert np.all(v["nx"] == 0)


@pytest.mark.parametrize("degree", [0, 1, 3])
def test_gaussian_ply_round_trip_is_exact_to_float_rounding(tmp_path, degree):
    gs = random_gaussians(11, degree, seed=degree)
    path = tmp_path / "g.ply"
    write_gaussians_ply(path, gs)
    back = read_gaussians_ply(path)
    for name in ("means", "quats", "scales", "opacities"):
        assert torch.equal(getattr(back, name), getattr(gs, name)), name
    for name in ("sh0", "shN"):  # through the display-space conversion and back
        assert torch.allclose(getattr(back, name), getattr(gs, name), rtol=1e-5, atol=1e-5), name
    assert back.sh_degree == degree


def test_the_image_formation_travels_in_header_comments_ours_and_brushs(tmp_path):
    from dataclasses import replace

    from engine.gaussian_math import ANTIALIASED_COMMENT

    for antialiased in (True, False):
        path = tmp_path / f"{antialiased}.ply"
        write_gaussians_ply(path, replace(random_gaussians(5, degree=1), antialiased=antialiased))
        ply = PlyData.read(str(path))
        assert (ANTIALIASED_COMMENT in ply.comments) is antialiased
        assert ("SplatRenderMode: mip" in ply.comments) is antialiased  # splat-transform, PlayCanvas, Brush
        assert read_gaussians_ply(path).antialiased is antialiased
    # A PLY from another 3DGS writer (no such comment) renders as 3DGS's own viewers do: classic.
    ply = PlyData.read(str(tmp_path / "True.ply"))
    PlyData(ply.elements, text=False, byte_order="<", comments=["written by another tool"]).write(str(tmp_path / "other.ply"))
    assert read_gaussians_ply(tmp_path / "other.ply").antialiased is False
    PlyData(ply.elements, text=False, byte_order="<", comments=["SplatRenderMode: mip"]).write(str(tmp_path / "brush.ply"))
    assert read_gaussians_ply(tmp_path / "brush.ply").antialiased is True


def test_points_ply_and_atomic_write(tmp_path):
    points = PointCloud(
        xyz=np.array([[0.0, 1.0, 2.0], [3.0, -4.0, 5.5]], np.float32),
        rgb=np.array([[0.0, 0.5, 1.0], [1.0, 0.2, 0.0]], np.float32),
        radius=np.array([0.01, 0.02], np.float32),
    )
    path = tmp_path / "sub" / "points.ply"
    write_points_ply(path, points)
    v = PlyData.read(str(path))["vertex"]
    assert [p.name for p in v.properties] == ["x", "y", "z", "red", "green", "blue", "radius"]
    assert v["red"].dtype == np.uint8
    assert np.array_equal(np.stack([v["x"], v["y"], v["z"]], 1), points.xyz)
    assert v["green"].tolist() == [128, 51] and v["blue"].tolist() == [255, 0]
    assert np.array_equal(v["radius"], points.radius)
    assert sorted(p.name for p in path.parent.iterdir()) == ["points.ply"]  # no temporary left


def test_failed_write_leaves_no_file(tmp_path):
    path = tmp_path / "g.ply"
    broken = random_gaussians(3, 0)
    broken.scales = torch.zeros(2, 3)  # wrong length: the writer fails mid-way
    with pytest.raises(Exception):
        write_gaussians_ply(path, broken)
    assert list(tmp_path.iterdir()) == []
