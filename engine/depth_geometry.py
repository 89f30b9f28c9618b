"""Depth-map geometry shared by the stages and the evaluators, each written once.

* ``sanitize_depth`` — a depth map with its invalid pixels (NaN, inf, <= 0) set to 0, and its mask;
* ``depth_jumps`` — whether two depths are two surfaces (the one relative test every edge and
  agreement check uses);
* ``depth_edges`` — which pixels of a z-depth map lie on the far side of a discontinuity;
* ``surface_normals`` — unit normals of the surface a z-depth map sees;
* ``far_side`` / ``complete_far_side`` — a hole's rim split into the surface behind it and the
  occluder in front, and the hole's depth continued from the surface behind;
* ``repair_depth_ramps`` — an estimate's flying pixels (edges blurred into ramps) put back on the
  surface each continues;
* ``harmonic_fill`` — the (screened) Laplace solve that the fills use: colours in the inpainter,
  inverse depth behind an occluder, the alignment's log-depth correction.

Arrays: numpy in, numpy out; depths are z-depths in metres with 0 (or non-finite) for none.
"""

from __future__ import annotations

import math

import numpy as np

from .cameras import Camera, pixel_rays
from .errors import BadInputError

DEFAULT_EDGE_THRESHOLD = 0.1  # relative depth jump that marks an occlusion boundary


