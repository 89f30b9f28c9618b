"""3DGS throughput: our training step vs a bare gsplat loop (CUDA), and our CPU rasterizer.

    python bench/bench_splat.py                # CUDA part (if a GPU is there) + CPU part
    python bench/bench_splat.py --cpu-only     # the CPU rasterizer only (128x128)

CUDA: steps/s and peak memory for 100k / 500k / 1M Gaussians at 512x512, SH degree 3, the same
Gaussians and target for both loops.  "bare" is gsplat.rasterization + (0.8 L1 + 0.2 (1-SSIM))
+ Adam, nothing else; "ours" is engine.splat.train_gaussians (masked loss, lr schedule,
DefaultStrategy bookkeeping; densification off so both keep the same Gaussians).
CPU: our torch rasterizer at 128x128 (50k Gaussians by default), forward and forward+backward.
Prints tables; writes $OUT/bench_splat.json when OUT is set.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine.cameras import Camera  # noqa: E402
from engine.splat import Gaussians, SplatConfig, TrainView, rasterize, train_gaussians  # noqa: E402
from engine.splat.ssim import ssim_map  # noqa: E402
from gsplat_agreement import scene  # noqa: E402


def make_gaussians(n: int, size: int, device: torch.device) -> tuple[Gaussians, Camera]:
    means, quats, scales, opacities, colors, viewmat, K = scene(n, size, size, seed=0, device=torch.device("cpu"))
    g = Gaussians(means=means, quats=quats, scales=torch.log(scales),
                  opacities=torch.logit(opacities), sh0=colors[:, :1].contiguous(), shN=colors[:, 1:].contiguous())
    return g.to(device), Camera(K.numpy(), viewmat.numpy(), size, size)


def bare_gsplat(g: Gaussians, camera: Camera, target: torch.Tensor, warmup: int, steps: int, lrs: dict) -> dict:
    from gsplat import rasterization

    device = g.device
    params = {k: torch.nn.Parameter(getattr(g, k).clone()) for k in lrs}
    opts = [torch.optim.Adam([params[k]], lr=lr, eps=1e-15) for k, lr in lrs.items()]
    viewmat = torch.as_tensor(camera.world_to_camera, dtype=torch.float32, device=device)[None]
    K = torch.as_tensor(camera.K, dtype=torch.float32, device=device)[None]
    torch.cuda.reset_peak_memory_stats()
    for step in range(warmup + steps):
        if step == warmup:
            torch.cuda.synchronize()
            start = time.perf_counter()
        rgb, _, info = rasterization(
            params["means"], params["quats"], torch.exp(params["scales"]), torch.sigmoid(params["opacities"]),
            torch.cat([params["sh0"], params["shN"]], 1), viewmat, K, camera.width, camera.height,
            sh_degree=3, packed=False,
        )
        rgb = rgb[0]
        loss = 0.8 * (rgb - target).abs().mean() + 0.2 * (1 - ssim_map(rgb, target).mean())
        loss.backward()
        for opt in opts:
            opt.step()
            opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"steps_per_s": steps / seconds, "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30}


def ours(g: Gaussians, camera: Camera, target: np.ndarray, warmup: int, steps: int, stats: bool) -> dict:
    config = replace(SplatConfig(), iterations=warmup + steps, sh_degree=3, sh_degree_interval=1,
                     refine_start_iter=10**9, backend="gsplat", progress_every=warmup)
    if stats:  # DefaultStrategy's per-step statistics on, its refinements made no-ops (N stays fixed)
        config = replace(config, refine_start_iter=0, refine_every=warmup + steps - 1, grow_grad2d=1e9,
                         prune_opa=0.0, prune_scale3d=1e9)
    marks = []

    def progress(_fraction: float) -> None:
        torch.cuda.synchronize()
        marks.append(time.perf_counter())

    points = type("Points", (), {"xyz": g.means.cpu().numpy()})()
    view = TrainView(camera, target, np.ones(target.shape[:2], bool))
    torch.cuda.reset_peak_memory_stats()
    train_gaussians([view], points, config, device=g.device, init=g, progress=progress)
    return {"steps_per_s": steps / (marks[-1] - marks[0]), "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30}


def gpu_bench(sizes: list[int], resolution: int, warmup: int, steps: int) -> list[dict]:
    device = torch.device("cuda")
    cfg = SplatConfig()
    rows = []
    for n in sizes:
        g, camera = make_gaussians(n, resolution, device)
        target = torch.rand(resolution, resolution, 3, generator=torch.Generator().manual_seed(1)).to(device)
        lrs = {"means": cfg.means_lr, "quats": cfg.quats_lr, "scales": cfg.scales_lr,
               "opacities": cfg.opacities_lr, "sh0": cfg.sh0_lr, "shN": cfg.shN_lr}
        bare = bare_gsplat(g, camera, target, warmup, steps, lrs)
        torch.cuda.empty_cache()
        mine = ours(g, camera, target.cpu().numpy(), warmup, steps, stats=False)
        torch.cuda.empty_cache()
        refining = ours(g, camera, target.cpu().numpy(), warmup, steps, stats=True)
        torch.cuda.empty_cache()
        rows.append({"gaussians": n, "resolution": resolution, "bare_steps_per_s": bare["steps_per_s"],
                     "ours_steps_per_s": mine["steps_per_s"], "slowdown": bare["steps_per_s"] / mine["steps_per_s"],
                     "ours_stats_steps_per_s": refining["steps_per_s"],
                     "stats_slowdown": bare["steps_per_s"] / refining["steps_per_s"],
                     "bare_peak_mem_gib": bare["peak_mem_gib"], "ours_peak_mem_gib": mine["peak_mem_gib"]})
    return rows


def cpu_bench(n: int, resolution: int, repeats: int) -> dict:
    device = torch.device("cpu")
    g, camera = make_gaussians(n, resolution, device)
    viewmat = torch.as_tensor(camera.world_to_camera, dtype=torch.float32)
    K = torch.as_tensor(camera.K, dtype=torch.float32)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    forward, train = [], []
    for _ in range(repeats):
        leaves = [t.clone().requires_grad_(True) for t in (g.means, g.quats, g.scales, g.opacities, g.colors())]
        start = time.perf_counter()
        with torch.no_grad():
            rasterize(leaves[0], leaves[1], torch.exp(leaves[2]), torch.sigmoid(leaves[3]), leaves[4], viewmat, K,
                      resolution, resolution, sh_degree=3, backend="torch")
        forward.append(time.perf_counter() - start)
        start = time.perf_counter()
        rgb, alpha, _ = rasterize(leaves[0], leaves[1], torch.exp(leaves[2]), torch.sigmoid(leaves[3]), leaves[4],
                                  viewmat, K, resolution, resolution, sh_degree=3, backend="torch")
        (rgb.sum() + alpha.sum()).backward()
        train.append(time.perf_counter() - start)
    return {"gaussians": n, "resolution": resolution, "threads": torch.get_num_threads(),
            "forward_s": statistics.median(forward), "forward_backward_s": statistics.median(train),
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "peak_rss_before_gib": rss_before / 2**20}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-only", action="store_true")
    parser.add_argument("--sizes", default="100000,500000,1000000", help="Gaussian counts for the CUDA part")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--cpu-gaussians", type=int, default=50000)
    parser.add_argument("--cpu-resolution", type=int, default=128)
    parser.add_argument("--cpu-repeats", type=int, default=3)
    parser.add_argument("--cpu-threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    from engine.__main__ import use_compile_caches

    use_compile_caches()  # gsplat's CUDA where `engine warmup` built it
    if args.cpu_threads:
        torch.set_num_threads(args.cpu_threads)
    report: dict = {"torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    if not args.cpu_only and torch.cuda.is_available():
        report["device"] = torch.cuda.get_device_name()
        rows = gpu_bench([int(s) for s in args.sizes.split(",")], args.resolution, args.warmup, args.steps)
        report["gpu"] = rows
        print(f"\n3DGS training step, {args.resolution}x{args.resolution}, SH 3, {report['device']}")
        print(f"{'gaussians':>10} {'bare it/s':>10} {'ours it/s':>10} {'ours/bare time':>15} "
              f"{'ours+stats it/s':>16} {'(+stats)/bare':>14} {'bare GiB':>9} {'ours GiB':>9}")
        for r in rows:
            print(f"{r['gaussians']:>10} {r['bare_steps_per_s']:>10.1f} {r['ours_steps_per_s']:>10.1f} "
                  f"{r['slowdown']:>15.3f} {r['ours_stats_steps_per_s']:>16.1f} {r['stats_slowdown']:>14.3f} "
                  f"{r['bare_peak_mem_gib']:>9.2f} {r['ours_peak_mem_gib']:>9.2f}")
    cpu = cpu_bench(args.cpu_gaussians, args.cpu_resolution, args.cpu_repeats)
    report["cpu"] = cpu
    print(f"\nCPU torch rasterizer, {cpu['resolution']}x{cpu['resolution']}, {cpu['gaussians']} Gaussians, "
          f"SH 3, {cpu['threads']} threads: forward {cpu['forward_s'] * 1e3:.0f} ms, "
          f"forward+backward {cpu['forward_backward_s'] * 1e3:.0f} ms, peak RSS {cpu['peak_rss_gib']:.2f} GiB")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "bench_splat.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
