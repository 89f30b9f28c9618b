"""Times point rendering and depth alignment at 512² and 1024² on the CPU and (if present) CUDA.

    python bench/bench_geometry.py [--sizes 512 1024] [--repeats 10] [--json out.json]

Timings are end to end through the public interface (numpy in, numpy out, so host<->device
copies are included), median of ``--repeats`` runs after one warm-up.  Target (issue 4): render
and alignment each under 50 ms at 512² on the GPU.  Also checks that CUDA agrees with the CPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine.align import align_depth  # noqa: E402
from engine.cameras import Camera, intrinsics_from_fov, look_at  # noqa: E402
from engine.pointcloud import render_points, unproject  # noqa: E402


def scene(size: int):
    """An input view (a slanted wall with a box in front), its points, and a moved camera."""
    source = Camera(intrinsics_from_fov(size, size, 60.0), np.eye(4), size, size)
    cols = np.linspace(0.0, 1.0, size, dtype=np.float32)
    depth = np.tile(4.0 + 0.5 * cols, (size, 1))  # [H, W]
    box = slice(size * 3 // 8, size * 5 // 8)
    depth[box, box] = 2.0
    rng = np.random.default_rng(0)
    image = rng.random((size, size, 3), dtype=np.float32)
    points = unproject(source, image, depth)
    target = source.with_pose(look_at([0.3, 0.05, 0.0], [0.0, 0.0, 3.0]))
    return points, target


def timed(function, repeats: int, device: str) -> float:
    """Median wall time in ms (one warm-up run first)."""
    function()
    samples = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        function()
        if device == "cuda":
            torch.cuda.synchronize()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for size in args.sizes:
        points, target = scene(size)
        reference = render_points(points, target)
        # A "new view" depth: the rendered one, 20 % too far, with the holes filled at 4.2 m.
        new_depth = np.where(reference.hole_mask, 4.2, reference.depth).astype(np.float32) * 1.2
        for device in devices:
            render_ms = timed(lambda: render_points(points, target, device=device), args.repeats, device)
            align_ms = timed(
                lambda: align_depth(new_depth, reference.depth, reference.hole_mask, target, device=device),
                args.repeats,
                device,
            )
            row = {
                "size": size,
                "device": device,
                "points": len(points),
                "hole_fraction": round(float(reference.hole_mask.mean()), 4),
                "render_ms": round(render_ms, 2),
                "align_ms": round(align_ms, 2),
            }
            if device == "cuda":
                gpu = render_points(points, target, device="cuda")
                cpu_aligned, _ = align_depth(new_depth, reference.depth, reference.hole_mask, target)
                gpu_aligned, _ = align_depth(new_depth, reference.depth, reference.hole_mask, target, device="cuda")
                row["render_index_equal"] = bool(np.array_equal(gpu.index, reference.index))
                row["align_max_rel_diff"] = float(np.max(np.abs(gpu_aligned - cpu_aligned) / np.maximum(cpu_aligned, 1e-6)))
            rows.append(row)

    name = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    print(f"device: {name}; torch {torch.__version__}; CPU threads {torch.get_num_threads()}")
    print(f"{'size':>6} {'device':>6} {'points':>9} {'holes':>6} {'render ms':>10} {'align ms':>9}  agreement")
    for row in rows:
        agreement = ""
        if row["device"] == "cuda":
            agreement = f"index equal: {row['render_index_equal']}, align max rel diff {row['align_max_rel_diff']:.1e}"
        print(
            f"{row['size']:>6} {row['device']:>6} {row['points']:>9} {row['hole_fraction']:>6.3f} "
            f"{row['render_ms']:>10.2f} {row['align_ms']:>9.2f}  {agreement}"
        )
    if args.json:
        args.json.write_text(json.dumps({"device": name, "torch": torch.__version__, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
