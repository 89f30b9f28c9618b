"""Choose the 3DGS schedule by measured quality: eval-rgbd's covisible PSNR for each candidate.

    python bench/splat_schedule.py --device cuda --resolution 320 [--out DIR]

Runs ``python -m engine eval-rgbd``'s job (bundled example, RGB-D, offline profile) once with
LucidDreamer's schedule (``splat_schedule=lucid``, the old CUDA default) through the real
pipeline, then trains each candidate ``SplatConfig`` on the same splat-stage views (the input
view + its jittered reprojections, built as the stage builds them) and scores it with the same
held-out evaluation.  Prints a table and writes ``DIR/splat_schedule.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def candidates():
    from engine.splat import SplatConfig

    fast = SplatConfig.fast()
    return {
        "lucid 2990 (old default)": SplatConfig(),
        "lucid schedule, 1000 it": replace(SplatConfig(), iterations=1000),
        "fast (new default)": fast,
        "fast, batch 1": replace(fast, batch_size=1),
        "fast, batch 8": replace(fast, batch_size=8),
        "fast, 300 it": replace(fast, iterations=300),
        "fast, 600 it": replace(fast, iterations=600),
        "fast, opacity 0.1": replace(fast, init_opacity=0.1),
        "fast, opacity 0.95": replace(fast, init_opacity=0.95),
        "fast, scale 1.0 x footprint": replace(fast, init_scale_mult=1.0),
        "fast, SH 3": replace(fast, sh_degree=3),
        "fast + densify 100..250": replace(fast, refine_start_iter=100, refine_every=50, refine_stop_iter=260),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--resolution", type=int, default=320)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "bench" / "out"))
    parser.add_argument("--only", nargs="*", help="candidate names to run (default: all)")
    parser.add_argument("--iterations", type=int, help="every candidate's steps (a CPU smoke test of this script)")
    args = parser.parse_args()
    from engine.__main__ import use_compile_caches

    use_compile_caches()  # gsplat's CUDA where `engine warmup` built it

    import torch

    from engine import cameras, pipeline, protocol
    from engine.evaluate import evaluate_views, load_example, write_job
    from engine.job import read_npz
    from engine.splat import TrainView, make_reprojection_views, train_gaussians

    out = args.out / "splat_schedule"
    job_dir = out / "job"
    example = load_example(ROOT / "examples" / "courtyard", args.resolution)
    job_args = argparse.Namespace(resolution=args.resolution, steps=0, seed=0, iterations=args.iterations or 0)
    write_job(job_dir, ROOT / "examples" / "courtyard", job_args)
    run = pipeline.make_run(job_dir, protocol.EventWriter(open(os.devnull, "w")), device=args.device)
    pipeline.run_job(run)  # the stages up to 3DGS (and the default 3DGS, unused here)

    expand = job_dir / "expand"
    points = pipeline._load_points(expand / "points.npz")
    data = read_npz(expand / "views.npz")
    view_cameras = [cameras.Camera.from_dict(c) for c in json.loads((expand / "views.json").read_text())["cameras"]]
    views = [TrainView(c, im.astype(np.float32), m) for c, im, m in zip(view_cameras, data["images"], data["masks"])]
    s = run.settings
    views += make_reprojection_views(points, view_cameras, per_camera=s.reprojections, jitter_deg=s.jitter_deg,
                                     seed=s.seed, device=args.device)
    rows = []
    for name, config in candidates().items():
        if args.only and name not in args.only:
            continue
        config = replace(config, seed=s.seed, max_gaussians=int(np.count_nonzero(data["masks"])),
                         iterations=args.iterations or config.iterations)
        stats: dict = {}
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        gaussians = train_gaussians(views, points, config, device=args.device, stats=stats)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        renders = out / "renders" / name.split(" ")[0]
        renders.mkdir(parents=True, exist_ok=True)
        scored = evaluate_views(example, gaussians, args.device, s.depth_edge_threshold, renders)
        row = {
            "name": name, "seconds": round(seconds, 2), "gaussians": len(gaussians),
            "psnr_covisible": float(np.nanmean([r["psnr"] for r in scored])),
            "ssim_covisible": float(np.nanmean([r["ssim"] for r in scored])),
            "config": asdict(config), "backend": stats.get("backend"),
        }
        rows.append(row)
        print(f"{name:32s} {row['psnr_covisible']:6.2f} dB  SSIM {row['ssim_covisible']:.3f}  {seconds:6.2f} s  "
              f"{len(gaussians)} Gaussians", flush=True)
        (out / "splat_schedule.json").write_text(json.dumps({
            "device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu",
            "date": time.strftime("%Y-%m-%d %H:%M"), "resolution": args.resolution, "views": len(views),
            "points": len(points.xyz), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
