"""How much compositing order alone changes a job's render (CPU, our torch rasterizer).

    .venv/bin/python bench/composite_order.py JOB [--radius 3.6]

The engine (like gsplat) composites each pixel front to back by the Gaussians' centre depths;
Cycles composites the imported ellipsoid meshes in the order a ray enters them, about
``radius`` sigma in front of each centre along the view.  Renders the job's Gaussians at its
input camera both ways and prints the PSNR between them: a high figure means the order is not
what keeps Cycles from matching the engine (issue 12).
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

RASTERIZE = sys.modules["engine.splat.rasterize"]


def render(g, camera: Camera, depth_offset: torch.Tensor) -> torch.Tensor:
    """The torch rasterizer's render with every Gaussian sorted at ``depth - depth_offset``."""
    composite = RASTERIZE._composite_camera

    def shifted(means2d, conics, depths, radii, opacities, feats, width, height):
        return composite(means2d, conics, depths - depth_offset, radii, opacities, feats, width, height)

    RASTERIZE._composite_camera = shifted
    try:
        colors = torch.cat([g.sh0, g.shN], 1)
        with torch.no_grad():
            rgb, _, _ = RASTERIZE.rasterize(
                g.means, g.quats, g.scales.exp(), torch.sigmoid(g.opacities), colors,
                torch.tensor(camera.world_to_camera, dtype=torch.float32), torch.tensor(camera.K, dtype=torch.float32),
                camera.width, camera.height, sh_degree=math.isqrt(colors.shape[1]) - 1, backend="torch",
                antialiased=g.antialiased)
    finally:
        RASTERIZE._composite_camera = composite
    return rgb.clamp(0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job", type=Path)
    parser.add_argument("--radius", type=float, default=3.6, help="mesh radius in sigmas (the add-on's MESH_RADIUS)")
    args = parser.parse_args()
    g = read_gaussians_ply(args.job / "gaussians.ply")
    camera = Camera.from_dict(json.loads((args.job / "camera.json").read_text()))
    rotation = RASTERIZE.quat_to_rotmat(g.quats)
    covariance = rotation @ torch.diag_embed(g.scales.exp() ** 2) @ rotation.transpose(1, 2)
    axis = torch.tensor(camera.world_to_camera, dtype=torch.float32)[2, :3]  # the view direction, world
    sigma_along = torch.sqrt(torch.einsum("i,nij,j->n", axis, covariance, axis))
    centre_order = render(g, camera, torch.zeros_like(sigma_along))
    entry_order = render(g, camera, args.radius * sigma_along)
    mse = float(((entry_order - centre_order) ** 2).mean())
    print(f"{len(g.means)} Gaussians, {camera.width}x{camera.height}: entry order ({args.radius} sigma) vs centre order "
          f"PSNR {10 * math.log10(1 / max(mse, 1e-20)):.2f} dB")


if __name__ == "__main__":
    main()
