"""3D Gaussian rasterization: gsplat on CUDA, our pure-PyTorch rasterizer anywhere else.

The torch backend reproduces ``gsplat.rasterization`` (1.5.3, ``packed=False``, pinhole,
``rasterize_mode="classic"``, or ``"antialiased"`` with ``antialiased=True``) for one camera or a batch of
cameras of one size:

* projection: EWA splatting with the Jacobian's x/z, y/z clamped to 1.3x the field of view,
  ``eps2d = 0.3`` added to the 2D covariance, culling at ``near_plane`` / ``far_plane``;
* extent: ``ceil(extend * sqrt(cov2d_ii))`` with ``extend = min(3.33, sqrt(2 ln(255 o)))``
  (gsplat's opacity-aware box), Gaussians with opacity below 1/255 or off-screen get radius 0;
* compositing front to back by camera-space depth (ties by index), pixel centres at +0.5,
  ``alpha = min(0.999, o exp(-sigma))``, samples with ``alpha < 1/255`` skipped, a pixel stops
  before the sample that would take its transmittance to ``<= 1e-4``;
* colours: SH evaluated along ``mean - camera centre``, ``+0.5``, clamped at 0.

gsplat intersects Gaussians with 16x16 tiles; the box above already contains every pixel
where ``alpha >= 1/255``, so working per pixel instead of per tile selects the same samples.
The torch backend cuts each box row to the run of pixels where alpha can reach 1/255 (about
pi/4 of the box), composites those (pixel, Gaussian) pairs with a few passes of tensor ops and
differentiates them with the 3DGS backward written out (``_Composite``; on a CPU it costs about
half the forward): memory grows with the pairs, not with pixels x Gaussians.
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import gaussian_math

ALPHA_THRESHOLD = 1.0 / 255.0  # gsplat's ALPHA_THRESHOLD: fainter samples are skipped
ALPHA_MAX = 0.999  # alpha clamp, keeps 1 - alpha > 0
T_STOP = 1e-4  # a pixel stops before the sample that takes its transmittance to <= this
EXTEND = 3.33  # box half-size in standard deviations
PAIR_BUDGET = 1 << 23  # candidate (pixel, Gaussian) pairs handled at once by the torch backend

BACKENDS = ("auto", "gsplat", "torch")


_gsplat_problem: list[str] = []  # why gsplat's CUDA cannot be used, found once per process
_warned: list[bool] = []


def gsplat_problem() -> str:
    """Why gsplat cannot rasterize here ("" when it can).  Loads (and, the first time, builds)
    gsplat's CUDA extension: that build takes a minute or more, which ``engine warmup`` pays at set-up."""
    if not torch.cuda.is_available():
        return "no CUDA device"
    if not _gsplat_problem:
        try:
            from gsplat.cuda._backend import _C  # imports, or JIT-builds, the compiled kernels
        except Exception as exc:  # noqa: BLE001 - a broken build or a missing package: same fallback
            _gsplat_problem.append(f"gsplat's CUDA extension could not be built or loaded ({type(exc).__name__}: {exc})")
        else:
            _gsplat_problem.append("" if _C is not None else "gsplat found no CUDA toolkit (nvcc) to build its kernels")
    return _gsplat_problem[0]


