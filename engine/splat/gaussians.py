"""The trained scene: 3D Gaussians stored pre-activation, as the 3DGS reference stores them."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor

from .. import colour
from ..cameras import Camera
from ..gaussian_math import SH_C0
from .rasterize import rasterize


def rgb_to_sh0(rgb: Tensor) -> Tensor:
    """Colours [N, 3] in [0, 1] -> DC coefficients [N, 1, 3] (inverse of ``C0 * dc + 0.5``)."""
    return ((rgb - 0.5) / SH_C0)[:, None, :]


def _map(value, function):
    return function(value) if isinstance(value, Tensor) else value


def sh_coeff_count(degree: int) -> int:
    return (degree + 1) ** 2


@dataclass
class SplatRender:
    image: np.ndarray  # [H, W, 3] float32 display (sRGB-encoded) colours, clipped to [0, 1]
    alpha: np.ndarray  # [H, W] float32 accumulated opacity
    depth: np.ndarray  # [H, W] float32 expected camera z-depth; 0 where alpha < depth_min_alpha


@dataclass
class Gaussians:
    means: Tensor  # [N, 3] world positions
    quats: Tensor  # [N, 4] rotations, wxyz, not necessarily normalised
    scales: Tensor  # [N, 3] log standard deviations
    opacities: Tensor  # [N] opacity logits
    sh0: Tensor  # [N, 1, 3] SH DC coefficients
    shN: Tensor  # [N, (d+1)^2 - 1, 3] higher-order SH coefficients (may be [N, 0, 3])
    # The image formation they were trained under: gsplat's "antialiased" mode (the 0.3 px^2 blur keeps
    # each Gaussian's coverage, as a pixel filter does) or "classic"; renders use the same.
    antialiased: bool = False

    def __len__(self) -> int:
        return int(self.means.shape[0])

    @property
    def sh_degree(self) -> int:
        return int(round(math.sqrt(self.shN.shape[1] + 1))) - 1

    @property
    def device(self) -> torch.device:
        return self.means.device

    def to(self, device: torch.device | str) -> "Gaussians":
        return Gaussians(**{f.name: _map(getattr(self, f.name), lambda t: t.to(device)) for f in fields(self)})

    def detach(self) -> "Gaussians":
        return Gaussians(**{f.name: _map(getattr(self, f.name), Tensor.detach) for f in fields(self)})

    def colors(self) -> Tensor:
        return torch.cat([self.sh0, self.shN], dim=1)  # [N, K, 3]

    @torch.no_grad()
    def render(
        self,
        camera: Camera,
        device: torch.device | str | None = None,
        *,
        sh_degree: int | None = None,
        background: tuple[float, float, float] | None = None,
        backend: str = "auto",
        depth_min_alpha: float = 0.5,
        antialiased: bool | None = None,
    ) -> SplatRender:
        """Render colour (sRGB-encoded, what the loss saw), alpha and expected depth at ``camera``
        (numpy results); ``background`` is a display colour."""
        g = self.to(device) if device is not None else self
        dev = g.device
        dtype = g.means.dtype
        rgb, alpha, info = rasterize(
            g.means, g.quats, torch.exp(g.scales), torch.sigmoid(g.opacities), g.colors(),
            torch.as_tensor(camera.world_to_camera, dtype=dtype, device=dev),
            torch.as_tensor(camera.K, dtype=dtype, device=dev),
            camera.width, camera.height,
            sh_degree=self.sh_degree if sh_degree is None else sh_degree,
            backend=backend,
            background=None if background is None else colour.srgb_to_linear(torch.tensor(background, dtype=dtype, device=dev)),
            with_depth=True,
            antialiased=self.antialiased if antialiased is None else antialiased,
        )
        depth = torch.where(alpha >= depth_min_alpha, info["expected_depth"], torch.zeros_like(alpha))
        return SplatRender(
            image=colour.linear_to_srgb(rgb).clamp(0, 1).float().cpu().numpy(),
            alpha=alpha.float().cpu().numpy(),
            depth=depth.float().cpu().numpy(),
        )
