"""SSIM map (Wang et al. 2004) as used by 3DGS: 11x11 Gaussian window, sigma 1.5, zero padding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

C1 = 0.01**2  # (K1 L)^2 with L = 1
C2 = 0.03**2  # (K2 L)^2


def _window(size: int, sigma: float, channels: int, like: Tensor) -> Tensor:
    x = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()  # [C, 1, s, s]


def ssim_map(a: Tensor, b: Tensor, window_size: int = 11, sigma: float = 1.5) -> Tensor:
    """Per-pixel SSIM of two images [..., H, W, C] in [0, 1], averaged over channels -> [..., H, W]."""
    if a.shape != b.shape or a.dim() < 3:
        raise ValueError(f"ssim_map needs two [..., H, W, C] images of one shape, got {tuple(a.shape)}, {tuple(b.shape)}")
    lead, (height, width, channels) = a.shape[:-3], a.shape[-3:]
    x = a.reshape(-1, height, width, channels).permute(0, 3, 1, 2)  # [B, C, H, W]
    y = b.reshape(-1, height, width, channels).permute(0, 3, 1, 2)
    win = _window(window_size, sigma, channels, x)

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(t, win, padding=window_size // 2, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x * mu_x
    var_y = blur(y * y) - mu_y * mu_y
    cov = blur(x * y) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + C1) * (2 * cov + C2)) / ((mu_x * mu_x + mu_y * mu_y + C1) * (var_x + var_y + C2))
    return s.mean(1).reshape(*lead, height, width)
