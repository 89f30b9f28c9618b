"""Ray-constrained alignment of a new view's depth to the existing geometry (LucidDreamer style).

``align_depth(new_depth, rendered_depth, hole_mask, camera)`` takes the depth estimated for a
completed (inpainted) view, the depth of the existing points rendered into the same camera, and
the hole mask of that render, and returns the new depth moved onto the existing geometry:

1. **Global fit** where both depths exist (outside the hole).  Instead of LucidDreamer's
   100 Adam steps we use a closed-form robust fit (iteratively re-weighted least squares with
   Huber weights and trimming of gross outliers, a few iterations, milliseconds):
   ``"scale"`` (default) fits a robust location of ``log(rendered / new)`` — scale-invariant, so
   near and far pixels count alike; ``"scale_shift"`` then fits ``rendered ≈ a·new + b`` on the
   *relative* residual ``(a·new + b − rendered) / rendered`` with the same weighting.
2. **Seam correction** at the hole boundary (hole pixels 4-adjacent to rendered pixels).  Each
   boundary pixel's target is the existing surface next to it, extrapolated one pixel along the
   surface when two known pixels line up (so a slanted wall is continued, not copied).  Both
   depths are z-depths of the same pixel in the same camera, so putting the new point on the
   existing surface *along its ray* is a change of its z only.  The change is multiplicative,
   stored as ``log(target / depth)``: it is scale-free, can never push a point behind the
   camera, and a decaying log-factor keeps surfaces' shapes.  A boundary pixel whose depth
   differs from every neighbouring surface by more than ``seam_tolerance`` is an occlusion
   boundary (newly revealed background behind a foreground silhouette, or a new object in
   front): it gets no constraint, otherwise the revealed surface would be glued to the
   occluder (LucidDreamer snaps every boundary pixel; this is the one place we differ).
3. **Smooth fill**: the log-correction is fixed at seam pixels and spread over the hole by a
   *screened* harmonic (Laplace) fill, ``Δc = c / L²`` with ``L = falloff · max(H, W)`` pixels:
   smooth, it decays to exactly zero far from every seam (the "zero pinned far away" of
   LucidDreamer, which pins the image corners), and it is GPU-friendly (coarse-to-fine Jacobi
   on an image pyramid, all convolutions).  Pixels outside the hole keep the global fit only.

Arrays: numpy in, numpy out; ``device`` picks where the torch compute runs (CPU or CUDA).
Only the hole pixels of the result are meant to be lifted into new points.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .cameras import Camera

FITS = ("scale", "scale_shift", "none")
_DIRECTIONS = ((0, 1), (0, -1), (1, 0), (-1, 0))  # (dy, dx) to a 4-neighbour
_MEDIAN_SAMPLES = 16384  # robust statistics use an evenly strided sample of at most ~this size


@dataclass
class AlignSettings:
    fit: str = "scale"  # "scale" | "scale_shift" | "none" (see module docstring, step 1)
    fit_iterations: int = 10  # IRLS iterations of the global fit
    huber: float = 0.05  # relative residual beyond which a pixel is down-weighted (Huber)
    seam_tolerance: float = 0.2  # relative depth gap beyond which a boundary pixel is an occlusion
    extrapolate_tolerance: float = 0.1  # max relative step between the two known pixels used to extrapolate
    falloff: float = 0.25  # screening length of the fill, as a fraction of max(H, W)
    jacobi_iterations: int = 20  # Jacobi sweeps per pyramid level (4x on the coarsest)


@dataclass
class AlignStats:
    scale: float  # global fit: aligned = scale * new + shift (before seam correction)
    shift: float
    fit_pixels: int  # pixels where both depths exist (outside the hole)
    fit_inlier_fraction: float  # share of those within the Huber threshold after the fit
    seam_pixels: int  # boundary pixels that continue an existing surface (constrained)
    occlusion_pixels: int  # boundary pixels left free (occlusion boundaries)
    seam_error_before: float  # mean |new depth - existing depth| across the seam, metres, raw input
    seam_error_global: float  # the same after the global fit only
    seam_error_after: float  # the same after alignment
    seam_error_before_rel: float  # the same errors relative to the existing depth
    seam_error_global_rel: float
    seam_error_after_rel: float
    max_correction: float  # largest relative depth change applied by the seam correction

    def to_dict(self) -> dict:
        return asdict(self)


def _shifted(t: torch.Tensor, dy: int, dx: int, fill: float) -> torch.Tensor:
    """out[y, x] = t[y + dy, x + dx] ([H, W]), ``fill`` outside the image."""
    height, width = t.shape
    pad = max(abs(dy), abs(dx))
    padded = F.pad(t[None, None], (pad, pad, pad, pad), value=fill)[0, 0]
    return padded[pad + dy : pad + dy + height, pad + dx : pad + dx + width]


def _robust_weights(residual: torch.Tensor, threshold: float) -> torch.Tensor:
    """Huber weights, and zero weight (trimmed) beyond 3 robust standard deviations or
    3 thresholds, whichever is wider: gross outliers (bad estimates, wrong inpainting) then
    have no pull at all, which plain Huber weights would still give them."""
    magnitude = residual.abs()
    sample = residual[:: max(1, residual.numel() // _MEDIAN_SAMPLES)]  # medians sort: keep them cheap
    cutoff = torch.clamp(3.0 * 1.4826 * (sample - sample.median()).abs().median(), min=3.0 * threshold)
    weight = threshold / magnitude.clamp(min=threshold)
    return torch.where(magnitude <= cutoff, weight, torch.zeros_like(weight))


def _fit(new: torch.Tensor, ref: torch.Tensor, settings: AlignSettings) -> tuple[float, float, float]:
    """Robust fit ref ≈ scale·new + shift over 1-D float64 samples -> (scale, shift, inlier share)."""
    if settings.fit == "none" or new.numel() == 0:
        return 1.0, 0.0, 0.0
    log_ratio = torch.log(ref) - torch.log(new)  # [M]
    location = log_ratio[:: max(1, log_ratio.numel() // _MEDIAN_SAMPLES)].median()
    for _ in range(settings.fit_iterations):
        weight = _robust_weights(log_ratio - location, settings.huber)
        location = (weight * log_ratio).sum() / weight.sum()
    scale, shift = float(torch.exp(location)), 0.0
    if settings.fit == "scale_shift":
        a, b = scale, 0.0
        for _ in range(settings.fit_iterations):
            weight = _robust_weights((a * new + b - ref) / ref, settings.huber) / ref**2
            sw, sx, sy = weight.sum(), (weight * new).sum(), (weight * ref).sum()
            sxx, sxy = (weight * new * new).sum(), (weight * new * ref).sum()
            det = sw * sxx - sx * sx
            if float(det) <= 0:
                break
            a, b = float((sw * sxy - sx * sy) / det), float((sxx * sy - sx * sxy) / det)
        if a > 0:  # a non-positive slope would flip the scene; keep the scale-only fit then
            scale, shift = a, b
    residual = (scale * new + shift - ref) / ref
    inliers = float((residual.abs() <= settings.huber).double().mean())
    return scale, shift, inliers


def _neighbour_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of the 4-neighbours of each pixel of t [1, 1, H, W], zero outside."""
    p = F.pad(t, (1, 1, 1, 1))
    return p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:]


