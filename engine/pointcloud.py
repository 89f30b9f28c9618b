"""RGB-D -> points (unprojection) and points -> image (z-buffered splat rendering).

Interface: numpy in, numpy out (``float32`` images/depths, ``bool`` masks, see
docs/ARCHITECTURE.md).  ``render_points`` takes a torch ``device`` for their
internal compute, so the same code runs on the CPU and on CUDA; arrays cross the interface as
numpy because the callers (pipeline, inpainters, exporters) hold numpy.

Each point carries ``radius``: the world-space side length of the pixel it came from
(``depth / focal``).  Rendering splats a point over the square it covers in the target view
(side ``radius * focal' / depth'`` pixels, at least its own pixel), so a slight zoom-in leaves
no pinholes, and a z-buffer keeps the nearest point per pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .cameras import Camera, pixel_rays, transform_points
from .depth_geometry import DEFAULT_EDGE_THRESHOLD, depth_edges, depth_jumps
MAX_FOOTPRINT_PX = 8  # a splat never covers more than (2*8+1)^2 pixels; bounds render cost


@dataclass
class PointCloud:
    xyz: np.ndarray  # [N, 3] float32, engine world
    rgb: np.ndarray  # [N, 3] float32 in [0, 1]
    radius: np.ndarray  # [N] float32, world-space pixel footprint (depth / focal)

    def __post_init__(self) -> None:
        self.xyz = np.ascontiguousarray(self.xyz, dtype=np.float32).reshape(-1, 3)
        self.rgb = np.ascontiguousarray(self.rgb, dtype=np.float32).reshape(-1, 3)
        self.radius = np.ascontiguousarray(self.radius, dtype=np.float32).reshape(-1)
        if not len(self.xyz) == len(self.rgb) == len(self.radius):
            raise ValueError(
                f"PointCloud: xyz ({len(self.xyz)}), rgb ({len(self.rgb)}) and radius "
                f"({len(self.radius)}) must have the same length"
            )

    def __len__(self) -> int:
        return len(self.xyz)

    @classmethod
    def empty(cls) -> "PointCloud":
        return cls(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0))

    @classmethod
    def concat(cls, clouds: Sequence["PointCloud"]) -> "PointCloud":
        clouds = list(clouds)
        if not clouds:
            return cls.empty()
        return cls(
            np.concatenate([c.xyz for c in clouds]),
            np.concatenate([c.rgb for c in clouds]),
            np.concatenate([c.radius for c in clouds]),
        )

    def subset(self, mask: np.ndarray) -> "PointCloud":
        """Points selected by a bool mask [N] or an index array."""
        return PointCloud(self.xyz[mask], self.rgb[mask], self.radius[mask])


@dataclass(frozen=True)
class DevicePoints:
    """A point cloud's arrays on one torch device: uploaded once for many renders."""

    xyz: torch.Tensor  # [N, 3] float32
    rgb: torch.Tensor  # [N, 3] float32
    radius: torch.Tensor  # [N] float32

    @classmethod
    def of(cls, points: "PointCloud | DevicePoints", device: str | torch.device) -> "DevicePoints":
        device = _as_device(device)
        if isinstance(points, DevicePoints) and points.xyz.device == device:
            return points
        return cls(*(torch.as_tensor(a).to(device) for a in (points.xyz, points.rgb, points.radius)))

    def __len__(self) -> int:
        return int(self.xyz.shape[0])


def _focal(camera: Camera) -> float:
    # Geometric mean: the pixel footprint of a non-square-pixel camera as one number.
    return float(np.sqrt(camera.K[0, 0] * camera.K[1, 1]))


