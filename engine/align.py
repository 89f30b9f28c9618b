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
   occluder (LucidDreamer snaps every boundary pixel; this is the one place we differ).  So is
   a boundary pixel within ``seam_edge_radius`` (a fraction of the image, 3 px at 512) of a
   depth edge of the new estimate itself: there an estimator's depth is least reliable (it
   blurs occlusion edges into ramps of "flying pixels"), and so is the existing render (splats
   overhang silhouettes), so the seam is pinned only where the estimate is smooth (eval-world at
   512 px, typical errors: the room +0.15 dB held-out PSNR; the courtyard and the street +0.89 /
   +0.06 dB against LucidDreamer's, +1.10 / +0.14 against true depth's; docs/EVAL.md).
3. **Smooth fill**: the log-correction is fixed at seam pixels and spread over the hole by a
   *screened* harmonic (Laplace) fill, ``Δc = c / L²`` with ``L = falloff · max(H, W)`` pixels
   (``depth_geometry.harmonic_fill``, one sparse solve): smooth, it decays to exactly zero far
   from every seam (the "zero pinned far away" of LucidDreamer, which pins the image corners).
   ``seam_smoothing`` > 0 makes the seam's gaps soft, robustly re-weighted data of the same
   membrane instead of pinned values: the existing surface's own sampling noise (its points sit
   off the pixel centres) then stays out of the hole, at the price of a looser seam.  Pixels outside the hole keep the global fit only.

Baselines (``AlignSettings.fit`` / ``correction``, reachable through the run settings
``align_fit`` / ``align_correction``; ``python -m engine eval-world`` compares them):
``fit="none"`` keeps the estimate's own scale; ``correction="none"`` stops after step 1;
``fit="adam"`` + ``correction="linear-corners"`` is LucidDreamer's recipe: one scale fitted by
100 Adam steps (lr 0.001, from 1) on the mean squared distance between existing and new points
at the pixels the existing points cover, then at the points on the hole's border the depth
offset that puts the new point on the existing one, interpolated linearly over the hole
(Delaunay, nearest neighbour outside the hull) with zero offset pinned at the four image
corners.  LucidDreamer scales the new points about the world origin; here the scale acts along
the view's rays (about its camera centre), because the engine lifts depth along rays — the
same as LucidDreamer's for its first expansion views, whose cameras sit near the origin.

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
from .depth_geometry import depth_jumps, harmonic_fill

FITS = ("scale", "scale_shift", "adam", "none")
CORRECTIONS = ("ray", "linear-corners", "none")
_DIRECTIONS = ((0, 1), (0, -1), (1, 0), (-1, 0))  # (dy, dx) to a 4-neighbour
_MEDIAN_SAMPLES = 16384  # robust statistics use an evenly strided sample of at most ~this size


@dataclass
class AlignSettings:
    fit: str = "scale"  # "scale" | "scale_shift" | "adam" | "none" (see module docstring, step 1)
    correction: str = "ray"  # "ray" (steps 2-3) | "linear-corners" (LucidDreamer) | "none"
    fit_iterations: int = 10  # IRLS iterations of the global fit
    huber: float = 0.05  # relative residual beyond which a pixel is down-weighted (Huber)
    seam_tolerance: float = 0.1  # relative depth gap beyond which a boundary pixel is an occlusion
    extrapolate_tolerance: float = 0.1  # max relative step between the two known pixels used to extrapolate
    falloff: float = 0.25  # screening length of the fill, as a fraction of max(H, W)
    seam_smoothing: float = 0.0  # > 0: the seam's log gaps are soft data averaged over this length (fraction of max(H, W)); 0: pinned
    seam_spread: float = 0.0  # > 0: also an occlusion where a gap is this many robust deviations from the seam's median gap
    seam_adaptive: float = 0.0  # > 0: the tolerance widens to this many times the border's median gap (a far-off estimate)
    seam_edge_radius: float = 0.006  # > 0: a border pixel this close (fraction of max(H, W)) to a depth edge of the estimate is an occlusion

    @classmethod
    def from_settings(cls, settings) -> "AlignSettings":
        """The alignment a run's ``engine.settings.Settings`` asks for (its ``align_*`` fields)."""
        return cls(
            fit=settings.align_fit,
            correction=settings.align_correction,
            seam_tolerance=settings.align_seam_tolerance,
            falloff=settings.align_falloff,
            seam_smoothing=settings.align_seam_smoothing,
            seam_spread=settings.align_seam_spread,
            seam_adaptive=settings.align_seam_adaptive,
            seam_edge_radius=settings.align_seam_edge_radius,
        )


