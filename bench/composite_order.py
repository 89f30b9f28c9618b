"""How much the order a ray tracer meets the Gaussians in changes a job's render (CPU).

    .venv/bin/python bench/composite_order.py JOB [--size 224] [--pixels 2000] [--radius 3.6]

The engine (like gsplat) composites each pixel front to back by the Gaussians' centre depths
(camera z).  A ray tracer composites in the order its ray hits the geometry that carries each
Gaussian: the add-on's ellipsoid meshes (``radius`` sigma) were entered at a depth that depends on
where the ray passes the Gaussian; its camera-facing quads (gen3d_addon/importers.py) lie at the
centres' depths, so a ray meets them in centre-depth order (t = z / ray z).  For ``--pixels`` random pixels of the input camera (``--size`` px on the long
side) this composites every Gaussian the pixel-centre ray meets exactly (its peak along the ray,
opacity-scaled, clamped and cut as the engine does; DC colour) in both orders and prints each
one's PSNR against the engine's own render of the job (our torch rasterizer, point-sampled, no
2D blur): centre depth (the quads) checks that the model is the engine's; ellipsoid entry is
what Cycles showed with the ellipsoid meshes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import colour  # noqa: E402
from engine.cameras import Camera  # noqa: E402
from engine.gaussian_math import SH_C0  # noqa: E402
from engine.sky import read_world  # noqa: E402
from engine.splat.rasterize import rasterize  # noqa: E402

NO_BLUR = 1e-4  # px^2: keeps the 2D covariance invertible, far below a pixel
ALPHA_CUT, ALPHA_MAX = 1 / 255, 0.999


def engine_render(g, camera: Camera) -> np.ndarray:
    with torch.no_grad():
        rgb, _, _ = rasterize(g.means, g.quats, g.scales.exp(), torch.sigmoid(g.opacities), g.sh0,
                              torch.tensor(camera.world_to_camera, dtype=torch.float32),
                              torch.tensor(camera.K, dtype=torch.float32), camera.width, camera.height,
                              sh_degree=0, backend="torch", eps2d=NO_BLUR, antialiased=False)
    return colour.linear_to_srgb(rgb.clamp(0, 1).numpy())


def ray_composites(g, camera: Camera, pixels: np.ndarray, radius: float) -> dict[str, np.ndarray]:
    """Each pixel's display colour composited by centre depth and by ellipsoid entry."""
    to_camera = np.asarray(camera.world_to_camera, np.float64)
    means = g.means.double().numpy() @ to_camera[:3, :3].T + to_camera[:3, 3]
    quats = torch.nn.functional.normalize(g.quats.double(), dim=1).numpy()
    w, x, y, z = quats.T
    rotation = np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                         2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                         2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], 1).reshape(-1, 3, 3)
    rotation = to_camera[:3, :3] @ rotation  # camera-frame axes
    sigma = g.scales.double().exp().numpy()
    opacity = torch.sigmoid(g.opacities.double()).numpy()
    rgb = np.clip(0.5 + SH_C0 * g.sh0.double().numpy()[:, 0], 0, None)
    inverse_K = np.linalg.inv(camera.K)
    out = {name: np.zeros((len(pixels), 3)) for name in ("centre depth (quads)", "ellipsoid entry")}
    for k, (px, py) in enumerate(pixels):
        ray = inverse_K @ np.array([px + 0.5, py + 0.5, 1.0])
        ray /= np.linalg.norm(ray)
        origin = np.einsum("nji,nj->ni", rotation, -means) / sigma  # the camera in each Gaussian's standard frame
        direction = np.einsum("nji,j->ni", rotation, ray) / sigma
        length = np.linalg.norm(direction, axis=1)
        unit = direction / length[:, None]
        along = (origin * unit).sum(1)
        b2 = (origin * origin).sum(1) - along ** 2
        alpha = np.minimum(opacity * np.exp(-0.5 * b2), ALPHA_MAX)
        met = (alpha >= ALPHA_CUT) & (means[:, 2] > 0.01)
        entry = (-along - np.sqrt(np.maximum(radius ** 2 - b2, 0))) / length
        for name, key in (("centre depth (quads)", means[:, 2]), ("ellipsoid entry", entry)):
            index = np.nonzero(met)[0]
            transmittance, total = 1.0, np.zeros(3)
            for i in index[np.argsort(key[index], kind="stable")]:
                total += transmittance * alpha[i] * rgb[i]
                transmittance *= 1 - alpha[i]
                if transmittance < 1e-4:
                    break
            out[name][k] = colour.linear_to_srgb(np.clip(total, 0, 1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job", type=Path)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--pixels", type=int, default=2000)
    parser.add_argument("--radius", type=float, default=3.6, help="the ellipsoid meshes' radius in sigmas")
    args = parser.parse_args()
    g = read_world(args.job)
    client = Camera.from_dict(json.loads((args.job / "camera.json").read_text()))
    scale = args.size / max(client.width, client.height)
    camera = client.with_pose(np.eye(4), "input").resized(round(client.width * scale), round(client.height * scale))
    reference = engine_render(g, camera)
    rng = np.random.default_rng(0)
    pixels = np.stack([rng.integers(0, camera.width, args.pixels), rng.integers(0, camera.height, args.pixels)], 1)
    want = reference[pixels[:, 1], pixels[:, 0]]
    print(f"{len(g.means)} Gaussians, {camera.width}x{camera.height}, {args.pixels} random pixels, PSNR against the engine:")
    for name, got in ray_composites(g, camera, pixels, args.radius).items():
        print(f"  {name:22s} {10 * math.log10(1 / max(float(((got - want) ** 2).mean()), 1e-20)):6.2f} dB")


if __name__ == "__main__":
    main()
