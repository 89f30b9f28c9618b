"""A settings variant of "ours" against the default, on eval-world, scene by scene (CPU or CUDA).

    .venv/bin/python bench/eval_world_sweep.py --set align_seam_spread=3 [--set ...] \
        [--scenes courtyard room street] [--levels none typical] [--resolution 128] [--iterations 60] \
        [--device cpu] --out DIR

Runs ``python -m engine eval-world`` once per scene x level with the variant (``--set`` applies to
the ``ours`` method only; the other methods are the baselines of the same run) and prints per run
the totals of raw / global scale / LucidDreamer / ours / true depth: PSNR, accuracy (m), seam
(pixel footprints).  The default "ours" is the same run without ``--set`` (``--baseline``, on by
default; its runs share each scene's job folder with the variant's, so the baselines train once).
Writes DIR/sweep.json with every run's totals.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

METHODS = ("raw", "global_scale", "luciddreamer", "ours", "true_depth")


def run(scene: str, level: str, sets: list[str], out: Path, args) -> dict:
    command = [sys.executable, "-m", "engine", "eval-world", "--scene", scene, "--level", level, "--out", str(out),
               "--jobs", str(args.out / f"jobs-{scene}-{'-'.join(sets) or 'default'}"), "--resolution", str(args.resolution),
               "--iterations", str(args.iterations), "--device", args.device]
    if args.scene_cache:
        command += ["--scene-cache", str(args.scene_cache)]
    for item in sets:
        command += ["--set", item]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   cwd=Path(__file__).resolve().parents[1])
    methods = json.loads((out / "eval_world.json").read_text())["methods"]
    return {name: {key: methods[name][key] for key in ("psnr", "ssim", "accuracy", "completeness", "seam_error_px")
                   if key in methods[name]} for name in METHODS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", required=True)
    parser.add_argument("--scenes", nargs="+", default=["courtyard", "room", "street"])
    parser.add_argument("--levels", nargs="+", default=["none", "typical"])
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--scene-cache", type=Path)
    parser.add_argument("--no-baseline", dest="baseline", action="store_false")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"settings": args.set, "resolution": args.resolution, "iterations": args.iterations,
               "device": args.device, "runs": []}
    for scene in args.scenes:
        for level in args.levels:
            variants = ([[]] if args.baseline else []) + [args.set]
            for sets in variants:
                label = "variant" if sets else "default"
                totals = run(scene, level, sets, args.out / f"{scene}-{level}-{label}", args)
                results["runs"].append({"scene": scene, "level": level, "ours": label, "methods": totals})
                row = "  ".join(f"{name} {totals[name]['psnr']:.2f}/{totals[name]['accuracy']:.3f}/"
                                f"{totals[name].get('seam_error_px', float('nan')):.2f}" for name in METHODS)
                print(f"{scene:9s} {level:8s} {label:8s} {row}", flush=True)
                (args.out / "sweep.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