def unproject(
    camera: Camera,
    image: np.ndarray,
    depth: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    edge_threshold: float | None = DEFAULT_EDGE_THRESHOLD,
) -> PointCloud:
    """Lift an RGB-D view to world points.

    image [H, W, 3] float in [0, 1]; depth [H, W] z-depth in metres; mask [H, W] bool selects
    the pixels to lift (default: all).  Dropped: depth <= 0 or non-finite, and (unless
    ``edge_threshold`` is None) pixels on depth edges (see ``depth_edges``).
    """
    depth = np.asarray(depth, dtype=np.float32)
    image = np.asarray(image, dtype=np.float32)
    shape = (camera.height, camera.width)
    if depth.shape != shape or image.shape[:2] != shape:
        raise ValueError(f"unproject: image {image.shape} / depth {depth.shape} do not match camera {shape}")
    keep = np.isfinite(depth) & (depth > 0)
    if mask is not None:
        keep &= np.asarray(mask, dtype=bool)
    if edge_threshold is not None:
        keep &= ~depth_edges(depth, edge_threshold)
    z = depth[keep].astype(np.float64)  # [N]
    points_camera = pixel_rays(camera)[keep] * z[:, None]  # [N, 3]
    xyz = transform_points(camera.camera_to_world, points_camera)
    return PointCloud(xyz, image[keep][:, :3], z / _focal(camera))


@dataclass
class PointRender:
    image: np.ndarray  # [H, W, 3] float32, 0 where empty
    depth: np.ndarray  # [H, W] float32 z-depth, 0 where empty
    hole_mask: np.ndarray  # [H, W] bool, True where no point lands (what the inpainter fills)
    index: np.ndarray  # [H, W] int64, index of the visible point, -1 where empty


