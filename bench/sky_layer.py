"""The sky layer against Blender's ground truth: the bundled example with the sky and without it.

    python bench/sky_layer.py [--resolution 64] [--iterations 60 | --default-schedule] [--steps 2] [--device cpu] [--seeds 0 1 2] [--out DIR]

Generates the example (RGB-D, offline profile, true depth, an orbit expansion of ``--steps``
views) once with the sky layer and once with ``--set sky=false``, same seed and settings, then
renders each trained world (scene + sky.ply where there is one) at the input camera and at the
four held-out cameras and scores it against Blender's renders: PSNR over Blender's sky (depth 0),
over the rest of the frame, and over the covisible pixels (eval-rgbd's: true surface the input
sees); the rest also split into the skyline (within ``SKYLINE_PX`` of the sky) and the pixels
farther in.  Prints one row per run and the mean difference; writes ``DIR/sky_layer.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def generate(job: Path, args: argparse.Namespace, seed: int, sky: bool) -> None:
    example = ROOT / "examples" / "courtyard"
    command = [
        sys.executable, "-m", "engine", "generate", str(example / "image.png"), "--depth", str(example / "depth.png"),
        "--camera", str(example / "camera.json"), "--profile", "offline", "--device", args.device, "--out", str(job),
        "--resolution", str(args.resolution), "--steps", str(args.steps),
        *([] if args.default_schedule else ["--iterations", str(args.iterations)]),
        "--seed", str(seed), "--set", "reprojections=1", *([] if sky else ["--set", "sky=false"]),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"generate failed:\n{done.stderr[-3000:]}")


SKYLINE_PX = 4  # "skyline": surface pixels within this many pixels of Blender's sky


def skyline_mask(depth: np.ndarray) -> np.ndarray:
    """Blender's surface pixels (depth > 0) within ``SKYLINE_PX`` of its sky (depth 0)."""
    from scipy.ndimage import binary_dilation

    return (depth > 0) & binary_dilation(depth == 0, iterations=SKYLINE_PX)


def score(job: Path, example, device: str) -> dict[str, float]:
    from engine import cameras, evaluate
    from engine.sky import read_world

    world = read_world(job, device)
    rows = []
    for view in [example.source, *example.heldout]:
        camera = cameras.relative_to([view.camera], example.source.camera)[0]
        image = world.render(camera, device).image
        covisible = view.depth > 0 if view is example.source else evaluate.covisible_mask(view, example.source)
        skyline = skyline_mask(view.depth)
        rows.append([evaluate.masked_psnr(image, view.image, view.depth == 0),
                     evaluate.masked_psnr(image, view.image, view.depth > 0),
                     evaluate.masked_psnr(image, view.image, covisible),
                     evaluate.masked_psnr(image, view.image, skyline),
                     evaluate.masked_psnr(image, view.image, (view.depth > 0) & ~skyline)])
    sky, rest, covisible, skyline, inland = np.mean(rows, axis=0)
    return {"psnr_sky": float(sky), "psnr_nonsky": float(rest), "psnr_covisible": float(covisible),
            "psnr_skyline": float(skyline), "psnr_nonsky_inland": float(inland)}


def main() -> None:
    from engine import evaluate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--default-schedule", action="store_true", help="the device's product 3DGS schedule (no --iterations)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="sky-layer-")))
    args = parser.parse_args()
    from engine.__main__ import use_compile_caches

    use_compile_caches()  # its renders use gsplat's CUDA where `engine warmup` built it
    example = evaluate.load_example(evaluate.DEFAULT_EXAMPLE, args.resolution)
    runs = []
    for seed in args.seeds:
        for sky in (True, False):
            job = args.out / f"seed{seed}-{'sky' if sky else 'no-sky'}"
            generate(job, args, seed, sky)
            runs.append({"seed": seed, "sky": sky, **score(job, example, args.device)})
            print(json.dumps(runs[-1]), file=sys.stderr)
    difference = {key: float(np.mean([a[key] - b[key] for a, b in zip(runs[::2], runs[1::2])]))
                  for key in ("psnr_sky", "psnr_nonsky", "psnr_covisible", "psnr_skyline", "psnr_nonsky_inland")}
    print(f"with sky - without (mean over seeds {args.seeds}): " + ", ".join(f"{k} {v:+.2f} dB" for k, v in difference.items()),
          file=sys.stderr)
    (args.out / "sky_layer.json").write_text(json.dumps({"settings": vars(args) | {"out": str(args.out)}, "runs": runs,
                                                         "difference": difference}, indent=1))


if __name__ == "__main__":
    main()
