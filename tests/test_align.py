"""Ray-constrained depth alignment on analytic scenes (a box and a floor in front of a wall)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_pointcloud import HEIGHT, WIDTH, camera_at, raycast, texture  # noqa: E402

from engine.align import AlignSettings, align_depth  # noqa: E402
from engine.cameras import look_at  # noqa: E402
from engine.pointcloud import render_points, unproject  # noqa: E402

WALL = ((-50.0, -50.0, 4.0), (50.0, 50.0, 4.5))
BOX = ((-0.4, -0.3, 2.0), (0.4, 0.3, 2.6))
FLOOR = ((-50.0, 0.6, 0.05), (50.0, 1.0, 50.0))  # y is down: the floor is below the camera
SCENE = [WALL, BOX, FLOOR]


def expansion_step(eye=(0.5, 0.0, 0.0), target=(0.0, 0.0, 3.0)):
    """Points of the input view rendered into a camera moved sideways: (camera, render, true depth)."""
    source = camera_at()
    depth, hits = raycast(source, SCENE)
    points = unproject(source, texture(hits), depth)
    camera = camera_at(look_at(eye, target))
    true_depth, _ = raycast(camera, SCENE)
    return camera, render_points(points, camera), true_depth


def test_alignment_removes_the_seam_of_a_wrongly_scaled_estimate():
    camera, render, true_depth = expansion_step()
    hole = render.hole_mask
    rng = np.random.default_rng(0)
    estimate = (true_depth * 1.3 * (1 + 0.01 * rng.standard_normal(true_depth.shape))).astype(np.float32)
    aligned, stats = align_depth(estimate, render.depth, hole, camera)
    print("\nanalytic scene:", stats)
    assert hole.sum() > 300 and stats.seam_pixels > 50
    assert stats.scale == pytest.approx(1 / 1.3, rel=0.01)
    assert stats.seam_error_before_rel > 0.2
    assert stats.seam_error_after < 0.1 * stats.seam_error_before
    assert stats.seam_error_after_rel < 0.03
    # The new pixels land on the true surfaces (noise of 1 % allowed).
    error = np.abs(aligned[hole] / true_depth[hole] - 1)
    assert np.median(error) < 0.015 and np.mean(error < 0.05) > 0.97
    # Only depth changes: the pixels keep their rays, outside the hole only the global fit applies.
    np.testing.assert_allclose(aligned[~hole], stats.scale * estimate[~hole], rtol=1e-5)


def test_occlusion_boundaries_are_left_free():
    camera, render, true_depth = expansion_step()
    hole = render.hole_mask
    estimate = true_depth * 1.3
    # The gap test alone: the estimate-edge test would also free the floor's border near the wall, which
    # this exact estimate does not need.
    aligned, stats = align_depth(estimate, render.depth, hole, camera, settings=AlignSettings(seam_edge_radius=0))
    assert stats.occlusion_pixels > 10  # the revealed wall borders the box
    # The global fit is exact here; what is left is the rendered depth's own error where the
    # floor meets the wall at a grazing angle (a few %).
    error = np.abs(aligned[hole] / true_depth[hole] - 1)
    assert np.percentile(error, 99) < 0.03 and error.max() < 0.06
    # Snapping every boundary pixel (LucidDreamer) glues the revealed wall to the box.
    glued, glued_stats = align_depth(estimate, render.depth, hole, camera, settings=AlignSettings(seam_tolerance=1e9, seam_edge_radius=0))
    glued_error = np.abs(glued[hole] / true_depth[hole] - 1)
    assert glued_stats.occlusion_pixels == 0
    assert glued_error.max() > 0.2 and np.mean(glued_error > 0.06) > 0.05


def test_robust_scale_and_shift_recovery_with_outliers():
    camera, render, true_depth = expansion_step()
    estimate = (true_depth - 0.5) / 0.8  # true = 0.8 * estimate + 0.5
    rng = np.random.default_rng(1)
    outliers = rng.random(estimate.shape) < 0.05
    estimate = np.where(outliers, rng.uniform(0.5, 10.0, estimate.shape), estimate).astype(np.float32)
    _, stats = align_depth(estimate, render.depth, render.hole_mask, camera, settings=AlignSettings(fit="scale_shift"))
    assert stats.scale == pytest.approx(0.8, rel=1e-3)
    assert stats.shift == pytest.approx(0.5, abs=5e-3)
    assert 0.9 < stats.fit_inlier_fraction < 0.97
    _, none = align_depth(estimate, render.depth, render.hole_mask, camera, settings=AlignSettings(fit="none"))
    assert (none.scale, none.shift) == (1.0, 0.0)


def test_correction_decays_to_zero_far_from_the_seam():
    camera = camera_at()
    rendered = np.full((HEIGHT, WIDTH), 3.0, np.float32)
    hole = np.zeros((HEIGHT, WIDTH), bool)
    hole[:, 40:] = True  # a wide strip of new content on the right
    rendered[hole] = 0.0
    estimate = np.where(hole, 3.3, 3.0).astype(np.float32)  # the new content is 10 % too far
    aligned, stats = align_depth(estimate, rendered, hole, camera, settings=AlignSettings(falloff=0.05))
    correction = aligned / estimate - 1  # stats.scale is 1 here
    assert stats.scale == pytest.approx(1.0) and stats.seam_pixels == HEIGHT
    np.testing.assert_allclose(aligned[:, 40], 3.0 * 1.0, rtol=1e-5)  # on the seam: on the surface
    assert np.all(np.diff(correction[:, 40:], axis=1) >= -1e-6)  # monotone back towards zero
    assert np.abs(correction[:, -1]).max() < 0.01 * np.abs(correction[:, 40]).min()
    assert np.abs(correction[:, :40]).max() == 0.0  # outside the hole nothing moves


def test_seam_smoothing_keeps_the_existing_surface_noise_out_of_a_correct_estimate():
    """A correct estimate next to a noisy existing render (3 % per pixel, as a re-sampled or
    inpainted surface is): pinned seams copy the noise into the hole, a fitted seam does not."""
    camera, render, true_depth = expansion_step()
    hole = render.hole_mask
    noisy = np.where(hole, 0.0, render.depth * np.exp(0.03 * np.random.default_rng(1).standard_normal(hole.shape)))
    errors = {}
    for smoothing in (0.0, 0.05):
        aligned, _ = align_depth(true_depth, noisy.astype(np.float32), hole, camera, settings=AlignSettings(seam_smoothing=smoothing))
        inside = hole & (true_depth > 0)
        errors[smoothing] = float(np.abs(np.log(aligned[inside] / true_depth[inside])).mean())
    assert errors[0.05] < 0.5 * errors[0.0]


def test_seam_spread_leaves_a_near_occluder_under_the_tolerance_free():
    """A right estimate whose hole borders, on a quarter of its seam, an occluder 12 % nearer (under
    a fixed tolerance of 0.2, so it is pinned and pulls the new surface forward); the seam's own
    spread (1 % noise) marks it as an occlusion, and the new surface stays where it is."""
    camera = camera_at()
    rng = np.random.default_rng(2)
    rendered = (3.0 * np.exp(0.01 * rng.standard_normal((HEIGHT, WIDTH)))).astype(np.float32)
    rendered[: HEIGHT // 4, :40] *= 0.88
    hole = np.zeros((HEIGHT, WIDTH), bool)
    hole[:, 40:] = True
    rendered[hole] = 0.0
    estimate = np.full((HEIGHT, WIDTH), 3.0, np.float32)
    errors, seams = {}, {}
    for spread in (0.0, 3.0):
        aligned, stats = align_depth(estimate, rendered, hole, camera, settings=AlignSettings(seam_spread=spread, falloff=0.05, seam_tolerance=0.2))
        errors[spread] = float(np.abs(np.log(aligned[: HEIGHT // 4, 40:50] / 3.0)).mean())  # beside the occluder
        seams[spread] = stats.seam_pixels
    assert seams[0.0] == HEIGHT and seams[3.0] == pytest.approx(HEIGHT * 3 / 4, abs=2)
    assert errors[0.0] > 0.05 and errors[3.0] < 0.4 * errors[0.0]  # measured 0.061 and 0.022


def test_seam_adaptive_pins_a_far_off_estimate_and_still_frees_the_occluder():
    """A hole whose estimate is warped 8-20 % away from the wall it continues (severe errors, left
    after the global fit), a quarter of its border an occluder at half the depth.  A fixed tolerance
    of 0.1 takes most of the wall's border for occlusions and leaves the seam open; widened to 3 x
    the border's median gap it pins the wall and still leaves the occluder free."""
    camera = camera_at()
    rendered = np.full((HEIGHT, WIDTH), 3.0, np.float32)
    rendered[: HEIGHT // 4, :40] = 1.5
    hole = np.zeros((HEIGHT, WIDTH), bool)
    hole[:, 40:] = True
    rendered[hole] = 0.0
    warp = np.linspace(0.08, 0.2, HEIGHT, dtype=np.float32)[:, None]
    estimate = np.where(hole, 3.0 * np.exp(warp), rendered).astype(np.float32)
    wall = slice(HEIGHT // 4, HEIGHT)
    errors, stats = {}, {}
    for adaptive in (0.0, 3.0):
        aligned, stats[adaptive] = align_depth(estimate, rendered, hole, camera,
                                               settings=AlignSettings(seam_adaptive=adaptive, falloff=0.05, seam_edge_radius=0))
        errors[adaptive] = float(np.abs(np.log(aligned[wall, 40] / 3.0)).mean())  # the wall's first new column
    assert stats[0.0].seam_tolerance == 0.1 and stats[3.0].seam_tolerance > 0.4
    assert stats[0.0].seam_pixels == 0  # the wall's rows are warped 11-20 %: all taken for occlusions
    assert stats[3.0].seam_pixels == HEIGHT * 3 // 4 and stats[3.0].occlusion_pixels == HEIGHT // 4
    assert errors[0.0] > 0.1 and errors[3.0] < 1e-3  # measured 0.155 and 4e-8


def test_seam_pixels_near_a_depth_edge_of_the_estimate_are_left_free():
    """A wall continued into the hole, and in the hole a post 50 % nearer starting 2 px from the
    border.  Every border row continues the wall (the gap test pins all of them); the estimate-edge
    test leaves free the rows whose 7x7 window (radius 3) reaches the post's silhouette, where an
    estimator's depth is least reliable (flying pixels), and pins the rest."""
    camera = camera_at()
    rendered = np.full((HEIGHT, WIDTH), 3.0, np.float32)
    hole = np.zeros((HEIGHT, WIDTH), bool)
    hole[:, 40:] = True
    rendered[hole] = 0.0
    estimate = np.full((HEIGHT, WIDTH), 3.0, np.float32)
    estimate[30:41, 42:50] = 1.5
    seams = {}
    for radius in (0, 3):
        settings = AlignSettings(seam_edge_radius=radius / WIDTH, falloff=0.05)  # radius px at this size
        _, stats = align_depth(estimate, rendered, hole, camera, settings=settings)
        seams[radius] = (stats.seam_pixels, stats.occlusion_pixels)
    assert seams[0] == (HEIGHT, 0)
    assert seams[3] == (HEIGHT - 17, 17)  # rows 27-43: within 3 px of the post's rows 30-40


def test_no_overlap_and_bad_inputs():
    camera = camera_at()
    hole = np.ones((HEIGHT, WIDTH), bool)
    estimate = np.full((HEIGHT, WIDTH), 2.0, np.float32)
    aligned, stats = align_depth(estimate, np.zeros_like(estimate), hole, camera)
    assert stats.fit_pixels == 0 and stats.seam_pixels == 0 and np.array_equal(aligned, estimate)
    with pytest.raises(ValueError):
        align_depth(estimate[:-1], estimate, hole, camera)
    with pytest.raises(ValueError):
        align_depth(estimate, estimate, hole, camera, settings=AlignSettings(fit="affine"))


@pytest.mark.gpu
def test_cuda_matches_cpu():
    camera, render, true_depth = expansion_step()
    estimate = (true_depth * 1.3).astype(np.float32)
    cpu, cpu_stats = align_depth(estimate, render.depth, render.hole_mask, camera)
    gpu, gpu_stats = align_depth(estimate, render.depth, render.hole_mask, camera, device="cuda")
    np.testing.assert_allclose(gpu, cpu, rtol=1e-4)
    assert gpu_stats.seam_pixels == cpu_stats.seam_pixels


EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "courtyard"


def test_seam_error_on_blender_ground_truth():
    """The input view's true RGB-D, rendered into Blender's held-out cameras; each held-out
    view's true depth, 1.3x too far with 2 % noise, stands in for a depth estimate."""
    import json

    from engine.cameras import Camera
    from engine.images import load_depth, load_image

    source = Camera.from_dict(json.loads((EXAMPLE / "camera.json").read_text()))
    size = (source.width, source.height)
    points = unproject(source, load_image(EXAMPLE / "image.png", max(size)), load_depth(EXAMPLE / "depth.png", size))
    rng = np.random.default_rng(0)
    print(f"\n{'view':>4} {'holes':>6} {'seam px':>7} {'occl px':>7} {'before m':>9} {'global m':>9} {'after m':>8}"
          f" {'after rel':>9} {'hole err global':>15} {'hole err aligned':>16}")
    for index, entry in enumerate(json.loads((EXAMPLE / "heldout" / "cameras.json").read_text())):
        camera = Camera.from_dict(entry)
        true_depth = load_depth(EXAMPLE / "heldout" / f"{index:02d}_depth.png", size)
        render = render_points(points, camera)
        estimate = (true_depth * 1.3 * (1 + 0.02 * rng.standard_normal(true_depth.shape))).astype(np.float32)
        aligned, stats = align_depth(estimate, render.depth, render.hole_mask, camera)
        new = render.hole_mask & (true_depth > 0)
        near_seam = new & (np.abs(aligned - stats.scale * estimate) > 0)  # where the seam correction acts
        global_error = float(np.median(np.abs(stats.scale * estimate[near_seam] / true_depth[near_seam] - 1)))
        aligned_error = float(np.median(np.abs(aligned[near_seam] / true_depth[near_seam] - 1)))
        print(f"{index:>4} {int(new.sum()):>6} {stats.seam_pixels:>7} {stats.occlusion_pixels:>7} "
              f"{stats.seam_error_before:>9.4f} {stats.seam_error_global:>9.4f} {stats.seam_error_after:>8.4f} "
              f"{stats.seam_error_after_rel:>9.4f} {global_error:>15.4f} {aligned_error:>16.4f}")
        assert stats.scale == pytest.approx(1 / 1.3, rel=0.02)
        assert stats.seam_pixels > 20
        assert stats.seam_error_after < 0.1 * stats.seam_error_before
        assert stats.seam_error_after < stats.seam_error_global
        # Away from the seam the error is the estimate's own 2 % white noise; the correction,
        # which carries the seam pixels' noise inwards, must not add to it noticeably.
        assert aligned_error <= global_error + 0.002
