"""3DGS optimisation: LucidDreamer's recipe on gsplat's DefaultStrategy.

Gaussians start at the aggregated points and are fitted to the generated views plus
reprojections of the points at jittered poses, with the loss only where a view's mask is valid.
Densification and pruning are gsplat's own ``DefaultStrategy``; it reads only the
``packed=False`` info keys that both rasterizer backends return, and runs on CPU tensors.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..cameras import Camera, rigid_inverse, transform_points
from ..errors import Cancelled
from .gaussians import Gaussians, rgb_to_sh0, sh_coeff_count
from .rasterize import rasterize, resolve_backend
from .ssim import ssim_map


@dataclass
class SplatConfig:
    iterations: int = 2990  # optimisation steps (LucidDreamer: 2990, "~3000")
    sh_degree: int = 3  # highest SH degree
    sh_degree_interval: int = 1000  # raise the active SH degree by one every this many steps
    means_lr: float = 1.6e-4  # position lr at step 0, times the scene scale
    means_lr_final: float = 1.6e-6  # position lr at the last step (log-linear decay), times the scene scale
    sh0_lr: float = 0.0025  # colour (SH DC) lr
    shN_lr: float = 0.0025 / 20  # higher SH bands lr (the 3DGS reference divides the feature lr by 20)
    opacities_lr: float = 0.05  # opacity-logit lr
    scales_lr: float = 0.005  # log-scale lr
    quats_lr: float = 0.001  # rotation lr
    ssim_lambda: float = 0.2  # loss = (1 - lambda) L1 + lambda (1 - SSIM)
    init_opacity: float = 0.1  # initial opacity (stored as its logit), as in the 3DGS reference
    init_scale_mult: float = 1.0  # initial std-dev = this x each point's pixel footprint (~ neighbour spacing)
    refine_start_iter: int = 500  # densify/prune from this step (gsplat: strictly after it)
    refine_stop_iter: int = 15_000  # ... until this step (LucidDreamer's 15000 never stops it within 2990)
    refine_every: int = 100  # densify/prune every this many steps
    grow_grad2d: float = 2e-4  # screen-space gradient threshold for cloning/splitting
    grow_scale3d: float = 0.01  # clone below / split above this size, times the scene scale (percent_dense)
    prune_opa: float = 0.005  # prune Gaussians whose opacity falls below this
    prune_scale3d: float = 0.1  # prune Gaussians larger than this times the scene scale (after reset_every)
    reset_every: int = 3000  # opacity-reset period handed to DefaultStrategy
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)  # colour behind the Gaussians
    backend: str = "auto"  # rasterizer: "auto" (gsplat on CUDA, else torch), "gsplat", "torch"
    progress_every: int = 10  # call progress() every this many steps
    seed: int = 0  # view order and split noise

    @classmethod
    def cpu_fast(cls) -> "SplatConfig":
        """A few hundred steps at SH degree 1 with early, frequent densification: for CPUs and tests."""
        return cls(
            iterations=300, sh_degree=1, sh_degree_interval=150, refine_start_iter=100, refine_every=50,
            refine_stop_iter=250, init_opacity=0.5, progress_every=5,
        )


@dataclass
class TrainView:
    camera: Camera
    image: np.ndarray  # [H, W, 3] float32 in [0, 1]
    mask: np.ndarray  # [H, W] bool, True where the image is to be matched


def masked_loss(render: Tensor, target: Tensor, mask: Tensor | None, ssim_lambda: float = 0.2) -> Tensor:
    """(1 - lambda) L1 + lambda (1 - SSIM) over the pixels where ``mask`` [H, W] is True
    (``None``: every pixel).

    Both images are zeroed outside the mask before SSIM, so neither the target there nor the
    render there enters the loss, also through SSIM's window at the mask's border.
    """
    if mask is None:
        l1 = (render - target).abs().mean()
        return l1 if ssim_lambda == 0 else (1 - ssim_lambda) * l1 + ssim_lambda * (1 - ssim_map(render, target).mean())
    m = mask[..., None].to(render.dtype)  # [H, W, 1]
    count = mask.sum().clamp_min(1)
    l1 = ((render - target).abs() * m).sum() / (count * render.shape[-1])
    if ssim_lambda == 0:
        return l1
    s = ssim_map(render * m, target * m)  # [H, W]
    ssim = (s * m[..., 0]).sum() / count
    return (1 - ssim_lambda) * l1 + ssim_lambda * (1 - ssim)


def knn_scale(xyz: Tensor, k: int = 3, chunk: int = 2048) -> Tensor:
    """RMS distance to the k nearest other points [N] (the 3DGS reference's initial scale)."""
    out = torch.empty(len(xyz), dtype=xyz.dtype, device=xyz.device)
    kk = min(k + 1, len(xyz))
    for i in range(0, len(xyz), chunk):
        d2 = torch.cdist(xyz[i : i + chunk], xyz).square()  # [c, N]
        near = d2.topk(kk, dim=1, largest=False).values[:, 1:]  # drop the point itself
        out[i : i + chunk] = near.mean(1).sqrt() if near.shape[1] else 1.0
    return out


def init_gaussians(
    points: Any,
    *,
    sh_degree: int = 3,
    opacity: float = 0.1,
    scale_mult: float = 1.0,
    device: torch.device | str = "cpu",
) -> Gaussians:
    """Gaussians at ``points`` (a PointCloud: xyz [N, 3], rgb [N, 3], radius [N]).

    Isotropic std-dev = ``scale_mult`` x the point's world-space pixel footprint ``radius``
    (for a dense unprojection that is the neighbour spacing, which the reference gets from
    kNN); points without a usable radius fall back to kNN distances.
    """
    xyz = torch.as_tensor(np.asarray(points.xyz), dtype=torch.float32, device=device)
    rgb = torch.as_tensor(np.asarray(points.rgb), dtype=torch.float32, device=device).clamp(0, 1)
    n = len(xyz)
    if n == 0:
        raise ValueError("init_gaussians: the point cloud is empty")
    radius = torch.as_tensor(np.asarray(points.radius), dtype=torch.float32, device=device)
    bad = ~(torch.isfinite(radius) & (radius > 0))
    if bad.any():
        radius = torch.where(bad, knn_scale(xyz).clamp_min(1e-7), radius)
    scale = (radius * scale_mult).clamp_min(1e-7)
    quats = torch.zeros(n, 4, device=device)
    quats[:, 0] = 1.0
    return Gaussians(
        means=xyz,
        quats=quats,
        scales=torch.log(scale)[:, None].repeat(1, 3),
        opacities=torch.full((n,), math.log(opacity / (1 - opacity)), device=device),
        sh0=rgb_to_sh0(rgb),
        shN=torch.zeros(n, sh_coeff_count(sh_degree) - 1, 3, device=device),
    )


def scene_scale(cameras: Sequence[Camera], xyz: np.ndarray) -> float:
    """Scene size that lrs and size thresholds are relative to.

    The 3DGS reference uses 1.1x the cameras' spread around their centroid; our worlds are
    seen from cameras close together (a look-around has spread 0), so the median distance of
    the points from that centroid is taken when it is larger.
    """
    centers = np.stack([c.center for c in cameras])
    centroid = centers.mean(0)
    spread = float(np.linalg.norm(centers - centroid, axis=1).max())
    reach = float(np.median(np.linalg.norm(np.asarray(xyz, np.float64) - centroid, axis=1))) if len(xyz) else 0.0
    return 1.1 * max(spread, reach, 1e-6)


def train_gaussians(
    views: Sequence[TrainView],
    points: Any,
    config: SplatConfig | None = None,
    *,
    device: torch.device | str = "cpu",
    progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    init: Gaussians | None = None,
    stats: dict[str, Any] | None = None,
) -> Gaussians:
    """Fit Gaussians (from ``init``, else ``init_gaussians(points)``) to ``views``.

    ``progress(fraction)`` is called every ``config.progress_every`` steps and at the end;
    ``should_stop()`` is polled every step and raises ``Cancelled``.  ``stats``, when given,
    receives steps, seconds, final loss and the Gaussian count.
    """
    from gsplat.strategy import DefaultStrategy  # lazy: gsplat is only needed to train

    cfg = config or SplatConfig()
    device = torch.device(device)
    views = [v for v in views if np.asarray(v.mask).any()]
    if not views:
        raise ValueError("train_gaussians: no view has any valid pixel")
    start = time.perf_counter()
    scale = scene_scale([v.camera for v in views], np.asarray(points.xyz))
    g = init if init is not None else init_gaussians(
        points, sh_degree=cfg.sh_degree, opacity=cfg.init_opacity, scale_mult=cfg.init_scale_mult, device=device
    )
    if g.sh_degree < cfg.sh_degree:
        raise ValueError(f"initial Gaussians have SH degree {g.sh_degree} < config.sh_degree {cfg.sh_degree}")
    params = torch.nn.ParameterDict(
        {name: torch.nn.Parameter(getattr(g, name).detach().to(device, torch.float32).clone())
         for name in ("means", "quats", "scales", "opacities", "sh0", "shN")}
    )
    lrs = {"means": cfg.means_lr * scale, "quats": cfg.quats_lr, "scales": cfg.scales_lr,
           "opacities": cfg.opacities_lr, "sh0": cfg.sh0_lr, "shN": cfg.shN_lr}
    optimizers = {name: torch.optim.Adam([{"params": params[name], "lr": lr, "name": name}], eps=1e-15)
                  for name, lr in lrs.items()}
    strategy = DefaultStrategy(
        prune_opa=cfg.prune_opa, grow_grad2d=cfg.grow_grad2d, grow_scale3d=cfg.grow_scale3d,
        prune_scale3d=cfg.prune_scale3d, refine_start_iter=cfg.refine_start_iter,
        refine_stop_iter=cfg.refine_stop_iter, reset_every=cfg.reset_every, refine_every=cfg.refine_every,
    )
    strategy.check_sanity(params, optimizers)
    state = strategy.initialize_state(scene_scale=scale)

    def tensors(view: TrainView) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        cam, mask = view.camera, np.asarray(view.mask, bool)
        return (torch.as_tensor(cam.world_to_camera, dtype=torch.float32, device=device),
                torch.as_tensor(cam.K, dtype=torch.float32, device=device),
                torch.as_tensor(np.asarray(view.image, np.float32)[..., :3], device=device),
                None if mask.all() else torch.as_tensor(mask, device=device))  # None: the plain loss

    # The strategy's per-step statistics cost a device sync; they are only needed while a
    # refinement step is still ahead (gsplat refines at steps > start that are multiples of every).
    last_refine = min(cfg.iterations, cfg.refine_stop_iter) - 1
    last_refine -= last_refine % cfg.refine_every
    if last_refine <= cfg.refine_start_iter:
        last_refine = -1
    backend = resolve_backend(cfg.backend, device)

    data = [tensors(v) for v in views]
    background = torch.tensor(cfg.background, dtype=torch.float32, device=device)
    rng = np.random.default_rng(cfg.seed)
    order: list[int] = []
    last_loss = None
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed)  # DefaultStrategy's split samples from the global generator
        for step in range(cfg.iterations):
            if should_stop is not None and should_stop():
                raise Cancelled("3DGS training cancelled")
            t = step / max(1, cfg.iterations - 1)
            optimizers["means"].param_groups[0]["lr"] = scale * math.exp(
                (1 - t) * math.log(cfg.means_lr) + t * math.log(cfg.means_lr_final))
            if not order:
                order = list(rng.permutation(len(views)))
            i = order.pop()
            viewmat, K, target, mask = data[i]
            cam = views[i].camera
            rgb, _, info = rasterize(
                params["means"], params["quats"], torch.exp(params["scales"]), torch.sigmoid(params["opacities"]),
                torch.cat([params["sh0"], params["shN"]], 1), viewmat, K, cam.width, cam.height,
                sh_degree=min(step // cfg.sh_degree_interval, cfg.sh_degree), backend=backend,
                background=background,
            )
            refining = step <= last_refine
            if refining:
                strategy.step_pre_backward(params, optimizers, state, step, info)
            loss = masked_loss(rgb, target, mask, cfg.ssim_lambda)
            if loss.requires_grad:  # nothing visible in this view: nothing to learn from it
                loss.backward()
                last_loss = loss.detach()
                for opt in optimizers.values():
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                if refining and info["means2d"].grad is not None:
                    strategy.step_post_backward(params, optimizers, state, step, info, packed=False)
            if progress is not None and ((step + 1) % cfg.progress_every == 0 or step + 1 == cfg.iterations):
                progress((step + 1) / cfg.iterations)
    result = Gaussians(**{name: params[name].detach() for name in params})
    if stats is not None:
        stats.update(steps=cfg.iterations, seconds=time.perf_counter() - start, n_gaussians=len(result),
                     final_loss=float("nan") if last_loss is None else float(last_loss), scene_scale=scale)
    return result


def _orbit_jitter(camera: Camera, pivot_depth: float, angles_rad: np.ndarray) -> np.ndarray:
    """World-to-camera of ``camera`` rotated by (pitch, yaw, roll) about a point ``pivot_depth``
    in front of it: the camera orbits that point, which stays at the image centre."""
    pitch, yaw, roll = angles_rad
    rx = np.array([[1, 0, 0], [0, math.cos(pitch), -math.sin(pitch)], [0, math.sin(pitch), math.cos(pitch)]])
    ry = np.array([[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]])
    rz = np.array([[math.cos(roll), -math.sin(roll), 0], [math.sin(roll), math.cos(roll), 0], [0, 0, 1]])
    pivot = np.eye(4)
    pivot[2, 3] = pivot_depth
    rot = np.eye(4)
    rot[:3, :3] = ry @ rx @ rz
    camera_to_world = camera.camera_to_world @ pivot @ rot @ rigid_inverse(pivot)
    return rigid_inverse(camera_to_world)


def make_reprojection_views(
    points: Any,
    cameras: Sequence[Camera],
    per_camera: int = 5,
    jitter_deg: float = 5.0,
    seed: int = 0,
    *,
    device: torch.device | str = "cpu",
    render: Callable[..., Any] | None = None,
) -> list[TrainView]:
    """LucidDreamer's extra supervision: the points rendered at ``per_camera`` poses jittered
    by up to ``jitter_deg`` (pitch, yaw, roll) around each camera, orbiting the median depth of
    the points it sees.  The mask is where points landed (``~hole_mask``).

    ``render(points, camera, device=...) -> (.image, .hole_mask)`` defaults to
    ``engine.pointcloud.render_points``.
    """
    if render is None:
        from ..pointcloud import render_points as render
    rng = np.random.default_rng(seed)
    xyz = np.asarray(points.xyz, np.float64)
    views = []
    for cam in cameras:
        z = transform_points(cam.world_to_camera, xyz)[:, 2] if len(xyz) else np.zeros(0)
        pivot = float(np.median(z[z > 0])) if np.any(z > 0) else 1.0
        for j in range(per_camera):
            angles = np.radians(rng.uniform(-jitter_deg, jitter_deg, size=3))
            jittered = cam.with_pose(_orbit_jitter(cam, pivot, angles), name=f"{cam.name}~{j}")
            out = render(points, jittered, device=device)
            views.append(TrainView(jittered, np.asarray(out.image, np.float32), ~np.asarray(out.hole_mask, bool)))
    return views


__all__ = ["SplatConfig", "TrainView", "init_gaussians", "knn_scale", "make_reprojection_views", "masked_loss",
           "scene_scale", "train_gaussians"]
