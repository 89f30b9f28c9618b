"""Our pure-PyTorch rasterizer against gsplat.rasterization on CUDA: renders and gradients.

Run on a CUDA machine:  python bench/gsplat_agreement.py  [--tol-render 1e-3 --tol-grad 1e-2]
Prints one JSON object (also written to $OUT/gsplat_agreement.json when OUT is set) and exits
1 when a relative error is above its tolerance.

Errors are relative L2 norms, ||ours - gsplat|| / ||gsplat||, over the whole tensor, plus the
largest absolute difference divided by the largest gsplat magnitude.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.splat.rasterize import rasterize  # noqa: E402


def scene(n: int, width: int, height: int, seed: int, device: torch.device):
    """Random Gaussians inside a camera frustum, 1-6 px footprints, SH degree 3."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    f = 0.8 * width
    z = 2.0 + 6.0 * torch.rand(n, generator=g)
    x = (torch.rand(n, generator=g) - 0.5) * 1.2 * width / f * z
    y = (torch.rand(n, generator=g) - 0.5) * 1.2 * height / f * z
    means = torch.stack([x, y, z], -1)
    scales = (z / f)[:, None] * (0.5 + 2.5 * torch.rand(n, 3, generator=g))
    quats = torch.randn(n, 4, generator=g)
    opacities = 0.05 + 0.9 * torch.rand(n, generator=g)
    colors = 0.3 * torch.randn(n, 16, 3, generator=g)
    K = torch.tensor([[f, 0.0, width / 2 + 1.3], [0.0, f, height / 2 - 0.7], [0.0, 0.0, 1.0]])
    angle = 0.1 * seed
    viewmat = torch.eye(4)
    viewmat[:3, :3] = torch.tensor([[math.cos(angle), 0, math.sin(angle)], [0, 1, 0], [-math.sin(angle), 0, math.cos(angle)]])
    viewmat[:3, 3] = torch.tensor([0.05, -0.02, 0.1])
    tensors = [t.to(device) for t in (means, quats, scales, opacities, colors, viewmat, K)]
    return tensors


def rel(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    a, b = a.double(), b.double()
    return {
        "rel_l2": float((a - b).norm() / b.norm().clamp_min(1e-30)),
        "rel_max": float((a - b).abs().max() / b.abs().max().clamp_min(1e-30)),
    }


def compare(n: int, width: int, height: int, seed: int, device: torch.device, antialiased: bool = False) -> dict:
    means, quats, scales, opacities, colors, viewmat, K = scene(n, width, height, seed, device)
    g = torch.Generator(device="cpu").manual_seed(100 + seed)
    w_rgb = torch.rand(height, width, 3, generator=g).to(device)
    w_alpha = torch.rand(height, width, generator=g).to(device)
    w_depth = torch.rand(height, width, generator=g).to(device)
    out = {}
    for backend in ("gsplat", "torch"):
        leaves = [t.clone().requires_grad_(True) for t in (means, quats, scales, opacities, colors)]
        rgb, alpha, info = rasterize(*leaves, viewmat, K, width, height, sh_degree=3, backend=backend, with_depth=True,
                                    antialiased=antialiased)
        info["means2d"].retain_grad()
        depth = info["expected_depth"] * alpha  # accumulated depth, well-defined where alpha ~ 0
        loss = (rgb * w_rgb).sum() + (alpha * w_alpha).sum() + (depth * w_depth).sum()
        loss.backward()
        out[backend] = {
            "rgb": rgb.detach(), "alpha": alpha.detach(), "depth": depth.detach(),
            "radii": info["radii"][0].detach(), "means2d_grad": info["means2d"].grad[0],
            **{f"grad_{name}": leaf.grad for name, leaf in zip(("means", "quats", "scales", "opacities", "colors"), leaves)},
        }
    ours, ref = out["torch"], out["gsplat"]
    result = {"n": n, "width": width, "height": height, "seed": seed, "antialiased": antialiased,
              "radii_equal_fraction": float((ours["radii"] == ref["radii"]).all(-1).float().mean())}
    for key in ref:
        if key != "radii":
            result[key] = rel(ours[key], ref[key])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tol-render", type=float, default=1e-3, help="max rel_l2 for rgb/alpha/depth")
    parser.add_argument("--tol-grad", type=float, default=1e-2, help="max rel_l2 for gradients")
    args = parser.parse_args()
    from engine.__main__ import use_compile_caches

    use_compile_caches()  # gsplat's CUDA where `engine warmup` built it
    if not torch.cuda.is_available():
        print("gsplat_agreement needs CUDA (gsplat has no CPU rasterizer)", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    sizes = ((2000, 128, 96, 0), (20000, 256, 256, 1), (100000, 512, 512, 2))
    # Both image formations: classic, and the antialiased one the product trains with (Settings.antialiased).
    cases = [compare(n, w, h, seed, device, antialiased) for antialiased in (False, True) for n, w, h, seed in sizes]
    worst = {}
    for case in cases:
        for key, value in case.items():
            if isinstance(value, dict):
                key = f"{key} (antialiased)" if case["antialiased"] else key
                worst[key] = max(worst.get(key, 0.0), value["rel_l2"])
    failures = [key for key, value in worst.items()
                if value > (args.tol_render if key.split()[0] in ("rgb", "alpha", "depth") else args.tol_grad)]
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "tolerance": {"render": args.tol_render, "grad": args.tol_grad},
              "worst_rel_l2": worst, "failures": failures, "cases": cases}
    text = json.dumps(report, indent=2)
    print(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gsplat_agreement.json").write_text(text)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
