"""3D Gaussian rasterization: gsplat on CUDA, our pure-PyTorch rasterizer anywhere else.

The torch backend reproduces ``gsplat.rasterization`` (1.5.3, ``packed=False``, pinhole,
``rasterize_mode="classic"``) for one camera:

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
The torch backend builds (pixel, Gaussian) pairs inside each box, decides which pairs
contribute without autograd, then recomputes only those with autograd: memory grows with
the contributing pairs, not with pixels x Gaussians.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

ALPHA_THRESHOLD = 1.0 / 255.0  # gsplat's ALPHA_THRESHOLD: fainter samples are skipped
ALPHA_MAX = 0.999  # alpha clamp, keeps 1 - alpha > 0
T_STOP = 1e-4  # a pixel stops before the sample that takes its transmittance to <= this
EXTEND = 3.33  # box half-size in standard deviations
PAIR_BUDGET = 1 << 23  # candidate (pixel, Gaussian) pairs handled at once by the torch backend

BACKENDS = ("auto", "gsplat", "torch")


def gsplat_available() -> bool:
    """gsplat importable and a CUDA device present (gsplat has no CPU rasterizer)."""
    if not torch.cuda.is_available():
        return False
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str, device: torch.device | str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown rasterizer backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "gsplat" if torch.device(device).type == "cuda" and gsplat_available() else "torch"
    return backend


def rasterize(
    means: Tensor,  # [N, 3] world
    quats: Tensor,  # [N, 4] wxyz, any norm
    scales: Tensor,  # [N, 3] activated (standard deviations, world units)
    opacities: Tensor,  # [N] activated, in [0, 1]
    colors: Tensor,  # [N, K, 3] SH coefficients (with sh_degree) or [N, D] values
    viewmat: Tensor,  # [4, 4] world-to-camera, OpenCV axes
    K: Tensor,  # [3, 3] continuous pixel coordinates (pixel centres at +0.5)
    width: int,
    height: int,
    sh_degree: int | None = None,
    backend: str = "auto",
    *,
    background: Tensor | None = None,  # [D] added where transmittance is left
    with_depth: bool = False,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """Render one camera. Returns ``(rgb [H, W, D], alpha [H, W], info)``.

    ``info`` has gsplat's ``packed=False`` meta keys that its strategies read: ``means2d``
    ``[1, N, 2]`` (call ``retain_grad()`` on it before backward), ``radii`` ``[1, N, 2]`` int32,
    ``depths`` ``[1, N]``, ``conics`` ``[1, N, 3]``, ``opacities`` ``[1, N]``,
    ``gaussian_ids=None``, ``width``, ``height``, ``n_cameras=1``; plus ``backend`` and, with
    ``with_depth``, ``expected_depth`` ``[H, W]`` (alpha-normalised camera z-depth).
    """
    width, height = int(width), int(height)
    if sh_degree is not None:
        if colors.dim() != 3 or colors.shape[-1] != 3 or (sh_degree + 1) ** 2 > colors.shape[1]:
            raise ValueError(f"colors {tuple(colors.shape)} cannot hold SH degree {sh_degree}")
    elif colors.dim() != 2:
        raise ValueError(f"colors must be [N, D] when sh_degree is None, got {tuple(colors.shape)}")
    kind = resolve_backend(backend, means.device)
    if kind == "gsplat":
        return _rasterize_gsplat(
            means, quats, scales, opacities, colors, viewmat, K, width, height, sh_degree,
            background, with_depth, near_plane, far_plane, eps2d,
        )
    return _rasterize_torch(
        means, quats, scales, opacities, colors, viewmat, K, width, height, sh_degree,
        background, with_depth, near_plane, far_plane, eps2d,
    )


def _rasterize_gsplat(means, quats, scales, opacities, colors, viewmat, K, width, height, sh_degree,
                      background, with_depth, near_plane, far_plane, eps2d):
    from gsplat import rasterization

    renders, alphas, info = rasterization(
        means, quats, scales, opacities, colors, viewmat[None], K[None], width, height,
        near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, sh_degree=sh_degree,
        packed=False, backgrounds=None if background is None else background[None],
        render_mode="RGB+ED" if with_depth else "RGB",
    )
    renders, alpha = renders[0], alphas[0, ..., 0]  # [H, W, D(+1)], [H, W]
    info["backend"] = "gsplat"
    if with_depth:
        info["expected_depth"] = renders[..., -1]
        renders = renders[..., :-1]
    return renders, alpha, info


# --------------------------------------------------------------------------------------------
# Pure-PyTorch backend
# --------------------------------------------------------------------------------------------

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
         -0.4570457994644658, 1.445305721320277, -0.5900435899266435)


def sh_basis(degree: int, dirs: Tensor) -> Tensor:
    """Real SH basis (the 3DGS reference's sign and order conventions) at unit dirs [..., 3] -> [..., (d+1)^2]."""
    if not 0 <= degree <= 3:
        raise ValueError(f"SH degree {degree} is outside 0..3")
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [SH_C2[0] * x * y, SH_C2[1] * y * z, SH_C2[2] * (2 * zz - xx - yy), SH_C2[3] * x * z,
                SH_C2[4] * (xx - yy)]
    if degree >= 3:
        out += [SH_C3[0] * y * (3 * xx - yy), SH_C3[1] * x * y * z, SH_C3[2] * y * (4 * zz - xx - yy),
                SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy), SH_C3[4] * x * (4 * zz - xx - yy),
                SH_C3[5] * z * (xx - yy), SH_C3[6] * x * (xx - 3 * yy)]
    return torch.stack(out, dim=-1)


