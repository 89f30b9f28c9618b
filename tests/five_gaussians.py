"""A controlled scene of five Gaussians (round, stretched, flat face-on, flat edge-on, half
transparent), or of two where compositing order matters, written as a job folder: gaussians.ply
in the engine world plus camera.json."""

import json
import math
from pathlib import Path

import numpy as np
import torch

from engine import colour
from engine.cameras import Camera
from engine.export import write_gaussians_ply
from engine.splat.gaussians import Gaussians, rgb_to_sh0

WIDTH, HEIGHT, FOCAL = 160, 96, 120.0
# centre (engine world = input camera frame, metres), sigmas, rotation about z (deg), opacity, display colour
FIVE = [
    ((-1.6, -0.5, 4.0), (0.1, 0.1, 0.1), 0, 0.9, (0.9, 0.3, 0.2)),  # round
    ((0.0, -0.5, 4.0), (0.25, 0.05, 0.05), 30, 0.7, (0.2, 0.8, 0.3)),  # stretched, turned in the image
    ((1.6, -0.5, 4.0), (0.15, 0.15, 0.005), 0, 0.7, (0.9, 0.9, 0.2)),  # flat disc, face-on
    ((-0.8, 0.6, 4.0), (0.04, 0.2, 0.2), 0, 0.7, (0.3, 0.5, 0.9)),  # flat disc, edge-on
    ((0.8, 0.6, 4.0), (0.12, 0.12, 0.12), 0, 0.5, (0.8, 0.8, 0.8)),  # half transparent
]


# Where compositing order decides what shows: a small red Gaussian in front of the centre of a
# large blue one whose 3.6 sigma surface reaches 1.1 m nearer than the red one's centre, so a ray
# enters the blue ellipsoid first although the engine composites the red one first.
IN_FRONT = [
    ((0.0, 0.0, 4.0), (0.3, 0.3, 0.3), 0, 0.9, (0.9, 0.2, 0.2)),
    ((0.6, 0.0, 5.0), (0.9, 0.7, 0.6), 0, 0.9, (0.2, 0.3, 0.9)),
]


def gaussians(antialiased: bool = False, table=FIVE) -> Gaussians:
    means = torch.tensor([f[0] for f in table], dtype=torch.float32)
    sigmas = torch.tensor([f[1] for f in table], dtype=torch.float32)
    half = torch.tensor([math.radians(f[2]) / 2 for f in table])
    quats = torch.stack([half.cos(), 0 * half, 0 * half, half.sin()], 1)
    opacity = torch.tensor([f[3] for f in table])
    display = torch.tensor([f[4] for f in table])
    return Gaussians(means=means, quats=quats, scales=sigmas.log(), opacities=torch.logit(opacity),
                     sh0=rgb_to_sh0(colour.srgb_to_linear(display)), shN=torch.zeros(len(table), 0, 3), antialiased=antialiased)


def write_job(folder: Path, antialiased: bool = False, table=FIVE) -> Path:
    """The job folder; the input camera stands 1 m above Blender's origin looking along +Y.
    ``antialiased``: the Gaussians' PLY says they render in gsplat's antialiased mode.
    ``table``: FIVE, or IN_FRONT."""
    folder.mkdir(parents=True, exist_ok=True)
    write_gaussians_ply(folder / "gaussians.ply", gaussians(antialiased, table))
    K = np.array([[FOCAL, 0, WIDTH / 2], [0, FOCAL, HEIGHT / 2], [0, 0, 1]])
    camera_to_world = np.array([[1.0, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 1], [0, 0, 0, 1]])  # OpenCV axes in Blender's world
    camera = Camera(K, np.linalg.inv(camera_to_world), WIDTH, HEIGHT, "input")
    (folder / "camera.json").write_text(json.dumps(camera.to_dict()), encoding="utf-8")
    return folder
