"""PLY export: coloured points, and Gaussians in the standard 3DGS layout (SuperSplat & co. read it).

The 3DGS layout (the INRIA reference's ``save_ply``), one float32 property each, in order::

    x y z  nx ny nz  f_dc_0..2  f_rest_0..(3K-1)  opacity  scale_0..2  rot_0..3

with values stored pre-activation (opacity logit, log scale, unnormalised wxyz quaternion) and
``f_rest`` channel-major: all K coefficients of red, then green, then blue.  Colours are stored
in display space, as other viewers expect (the engine's are linear light; engine/colour.py says
how the SH bands convert).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from plyfile import PlyData, PlyElement

from . import colour
from .gaussian_math import ANTIALIASED_COMMENTS, antialiased_from_comments
from .job import atomic_path
from .splat.gaussians import Gaussians


def gaussian_property_names(n_rest: int) -> list[str]:
    """Property names of a 3DGS PLY with ``n_rest`` higher-order SH coefficients per channel."""
    return (
        ["x", "y", "z", "nx", "ny", "nz"]
        + [f"f_dc_{i}" for i in range(3)]
        + [f"f_rest_{i}" for i in range(3 * n_rest)]
        + ["opacity"]
        + [f"scale_{i}" for i in range(3)]
        + [f"rot_{i}" for i in range(4)]
    )


def _write(path: Path | str, element: PlyElement, comments: list[str] = ()) -> None:
    with atomic_path(path) as tmp:
        PlyData([element], text=False, byte_order="<", comments=list(comments)).write(str(tmp))


def write_points_ply(path: Path | str, points: Any) -> None:
    """A coloured point cloud: x y z float, red green blue uchar, radius (and confidence) float."""
    xyz = np.asarray(points.xyz, np.float32).reshape(-1, 3)
    rgb = np.clip(np.round(np.asarray(points.rgb, np.float32).reshape(-1, 3) * 255.0), 0, 255).astype(np.uint8)
    fields = [("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1"),
              ("radius", "f4")]
    confidence = getattr(points, "confidence", None)
    if confidence is not None:
        fields.append(("confidence", "f4"))
    vertex = np.empty(len(xyz), dtype=fields)
    vertex["x"], vertex["y"], vertex["z"] = xyz.T
    vertex["red"], vertex["green"], vertex["blue"] = rgb.T
    vertex["radius"] = np.asarray(points.radius, np.float32).reshape(-1)
    if confidence is not None:
        vertex["confidence"] = np.asarray(confidence, np.float32).reshape(-1)
    _write(path, PlyElement.describe(vertex, "vertex"))


def write_gaussians_ply(path: Path | str, gaussians: Gaussians) -> None:
    """Gaussians in the standard 3DGS PLY layout (binary little-endian)."""
    g = gaussians.detach().to("cpu")
    n = len(g)
    n_rest = g.shN.shape[1]
    sh0, shN = colour.sh_to_display(g.sh0, g.shN)

    def arr(t: torch.Tensor) -> np.ndarray:
        return t.float().numpy().reshape(n, -1)

    columns = np.concatenate([
        arr(g.means),
        np.zeros((n, 3), np.float32),  # normals: unused, kept for the layout
        arr(sh0[:, 0, :]),
        arr(shN.transpose(1, 2)),  # [N, 3, K] -> channel-major f_rest
        arr(g.opacities),
        arr(g.scales),
        arr(g.quats),
    ], axis=1)
    names = gaussian_property_names(n_rest)
    vertex = np.empty(n, dtype=[(name, "f4") for name in names])
    for i, name in enumerate(names):
        vertex[name] = columns[:, i]
    _write(path, PlyElement.describe(vertex, "vertex"), list(ANTIALIASED_COMMENTS) if g.antialiased else [])


def read_gaussians_ply(path: Path | str, device: torch.device | str = "cpu") -> Gaussians:
    """Read a 3DGS PLY (ours or any writer of the standard layout) into ``Gaussians`` (linear light)."""
    ply = PlyData.read(str(path))
    vertex = ply["vertex"].data
    names = vertex.dtype.names
    n_rest = sum(1 for name in names if name.startswith("f_rest_"))
    if n_rest % 3:
        raise ValueError(f"{path}: {n_rest} f_rest properties is not a multiple of 3")
    k = n_rest // 3

    def cols(keys: list[str]) -> torch.Tensor:
        return torch.from_numpy(np.stack([np.asarray(vertex[key], np.float32) for key in keys], axis=1)).to(device)

    n = len(vertex)
    rest = cols([f"f_rest_{i}" for i in range(n_rest)]) if n_rest else torch.zeros(n, 0, device=device)
    sh0, shN = colour.sh_from_display(cols([f"f_dc_{i}" for i in range(3)])[:, None, :],
                                      rest.reshape(n, 3, k).transpose(1, 2).contiguous())
    return Gaussians(
        means=cols(["x", "y", "z"]),
        quats=cols([f"rot_{i}" for i in range(4)]),
        scales=cols([f"scale_{i}" for i in range(3)]),
        opacities=cols(["opacity"])[:, 0],
        sh0=sh0,
        shN=shN,
        antialiased=antialiased_from_comments(ply.comments),  # unmarked: classic, 3DGS's own
    )