MIN_FIT_PIXELS = 64  # fewer overlapping pixels than this: the global fit is a guess
MIN_INLIER_FRACTION = 0.5  # fewer inliers than this after the fit: the estimate disagrees in shape


@dataclass
class AlignStats:
    scale: float  # global fit: aligned = scale * new + shift (before seam correction)
    shift: float
    fit_pixels: int  # pixels where both depths exist (outside the hole)
    fit_inlier_fraction: float  # share of those within the Huber threshold after the fit
    seam_pixels: int  # boundary pixels that continue an existing surface (constrained)
    seam_tolerance: float  # the occlusion test's relative gap used for this view (``seam_adaptive`` may widen it)
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

    def warnings(self, settings: "AlignSettings") -> list[str]:
        """What a user should hear about this view's alignment (with the numbers)."""
        problems = []
        if settings.fit != "none" and self.fit_pixels < MIN_FIT_PIXELS:
            problems.append(
                f"only {self.fit_pixels} pixels overlap the existing geometry (need {MIN_FIT_PIXELS}): "
                f"the depth keeps scale {self.scale:.3f} from too little evidence"
            )
        elif settings.fit != "none" and self.fit_inlier_fraction < MIN_INLIER_FRACTION:
            problems.append(
                f"only {self.fit_inlier_fraction:.0%} of {self.fit_pixels} overlapping pixels agree with the existing "
                f"geometry within {settings.huber:.0%} after the fit (scale {self.scale:.3f}): the estimated depth's "
                "shape differs from the scene's"
            )
        if self.seam_error_after_rel > self.seam_tolerance / 2:
            problems.append(
                f"the new surface still jumps {self.seam_error_after_rel:.1%} ({self.seam_error_after:.3f} m) "
                "from the existing one at the hole's border"
            )
        return problems


def _shifted(t: torch.Tensor, dy: int, dx: int, fill: float) -> torch.Tensor:
    """out[y, x] = t[y + dy, x + dx] ([H, W]), ``fill`` outside the image."""
    height, width = t.shape
    pad = max(abs(dy), abs(dx))
    padded = F.pad(t[None, None], (pad, pad, pad, pad), value=fill)[0, 0]
    return padded[pad + dy : pad + dy + height, pad + dx : pad + dx + width]