def eval_sh(degree: int, coeffs: Tensor, dirs: Tensor) -> Tensor:
    """Colour from SH coefficients [N, K, 3] along directions [N, 3] (not necessarily unit) -> [N, 3]."""
    basis = sh_basis(degree, F.normalize(dirs, dim=-1))  # [N, B]
    return torch.einsum("nb,nbc->nc", basis, coeffs[:, : basis.shape[-1]])


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """wxyz quaternions [N, 4] (normalised here) -> rotation matrices [N, 3, 3]."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(quats.shape[:-1] + (3, 3))


def project(means, quats, scales, opacities, viewmat, K, width, height, near_plane=0.01, far_plane=1e10,
            eps2d=0.3):
    """EWA projection of every Gaussian, as gsplat's fused projection kernel.

    Returns ``means2d [N, 2], conics [N, 3] (a, b, c of the inverse 2D covariance),
    depths [N] (camera z), radii [N, 2] int32 (0 = culled)``.  Values of culled Gaussians are
    finite but meaningless; their gradients are zero.
    """
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    mc = means @ R.T + t  # [N, 3] camera space
    x, y, z = mc.unbind(-1)
    in_depth = (z >= near_plane) & (z <= far_plane)
    z = torch.where(in_depth, z, torch.ones_like(z))  # keep culled ones finite for autograd
    M = R @ (quat_to_rotmat(quats) * scales[:, None, :])  # [N, 3, 3] camera-space R S
    cov = M @ M.transpose(1, 2)  # [N, 3, 3]
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    lim_x_pos = (width - cx) / fx + 0.3 * (0.5 * width / fx)
    lim_x_neg = cx / fx + 0.3 * (0.5 * width / fx)
    lim_y_pos = (height - cy) / fy + 0.3 * (0.5 * height / fy)
    lim_y_neg = cy / fy + 0.3 * (0.5 * height / fy)
    # The Jacobian is evaluated at a point clamped to 1.3x the frustum (as 3DGS/gsplat do), which
    # keeps off-screen Gaussians from blowing up.
    tx = z * torch.minimum(torch.maximum(x / z, -lim_x_neg), lim_x_pos)
    ty = z * torch.minimum(torch.maximum(y / z, -lim_y_neg), lim_y_pos)
    zero = torch.zeros_like(z)
    J = torch.stack([fx / z, zero, -fx * tx / (z * z), zero, fy / z, -fy * ty / (z * z)], -1).reshape(-1, 2, 3)
    cov2d = J @ cov @ J.transpose(1, 2)  # [N, 2, 2]
    a = cov2d[:, 0, 0] + eps2d
    b = 0.5 * (cov2d[:, 0, 1] + cov2d[:, 1, 0])
    c = cov2d[:, 1, 1] + eps2d
    det = a * c - b * b
    det_ok = in_depth & (det > 0)
    det = torch.where(det_ok, det, torch.ones_like(det))
    conics = torch.stack([c / det, -b / det, a / det], dim=-1)
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], dim=-1)
    with torch.no_grad():
        o = opacities.detach()
        ok = det_ok & (o >= ALPHA_THRESHOLD)
        extend = torch.sqrt(2.0 * torch.log(o.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD)).clamp_max(EXTEND)
        rx = torch.ceil(extend * torch.sqrt(a.detach().clamp_min(0)))
        ry = torch.ceil(extend * torch.sqrt(c.detach().clamp_min(0)))
        ok &= (rx > 0) | (ry > 0)
        mx, my = means2d[:, 0].detach(), means2d[:, 1].detach()
        ok &= (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
        radii = torch.stack([rx, ry], dim=-1) * ok[:, None]
    return means2d, conics, mc[:, 2], radii.int()


def _pairs(ids: Tensor, x0: Tensor, x1: Tensor, y0: Tensor, y1: Tensor, width: int) -> tuple[Tensor, Tensor]:
    """All (pixel, Gaussian) pairs inside each Gaussian's pixel box, sorted by pixel; within a
    pixel, in the order of ``ids`` (front to back).  Returns ``(pixel [M], gaussian [M])`` int64."""
    w = (x1 - x0).clamp_min(0)
    counts = w * (y1 - y0).clamp_min(0)
    keep = torch.nonzero(counts > 0).squeeze(1)
    if keep.numel() == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=ids.device)
        return empty, empty
    counts = counts.index_select(0, keep)
    start = torch.cumsum(counts, 0) - counts
    # one gather of each box's (x0, y0, width, first pair, Gaussian id) per pair
    table = torch.stack([x0, y0, w, ids], 1).index_select(0, keep)
    table = torch.cat([table, start[:, None]], 1)  # [n, 5]
    owner = torch.repeat_interleave(torch.arange(len(keep), device=ids.device), counts)  # [M]
    box = table.index_select(0, owner)  # [M, 5]
    k = torch.arange(len(owner), device=ids.device) - box[:, 4]
    row = torch.div(k, box[:, 2], rounding_mode="floor")
    pixel = (box[:, 1] + row) * width + box[:, 0] + (k - row * box[:, 2])
    pixel, order = torch.sort(pixel, stable=True)
    return pixel, box[:, 3].index_select(0, order)


def _composite(pixel, gauss, means2d, conics, opacities, features, n_pixels):
    """Front-to-back compositing of pairs sorted by (pixel, depth).

    Returns ``(features [n_pixels, D], alpha [n_pixels])``.  Which pairs count is decided
    without autograd; the weights of those pairs are then recomputed differentiably.
    """
    table = torch.cat([means2d, conics, opacities[:, None]], dim=1)  # [N, 6]: x, y, conic a b c, opacity

    def alphas(table, centre, gauss):
        g = table.index_select(0, gauss)  # [M, 6]
        dx = g[:, 0] - centre[:, 0]
        dy = g[:, 1] - centre[:, 1]
        sigma = 0.5 * (g[:, 2] * dx * dx + g[:, 4] * dy * dy) + g[:, 3] * dx * dy
        return sigma, torch.clamp_max(g[:, 5] * torch.exp(-sigma), ALPHA_MAX)

    def exclusive_transmittance(pixel, alpha):
        # Segmented exclusive cumulative product of (1 - alpha) per pixel, in log space and
        # float64 so long runs of pairs lose no precision.
        log_keep = torch.log1p(-alpha).double()
        exclusive = torch.cumsum(log_keep, 0) - log_keep
        first = torch.ones_like(pixel, dtype=torch.bool)
        first[1:] = pixel[1:] != pixel[:-1]
        segment = torch.cumsum(first, 0) - 1
        return torch.exp(exclusive - exclusive[first].index_select(0, segment)).to(alpha.dtype)

    def take(keep, *tensors):
        idx = torch.nonzero(keep).squeeze(1)
        return [t.index_select(0, idx) for t in tensors]

    weight = None
    differentiable = torch.is_grad_enabled() and (table.requires_grad or features.requires_grad)
    with torch.no_grad():
        centre = torch.stack([pixel % n_pixels[1], torch.div(pixel, n_pixels[1], rounding_mode="floor")], 1)
        centre = centre.to(table.dtype) + 0.5  # [M, 2] pixel centres
        sigma, alpha = alphas(table.detach(), centre, gauss)
        pixel, gauss, centre, alpha = take((sigma >= 0) & (alpha >= ALPHA_THRESHOLD), pixel, gauss, centre, alpha)
        # transmittance after each sample; samples are taken while it stays above T_STOP
        # (monotone per pixel, so this keeps a prefix of every pixel's list).
        before = exclusive_transmittance(pixel, alpha)
        taken = before * (1 - alpha) > T_STOP
        if not differentiable:
            pixel, gauss, weight = take(taken, pixel, gauss, alpha * before)  # no autograd: done
        else:
            pixel, gauss, centre = take(taken, pixel, gauss, centre)
    if weight is None:
        _, alpha = alphas(table, centre, gauss)
        weight = alpha * exclusive_transmittance(pixel, alpha)  # [M]
    total = n_pixels[0] * n_pixels[1]
    out = torch.zeros(total, features.shape[1], dtype=features.dtype, device=features.device)
    out = out.index_add(0, pixel, weight[:, None] * features.index_select(0, gauss))
    acc = torch.zeros(total, dtype=weight.dtype, device=weight.device).index_add(0, pixel, weight)
    return out, acc


def _rasterize_torch(means, quats, scales, opacities, colors, viewmat, K, width, height, sh_degree,
                     background, with_depth, near_plane, far_plane, eps2d):
    dtype, device = means.dtype, means.device
    viewmat, K = viewmat.to(device, dtype), K.to(device, dtype)
    means2d, conics, depths, radii = project(means, quats, scales, opacities, viewmat, K, width, height,
                                             near_plane, far_plane, eps2d)
    means2d_out = means2d[None]  # [1, N, 2]: the tensor whose .grad the strategies read
    means2d = means2d_out[0]
    if sh_degree is None:
        feats = colors
    else:
        campos = -viewmat[:3, :3].T @ viewmat[:3, 3]
        feats = torch.clamp_min(eval_sh(sh_degree, colors, means - campos) + 0.5, 0.0)
    if with_depth:
        feats = torch.cat([feats, depths[:, None]], dim=-1)

    visible = torch.nonzero((radii > 0).all(-1)).squeeze(1)
    # front to back; a stable sort breaks depth ties by index, like gsplat's radix sort
    visible = visible[torch.sort(depths.detach()[visible], stable=True).indices]
    with torch.no_grad():
        m, r = means2d.detach()[visible], radii[visible].to(dtype)
        # pixel i (centre i + 0.5) can be inside [m - r, m + r] only for i in [x0, x1)
        x0 = torch.floor(m[:, 0] - r[:, 0] - 0.5).clamp(0, width).long()
        x1 = (torch.ceil(m[:, 0] + r[:, 0] - 0.5) + 1).clamp(0, width).long()
        y0 = torch.floor(m[:, 1] - r[:, 1] - 0.5).clamp(0, height).long()
        y1 = (torch.ceil(m[:, 1] + r[:, 1] - 0.5) + 1).clamp(0, height).long()
        n_pairs = int(((x1 - x0) * (y1 - y0)).sum())
    bands = max(1, math.ceil(n_pairs / PAIR_BUDGET))
    rows = max(1, math.ceil(height / bands))
    image = torch.zeros(height * width, feats.shape[1], dtype=feats.dtype, device=device)
    acc = torch.zeros(height * width, dtype=dtype, device=device)
    for r0 in range(0, height, rows):  # row bands bound the memory of the candidate pairs
        r1 = min(height, r0 + rows)
        pixel, gauss = _pairs(visible, x0, x1, y0.clamp(r0, r1), y1.clamp(r0, r1), width)
        if pixel.numel():
            band_img, band_acc = _composite(pixel, gauss, means2d, conics, opacities, feats, (height, width))
            image = image + band_img
            acc = acc + band_acc
    image = image.reshape(height, width, -1)
    alpha = acc.reshape(height, width)
    info: dict[str, Any] = {
        "batch_ids": None, "camera_ids": None, "gaussian_ids": None,
        "radii": radii[None], "means2d": means2d_out, "depths": depths[None], "conics": conics[None],
        "opacities": opacities[None], "width": width, "height": height, "n_cameras": 1, "n_batches": 1,
        "backend": "torch",
    }
    if with_depth:
        info["expected_depth"] = image[..., -1] / alpha.clamp_min(1e-10)
        image = image[..., :-1]
    if background is not None:
        image = image + (1.0 - alpha)[..., None] * background.to(device, dtype)
    return image, alpha, info