def gsplat_available() -> bool:
    """gsplat's CUDA kernels usable on this machine (gsplat has no CPU rasterizer)."""
    return not gsplat_problem()


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """``auto``: gsplat on CUDA when its kernels load, else our PyTorch rasterizer (on the same
    device: slower, ~7x at 100k Gaussians, but it trains), said once in the log."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown rasterizer backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    if torch.device(device).type != "cuda":
        return "torch"
    problem = gsplat_problem()
    if problem and not _warned:
        _warned.append(True)
        logging.getLogger("engine").warning("3DGS uses the PyTorch rasterizer on the GPU (slower): %s", problem)
    return "torch" if problem else "gsplat"


def rasterizer_report() -> dict[str, str]:
    """Which rasterizer training will use, without building anything: for ``engine version``/``status``."""
    import importlib.util

    if not torch.cuda.is_available():
        return {"rasterizer": "torch", "reason": "no CUDA device"}
    if importlib.util.find_spec("gsplat") is None:
        return {"rasterizer": "torch", "reason": "gsplat is not installed"}
    if _gsplat_problem:
        return {"rasterizer": "torch" if _gsplat_problem[0] else "gsplat", "reason": _gsplat_problem[0] or "loaded"}
    from torch.utils.cpp_extension import _find_cuda_home, _get_build_directory

    if importlib.util.find_spec("gsplat.csrc") is not None:
        return {"rasterizer": "gsplat", "reason": "prebuilt kernels"}
    if (Path(_get_build_directory("gsplat_cuda", verbose=False)) / "gsplat_cuda.so").is_file():
        return {"rasterizer": "gsplat", "reason": "kernels built"}
    if _find_cuda_home() or shutil.which("nvcc"):
        return {"rasterizer": "gsplat", "reason": "kernels not built yet: run `python -m engine warmup` (a minute or more)"}
    return {"rasterizer": "torch", "reason": "no CUDA toolkit (nvcc) to build gsplat's kernels"}


def rasterize(
    means: Tensor,  # [N, 3] world
    quats: Tensor,  # [N, 4] wxyz, any norm
    scales: Tensor,  # [N, 3] activated (standard deviations, world units)
    opacities: Tensor,  # [N] activated, in [0, 1]
    colors: Tensor,  # [N, K, 3] SH coefficients (with sh_degree) or [N, D] values
    viewmat: Tensor,  # [4, 4] world-to-camera, OpenCV axes; or [C, 4, 4] for C cameras at once
    K: Tensor,  # [3, 3] continuous pixel coordinates (pixel centres at +0.5); or [C, 3, 3]
    width: int,
    height: int,
    sh_degree: int | None = None,
    backend: str = "auto",
    *,
    background: Tensor | None = None,  # [D] added where transmittance is left
    with_depth: bool = False,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = gaussian_math.EPS2D,
    antialiased: bool = False,
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """Render one camera. Returns ``(rgb [H, W, D], alpha [H, W], info)``.

    ``antialiased``: gsplat's ``rasterize_mode="antialiased"`` (see ``project``); classic otherwise.

    With ``viewmat [C, 4, 4]`` and ``K [C, 3, 3]``, C cameras of one size render in one call (gsplat's
    batched rasterization): ``rgb [C, H, W, D]``, ``alpha [C, H, W]``, ``expected_depth [C, H, W]``.
    ``info`` has gsplat's ``packed=False`` meta keys that its strategies read: ``means2d``
    ``[C, N, 2]`` (call ``retain_grad()`` on it before backward), ``radii`` ``[C, N, 2]`` int32,
    ``depths`` ``[C, N]``, ``conics`` ``[C, N, 3]``, ``opacities`` ``[C, N]``,
    ``gaussian_ids=None``, ``width``, ``height``, ``n_cameras=C`` (C = 1 for one camera); plus
    ``backend`` and, with ``with_depth``, ``expected_depth`` ``[H, W]`` (alpha-normalised camera z-depth).
    """
    width, height = int(width), int(height)
    if sh_degree is not None:
        if colors.dim() != 3 or colors.shape[-1] != 3 or (sh_degree + 1) ** 2 > colors.shape[1]:
            raise ValueError(f"colors {tuple(colors.shape)} cannot hold SH degree {sh_degree}")
    elif colors.dim() != 2:
        raise ValueError(f"colors must be [N, D] when sh_degree is None, got {tuple(colors.shape)}")
    single = viewmat.dim() == 2
    viewmats, Ks = (viewmat[None], K[None]) if single else (viewmat, K)
    if viewmats.dim() != 3 or viewmats.shape[1:] != (4, 4) or Ks.shape != (len(viewmats), 3, 3):
        raise ValueError(f"viewmat {tuple(viewmat.shape)} and K {tuple(K.shape)} must be [4, 4] and [3, 3] or [C, 4, 4] and [C, 3, 3]")
    kind = resolve_backend(backend, means.device)
    render = _rasterize_gsplat if kind == "gsplat" else _rasterize_torch
    rgb, alpha, info = render(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree,
        background, with_depth, near_plane, far_plane, eps2d, antialiased,
    )
    if single:  # one camera: images without the camera axis, info keeps gsplat's [1, N, ...]
        rgb, alpha = rgb[0], alpha[0]
        if with_depth:
            info["expected_depth"] = info["expected_depth"][0]
    return rgb, alpha, info


def _rasterize_gsplat(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree,
                      background, with_depth, near_plane, far_plane, eps2d, antialiased):
    from gsplat import rasterization

    renders, alphas, info = rasterization(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height,
        near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, sh_degree=sh_degree,
        packed=False, backgrounds=None if background is None else background.expand(len(viewmats), -1),
        render_mode="RGB+ED" if with_depth else "RGB", rasterize_mode="antialiased" if antialiased else "classic",
    )
    alpha = alphas[..., 0]  # [C, H, W]
    info["backend"] = "gsplat"
    if with_depth:
        info["expected_depth"] = renders[..., -1]
        renders = renders[..., :-1]
    return renders, alpha, info


# --------------------------------------------------------------------------------------------
# Pure-PyTorch backend
# --------------------------------------------------------------------------------------------

def sh_basis(degree: int, dirs: Tensor) -> Tensor:
    """Real SH basis (the 3DGS reference's sign and order conventions) at unit dirs [..., 3] -> [..., (d+1)^2]."""
    return torch.stack(gaussian_math.sh_terms(degree, *dirs.unbind(-1)), dim=-1)


def eval_sh(degree: int, coeffs: Tensor, dirs: Tensor) -> Tensor:
    """Colour from SH coefficients [N, K, 3] along directions [N, 3] (not necessarily unit) -> [N, 3]."""
    basis = sh_basis(degree, F.normalize(dirs, dim=-1))  # [N, B]
    return torch.einsum("nb,nbc->nc", basis, coeffs[:, : basis.shape[-1]])


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """wxyz quaternions [N, 4] (normalised here) -> rotation matrices [N, 3, 3]."""
    terms = gaussian_math.rotation_terms(*F.normalize(quats, dim=-1).unbind(-1))
    return torch.stack(terms, dim=-1).reshape(quats.shape[:-1] + (3, 3))


def project(means, quats, scales, opacities, viewmat, K, width, height, near_plane=0.01, far_plane=1e10,
            eps2d=gaussian_math.EPS2D, antialiased=False):
    """EWA projection of every Gaussian, as gsplat's fused projection kernel.

    Returns ``means2d [N, 2], conics [N, 3] (a, b, c of the inverse 2D covariance),
    depths [N] (camera z), radii [N, 2] int32 (0 = culled), opacities [N]`` as composited: in
    ``antialiased`` mode (gsplat's, Mip-Splatting's 2D filter) times ``sqrt(det S / det(S + eps2d I))``,
    so the blur spreads a Gaussian's coverage instead of adding to it, as a pixel filter does.
    Values of culled Gaussians are finite but meaningless; their gradients are zero.
    """
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    mc = means @ R.T + t  # [N, 3] camera space
    x, y, z = mc.unbind(-1)
    in_depth = (z >= near_plane) & (z <= far_plane)
    z = torch.where(in_depth, z, torch.ones_like(z))  # keep culled ones finite for autograd
    # camera-space R S: R @ X for every Gaussian as one [3N, 3] x [3, 3] product (X^T R^T), not N
    # tiny batched matmuls, which dominate on a CPU
    X = quat_to_rotmat(quats) * scales[:, None, :]  # [N, 3, 3]
    M = (X.transpose(1, 2).reshape(-1, 3) @ R.T).reshape(-1, 3, 3)  # [N, 3, 3] = (R X)^T
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    lim_x_pos = (width - cx) / fx + 0.3 * (0.5 * width / fx)
    lim_x_neg = cx / fx + 0.3 * (0.5 * width / fx)
    lim_y_pos = (height - cy) / fy + 0.3 * (0.5 * height / fy)
    lim_y_neg = cy / fy + 0.3 * (0.5 * height / fy)
    # The Jacobian is evaluated at a point clamped to 1.3x the frustum (as 3DGS/gsplat do), which
    # keeps off-screen Gaussians from blowing up.
    tx = z * torch.minimum(torch.maximum(x / z, -lim_x_neg), lim_x_pos)
    ty = z * torch.minimum(torch.maximum(y / z, -lim_y_neg), lim_y_pos)
    # J = [[fx/z, 0, -fx tx/z^2], [0, fy/z, -fy ty/z^2]]; cov2d = J (R S)(R S)^T J^T = (J R S)(J R S)^T
    j0 = (fx / z)[:, None] * M[:, :, 0] - (fx * tx / (z * z))[:, None] * M[:, :, 2]  # [N, 3] row 0 of J R S
    j1 = (fy / z)[:, None] * M[:, :, 1] - (fy * ty / (z * z))[:, None] * M[:, :, 2]
    a_raw, b, c_raw = (j0 * j0).sum(-1), (j0 * j1).sum(-1), (j1 * j1).sum(-1)
    a, c = a_raw + eps2d, c_raw + eps2d
    det = a * c - b * b
    det_ok = in_depth & (det > 0)
    det = torch.where(det_ok, det, torch.ones_like(det))
    conics = torch.stack([c / det, -b / det, a / det], dim=-1)
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], dim=-1)
    if antialiased:
        opacities = opacities * torch.sqrt(((a_raw * c_raw - b * b) / det).clamp_min(0.0))
    with torch.no_grad():
        o = opacities.detach()  # gsplat culls and sizes the box by the compensated opacity too
        ok = det_ok & (o >= ALPHA_THRESHOLD)
        extend = torch.sqrt(2.0 * torch.log(o.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD)).clamp_max(EXTEND)
        rx = torch.ceil(extend * torch.sqrt(a.detach().clamp_min(0)))
        ry = torch.ceil(extend * torch.sqrt(c.detach().clamp_min(0)))
        ok &= (rx > 0) | (ry > 0)
        mx, my = means2d[:, 0].detach(), means2d[:, 1].detach()
        ok &= (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
        radii = torch.stack([rx, ry], dim=-1) * ok[:, None]
    return means2d, conics, mc[:, 2], radii.int(), opacities


def _spans(m: Tensor, conics: Tensor, opacities: Tensor, x0: Tensor, x1: Tensor, y0: Tensor, y1: Tensor):
    """Per box row, the run of pixels where a Gaussian can reach ``alpha >= 1/255``.

    Inputs are per Gaussian (depth order): ``m [V, 2]``, ``conics [V, 3]``, ``opacities [V]`` and
    the integer box ``[x0, x1) x [y0, y1)``.  Returns ``(gauss [S], row [S], start [S], count [S])``
    int64, grouped by Gaussian in the input order.  In a row, ``sigma <= ln(255 o)`` is an interval
    of x (a quadratic), about pi/4 of the box: half the candidate pairs of the whole box.
    """
    heights = (y1 - y0).clamp_min(0)  # [V]
    gauss = torch.repeat_interleave(torch.arange(len(heights), device=m.device), heights)  # [S]
    first = torch.cumsum(heights, 0) - heights
    row = torch.arange(len(gauss), device=m.device) - first[gauss] + y0[gauss]  # [S]

    # Solved in float64 with slack so that no pixel that _Composite's float32 test keeps is missing:
    # the conic's diagonal shrunk by 1e-4 admits sigma errors up to 1e-4 (a dx^2 + c dy^2) / 2,
    # far above float32 rounding (shrinking may make the form indefinite: then the whole box row);
    # the level raised by 0.01 covers exp and the threshold, ends widened by 1e-3 px the rest.
    # The few extra candidates get alpha 0 there.
    def per_span(t: Tensor) -> Tensor:
        return t.double().index_select(0, gauss)

    a, b, c = per_span(conics[:, 0]) * (1 - 1e-4), per_span(conics[:, 1]), per_span(conics[:, 2]) * (1 - 1e-4)
    level = torch.log(per_span(opacities) / ALPHA_THRESHOLD) + 1e-2
    dy = per_span(m[:, 1]) - (row + 0.5)
    disc = (b * b - a * c) * dy * dy + 2 * a * level  # sigma(dx) <= level  <=>  (a dx + b dy)^2 <= disc
    half = torch.sqrt(disc.clamp_min(0)) / a
    mid = per_span(m[:, 0]) + b * dy / a - 0.5  # pixel x whose centre x + 0.5 minimises sigma in this row
    lo = torch.maximum(torch.ceil(mid - half - 1e-3), per_span(x0))
    hi = torch.minimum(torch.floor(mid + half + 1e-3) + 1, per_span(x1))
    count = torch.where(disc >= 0, (hi - lo).clamp_min(0), 0).long()
    return gauss, row, lo.clamp_min(0).long(), count


def _expand(gauss: Tensor, row: Tensor, start: Tensor, count: Tensor, width: int) -> tuple[Tensor, Tensor]:
    """Spans (``row`` counted from the band's first row) -> one pair per pixel: ``pixel [M]`` (index
    in the band) and ``gauss [M]`` int64, still grouped by Gaussian."""
    span = torch.repeat_interleave(count)  # [M] span of each pair
    first = torch.cumsum(count, 0) - count  # [S] index of each span's first pair
    pixel = torch.arange(len(span), device=row.device) + (row * width + start - first).index_select(0, span)
    return pixel, gauss.index_select(0, span)


class _Composite(torch.autograd.Function):
    """Front-to-back compositing of candidate pairs, with the 3DGS backward written out.

    ``table [V, 6]`` (x, y, conic a b c, opacity) and ``feats [V, D]`` of the Gaussians in depth
    order; ``grid [2, P]`` the x, y of the pixel centres; ``pixel``, ``gauss [M]`` int64 the
    candidate pairs, grouped by Gaussian (``gauss`` non-decreasing).  Returns
    ``(features [P, D], alpha [P])``.

    The pair loop is memory bound on a CPU, so it is written to make few passes over [M] tensors:
    per-pair work stays in the Gaussian-major order, where per-Gaussian values are gathered
    through sorted indices; only the per-pixel scans (transmittance forward, suffix sums
    backward) go through a stable sort by pixel; per-Gaussian gradient sums are ``embedding_bag``
    over each Gaussian's run of pairs (a sorted ``index_add_`` is ~10x slower: every add waits
    for the previous one to the same address); columns stay 1D (gathers of [M, k] rows are ~3x slower).
    """

    @staticmethod
    def forward(ctx, table, feats, grid, pixel, gauss):
        n_pixels = grid.shape[1]
        mx, my, a, b, c, o = (t.index_select(0, gauss) for t in table.T.contiguous())  # [M] each
        dx = mx.sub_(grid[0].index_select(0, pixel))  # mean - pixel centre
        dy = my.sub_(grid[1].index_select(0, pixel))
        sigma = (a * dx).mul_(dx).addcmul_(c * dy, dy).mul_(0.5).addcmul_(b * dx, dy)
        vis = torch.neg(sigma).exp_()
        alpha = (o * vis).clamp_max_(ALPHA_MAX)
        alpha.masked_fill_((sigma < 0) | (alpha < ALPHA_THRESHOLD), 0)  # skipped samples: alpha 0
        # pixel-major order, front to back within a pixel (stable); small integer keys sort 2-3x faster
        order = torch.argsort(pixel.to(torch.int16 if n_pixels <= 1 << 15 else torch.int32), stable=True)
        counts = torch.bincount(pixel, minlength=n_pixels)  # [P] pairs per pixel
        sorted_pixel = torch.repeat_interleave(counts)  # [M] pixel of each pair in pixel-major order
        # transmittance before each sample: a segmented exclusive product of (1 - alpha), summed
        # in log space and float64 so that long runs of pairs lose no precision.
        log_keep = torch.log1p(alpha.index_select(0, order).neg_()).double()
        exclusive = torch.cumsum(log_keep, 0).sub_(log_keep)
        starts = (torch.cumsum(counts, 0) - counts).clamp_max(len(pixel) - 1)  # [P] first pair of each pixel
        exclusive -= exclusive.index_select(0, starts).index_select(0, sorted_pixel)
        T = torch.empty_like(alpha).scatter_(0, order, exclusive.exp_().to(alpha.dtype))
        # A pixel stops before the sample that takes it to <= T_STOP; T only falls, so that cuts
        # a suffix of each pixel's list (and samples of alpha 0 never trigger it).
        alpha.masked_fill_(T * (1 - alpha) <= T_STOP, 0)
        weight = alpha * T
        per_pair = [f.index_select(0, gauss) for f in feats.T.contiguous()]  # D x [M]
        out = torch.zeros(len(per_pair), n_pixels, dtype=feats.dtype, device=feats.device)
        for f, channel in zip(per_pair, out):
            channel.index_add_(0, pixel, weight * f)
        acc = torch.zeros(n_pixels, dtype=weight.dtype, device=weight.device).index_add_(0, pixel, weight)
        # alpha = min(0.999, o vis) passes gradient to o and sigma only where a sample is taken unclamped
        vis.masked_fill_((alpha == 0) | (alpha == ALPHA_MAX), 0)
        lengths = torch.bincount(gauss, minlength=len(table))
        offsets = torch.cumsum(lengths, 0) - lengths  # [V] first pair of each Gaussian
        ctx.save_for_backward(table, grid, pixel, order, sorted_pixel, counts, offsets, alpha, T, vis, *per_pair)
        return out.T, acc

    @staticmethod
    def backward(ctx, grad_out, grad_acc):
        table, grid, pixel, order, sorted_pixel, counts, offsets, alpha, T, vis, *per_pair = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        weight = alpha * T
        dweight = grad_acc.index_select(0, pixel)  # [M] dL/dweight of each pair
        for f, g in zip(per_pair, grad_out.T.contiguous()):
            dweight.addcmul_(f, g.index_select(0, pixel))
        # weight_i = alpha_i T_i, and every later sample j of the pixel has a factor (1 - alpha_i):
        # dL/dalpha_i = T_i dweight_i - (sum_{j > i} weight_j dweight_j) / (1 - alpha_i).
        later = (weight * dweight).index_select(0, order).double()  # pixel-major
        inclusive = torch.cumsum(later, 0)
        ends = (torch.cumsum(counts, 0) - 1).clamp_min(0)  # [P] last pair of each pixel
        after = inclusive.index_select(0, ends).index_select(0, sorted_pixel).sub_(inclusive)
        after = torch.empty_like(alpha).scatter_(0, order, after.to(alpha.dtype))
        dvis = dweight.mul_(T).sub_(after.div_(1 - alpha)).mul_(vis)  # dL/dalpha x vis = dL/do per pair
        # dL/dsigma = -o dvis, and sigma = (a dx^2 + c dy^2) / 2 + b dx dy is quadratic in the
        # pixel centre (x, y) = mean - (dx, dy): per-Gaussian sums of dvis (1, x, y, x^2, xy, y^2)
        # give every gradient.  In float64: expanding (mean - x)^2 cancels.
        x, y = grid.double()
        moments = F.embedding_bag(pixel, torch.stack([torch.ones_like(x), x, y, x * x, x * y, y * y], 1), offsets,
                                  mode="sum", per_sample_weights=dvis.double())  # [V, 6]
        s1, sx, sy, sxx, sxy, syy = moments.T
        mx, my, a, b, c, o = table.double().T
        sdx, sdy = mx * s1 - sx, my * s1 - sy  # sum of dvis dx, dvis dy
        sdxdx = (mx * s1 - 2 * sx) * mx + sxx
        sdxdy = mx * my * s1 - mx * sy - my * sx + sxy
        sdydy = (my * s1 - 2 * sy) * my + syy
        dtable = torch.stack([a * sdx + b * sdy, b * sdx + c * sdy, 0.5 * sdxdx, sdxdy, 0.5 * sdydy], 1) * -o[:, None]
        dtable = torch.cat([dtable, s1[:, None]], 1).to(table.dtype)
        dfeats = F.embedding_bag(pixel, grad_out, offsets, mode="sum", per_sample_weights=weight)  # [V, D]
        return dtable, dfeats, None, None, None


def _rasterize_torch(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree,
                     background, with_depth, near_plane, far_plane, eps2d, antialiased):
    """Each camera in turn; the cameras' 2D means are one [C, N, 2] tensor (gsplat's layout),
    upstream of every camera's compositing, so its ``.grad`` collects what the strategies read."""
    dtype, device = means.dtype, means.device
    viewmats, Ks = viewmats.to(device, dtype), Ks.to(device, dtype)
    projected = [project(means, quats, scales, opacities, v, k, width, height, near_plane, far_plane, eps2d, antialiased)
                 for v, k in zip(viewmats, Ks)]
    means2d_out = torch.stack([p[0] for p in projected])  # [C, N, 2]
    images, alphas = [], []
    for c, (_, conics, depths, radii, composited) in enumerate(projected):
        if sh_degree is None:
            feats = colors
        else:
            campos = -viewmats[c, :3, :3].T @ viewmats[c, :3, 3]
            feats = torch.clamp_min(eval_sh(sh_degree, colors, means - campos) + 0.5, 0.0)
        if with_depth:
            feats = torch.cat([feats, depths[:, None]], dim=-1)
        image, alpha = _composite_camera(means2d_out[c], conics, depths, radii, composited, feats, width, height)
        images.append(image)
        alphas.append(alpha)
    image, alpha = torch.stack(images), torch.stack(alphas)  # [C, H, W, D], [C, H, W]
    info: dict[str, Any] = {
        "batch_ids": None, "camera_ids": None, "gaussian_ids": None,
        "radii": torch.stack([p[3] for p in projected]), "means2d": means2d_out,
        "depths": torch.stack([p[2] for p in projected]), "conics": torch.stack([p[1] for p in projected]),
        "opacities": torch.stack([p[4] for p in projected]), "width": width, "height": height,
        "n_cameras": len(projected), "n_batches": 1, "backend": "torch",
    }
    if with_depth:
        info["expected_depth"] = image[..., -1] / alpha.clamp_min(1e-10)
        image = image[..., :-1]
    if background is not None:
        image = image + (1.0 - alpha)[..., None] * background.to(device, dtype)
    return image, alpha, info


def _composite_camera(means2d, conics, depths, radii, opacities, feats, width, height):
    """One camera's image [H, W, D] and alpha [H, W] from its projected Gaussians."""
    dtype, device = means2d.dtype, means2d.device
    visible = torch.nonzero((radii > 0).all(-1)).squeeze(1)
    # front to back; a stable sort breaks depth ties by index, like gsplat's radix sort
    visible = visible[torch.sort(depths.detach()[visible], stable=True).indices]
    table = torch.cat([means2d, conics, opacities[:, None]], 1).index_select(0, visible)  # [V, 6]
    feats = feats.index_select(0, visible)  # [V, D]
    with torch.no_grad():
        m, r = table[:, :2].detach(), radii[visible].to(dtype)
        # pixel i (centre i + 0.5) can be inside [m - r, m + r] only for i in [x0, x1)
        x0 = torch.floor(m[:, 0] - r[:, 0] - 0.5).clamp(0, width).long()
        x1 = (torch.ceil(m[:, 0] + r[:, 0] - 0.5) + 1).clamp(0, width).long()
        y0 = torch.floor(m[:, 1] - r[:, 1] - 0.5).clamp(0, height).long()
        y1 = (torch.ceil(m[:, 1] + r[:, 1] - 0.5) + 1).clamp(0, height).long()
        spans = _spans(m, table[:, 2:5].detach(), table[:, 5].detach(), x0, x1, y0, y1)
        n_pairs = int(spans[3].sum())
    bands = max(1, math.ceil(n_pairs / PAIR_BUDGET))
    rows = max(1, math.ceil(height / bands))
    images, accs = [], []
    for r0 in range(0, height, rows):  # row bands bound the memory of the pairs
        r1 = min(height, r0 + rows)
        in_band = torch.nonzero((spans[1] >= r0) & (spans[1] < r1)).squeeze(1)
        gauss, row, start, count = (t.index_select(0, in_band) for t in spans)
        pixel, gauss = _expand(gauss, row - r0, start, count, width)
        if pixel.numel():
            ys, xs = torch.meshgrid(torch.arange(r0, r1, dtype=dtype, device=device),
                                    torch.arange(width, dtype=dtype, device=device), indexing="ij")
            grid = torch.stack([xs.reshape(-1), ys.reshape(-1)]) + 0.5  # [2, P] the band's pixel centres
            band_img, band_acc = _Composite.apply(table, feats, grid, pixel, gauss)
        else:
            band_img = torch.zeros((r1 - r0) * width, feats.shape[1], dtype=dtype, device=device)
            band_acc = torch.zeros((r1 - r0) * width, dtype=dtype, device=device)
        images.append(band_img)
        accs.append(band_acc)
    return torch.cat(images).reshape(height, width, -1), torch.cat(accs).reshape(height, width)