def _median_sample(values: torch.Tensor) -> torch.Tensor:
    """An evenly strided sample of at most ~``_MEDIAN_SAMPLES`` of 1-D ``values``: medians sort, keep them cheap."""
    return values[:: max(1, values.numel() // _MEDIAN_SAMPLES)]


def _robust_weights(residual: torch.Tensor, threshold: float) -> torch.Tensor:
    """Huber weights, and zero weight (trimmed) beyond 3 robust standard deviations or
    3 thresholds, whichever is wider: gross outliers (bad estimates, wrong inpainting) then
    have no pull at all, which plain Huber weights would still give them."""
    magnitude = residual.abs()
    sample = _median_sample(residual)
    cutoff = torch.clamp(3.0 * 1.4826 * (sample - sample.median()).abs().median(), min=3.0 * threshold)
    weight = threshold / magnitude.clamp(min=threshold)
    return torch.where(magnitude <= cutoff, weight, torch.zeros_like(weight))


def _fit(new: torch.Tensor, ref: torch.Tensor, settings: AlignSettings) -> tuple[float, float, float]:
    """Robust fit ref ≈ scale·new + shift over 1-D float64 samples -> (scale, shift, inlier share)."""
    if new.numel() == 0:
        return 1.0, 0.0, 0.0
    if settings.fit in ("none", "adam"):
        scale = 1.0 if settings.fit == "none" else _adam_scale(new, ref)
        inliers = float((((scale * new - ref) / ref).abs() <= settings.huber).double().mean())
        return scale, 0.0, inliers
    log_ratio = torch.log(ref) - torch.log(new)  # [M]
    location = _median_sample(log_ratio).median()
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


def _adam_scale(new: torch.Tensor, ref: torch.Tensor, steps: int = 100, lr: float = 1e-3) -> float:
    """LucidDreamer's fit: one scale from 1, ``steps`` Adam steps on the mean squared distance of
    the points (z-depths along the same rays: the ray length factor is common to both)."""
    scale = torch.ones((), dtype=new.dtype, device=new.device, requires_grad=True)
    optimizer = torch.optim.Adam([scale], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.mean((ref - scale * new) ** 2)
        loss.backward()
        optimizer.step()
    return float(scale.detach())


def _linear_corners(
    fitted: np.ndarray, ref: np.ndarray, known: np.ndarray, hole: np.ndarray
) -> np.ndarray:
    """LucidDreamer's boundary correction: additive depth offsets ``ref - fitted`` at the known
    pixels bordering the hole, zero at the four image corners, interpolated linearly over the hole
    (nearest neighbour outside the convex hull).  Returns the offset [H, W] (0 outside the hole)."""
    from scipy.interpolate import griddata
    from scipy.ndimage import binary_dilation

    height, width = hole.shape
    border = known & (fitted > 0) & binary_dilation(hole, structure=np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool))
    rows, cols = np.nonzero(border)
    offset = np.zeros(hole.shape, dtype=np.float64)
    if len(rows) == 0 or not hole.any():
        return offset
    corners = np.array([[0, 0], [0, width - 1], [height - 1, 0], [height - 1, width - 1]], dtype=np.float64)
    sites = np.concatenate([np.stack([rows, cols], 1).astype(np.float64), corners])
    values = np.concatenate([(ref - fitted)[rows, cols].astype(np.float64), np.zeros(4)])
    targets = np.stack(np.nonzero(hole), 1).astype(np.float64)
    linear = griddata(sites, values, targets, method="linear")
    nearest = griddata(sites, values, targets, method="nearest")
    offset[hole] = np.where(np.isnan(linear), nearest, linear)
    return offset


SEAM_ROUNDS = 3  # robust re-weighting rounds of the seam fit


def _seam_fit(gap: np.ndarray, seam: np.ndarray, domain: np.ndarray, settings: AlignSettings) -> np.ndarray:
    """The log-correction [H, W] over ``domain`` (the hole) from the seam's log gaps, regularised.

    The existing surface next to the hole is itself sampled (its points sit off the pixel
    centres, the input's hidden background is a guess), so each seam pixel's gap carries noise
    of a few percent that a pinned (Dirichlet) fill would copy into the hole.  Here the gaps are
    soft data (weight 1/ℓ², ℓ = ``seam_smoothing``·max(H, W)) of the screened membrane, re-weighted
    robustly (Huber, trimmed): the correction follows the gap's trend along the seam, not each
    pixel's noise, and a seam pixel that disagrees with its neighbours has no pull."""
    length = max(gap.shape)
    data_weight = (settings.seam_smoothing * length) ** -2
    zero_weight = (settings.falloff * length) ** -2
    weight = seam.astype(np.float64)
    correction = np.zeros(gap.shape, np.float64)
    for _ in range(SEAM_ROUNDS):
        pull = data_weight * weight + zero_weight
        values = np.where(seam, data_weight * weight * gap / pull, 0.0)
        correction = harmonic_fill(values[..., None], domain, np.zeros(gap.shape, bool), weight=pull)[..., 0]
        weight = np.zeros(gap.shape, np.float64)
        weight[seam] = _robust_weights(torch.from_numpy(gap[seam] - correction[seam]), settings.huber).numpy()
    return np.where(domain, correction, 0.0).astype(np.float32)


def _typical_gaps(log_gap: torch.Tensor, seam: torch.Tensor, settings: AlignSettings) -> torch.Tensor:
    """Where a seam pixel's log gap lies within ``seam_spread`` robust standard deviations (MAD)
    of the seam's median gap, at least ``huber`` away: what the seam's own spread says is one
    surface continued.  With a near-right estimate the gaps are the existing surface's sampling
    noise, and a foreground silhouette a few percent nearer than the revealed background stands
    out; with a warped estimate the gaps spread and more of the seam is kept."""
    gaps = log_gap[seam]
    sample = _median_sample(gaps)
    centre = sample.median()
    limit = torch.clamp(settings.seam_spread * 1.4826 * (sample - centre).abs().median(), min=settings.huber)
    return (log_gap - centre).abs() <= limit


def _seam_tolerance(best_gap: torch.Tensor, boundary: torch.Tensor, settings: AlignSettings) -> float:
    """The occlusion test's relative gap for one view: ``seam_tolerance``, widened with
    ``seam_adaptive`` > 0 to that many times the median |log gap| (``best_gap``) over the hole's
    border (``boundary``).  Most border pixels continue a surface, so their median gap is what
    the estimate's warp left after the global fit: a far-off estimate (severe errors) leaves
    continuing surfaces more than the fixed tolerance apart, which would leave them free and
    open the seam."""
    if settings.seam_adaptive <= 0 or not bool(boundary.any()):
        return settings.seam_tolerance
    median = float(_median_sample(best_gap[boundary]).median())
    return max(settings.seam_tolerance, math.expm1(settings.seam_adaptive * median))


def _near_estimate_edges(depth: torch.Tensor, valid: torch.Tensor, radius: int, tolerance: float) -> torch.Tensor:
    """Pixels within ``radius`` of a depth edge of the (full-frame) estimate: where its depths in
    that window differ by more than ``tolerance`` of the nearest.  There estimators blur the
    edge into a ramp ("flying pixels") and the existing render's splats overhang it, so a seam
    gap measured there says little about how the two surfaces meet."""
    window = 2 * radius + 1
    near = -F.max_pool2d(-torch.where(valid, depth, torch.full_like(depth, math.inf))[None, None], window, 1, radius)[0, 0]
    far = F.max_pool2d(torch.where(valid, depth, torch.zeros_like(depth))[None, None], window, 1, radius)[0, 0]
    return valid & (far > (1 + tolerance) * near)


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
    if settings.correction not in CORRECTIONS:
        raise ValueError(f"align_depth: correction must be one of {CORRECTIONS}, not {settings.correction!r}")
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
        steady = (ref2 > 0) & ~depth_jumps(ref1, ref2, settings.extrapolate_tolerance)
        candidate = torch.where(steady, 2 * ref1 - ref2, ref1)
        usable = hole & new_ok & (ref1 > 0) & (candidate > 0)
        gap = torch.where(usable, (torch.log(candidate.clamp(min=1e-12)) - log_fitted).abs(), torch.full_like(ref, math.inf))
        better = gap < best_gap
        best_gap = torch.where(better, gap, best_gap)
        target = torch.where(better, candidate, target)
        across = torch.where(better, ref1, across)
    boundary = torch.isfinite(best_gap)
    tolerance = _seam_tolerance(best_gap, boundary, settings)
    seam = boundary & ~depth_jumps(target, fitted, tolerance)
    edge_radius = round(settings.seam_edge_radius * max(shape))  # 3 px at 512 px: estimators' ramps scale with the image
    if edge_radius > 0:
        seam = seam & ~_near_estimate_edges(fitted, new_ok, edge_radius, tolerance)
    log_gap = torch.log(target.clamp(min=1e-12)) - log_fitted
    if settings.seam_spread > 0 and bool(seam.any()):
        seam = seam & _typical_gaps(log_gap, seam, settings)

    # 3. Log-correction fixed on the seam, screened-harmonic fill over the hole.
    correction_at_seam = torch.where(seam, log_gap, torch.zeros_like(ref))
    if settings.correction == "linear-corners":
        offset = _linear_corners(fitted.cpu().numpy(), ref.cpu().numpy(), known.cpu().numpy(), (hole & new_ok).cpu().numpy())
        corrected = (fitted + _to_tensor(offset, device)).clamp(min=0)
        correction = torch.where(corrected > 0, torch.log(corrected.clamp(min=1e-12)) - log_fitted, torch.zeros_like(ref))
        correction = torch.where(new_ok, correction, torch.zeros_like(ref))
    elif settings.correction == "ray" and bool(seam.any()):
        if settings.seam_smoothing > 0:
            correction = _to_tensor(_seam_fit(correction_at_seam.cpu().numpy(), seam.cpu().numpy(),
                                              (hole & new_ok).cpu().numpy(), settings), device)
        else:
            # Fixed on the seam, free (zero normal derivative) at the hole's other edges.
            fill = harmonic_fill(
                correction_at_seam.cpu().numpy()[..., None],
                (hole & new_ok & ~seam).cpu().numpy(),
                seam.cpu().numpy(),
                weight=(settings.falloff * max(shape)) ** -2,
            )
            correction = torch.where(hole & new_ok, _to_tensor(fill[..., 0], device), torch.zeros_like(ref))
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
        seam_tolerance=tolerance,
        occlusion_pixels=int((boundary & ~seam).sum()),
        seam_error_before=before,
        seam_error_global=global_,
        seam_error_after=after,
        seam_error_before_rel=before_rel,
        seam_error_global_rel=global_rel,
        seam_error_after_rel=after_rel,
        max_correction=float(torch.expm1(correction.abs().max())) if bool(correction.any()) else 0.0,
    )
    return aligned.cpu().numpy().astype(np.float32), stats
