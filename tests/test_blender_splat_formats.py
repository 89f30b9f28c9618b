"""Splat files other tools write, in real Blender: PlayCanvas compressed PLY, SPZ and SOG
(tests/data/splat-formats, written by splat-transform 3.7.0) import through the engine and
match the PLY they were made from; SPZ export round-trips; anything else gets a clear message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parent / "data" / "splat-formats"
# Worst errors of each quantised format against the source (position m, log scale, SH DC, opacity logit).
TOLERANCE = {"source.compressed.ply": (3e-3, 2e-3, 0.02, 0.4), "source.spz": (3e-4, 0.04, 0.4, 0.4),
             "source.sog": (3e-4, 0.01, 0.01, 0.6)}


def _matched(addon, obj, source):
    """The imported Gaussians' file values, in the source's order (the formats reorder)."""
    from scipy.spatial import cKDTree

    g = addon.gen3d_addon.importers.gaussians_from_object(obj)
    xyz = np.stack([source[a] for a in "xyz"], 1)
    _, index = cKDTree(g["xyz"]).query(xyz)
    assert len(set(index)) == len(xyz)
    return {k: (v[index] if isinstance(v, np.ndarray) and len(v) == len(xyz) else v) for k, v in g.items()}, index


@pytest.mark.engine
@pytest.mark.parametrize("name", sorted(TOLERANCE))
def test_formats_other_tools_write_import(clean_scene, addon, name):
    import bpy

    ply, SH_C0 = addon.gen3d_addon.ply, addon.engine.gaussian_math.SH_C0
    source = ply.read_vertices(DATA / "source.ply")
    assert bpy.ops.gen3d.import_gaussians(filepath=str(DATA / name)) == {"FINISHED"}
    obj = bpy.context.active_object
    assert len(obj.data.vertices) == len(source) and obj.name.startswith("Gen3D source")
    g, index = _matched(addon, obj, source)
    position, scale, dc, logit = TOLERANCE[name]
    np.testing.assert_allclose(g["xyz"], np.stack([source[a] for a in "xyz"], 1), atol=position)
    np.testing.assert_allclose(np.log(g["scale"]), np.stack([source[f"scale_{i}"] for i in range(3)], 1), atol=scale)
    np.testing.assert_allclose((g["color"] - 0.5) / SH_C0, np.stack([source[f"f_dc_{i}"] for i in range(3)], 1), atol=dc)
    inside = np.abs(source["opacity"]) < 4  # 8-bit opacity: the logit is coarse past that
    np.testing.assert_allclose(g["opacity_logit"][inside], source["opacity"][inside], atol=logit)
    q = np.stack([source[f"rot_{i}"] for i in range(4)], 1)
    assert np.abs(np.sum(g["rot"] * q / np.linalg.norm(q, axis=1, keepdims=True), 1)).min() > 0.99
    assert len(g["f_rest"]) == 45


@pytest.mark.engine
def test_spz_export_round_trip(clean_scene, addon, tmp_path):
    import bpy
    import gsply

    ply = addon.gen3d_addon.ply
    source = ply.read_vertices(DATA / "source.ply")
    assert bpy.ops.gen3d.import_gaussians(filepath=str(DATA / "source.ply")) == {"FINISHED"}
    assert bpy.ops.gen3d.export_spz(filepath=str(tmp_path / "out.spz")) == {"FINISHED"}
    back = gsply.read_spz(tmp_path / "out.spz")  # the file SPZ readers get
    np.testing.assert_allclose(back.means, np.stack([source[a] for a in "xyz"], 1), atol=3e-4)
    np.testing.assert_allclose(back.scales, np.stack([source[f"scale_{i}"] for i in range(3)], 1), atol=0.04)
    assert back.shN.shape == (len(source), 15, 3)


@pytest.mark.engine
@pytest.mark.parametrize("name", ["antialiased.spz", "antialiased.sog", "antialiased.compressed.ply", "source.spz"])
def test_the_training_mode_other_tools_recorded_is_imported_and_exported(clean_scene, addon, tmp_path, name):
    """splat-transform 3.10.2's antialiased files import antialiased (the draw and Cycles' filter follow
    it); an SPZ exported from such an object carries the flag again."""
    import struct

    import bpy

    importers = addon.gen3d_addon.importers
    assert bpy.ops.gen3d.import_gaussians(filepath=str(DATA / name)) == {"FINISHED"}
    expected = name.startswith("antialiased")
    assert bool(bpy.context.active_object.data.get(importers.ANTIALIASED)) is expected
    assert bpy.ops.gen3d.export_spz(filepath=str(tmp_path / "out.spz")) == {"FINISHED"}
    assert struct.unpack("<IIIBBBB", (tmp_path / "out.spz").read_bytes()[:16])[5] == int(expected)


def test_unsupported_files_say_what_they_are(clean_scene, addon, tmp_path):
    import bpy

    mesh = tmp_path / "mesh.ply"
    mesh.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement face 0\nproperty list uchar int vertex_indices\n"
                     b"element vertex 0\nproperty float x\nend_header\n")
    with pytest.raises(RuntimeError) as caught:
        bpy.ops.gen3d.import_gaussians(filepath=str(mesh))
    message = str(caught.value)
    assert "element 'face' before 'vertex'" in message and message.count(str(mesh)) == 1, message
    splat = tmp_path / "scene.splat"
    splat.write_bytes(b"\0" * 32)
    with pytest.raises(RuntimeError, match=r"scene.splat is not a PLY file \(splats import from .*spz and .sog\)"):
        bpy.ops.gen3d.import_gaussians(filepath=str(splat))
