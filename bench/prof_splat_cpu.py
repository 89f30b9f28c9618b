"""CPU training-iteration time of the torch rasterizer on a real job (render + masked loss + backward).

    python bench/prof_splat_cpu.py [JOB] [--threads 1] [--iters 6] [--profile]

JOB is a folder made by ``python -m engine generate ... --device cpu --resolution 160`` (default
/tmp/j2); the Gaussians are initialised from its expanded points as train_gaussians does.  Prints
the median seconds per phase over ``--iters`` iterations after one warm-up (the machine may be
shared: compare runs made back to back), and with ``--profile`` the top functions by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import cameras  # noqa: E402
from engine.job import read_npz  # noqa: E402
from engine.pointcloud import PointCloud  # noqa: E402
from engine.splat import SplatConfig  # noqa: E402
from engine.splat.rasterize import rasterize  # noqa: E402
from engine.splat.train import init_gaussians, masked_loss  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("job", nargs="?", default="/tmp/j2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=6)
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    job = Path(a.job)
    p = read_npz(job / "expand/points.npz")
    pts = PointCloud(p["xyz"], p["rgb"], p["radius"])
    d = read_npz(job / "expand/views.npz")
    cams = [cameras.Camera.from_dict(c) for c in json.loads((job / "expand/views.json").read_text())["cameras"]]
    cfg = SplatConfig.cpu_fast()
    g = init_gaussians(pts, sh_degree=cfg.sh_degree, opacity=cfg.init_opacity)
    params = {k: getattr(g, k).clone().requires_grad_(True) for k in ("means", "quats", "scales", "opacities", "sh0", "shN")}
    print(f"gaussians {len(pts)} views {len(cams)} {cams[0].width}x{cams[0].height} threads {torch.get_num_threads()}")

    def step(i: int) -> tuple[float, float, float]:
        cam = cams[i % len(cams)]
        target = torch.as_tensor(d["images"][i % len(cams)][..., :3], dtype=torch.float32)
        mask = torch.as_tensor(d["masks"][i % len(cams)])
        t0 = time.perf_counter()
        rgb, _, info = rasterize(
            params["means"], params["quats"], torch.exp(params["scales"]), torch.sigmoid(params["opacities"]),
            torch.cat([params["sh0"], params["shN"]], 1), torch.as_tensor(cam.world_to_camera, dtype=torch.float32),
            torch.as_tensor(cam.K, dtype=torch.float32), cam.width, cam.height, sh_degree=1, backend="torch",
            background=torch.zeros(3),
        )
        t1 = time.perf_counter()
        loss = masked_loss(rgb, target, mask, cfg.ssim_lambda)
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        for t in params.values():
            t.grad = None
        return t1 - t0, t2 - t1, t3 - t2

    step(0)
    prof = cProfile.Profile() if a.profile else None
    if prof:
        prof.enable()
    times = np.array([step(i + 1) for i in range(a.iters)])
    if prof:
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)
    render, loss, backward = np.median(times, 0)
    total = times.sum(1)
    print(f"s/iter median {np.median(total):.3f} min {total.min():.3f}  "
          f"(render {render:.3f}, loss {loss:.3f}, backward {backward:.3f})")


if __name__ == "__main__":
    main()