def _as_device(device: str | torch.device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("render_points: CUDA was requested but torch sees no GPU")
    return device


def _zbuffer(
    xyz: torch.Tensor, radius: torch.Tensor, camera: Camera, footprint_scale: float, near: float
) -> torch.Tensor:
    """Index of the nearest point covering each pixel: int64 [H*W], -1 where none."""
    device = xyz.device
    height, width = camera.height, camera.width
    w2c = torch.as_tensor(camera.world_to_camera, dtype=torch.float32, device=device)
    cam = xyz @ w2c[:3, :3].T + w2c[:3, 3]  # [N, 3]
    z = cam[:, 2]
    front = z > near
    ids = torch.nonzero(front).squeeze(1)  # [M]
    cam, z, radius = cam[ids], z[ids], radius[ids]
    fx, fy, cx, cy = (float(v) for v in (camera.K[0, 0], camera.K[1, 1], camera.K[0, 2], camera.K[1, 2]))
    u = fx * cam[:, 0] / z + cx  # [M] continuous pixel coordinates
    v = fy * cam[:, 1] / z + cy
    # Half side of the covered square in pixels; at least half a pixel so every point lands
    # in the pixel its centre falls in.
    half = (0.5 * footprint_scale * radius * np.sqrt(fx * fy) / z).clamp(0.5, MAX_FOOTPRINT_PX + 0.5)
    # Pixel i (centre i + 0.5) is covered when |i + 0.5 - u| <= half.
    col0 = torch.ceil(u - half - 0.5)
    col1 = torch.floor(u + half - 0.5)
    row0 = torch.ceil(v - half - 0.5)
    row1 = torch.floor(v + half - 0.5)
    onscreen = (col1 >= 0) & (col0 <= width - 1) & (row1 >= 0) & (row0 <= height - 1)
    ids, z = ids[onscreen], z[onscreen]
    col0, col1, row0, row1 = (t[onscreen].long() for t in (col0, col1, row0, row1))
    # Depth bits of a positive float32 order like the float, so one int64 amin over
    # (depth bits << 32 | point index) is a z-buffer that also remembers the winner.
    key = (z.contiguous().view(torch.int32).long() << 32) | ids
    zbuf = torch.full((height * width,), torch.iinfo(torch.int64).max, dtype=torch.int64, device=device)
    span = int(max((col1 - col0).max().item(), (row1 - row0).max().item()) + 1) if len(ids) else 0
    for dy in range(span):
        row = row0 + dy
        row_ok = (row <= row1) & (row >= 0) & (row < height)
        for dx in range(span):
            col = col0 + dx
            ok = row_ok & (col <= col1) & (col >= 0) & (col < width)
            zbuf.scatter_reduce_(0, (row * width + col)[ok], key[ok], reduce="amin")
    empty = zbuf == torch.iinfo(torch.int64).max
    return torch.where(empty, torch.full_like(zbuf, -1), zbuf & 0xFFFFFFFF)


def _fill_gaps(index: torch.Tensor, depth: torch.Tensor, tolerance: float) -> torch.Tensor:
    """Fill one-pixel cracks: index [H, W] (-1 = empty), depth [H, W] of each pixel's point."""
    height, width = index.shape
    big = torch.finfo(depth.dtype).max
    pad_index = torch.nn.functional.pad(index[None], (1, 1, 1, 1), value=-1)[0]  # [H+2, W+2]
    pad_depth = torch.nn.functional.pad(depth[None], (1, 1, 1, 1), value=0.0)[0]
    best_depth = torch.full_like(depth, big)
    filled = index.clone()
    empty = index < 0
    # Opposite neighbour pairs: horizontal, vertical and both diagonals.
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        a_idx = pad_index[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
        b_idx = pad_index[1 - dy : 1 - dy + height, 1 - dx : 1 - dx + width]
        a_z = pad_depth[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
        b_z = pad_depth[1 - dy : 1 - dy + height, 1 - dx : 1 - dx + width]
        near_z = torch.minimum(a_z, b_z)
        same_surface = (a_idx >= 0) & (b_idx >= 0) & ~depth_jumps(a_z, b_z, tolerance)
        take = empty & same_surface & (near_z < best_depth)
        filled = torch.where(take, torch.where(a_z <= b_z, a_idx, b_idx), filled)
        best_depth = torch.where(take, near_z, best_depth)
    return filled


def render_points(
    points: PointCloud | DevicePoints,
    camera: Camera,
    *,
    device: str | torch.device = "cpu",
    footprint_scale: float = 1.1,
    gap_tolerance: float | None = 0.05,
    near: float = 1e-4,
) -> PointRender:
    """Render points into ``camera`` with a z-buffer: colour, depth and hole mask (numpy).

    ``footprint_scale`` enlarges each splat a little beyond its pixel footprint so neighbouring
    splats overlap instead of leaving hairline gaps after a slight zoom.  The footprint is
    isotropic (it knows the distance, not the surface's slant), so a surface seen more
    obliquely than in its source view (a floor seen from higher up) still leaves one-pixel
    cracks; with ``gap_tolerance`` set, an empty pixel between two covered pixels whose depths
    agree within that relative tolerance (one surface, so a sampling crack, not a
    disocclusion) takes the nearer neighbour's point.  Points nearer than ``near`` (metres, in
    front of the camera) are ignored.  ``DevicePoints`` render without being uploaded again.
    """
    device = _as_device(device)
    height, width = camera.height, camera.width
    if len(points) == 0:
        return PointRender(
            np.zeros((height, width, 3), np.float32),
            np.zeros((height, width), np.float32),
            np.ones((height, width), bool),
            np.full((height, width), -1, np.int64),
        )
    points = DevicePoints.of(points, device)
    xyz, radius = points.xyz, points.radius
    index = _zbuffer(xyz, radius, camera, footprint_scale, near)  # [H*W]
    w2c = torch.as_tensor(camera.world_to_camera, dtype=torch.float32, device=device)

    def depth_of(index: torch.Tensor) -> torch.Tensor:  # z-depth of each pixel's point, 0 = none
        z = xyz[index.clamp(min=0)] @ w2c[2, :3] + w2c[2, 3]
        return torch.where(index >= 0, z, torch.zeros_like(z))

    if gap_tolerance is not None:
        index = _fill_gaps(index.reshape(height, width), depth_of(index).reshape(height, width), gap_tolerance)
        index = index.reshape(-1)
    hit = index >= 0
    safe = index.clamp(min=0)
    depth = depth_of(index)
    rgb = points.rgb[safe] * hit[:, None]
    return PointRender(
        image=rgb.reshape(height, width, 3).cpu().numpy(),
        depth=depth.reshape(height, width).cpu().numpy(),
        hole_mask=(~hit).reshape(height, width).cpu().numpy(),
        index=index.reshape(height, width).cpu().numpy(),
    )