def _screened_fill(
    domain: torch.Tensor, fixed: torch.Tensor, value: torch.Tensor, length_px: float, iterations: int
) -> torch.Tensor:
    """Solve Δc = c / L² on ``domain`` ([H, W] bool) with c = value on ``fixed``, Neumann at the
    domain's edge; coarse-to-fine Jacobi.  Returns c [H, W] (0 outside the domain)."""
    levels = [(domain[None, None].float(), fixed[None, None].float(), (value * fixed)[None, None])]
    while min(levels[-1][0].shape[-2:]) > 8:
        dom, fix, val = levels[-1]
        fix_sum = F.avg_pool2d(fix, 2, ceil_mode=True)
        coarse_val = F.avg_pool2d(val, 2, ceil_mode=True) / fix_sum.clamp(min=1e-12)
        levels.append((F.max_pool2d(dom, 2, ceil_mode=True), (fix_sum > 0).float(), coarse_val))
    solution = torch.zeros_like(levels[-1][0])
    for depth_level in range(len(levels) - 1, -1, -1):
        dom, fix, val = levels[depth_level]
        solution = F.interpolate(solution, size=dom.shape[-2:], mode="bilinear", align_corners=False)
        screening = (2**depth_level / length_px) ** 2  # pixel spacing doubles per level
        inverse_count = 1.0 / (_neighbour_sum(dom) + screening)
        free = dom * (1 - fix)  # [1, 1, h, w] pixels the sweep updates
        pinned = val * fix
        sweeps = iterations * 4 if depth_level == len(levels) - 1 else iterations
        for _ in range(sweeps):
            solution = _neighbour_sum(solution) * inverse_count * free + pinned
    return solution[0, 0]


def _to_tensor(array: np.ndarray, device: torch.device, dtype=torch.float32) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).to(device=device, dtype=dtype)


