"""Pay the first-run costs at set-up: build gsplat's CUDA kernels and check that they render.

``python -m engine warmup`` (Set up engine runs it last).  gsplat ships its CUDA as sources that
PyTorch compiles on first import (70-90 s on an H100 host); the build lands in the engine's cache
(``TORCH_EXTENSIONS_DIR``, set by ``engine.__main__``), so no Generate pays it.  Where it cannot be
built (no CUDA toolkit), the result says so and training will use the PyTorch rasterizer.
"""

from __future__ import annotations

import argparse
import time

from . import protocol


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))


def render_check(device: str, backend: str) -> float:
    """One small batched render (2 cameras) through ``backend``; returns its alpha sum (> 0 when it drew)."""
    import torch

    from .splat.rasterize import rasterize

    n = 64
    g = torch.Generator().manual_seed(0)
    means = (torch.rand(n, 3, generator=g) - 0.5) * torch.tensor([1.0, 1.0, 0.2]) + torch.tensor([0.0, 0.0, 3.0])
    quats = torch.zeros(n, 4)
    quats[:, 0] = 1
    viewmats = torch.eye(4).repeat(2, 1, 1)
    viewmats[1, 0, 3] = 0.1
    K = torch.tensor([[40.0, 0, 16], [0, 40.0, 16], [0, 0, 1]]).repeat(2, 1, 1)
    _, alpha, _ = rasterize(*(t.to(device) for t in (means, quats, torch.full((n, 3), 0.05), torch.full((n,), 0.8),
                                                   torch.rand(n, 3, generator=g), viewmats, K)),
                            32, 32, backend=backend)
    return float(alpha.sum())


def main(args: argparse.Namespace, events: protocol.EventWriter) -> int:
    from .__main__ import resolve_device
    from .splat.rasterize import gsplat_problem, rasterizer_report, resolve_backend

    device = resolve_device(args.device)
    started = time.perf_counter()
    if device.startswith("cuda"):
        events.emit("progress", stage="warmup", fraction=0.0, message="building gsplat's CUDA kernels (once)")
        gsplat_problem()  # builds or loads them
    built_s = time.perf_counter() - started
    backend = resolve_backend("auto", device)
    drawn = render_check(device, backend)
    report = rasterizer_report() if device.startswith("cuda") else {"rasterizer": "torch", "reason": "CPU device"}
    events.emit("result", outputs={}, device=device, **report, build_seconds=round(built_s, 2),
                check_alpha_sum=round(drawn, 3), seconds=round(time.perf_counter() - started, 2))
    return protocol.EXIT_OK if drawn > 0 else protocol.EXIT_FAILED
