"""Unprojection, z-buffered point rendering, hole masks and de-duplication on analytic scenes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.cameras import Camera, intrinsics_from_fov, look_at, pixel_rays, project
from engine.depth_geometry import depth_edges
from engine.pointcloud import PointCloud, render_points, unproject

WIDTH, HEIGHT = 96, 72


def camera_at(world_to_camera=None, width=WIDTH, height=HEIGHT, fov=60.0) -> Camera:
    pose = np.eye(4) if world_to_camera is None else world_to_camera
    return Camera(intrinsics_from_fov(width, height, fov), pose, width, height)


def raycast(camera: Camera, boxes) -> tuple[np.ndarray, np.ndarray]:
    """Exact z-depth [H, W] and world hit points [H, W, 3] of axis-aligned boxes (lo, hi).

    Rays have camera z = 1, so the ray parameter of the nearest hit is the z-depth.  0 = miss.
    """
    c2w = camera.camera_to_world
    dirs = pixel_rays(camera) @ c2w[:3, :3].T  # [H, W, 3] world directions, camera z = 1
    origin = c2w[:3, 3]
    best = np.full(dirs.shape[:2], np.inf)
    for lo, hi in boxes:
        with np.errstate(divide="ignore", invalid="ignore"):
            t1 = (np.asarray(lo) - origin) / dirs
            t2 = (np.asarray(hi) - origin) / dirs
        t_near = np.nanmax(np.minimum(t1, t2), axis=-1)
        t_far = np.nanmin(np.maximum(t1, t2), axis=-1)
        hit = (t_near <= t_far) & (t_near > 0)
        best = np.where(hit & (t_near < best), t_near, best)
    depth = np.where(np.isfinite(best), best, 0.0)
    return depth.astype(np.float32), origin + dirs * depth[..., None]


def texture(points: np.ndarray) -> np.ndarray:
    """A colour that varies smoothly with the world position: [..., 3] in [0, 1]."""
    return (0.5 + 0.5 * np.sin(points * np.array([3.0, 5.0, 7.0]))).astype(np.float32)


WALL = ((-50.0, -50.0, 4.0), (50.0, 50.0, 4.5))
CARD = ((-0.4, -0.3, 2.0), (0.4, 0.3, 2.05))  # a thin box in front of the wall


def test_pointcloud_container():
    a = PointCloud(np.zeros((2, 3)), np.ones((2, 3)), np.ones(2))
    b = PointCloud(np.ones((3, 3)), np.zeros((3, 3)), np.full(3, 2.0))
    both = PointCloud.concat([a, b])
    assert len(both) == 5 and both.xyz.dtype == np.float32
    assert np.array_equal(both.subset(both.radius > 1).xyz, b.xyz)
    assert len(PointCloud.concat([])) == 0
    with pytest.raises(ValueError):
        PointCloud(np.zeros((2, 3)), np.zeros((3, 3)), np.zeros(2))


def test_round_trip_same_camera_reproduces_image_and_depth():
    camera = camera_at()
    depth, hits = raycast(camera, [WALL, CARD])
    image = texture(hits)
    points = unproject(camera, image, depth)
    render = render_points(points, camera, gap_tolerance=None)
    edges = depth_edges(depth)
    assert np.array_equal(render.hole_mask, edges)  # only the dropped edge ring is missing
    # Crack filling only ever fills (here: ring pixels between two wall pixels at the corners).
    filled = render_points(points, camera)
    assert not np.any(filled.hole_mask & ~edges) and filled.hole_mask.sum() > 0.9 * edges.sum()
    seen = ~render.hole_mask
    np.testing.assert_allclose(render.depth[seen], depth[seen], rtol=1e-5)
    np.testing.assert_allclose(render.image[seen], image[seen], atol=1e-6)
    assert np.all(render.depth[render.hole_mask] == 0) and np.all(render.index[render.hole_mask] == -1)
    # The radius is the pixel footprint: depth / focal.
    np.testing.assert_allclose(points.radius, depth[~edges] / camera.K[0, 0], rtol=1e-5)


def test_unproject_drops_invalid_depth_and_honours_mask():
    camera = camera_at()
    depth = np.full((HEIGHT, WIDTH), 3.0, np.float32)
    depth[0, :10] = 0.0
    depth[1, :5] = np.nan
    depth[2, :4] = -1.0
    depth[3, :3] = np.inf
    image = np.zeros((HEIGHT, WIDTH, 3), np.float32)
    assert len(unproject(camera, image, depth)) == HEIGHT * WIDTH - 22
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[10:20, 10:20] = True
    points = unproject(camera, image, depth, mask)
    assert len(points) == 100
    pixels, z = project(camera, points.xyz)
    assert np.all((pixels >= 10) & (pixels < 20)) and np.allclose(z, 3.0)


def test_no_streak_points_across_a_blurred_depth_edge():
    camera = camera_at()
    depth = np.full((HEIGHT, WIDTH), 4.0, np.float32)
    depth[:, : WIDTH // 2] = 2.0
    # A depth estimator's soft edge: a 3-pixel ramp from 2 m to 4 m ("flying pixels").
    depth[:, WIDTH // 2 : WIDTH // 2 + 3] = np.linspace(2.5, 3.5, 3, dtype=np.float32)
    points = unproject(camera, np.zeros((HEIGHT, WIDTH, 3), np.float32), depth)
    z = project(camera, points.xyz)[1]
    assert not np.any((z > 2.01) & (z < 3.99)), "points between the two surfaces"
    # Both surfaces survive: the foreground silhouette is kept whole.
    assert np.sum(np.isclose(z, 2.0)) == HEIGHT * (WIDTH // 2)
    assert np.sum(np.isclose(z, 4.0)) == HEIGHT * (WIDTH // 2 - 3 - 1)
    # Without edge handling the ramp becomes a streak.
    streak = project(camera, unproject(camera, np.zeros((HEIGHT, WIDTH, 3)), depth, edge_threshold=None).xyz)[1]
    assert np.any((streak > 2.01) & (streak < 3.99))


def test_depth_edges_ignore_invalid_and_smooth_slopes():
    depth = np.tile(np.linspace(2.0, 2.5, WIDTH, dtype=np.float32), (HEIGHT, 1))  # a gentle slope
    depth[10, 10] = 0.0
    assert not depth_edges(depth, 0.1).any()


def test_zbuffer_keeps_the_nearest_point():
    camera = camera_at()
    row, col = 30, 40
    ray = pixel_rays(camera)[row, col]  # through the pixel centre
    near = PointCloud([ray * 2.0], [[1.0, 0.0, 0.0]], [0.01])
    far = PointCloud([ray * 5.0], [[0.0, 1.0, 0.0]], [0.01])
    for cloud in (PointCloud.concat([near, far]), PointCloud.concat([far, near])):
        render = render_points(cloud, camera)
        assert render.index[row, col] == int(np.argmin(cloud.xyz[:, 2]))
        assert render.depth[row, col] == pytest.approx(2.0)
        assert np.array_equal(render.image[row, col], [1.0, 0.0, 0.0])
        assert render.hole_mask.sum() == HEIGHT * WIDTH - 1
    # Points behind the camera are not drawn.
    assert render_points(PointCloud([[0.0, 0.0, -2.0]], [[1, 1, 1]], [0.01]), camera).hole_mask.all()


def test_hole_mask_is_the_disoccluded_region_of_a_two_plane_scene():
    source = camera_at()
    depth, hits = raycast(source, [WALL, CARD])
    points = unproject(source, texture(hits), depth, edge_threshold=None)
    target = camera_at(look_at([0.3, 0.0, 0.0], [0.3, 0.0, 1.0]))  # moved 0.3 m sideways
    render = render_points(points, target)
    # Ground truth: a target pixel is seen by the source when its true surface point projects
    # inside the source image and is the surface the source sees there.
    true_depth, true_hits = raycast(target, [WALL, CARD])
    pixels, z = project(source, true_hits.reshape(-1, 3))
    inside = (pixels[:, 0] >= 0) & (pixels[:, 0] < WIDTH) & (pixels[:, 1] >= 0) & (pixels[:, 1] < HEIGHT)
    col = np.clip(pixels[:, 0], 0, WIDTH - 1).astype(int)
    row = np.clip(pixels[:, 1], 0, HEIGHT - 1).astype(int)
    visible = inside & np.isclose(depth[row, col], z, rtol=1e-3)
    expected_hole = ~visible.reshape(HEIGHT, WIDTH)
    assert expected_hole.sum() > 200  # a real disocclusion + the strip entering the view
    mismatch = render.hole_mask != expected_hole
    # Pixel sampling can only disagree on the region's outline (pixels next to its edge).
    outline = (expected_hole != np.roll(expected_hole, 1, 1)) | (expected_hole != np.roll(expected_hole, -1, 1))
    assert not np.any(mismatch & ~outline)
    assert mismatch.sum() <= 0.1 * expected_hole.sum()
    seen = ~render.hole_mask & ~expected_hole
    error = np.abs(render.depth[seen] / true_depth[seen] - 1)
    assert np.median(error) < 1e-4 and np.mean(error < 0.02) > 0.99  # misses: silhouette pixels


def test_slight_zoom_leaves_no_pinholes():
    camera = camera_at()
    depth = np.full((HEIGHT, WIDTH), 3.0, np.float32)
    points = unproject(camera, np.ones((HEIGHT, WIDTH, 3), np.float32), depth)
    closer = render_points(points, camera_at(look_at([0, 0, 0.25], [0, 0, 1.0])))  # ~9 % zoom
    assert not closer.hole_mask.any()
    np.testing.assert_allclose(closer.depth, 2.75, rtol=1e-5)


@pytest.mark.gpu
def test_cuda_matches_cpu():
    camera = camera_at()
    depth, hits = raycast(camera, [WALL, CARD])
    points = unproject(camera, texture(hits), depth)
    target = camera_at(look_at([0.3, 0.1, 0.0], [0.0, 0.0, 3.0]))
    cpu, gpu = render_points(points, target), render_points(points, target, device="cuda")
    assert np.array_equal(cpu.hole_mask, gpu.hole_mask) and np.array_equal(cpu.index, gpu.index)


def test_one_pixel_cracks_within_a_surface_are_filled_but_not_across_depth_edges():
    camera = camera_at()
    depth = np.full((HEIGHT, WIDTH), 3.0, np.float32)
    depth[:, WIDTH // 2 :] = 6.0
    image = np.ones((HEIGHT, WIDTH, 3), np.float32)
    keep = np.zeros((HEIGHT, WIDTH), bool)
    keep[:, ::2] = True  # every other column: one-pixel cracks everywhere
    points = unproject(camera, image, depth, keep, edge_threshold=None)
    cracked = render_points(points, camera, gap_tolerance=None)
    assert cracked.hole_mask[:, 1::2].all()
    filled = render_points(points, camera)
    # Column WIDTH/2 - 1 sits between 3 m and 6 m: a disocclusion, left empty; the last column
    # has no right neighbour.
    expected = np.zeros((HEIGHT, WIDTH), bool)
    expected[:, [WIDTH // 2 - 1, WIDTH - 1]] = True
    assert np.array_equal(filled.hole_mask, expected)
    np.testing.assert_allclose(filled.depth[:, 1 : WIDTH // 2 - 1], 3.0, rtol=1e-6)