def sanitize_depth(depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(float32 depth with 0 where invalid, valid mask): non-finite and non-positive depths are none."""
    depth = np.asarray(depth, dtype=np.float32)
    valid = np.isfinite(depth) & (depth > 0)
    return np.where(valid, depth, 0.0).astype(np.float32), valid


def depth_jumps(a, b, threshold: float = DEFAULT_EDGE_THRESHOLD):
    """Where two depths (arrays or tensors of one shape) differ by more than ``threshold`` of the
    nearer one: two surfaces, not one.  The same relative test as ``depth_edges``."""
    return abs(a - b) > threshold * ((a + b - abs(a - b)) / 2)


def depth_edges(depth: np.ndarray, threshold: float = DEFAULT_EDGE_THRESHOLD, *, both_sides: bool = False) -> np.ndarray:
    """Pixels on the far side of, or inside, a depth discontinuity: bool [H, W].

    A pixel is an edge when its depth exceeds the smallest valid depth in its 3x3 neighbourhood
    by more than ``threshold`` (relative).  So at a sharp occlusion boundary the foreground
    silhouette is kept and the background pixel next to it is dropped, and the "flying" pixels
    that depth estimators leave between foreground and background (a ramp across the edge) are
    all dropped: no rubber-sheet streaks.  ``both_sides`` marks the near side too (a pixel with
    a neighbour that far behind it): the boundary between two regions.  Invalid depths (<= 0,
    non-finite) are never edges and never count as neighbours.
    """
    depth, valid = sanitize_depth(depth)
    height, width = depth.shape
    near = np.pad(np.where(valid, depth, np.inf), 1, constant_values=np.inf)
    far = np.pad(depth, 1)
    local_min = np.full(depth.shape, np.inf, dtype=np.float32)
    local_max = np.zeros(depth.shape, dtype=np.float32)
    for dy in range(3):
        for dx in range(3):
            np.minimum(local_min, near[dy : dy + height, dx : dx + width], out=local_min)
            np.maximum(local_max, far[dy : dy + height, dx : dx + width], out=local_max)
    edges = valid & (depth > (1.0 + threshold) * local_min)
    if both_sides:
        edges |= valid & ((1.0 + threshold) * depth < local_max)
    return edges


def surface_normals(camera: Camera, depth: np.ndarray) -> np.ndarray:
    """Unit normals [H, W, 3] (camera frame, facing the camera) of the surface seen at each pixel.

    From central differences of the unprojected pixel centres, so they are meaningless within a
    pixel of a depth edge or of a pixel without depth (mask those with ``depth_edges``)."""
    points = pixel_rays(camera) * np.asarray(depth, dtype=np.float64)[..., None]  # [H, W, 3]
    normal = np.cross(np.gradient(points, axis=1), np.gradient(points, axis=0))
    length = np.linalg.norm(normal, axis=-1, keepdims=True)
    normal = normal / np.maximum(length, 1e-12)
    facing = np.sum(normal * points, axis=-1, keepdims=True) > 0
    return np.where(facing, -normal, normal)


def far_side(ring_depth: np.ndarray, min_gap: float = 0.1, min_separation: float = 0.85) -> np.ndarray:
    """Which rim pixels of one hole lie on its far side (True) rather than on an occluder.

    Otsu's split of the log depths; accepted only when the two groups are far apart (more than
    ``min_gap`` relative depth) and the split explains most of the spread (a bimodal ring: an
    occluder in front of a surface).  A ring on one continuous surface - a slanted floor - keeps
    all its pixels.
    """
    log_d = np.log(ring_depth)
    order = np.sort(log_d)
    n = order.size
    if n < 4 or order[-1] - order[0] < np.log1p(min_gap):
        return np.ones(n, bool)
    csum = np.cumsum(order)
    k = np.arange(1, n)  # split after k values
    mean_lo = csum[:-1] / k
    mean_hi = (csum[-1] - csum[:-1]) / (n - k)
    between = k * (n - k) / n**2 * (mean_hi - mean_lo) ** 2
    best = int(np.argmax(between))
    explained = between[best] / max(order.var(), 1e-12)
    if explained < min_separation or mean_hi[best] - mean_lo[best] < np.log1p(min_gap):
        return np.ones(n, bool)
    return log_d > order[best]


def complete_far_side(
    depth: np.ndarray, hole: np.ndarray, *, min_gap: float = 0.1, min_separation: float = 0.85
) -> tuple[np.ndarray, np.ndarray]:
    """Depth inside ``hole`` continuing the surface behind it: (filled float32 depth, valid).

    A hole is space hidden behind something nearer (a removed foreground, a disocclusion in a
    novel view), so its surface continues the *background* around it, not the occluder.  For
    each connected hole the valid depths on its rim are split by ``far_side``; inverse depth
    inside the hole is then the harmonic interpolation (Laplace equation) of the far-side values:
    fixed on far-side neighbours, zero normal derivative towards near-side pixels, invalid pixels
    and the image border.  Inverse depth of a plane is affine in pixel coordinates and harmonic
    interpolation reproduces affine functions, so a planar background is continued exactly.
    Pixels outside ``hole`` keep their depth; a hole with no valid rim stays without depth.
    """
    from scipy import ndimage

    depth, valid = sanitize_depth(depth)
    hole = np.asarray(hole, dtype=bool)
    if hole.shape != depth.shape:
        raise BadInputError(f"hole mask {hole.shape} and depth {depth.shape} differ in size")
    valid &= ~hole
    if not hole.any() or not valid.any():
        return depth, valid
    inverse = np.where(valid, 1.0 / np.maximum(depth, 1e-12), 0.0)
    labels, _ = ndimage.label(hole)
    fixed = np.zeros(hole.shape, bool)  # rim pixels that act as boundary values
    reached = np.zeros(hole.shape, bool)  # holes that have a rim
    height, width = hole.shape
    for label, box in enumerate(ndimage.find_objects(labels), start=1):
        # Work in the hole's bounding box grown by one pixel: its rim lies inside.
        y0, x0 = max(box[0].start - 1, 0), max(box[1].start - 1, 0)
        y1, x1 = min(box[0].stop + 1, height), min(box[1].stop + 1, width)
        component = labels[y0:y1, x0:x1] == label
        rim = ndimage.binary_dilation(component, structure=np.ones((3, 3), bool)) & valid[y0:y1, x0:x1]
        if not rim.any():
            continue
        reached[y0:y1, x0:x1] |= component
        rows, cols = np.nonzero(rim)
        rows, cols = rows + y0, cols + x0
        far = far_side(depth[rows, cols].astype(np.float64), min_gap, min_separation)
        fixed[rows[far], cols[far]] = True
    if not reached.any():
        return depth, valid
    solution = harmonic_fill(inverse[..., None], reached, fixed)[..., 0]
    filled = depth.copy()
    filled[reached] = (1.0 / np.maximum(solution[reached], 1e-12)).astype(np.float32)
    return sanitize_depth(filled)


def harmonic_fill(
    values: np.ndarray, unknown: np.ndarray, fixed: np.ndarray, *, weight: float | np.ndarray = 0.0
) -> np.ndarray:
    """Solve the membrane equation ``Δu = weight·(u − values)`` for ``values`` [H, W, C] on the
    ``unknown`` pixels; returns a float64 copy of ``values`` with them solved.

    Known neighbours in ``fixed`` are boundary values; every other neighbour (and the image
    border) is a zero-normal-derivative boundary.  With no ``weight`` the fill is harmonic
    (Laplace): it reproduces affine functions exactly and is the smoothest fill (no streaks), and
    a hole that touches no fixed pixel is held (weakly) at the mean of all fixed values, as it has
    nothing better to follow.  ``weight`` (a scalar or [H, W]) pulls each unknown pixel towards
    its own entry of ``values``: a scalar 1/L² with zero values is the screened equation, which
    decays to zero over about L pixels away from the fixed ones; per-pixel weights make it a
    smoothed fit of noisy data.  One sparse factorisation (scipy SuperLU), all channels solved with it.
    """
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla

    height, width = unknown.shape
    out = values.astype(np.float64, copy=True)
    n = int(unknown.sum())
    if n == 0:
        return out
    index = -np.ones(unknown.shape, np.int64)
    index[unknown] = np.arange(n)
    ys, xs = np.nonzero(unknown)
    me = index[ys, xs]
    diag = np.zeros(n)
    rhs = np.zeros((n, values.shape[2]))
    rows, cols = [], []
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
        ny, nx, src = ny[inside], nx[inside], me[inside]
        other = index[ny, nx]
        linked = other >= 0
        rows.append(src[linked])
        cols.append(other[linked])
        boundary = fixed[ny, nx] & ~linked
        np.add.at(diag, src[linked | boundary], 1.0)
        np.add.at(rhs, src[boundary], out[ny[boundary], nx[boundary]])
    pull = np.broadcast_to(np.asarray(weight, dtype=np.float64), unknown.shape)[ys, xs]
    if pull.any():
        diag += pull
        rhs += pull[:, None] * out[ys, xs]
    else:
        anchor = 1e-6
        known = fixed & ~unknown
        diag += anchor
        rhs += anchor * (out[known].mean(axis=0) if known.any() else np.zeros(values.shape[2]))
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    system = sp.csc_matrix(
        (np.concatenate([diag, -np.ones(rows.size)]), (np.concatenate([np.arange(n), rows]), np.concatenate([np.arange(n), cols]))),
        shape=(n, n),
    )
    # The system is symmetric: a minimum-degree ordering of A^T + A fills in less than SuperLU's
    # default COLAMD (the factorisation is most of an alignment's time).
    out[ys, xs] = spla.splu(system, permc_spec="MMD_AT_PLUS_A").solve(rhs)
    return out


def repair_depth_ramps(
    depth: np.ndarray,
    radius: int,
    *,
    jump: float = DEFAULT_EDGE_THRESHOLD,
    keep_tolerance: float = 0.03,
    fit_tolerance: float = 0.01,
    half_window: int = 2,
    device=None,
) -> tuple[np.ndarray, np.ndarray]:
    """An estimate's flying pixels put back on the surface they belong to: (depth, repaired mask).

    Depth estimators blur occlusion edges into ramps ``radius`` pixels to either side, and a ramp
    pixel lifted to 3D floats between foreground and background.  Snapping it to a window's
    nearest or farthest depth terraces every slanted surface, so each side's surface is
    *continued* instead: inverse depth is affine in pixel coordinates on a plane, so a
    (2·half_window+1)² least-squares plane fit in inverse depth, centred 2·radius+half_window+1
    pixels away in one of 8 directions (clear of the pixel's own ramp), predicts what that surface
    would be at the pixel.  Fits whose residual exceeds ``fit_tolerance`` (relative) are not
    surfaces.  A pixel is a ramp pixel when it lies between a nearer and a farther continuation
    that are two surfaces (``jump``) and matches none of its continuations within
    ``keep_tolerance``; it takes the continuation nearer to it (in depth).  A pixel on a surface
    matches its own surface's continuation and is kept, so sharp edges and thin structures (no
    nearer surface continues over them) are left as they are.  Runs in torch on ``device``.
    """
    import torch
    import torch.nn.functional as F

    depth, valid = sanitize_depth(depth)
    if radius <= 0 or not valid.any():
        return depth, np.zeros(depth.shape, bool)
    h, size = half_window, 2 * half_window + 1
    z = torch.from_numpy(depth).to(device=device)
    ok = z > 0
    inverse = torch.where(ok, 1.0 / torch.where(ok, z, torch.ones_like(z)), torch.zeros_like(z))
    taps = torch.arange(-h, h + 1, dtype=z.dtype, device=z.device)
    flat = torch.full((size,), 1.0 / size, dtype=z.dtype, device=z.device)

    def window_mean(values: torch.Tensor, kernel_x: torch.Tensor = flat, kernel_y: torch.Tensor = flat) -> torch.Tensor:
        out = F.conv2d(values[None, None], kernel_x.view(1, 1, 1, size), padding=(0, h))
        return F.conv2d(out, kernel_y.view(1, 1, size, 1), padding=(h, 0))[0, 0]

    # Moments about each window's centre; the taps are symmetric, so the fit decouples.
    second = float((taps**2).mean())
    mean = window_mean(inverse)
    slope_x = window_mean(inverse, kernel_x=taps / size) / second
    slope_y = window_mean(inverse, kernel_y=taps / size) / second
    residual = window_mean(inverse**2) - mean**2 - (slope_x**2 + slope_y**2) * second
    full = window_mean(ok.to(z.dtype)) > 1.0 - 1e-4
    fits = full & (mean > 0) & (residual.clamp_min(0.0).sqrt() <= fit_tolerance * mean.clamp_min(1e-12))
    offset = 2 * radius + h + 1
    height, width = depth.shape
    pad = offset + 1
    padded = F.pad(torch.stack([mean, slope_x, slope_y, fits.to(z.dtype)])[None], (pad,) * 4)[0]
    nearest = torch.full_like(z, float("inf"))
    farthest = torch.zeros_like(z)
    matched = torch.zeros_like(ok)
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (1, -1), (-1, 1), (-1, -1)):
        scale = offset / math.hypot(dy, dx)
        oy, ox = int(round(dy * scale)), int(round(dx * scale))
        at = padded[:, pad + oy : pad + oy + height, pad + ox : pad + ox + width]  # the fit centred at p + offset
        predicted = at[0] - at[1] * ox - at[2] * oy
        usable = (at[3] > 0.5) & (predicted > 0)
        continued = torch.where(usable, 1.0 / torch.where(usable, predicted, torch.ones_like(predicted)), z)
        matched |= usable & ((continued - z).abs() <= keep_tolerance * z)
        nearest = torch.where(usable, torch.minimum(nearest, continued), nearest)
        farthest = torch.where(usable, torch.maximum(farthest, continued), farthest)
    ramp = ok & ~matched & (nearest < z) & (farthest > z) & (farthest > (1.0 + jump) * nearest)
    repaired = torch.where(ramp, torch.where(z - nearest < farthest - z, nearest, farthest), z)
    return repaired.cpu().numpy(), ramp.cpu().numpy()