def align_depth(
    new_depth: np.ndarray,
    rendered_depth: np.ndarray,
    hole_mask: np.ndarray,
    camera: Camera,
    *,
    settings: AlignSettings | None = None,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, AlignStats]:
    """Align ``new_depth`` [H, W] to ``rendered_depth`` [H, W] (0 = empty) of the existing points.

    ``hole_mask`` [H, W] bool marks the pixels the existing points do not cover (the new
    content).  Returns the aligned depth [H, W] float32 (0 where ``new_depth`` had none) and
    ``AlignStats``.  See the module docstring for the algorithm.
    """
    settings = settings or AlignSettings()
    if settings.fit not in FITS:
        raise ValueError(f"align_depth: fit must be one of {FITS}, not {settings.fit!r}")
    shape = (camera.height, camera.width)
    for label, array in (("new_depth", new_depth), ("rendered_depth", rendered_depth), ("hole_mask", hole_mask)):
        if np.shape(array) != shape:
            raise ValueError(f"align_depth: {label} has shape {np.shape(array)}, camera is {shape}")
    device = torch.device(device)
    new = torch.nan_to_num(_to_tensor(new_depth, device), nan=0.0, posinf=0.0, neginf=0.0)  # [H, W]
    ref = torch.nan_to_num(_to_tensor(rendered_depth, device), nan=0.0, posinf=0.0, neginf=0.0)
    hole = _to_tensor(hole_mask, device, torch.bool)
    new_ok = new > 0
    known = ~hole & (ref > 0)

    # 1. Global robust fit outside the hole.
    both = known & new_ok
    scale, shift, inliers = _fit(new[both].double(), ref[both].double(), settings)
    fitted = scale * new + shift
    new_ok = new_ok & (fitted > 0)
    fitted = torch.where(new_ok, fitted, torch.zeros_like(fitted))

    # 2. Seam targets: per hole pixel, the neighbouring existing surface closest to the new depth.
    log_fitted = torch.log(fitted.clamp(min=1e-12))
    best_gap = torch.full(shape, math.inf, device=device)  # |log(target / fitted)|
    target = torch.zeros(shape, device=device)
    across = torch.zeros(shape, device=device)  # depth of the known pixel across the seam
    for dy, dx in _DIRECTIONS:
        ref1 = _shifted(torch.where(known, ref, torch.zeros_like(ref)), dy, dx, 0.0)
        ref2 = _shifted(torch.where(known, ref, torch.zeros_like(ref)), 2 * dy, 2 * dx, 0.0)
        steady = (ref2 > 0) & ((ref1 - ref2).abs() <= settings.extrapolate_tolerance * ref1)
        candidate = torch.where(steady, 2 * ref1 - ref2, ref1)
        usable = hole & new_ok & (ref1 > 0) & (candidate > 0)
        gap = torch.where(usable, (torch.log(candidate.clamp(min=1e-12)) - log_fitted).abs(), torch.full_like(ref, math.inf))
        better = gap < best_gap
        best_gap = torch.where(better, gap, best_gap)
        target = torch.where(better, candidate, target)
        across = torch.where(better, ref1, across)
    boundary = torch.isfinite(best_gap)
    seam = boundary & (best_gap <= math.log1p(settings.seam_tolerance))

    # 3. Log-correction fixed on the seam, screened-harmonic fill over the hole.
    correction_at_seam = torch.where(seam, torch.log(target.clamp(min=1e-12)) - log_fitted, torch.zeros_like(ref))
    if bool(seam.any()):
        correction = _screened_fill(
            hole & new_ok,
            seam,
            correction_at_seam,
            settings.falloff * max(shape),
            settings.jacobi_iterations,
        )
    else:
        correction = torch.zeros_like(ref)
    aligned = fitted * torch.exp(correction)

    def seam_error(depth: torch.Tensor) -> tuple[float, float]:
        if not bool(seam.any()):
            return 0.0, 0.0
        jump = (depth[seam] - across[seam]).abs().double()
        return float(jump.mean()), float((jump / across[seam].double()).mean())

    before, before_rel = seam_error(new)
    global_, global_rel = seam_error(fitted)
    after, after_rel = seam_error(aligned)
    stats = AlignStats(
        scale=scale,
        shift=shift,
        fit_pixels=int(both.sum()),
        fit_inlier_fraction=inliers,
        seam_pixels=int(seam.sum()),
        occlusion_pixels=int((boundary & ~seam).sum()),
        seam_error_before=before,
        seam_error_global=global_,
        seam_error_after=after,
        seam_error_before_rel=before_rel,
        seam_error_global_rel=global_rel,
        seam_error_after_rel=after_rel,
        max_correction=float(torch.expm1(correction.abs().max())) if bool(seam.any()) else 0.0,
    )
    return aligned.cpu().numpy().astype(np.float32), stats
