"""engine.depth_geometry: the depth-edge and agreement tests, surface normals, the far-side depth
completion, the flying-pixel repair and the (screened) Laplace solve, on analytic depth maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.cameras import Camera, intrinsics_from_fov, pixel_rays
from engine.depth_geometry import (
    complete_far_side,
    depth_edges,
    depth_jumps,
    harmonic_fill,
    repair_depth_ramps,
    surface_normals,
)
from engine.errors import BadInputError

H = W = 64


def _square(centre: int, half: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[centre - half : centre + half, centre - half : centre + half] = True
    return mask


def test_depth_jumps_is_one_relative_test_for_arrays_and_tensors():
    near, far = np.array([2.0, 2.0, 2.0]), np.array([2.1, 2.19, 2.3])
    expected = [False, False, True]  # 5 %, 9.5 %, 15 %
    assert depth_jumps(near, far, 0.1).tolist() == expected
    assert depth_jumps(far, near, 0.1).tolist() == expected  # symmetric
    assert depth_jumps(torch.tensor(near), torch.tensor(far), 0.1).tolist() == expected


def test_depth_edges_far_side_only_or_both_sides():
    depth = np.full((H, W), 4.0, np.float32)
    depth[:, :32] = 2.0  # a near surface on the left
    depth[5, 5] = 0.0  # no depth: never an edge, never a neighbour
    far = depth_edges(depth)
    assert far[:, 32].all() and not far[:, 31].any() and far.sum() == H  # the background pixel only
    both = depth_edges(depth, both_sides=True)
    assert both[:, 31].all() and both[:, 32].all() and both.sum() == 2 * H
    slope = np.tile(np.linspace(2.0, 2.5, W, dtype=np.float32), (H, 1))  # 0.4 % per pixel: no edge
    assert not depth_edges(slope, 0.1, both_sides=True).any()


def test_surface_normals_of_a_slanted_plane():
    camera = Camera(intrinsics_from_fov(W, H, 60.0), np.eye(4), W, H)
    normal = np.array([0.3, -0.2, -1.0]) / np.linalg.norm([0.3, -0.2, -1.0])  # facing the camera
    rays = pixel_rays(camera)
    depth = (-3.0 / (rays @ normal)).astype(np.float32)  # the plane n·X = 3
    np.testing.assert_allclose(surface_normals(camera, depth), np.broadcast_to(normal, (H, W, 3)), atol=1e-4)


def test_far_side_continues_far_wall_not_near_box():
    depth = np.full((H, W), 4.0, np.float32)  # far wall
    depth[16:48, 8:24] = 1.0  # near box, left of the hole
    hole = np.zeros((H, W), bool)
    hole[16:48, 24:40] = True  # where a removed foreground object stood, touching the box
    out, valid = complete_far_side(depth, hole)
    assert valid.all() and np.array_equal(out[~hole], depth[~hole])
    np.testing.assert_allclose(out[hole], 4.0, rtol=1e-4)


def test_far_side_continues_a_slanted_plane_exactly():
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    depth = (1.0 / (0.2 + 0.004 * x + 0.002 * y)).astype(np.float32)  # a plane: 1/z affine in pixels
    hole = _square(30, 12)
    out, _ = complete_far_side(np.where(hole, 0.0, depth), hole)
    np.testing.assert_allclose(out[hole], depth[hole], rtol=1e-4)


def test_far_side_of_a_hole_inside_an_occluder_uses_what_it_has():
    depth = np.full((H, W), 5.0, np.float32)
    depth[10:50, 10:50] = 2.0
    depth[0:4] = 0.0  # invalid rows are not used and not filled
    out, valid = complete_far_side(depth, _square(30, 5))  # surrounded only by the occluder
    np.testing.assert_allclose(out[_square(30, 5)], 2.0, rtol=1e-4)
    assert np.all(out[0:4] == 0.0) and not valid[0:4].any()


def test_far_side_without_any_rim_stays_without_depth():
    out, valid = complete_far_side(np.zeros((H, W), np.float32), np.ones((H, W), bool))
    assert not valid.any() and np.all(out == 0)
    with pytest.raises(BadInputError):
        complete_far_side(np.zeros((8, 8), np.float32), np.ones((4, 4), bool))


def test_harmonic_fill_reproduces_affine_and_screening_decays_to_zero():
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    affine = (1.0 + 0.02 * x - 0.01 * y)[..., None]
    hole = _square(32, 20)
    np.testing.assert_allclose(harmonic_fill(affine, hole, ~hole)[hole], affine[hole], atol=1e-4)
    # Fixed at 1 on the left column only, free elsewhere: unscreened it stays 1 everywhere,
    # screened over L = 8 px it falls to e^(-63/8) ~ 4e-4 at the far side.
    fixed = np.zeros((H, W), bool)
    fixed[:, 0] = True
    values = fixed[..., None].astype(np.float64)
    flat = harmonic_fill(values, ~fixed, fixed)[..., 0]
    screened = harmonic_fill(values, ~fixed, fixed, weight=1 / 8**2)[..., 0]
    np.testing.assert_allclose(flat, 1.0, atol=1e-4)
    assert np.all(np.diff(screened, axis=1) < 0) and screened[:, -1].max() < 2e-3


def _slanted_scene() -> np.ndarray:
    """A slanted far plane behind a slanted near box and a 3 px post: 1/z affine on each surface."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    depth = 1.0 / (0.2 + 0.002 * x + 0.003 * y)  # the far plane, 2.0-5.0 m
    box = _square(32, 12)
    depth[box] = (1.0 / (0.6 + 0.004 * x - 0.002 * y))[box]
    depth[8:56, 52:55] = 1.5  # a post thinner than any fit window
    return depth.astype(np.float32)


def test_ramp_repair_leaves_sharp_slanted_surfaces_and_thin_posts_alone():
    depth = _slanted_scene()
    repaired, ramp = repair_depth_ramps(depth, 3)
    assert not ramp.any()
    assert np.array_equal(repaired, depth)


def test_ramp_repair_puts_flying_pixels_back_on_the_surface_they_continue():
    from scipy import ndimage

    from engine.oracle import ErrorLevel, corrupt_depth

    depth = _slanted_scene()
    blurred = corrupt_depth(depth, ErrorLevel(0.0, 0.0, 0.0, 2.0), np.random.default_rng(0))  # `typical` edges
    repaired, ramp = repair_depth_ramps(blurred, 3)
    before = np.abs(np.log(blurred / depth))
    after = np.abs(np.log(repaired / depth))
    box = _square(32, 12)
    box_edge = ndimage.binary_dilation(box, iterations=5) & ~ndimage.binary_erosion(box, iterations=5)
    assert ramp[box_edge].mean() > 0.35  # the ramp around the box is found
    # Around the box, flying pixels (off by more than 5 %) and the mean error drop by more than half.
    assert (after[box_edge] > 0.05).sum() < 0.4 * (before[box_edge] > 0.05).sum()
    assert after[box_edge].mean() < 0.5 * before[box_edge].mean()
    # Repaired pixels land on a surface: within 3 % of the true depth for most of them.
    assert np.mean(after[ramp] < 0.03) > 0.85
