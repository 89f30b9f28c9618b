"""Which image formation lets a ray tracer (Cycles) reproduce the engine's antialiased render (CPU).

    .venv/bin/python bench/cycles_image_formation.py JOB [--samples 128] [--json FILE]

The engine (gsplat's antialiased mode) blurs every Gaussian by ``eps2d`` px^2 in the image, scales
its opacity by ``sqrt(det S / det(S + eps2d I))`` and point-samples pixel centres.  A ray tracer
evaluates each Gaussian without blur and its pixel filter blurs the *composited* image instead; the
two agree for one Gaussian but not where Gaussians overlap.  This renders the job's Gaussians at
its input camera with our torch rasterizer as

* ``reference``: the engine's render;
* ``filter only``: no per-Gaussian blur, the whole eps2d as a Gaussian pixel filter (what the
  add-on's one-click settings give Cycles today), integrated with ``--samples`` filter samples;
* ``dilated, filter F``: each Gaussian dilated *in 3D* (isotropically, by ``(eps2d - F) (z / f)^2``,
  z its centre's depth, f the focal length in pixels, what a node tree can compute) with the
  antialiased opacity factor of the dilation it gets, then a Gaussian pixel filter of variance F
  (0: point sampling);

and prints each one's PSNR against the reference: which Cycles set-up can reach the issue's 35 dB.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import engine.splat.rasterize  # noqa: E402, F401  (the module; the package exports its function)
from engine.cameras import Camera  # noqa: E402
from engine.export import read_gaussians_ply  # noqa: E402
from engine.gaussian_math import EPS2D  # noqa: E402

RASTERIZE = sys.modules["engine.splat.rasterize"]
NO_BLUR = 1e-4  # px^2: keeps the 2D covariance invertible, far below a pixel


def render(g, camera: Camera, scales, opacities, eps2d, antialiased, offset=(0.0, 0.0)) -> torch.Tensor:
    """One point-sampled render, pixel centres moved by ``offset`` px."""
    K = torch.tensor(camera.K, dtype=torch.float32).clone()
    K[0, 2] -= offset[0]
    K[1, 2] -= offset[1]
    colors = torch.cat([g.sh0, g.shN], 1)
    with torch.no_grad():
        rgb, _, _ = RASTERIZE.rasterize(
            g.means, g.quats, scales, opacities, colors, torch.tensor(camera.world_to_camera, dtype=torch.float32), K,
            camera.width, camera.height, sh_degree=math.isqrt(colors.shape[1]) - 1, backend="torch",
            eps2d=eps2d, antialiased=antialiased)
    return rgb.clamp(0, 1)


def filtered(g, camera, scales, opacities, variance, samples, seed=0) -> torch.Tensor:
    """The pixel-filtered render: the mean over ``samples`` pixel positions drawn from a Gaussian of
    ``variance`` px^2 (Cycles importance-samples its filter the same way), stratified in the plane."""
    if variance <= 0:
        return render(g, camera, scales, opacities, NO_BLUR, False)
    side = math.isqrt(samples)
    generator = torch.Generator().manual_seed(seed)
    u = (torch.arange(side * side) % side + torch.rand(side * side, generator=generator)) / side
    v = (torch.arange(side * side) // side + torch.rand(side * side, generator=generator)) / side
    normal = torch.distributions.Normal(0.0, 1.0)
    dx = normal.icdf(u.clamp(1e-6, 1 - 1e-6)) * math.sqrt(variance)
    dy = normal.icdf(v.clamp(1e-6, 1 - 1e-6)) * math.sqrt(variance)
    total = 0
    for x, y in zip(dx.tolist(), dy.tolist()):
        total = total + render(g, camera, scales, opacities, NO_BLUR, False, (x, y))
    return total / len(dx)


def dilated(g, camera: Camera, blur: float):
    """Scales and opacities of every Gaussian dilated in 3D by ``blur (z / f)^2`` (isotropic: each axis
    sigma^2 + s^2, as the rotation commutes with it) and its opacity scaled by the antialiased factor
    sqrt(det S / det S') of the 2D covariances before and after, projected exactly as the engine does."""
    viewmat = torch.tensor(camera.world_to_camera, dtype=torch.float32)
    K = torch.tensor(camera.K, dtype=torch.float32)
    z = (g.means @ viewmat[:3, :3].T + viewmat[:3, 3])[:, 2].clamp_min(1e-6)
    focal = float(K[0, 0] * K[1, 1]) ** 0.5
    scales = g.scales.exp()
    grown = torch.sqrt(scales ** 2 + (blur * (z / focal) ** 2)[:, None])
    ones = torch.ones(len(z))

    def det2d(s):
        _, conics, _, _, _ = RASTERIZE.project(g.means, g.quats, s, ones, viewmat, K, camera.width, camera.height,
                                               eps2d=NO_BLUR)
        a, b, c = conics.unbind(-1)
        return 1.0 / (a * c - b * b).clamp_min(1e-30)  # det of the covariance = 1 / det of the conic

    factor = torch.sqrt((det2d(scales) / det2d(grown)).clamp(0, 1))
    return grown, torch.sigmoid(g.opacities) * factor


def psnr(a, b) -> float:
    return 10 * math.log10(1 / max(float(((a - b) ** 2).mean()), 1e-20))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job", type=Path)
    parser.add_argument("--samples", type=int, default=128, help="pixel-filter samples (a square number)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    g = read_gaussians_ply(args.job / "gaussians.ply")
    camera = Camera.from_dict(json.loads((args.job / "camera.json").read_text()))
    scales, opacities = g.scales.exp(), torch.sigmoid(g.opacities)
    reference = render(g, camera, scales, opacities, EPS2D, True)
    rows = {"filter only (Gaussian 0.3 px^2, today's one-click settings)":
            filtered(g, camera, scales, opacities, EPS2D, args.samples)}
    for pixel_filter in (0.0, EPS2D / 4, EPS2D / 2):
        s, o = dilated(g, camera, EPS2D - pixel_filter)
        rows[f"dilated in 3D by {EPS2D - pixel_filter:.3f} (z/f)^2, filter {pixel_filter:.3f} px^2"] = \
            filtered(g, camera, s, o, pixel_filter, args.samples)
    result = {"job": str(args.job), "gaussians": len(g.means), "size": [camera.width, camera.height],
              "samples": args.samples, "psnr_vs_reference": {name: round(psnr(image, reference), 2) for name, image in rows.items()}}
    for name, value in result["psnr_vs_reference"].items():
        print(f"{value:6.2f} dB  {name}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
