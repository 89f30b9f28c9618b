"""Where a world with its sky layer loses to the same world without it, at the skyline.

    .venv/bin/python bench/sky_skyline.py SKY_JOB NO_SKY_JOB [--resolution 128] [--device cpu]

Both jobs are the bundled example generated as ``bench/sky_layer.py`` does (same seed and
settings, one with ``--set sky=false``).  For the input camera and each held-out camera it
renders both worlds and prints, over the skyline (``sky_layer.skyline_mask``: surface pixels
within ``sky_layer.SKYLINE_PX`` of Blender's sky): the mean colour error of each, the pixels where the sky world is worse by more
than ``WORSE``, where they are (rows and columns, 5th/50th/95th percentiles), the sky world's
scene opacity there and the mean colours of Blender, the sky world and the sky-less one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from sky_layer import skyline_mask  # noqa: E402

WORSE = 0.05  # mean absolute colour error (0-1) by which a pixel counts as worse


def main() -> None:
    from engine import cameras, evaluate
    from engine.export import read_gaussians_ply
    from engine.sky import read_world

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sky_job", type=Path)
    parser.add_argument("no_sky_job", type=Path)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    example = evaluate.load_example(evaluate.DEFAULT_EXAMPLE, args.resolution)
    with_sky, without = read_world(args.sky_job, args.device), read_world(args.no_sky_job, args.device)
    scene = read_gaussians_ply(args.sky_job / "gaussians.ply", args.device)
    for index, view in enumerate([example.source, *example.heldout]):
        camera = cameras.relative_to([view.camera], example.source.camera)[0]
        a, b = with_sky.render(camera, args.device).image, without.render(camera, args.device).image
        alpha = np.asarray(scene.render(camera, args.device).alpha)
        sky = view.depth == 0
        skyline = skyline_mask(view.depth)
        error_a, error_b = np.abs(a - view.image).mean(-1), np.abs(b - view.image).mean(-1)
        worse = skyline & (error_a > error_b + WORSE)
        line = (f"view {index} ({'input' if index == 0 else 'held-out'}): skyline {int(skyline.sum())} px, mean error "
                f"with sky {error_a[skyline].mean():.4f}, without {error_b[skyline].mean():.4f}; worse at {int(worse.sum())} px")
        if worse.any():
            rows, cols = np.nonzero(worse)
            line += (f", rows {np.percentile(rows, [5, 50, 95]).astype(np.float64).round(1).tolist()} cols {np.percentile(cols, [5, 50, 95]).astype(np.float64).round(1).tolist()}"
                     f", scene opacity {alpha[worse].mean():.2f}, colour Blender {view.image[worse].mean(0).astype(np.float64).round(3).tolist()}"
                     f" with sky {a[worse].mean(0).astype(np.float64).round(3).tolist()} without {b[worse].mean(0).astype(np.float64).round(3).tolist()}"
                     f" (Blender's sky {view.image[sky].mean(0).astype(np.float64).round(3).tolist()})")
        print(line)


if __name__ == "__main__":
    main()
