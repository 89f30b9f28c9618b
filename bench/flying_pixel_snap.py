"""Snapping an estimate's flying pixels to the nearer plateau (tried, not kept) against continuing each
side's surface (``engine.depth_geometry.repair_depth_ramps``, kept), on the analytic test scene.

    .venv/bin/python bench/flying_pixel_snap.py

The scene of tests/test_align.py (a wall, a box and a grazing floor, 96x72) seen by the moved
camera; its true depth blurred across depth edges as ``engine.oracle`` does (``edge_blur_px`` 0,
1, 2).  A pixel whose window (radius r) spans more than 10 % of depth is a ramp pixel and takes
the window's minimum or maximum, whichever is nearer in log depth — ungated, or only near pixels
where the inverse depth bends (second difference over ``k`` of itself; a plane has none).  Prints,
per variant, the mean |log error| against the true depth, the share of pixels off by more than
5 %, and the share of pixels snapped; then the same for ``repair_depth_ramps`` at radius 2, 3, 4 ("continued";
docs/EVAL.md quotes both).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from engine.depth_geometry import repair_depth_ramps  # noqa: E402
from engine.oracle import ErrorLevel, corrupt_depth  # noqa: E402
from test_align import expansion_step  # noqa: E402

JUMP = 0.1


def snap_ramps(depth: np.ndarray, radius: int, curvature: float | None) -> tuple[np.ndarray, np.ndarray]:
    valid = depth > 0
    size = 2 * radius + 1
    near = ndimage.minimum_filter(np.where(valid, depth, np.inf), size=size)
    far = ndimage.maximum_filter(np.where(valid, depth, 0.0), size=size)
    ramp = valid & (far > (1 + JUMP) * near)
    if curvature is not None:
        inverse = np.where(valid, 1.0 / np.where(valid, depth, 1.0), 0.0)
        padded = np.pad(inverse, 1, mode="edge")
        bend = np.maximum(np.abs(padded[1:-1, :-2] + padded[1:-1, 2:] - 2 * inverse),
                          np.abs(padded[:-2, 1:-1] + padded[2:, 1:-1] - 2 * inverse)) / np.where(valid, inverse, 1.0)
        ramp &= ndimage.binary_dilation(valid & (bend > curvature), iterations=radius)
    to_near = np.log(depth / near) < np.log(far / np.where(valid, depth, 1.0))
    return np.where(ramp, np.where(to_near, near, far), depth), ramp


def main() -> None:
    _, _, true_depth = expansion_step()
    valid = true_depth > 0
    for blur in (0.0, 1.0, 2.0):
        estimate = corrupt_depth(true_depth, ErrorLevel(0.0, 0.0, 0.0, blur), np.random.default_rng(0))
        error = np.abs(np.log(estimate[valid] / true_depth[valid]))
        line = f"edge blur {blur}: unsnapped {error.mean():.4f} / {(error > 0.05).mean():.3f}"
        for curvature in (None, 0.005, 0.01):
            for radius in (2, 3):
                snapped, ramp = snap_ramps(estimate, radius, curvature)
                error = np.abs(np.log(snapped[valid] / true_depth[valid]))
                gate = "ungated" if curvature is None else f"k {curvature}"
                line += f" | {gate} r {radius}: {error.mean():.4f} / {(error > 0.05).mean():.3f} / {ramp.mean():.2f}"
        for radius in (2, 3, 4):
            repaired, ramp = repair_depth_ramps(estimate, radius)
            error = np.abs(np.log(repaired[valid] / true_depth[valid]))
            line += f" | continued r {radius}: {error.mean():.4f} / {(error > 0.05).mean():.3f} / {ramp.mean():.2f}"
        print(line)


if __name__ == "__main__":
    main()
