"""3DGS optimisation: LucidDreamer's recipe on gsplat's DefaultStrategy.

Gaussians start at the aggregated points and are fitted to the generated views plus
reprojections of the points at jittered poses, with the loss only where a view's mask is valid.
Densification and pruning are gsplat's own ``DefaultStrategy``; it reads only the
``packed=False`` info keys that both rasterizer backends return, and runs on CPU tensors.

Several cameras of one size render per step through the batched rasterizer (``batch_size``); the
learning rates and Adam's moments are scaled for the batch as gsplat's ``simple_trainer`` does.
The loop makes no host-device synchronisation: views live on the device, their order is drawn
up front, statistics accumulate densely and the loss is read once at the end.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from .. import colour
from ..cameras import Camera, rigid_inverse
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
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)  # display colour behind the Gaussians
    backend: str = "auto"  # rasterizer: "auto" (gsplat on CUDA, else torch), "gsplat", "torch"
    batch_size: int = 1  # cameras rendered per step (one batched rasterization)
    max_gaussians: int = 0  # densification stops growing at this many Gaussians (0: no limit)
    progress_every: int = 10  # call progress() every this many steps
    seed: int = 0  # view order and split noise
    antialiased: bool = True  # gsplat's antialiased image formation (Blender's Cycles reproduces it: docs/BLENDER-FIDELITY.md)

    @classmethod
    def cpu_fast(cls) -> "SplatConfig":
        """A few hundred steps at SH degree 1 with early, frequent densification: for CPUs and tests."""
        return cls(
            iterations=300, sh_degree=1, sh_degree_interval=150, refine_start_iter=100, refine_every=50,
            refine_stop_iter=250, init_opacity=0.5, progress_every=5,
        )

    @classmethod
    def fast(cls) -> "SplatConfig":
        """The GPU default: few batched steps from Gaussians at each pixel's footprint (WonderWorld's
        observation: initialised so, they need ~100s of steps, not 3000), no densification, so the
        Gaussians are the lifted pixels the views support.  Chosen with ``bench/splat_schedule.py``
        on eval-rgbd (bench/RESULTS.md)."""
        return cls(
            iterations=150, batch_size=4, sh_degree=1, sh_degree_interval=100, init_opacity=0.7,
            init_scale_mult=0.7, refine_start_iter=1_000_000, means_lr_final=1.6e-5,
        )

    @classmethod
    def schedule(cls, name: str, device: str) -> "SplatConfig":
        """A named schedule: ``lucid`` (LucidDreamer's 2990 steps), ``fast``, ``cpu`` (``cpu_fast``),
        ``auto`` (``fast`` on CUDA, ``cpu`` elsewhere)."""
        if name == "auto":
            name = "fast" if str(device).startswith("cuda") else "cpu"
        makers = {"lucid": cls, "fast": cls.fast, "cpu": cls.cpu_fast}
        if name not in makers:
            raise ValueError(f"unknown 3DGS schedule {name!r}; choose one of auto, {', '.join(makers)}")
        return makers[name]()


@dataclass
class TrainView:
    camera: Camera
    image: np.ndarray  # [H, W, 3] float32 in [0, 1]
    mask: np.ndarray  # [H, W] bool, True where the image is to be matched
    # [H, W, 3] display colours behind the Gaussians (the sky layer); None: the config's colour
    background: np.ndarray | None = None


def masked_loss(render: Tensor, target: Tensor, mask: Tensor | None, ssim_lambda: float = 0.2) -> Tensor:
    """(1 - lambda) L1 + lambda (1 - SSIM) over the pixels where ``mask`` [H, W] is True
    (``None``: every pixel).  Batched: ``render``/``target`` [C, H, W, 3], ``mask`` [C, H, W] (or
    ``None``) give the mean over the C cameras of each camera's own masked loss.

    Both images are zeroed outside the mask before SSIM, so neither the target there nor the
    render there enters the loss, also through SSIM's window at the mask's border.
    """
    if mask is None:
        l1 = (render - target).abs().mean()
        return l1 if ssim_lambda == 0 else (1 - ssim_lambda) * l1 + ssim_lambda * (1 - ssim_map(render, target).mean())
    m = mask[..., None].to(render.dtype)  # [(C,) H, W, 1]
    pixel_dims = (-3, -2, -1)
    count = m.sum(pixel_dims).clamp_min(1)  # per camera
    l1 = ((render - target).abs() * m).sum(pixel_dims) / (count * render.shape[-1])
    if ssim_lambda == 0:
        return l1.mean()
    s = ssim_map(render * m, target * m)  # [(C,) H, W]
    ssim = (s * m[..., 0]).sum((-2, -1)) / count
    return ((1 - ssim_lambda) * l1 + ssim_lambda * (1 - ssim)).mean()


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
        sh0=rgb_to_sh0(colour.srgb_to_linear(rgb)),  # points carry display colours, Gaussians linear light
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


def _strategy_class():
    from gsplat.strategy import DefaultStrategy  # lazy: gsplat is only needed to train

    class Strategy(DefaultStrategy):
        """gsplat's DefaultStrategy with its statistics gathered without a device sync, and a
        Gaussian budget.  Same sums as the parent's: per Gaussian, the norm of its screen-space
        gradient (in [-1, 1] units, times the number of cameras) over the cameras where its
        radius is positive, and how many such cameras; dense masks instead of ``torch.where``."""

        max_gaussians: int = 0

        def _update_state(self, params, state, info, packed=False):
            grads = info[self.key_for_gradient].grad  # [C, N, 2]
            scale = torch.tensor([info["width"] / 2.0, info["height"] / 2.0], device=grads.device) * info["n_cameras"]
            seen = (info["radii"] > 0).all(dim=-1).to(grads.dtype)  # [C, N]
            n = len(params["means"])
            if state["grad2d"] is None:
                state["grad2d"] = torch.zeros(n, device=grads.device)
                state["count"] = torch.zeros(n, device=grads.device)
            state["grad2d"] += ((grads * scale).norm(dim=-1) * seen).sum(0)
            state["count"] += seen.sum(0)

        def _grow_gs(self, params, optimizers, state, step):
            if 0 < self.max_gaussians <= len(params["means"]):
                return 0, 0
            return super()._grow_gs(params, optimizers, state, step)

    return Strategy


def _view_batches(views: Sequence[TrainView], steps: int, batch_size: int, seed: int,
                  device) -> tuple[list[list[int]], list[tuple[int, Tensor]]]:
    """The groups of views of one size (indices into ``views``) and, per step, (group, indices [B]
    into that group, on ``device``): each view once per pass over its group, in a random order;
    all drawn now, so no step waits on the host."""
    sizes: dict[tuple[int, int], list[int]] = {}
    for i, v in enumerate(views):
        sizes.setdefault((v.camera.width, v.camera.height), []).append(i)
    groups = list(sizes.values())
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(groups), size=steps, p=np.array([len(g) for g in groups]) / len(views))
    streams = []
    for g, members in enumerate(groups):
        b = min(batch_size, len(members))
        need = int((picks == g).sum()) * b
        order = np.concatenate([rng.permutation(len(members)) for _ in range(need // len(members) + 1)])[:need]
        streams.append(iter(torch.as_tensor(order.reshape(-1, b), device=device)))
    return groups, [(int(g), next(streams[g])) for g in picks]


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
    cfg = config or SplatConfig()
    device = torch.device(device)
    views = [v for v in views if np.asarray(v.mask).any()]
    if not views:
        raise ValueError("train_gaussians: no view has any valid pixel")
    if cfg.batch_size < 1:
        raise ValueError(f"train_gaussians: batch_size must be >= 1, got {cfg.batch_size}")
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
    # gsplat's simple_trainer for a batch of B cameras: lr x sqrt(B), eps / sqrt(B), and Adam's
    # moments forgetting B times faster, as if B single-camera steps had been taken.
    batch = min(cfg.batch_size, len(views))
    root = math.sqrt(batch)
    lrs = {"means": cfg.means_lr * scale, "quats": cfg.quats_lr, "scales": cfg.scales_lr,
           "opacities": cfg.opacities_lr, "sh0": cfg.sh0_lr, "shN": cfg.shN_lr}
    betas = (max(0.0, 1 - batch * (1 - 0.9)), max(0.0, 1 - batch * (1 - 0.999)))
    # Fused on CUDA: one kernel per parameter a step instead of a dozen (the step is launch-bound).
    optimizers = {name: torch.optim.Adam([{"params": params[name], "lr": lr * root, "name": name}],
                                         eps=1e-15 / root, betas=betas, fused=device.type == "cuda")
                  for name, lr in lrs.items()}
    strategy = _strategy_class()(
        prune_opa=cfg.prune_opa, grow_grad2d=cfg.grow_grad2d, grow_scale3d=cfg.grow_scale3d,
        prune_scale3d=cfg.prune_scale3d, refine_start_iter=cfg.refine_start_iter,
        refine_stop_iter=cfg.refine_stop_iter, reset_every=cfg.reset_every, refine_every=cfg.refine_every,
    )
    strategy.max_gaussians = cfg.max_gaussians
    strategy.check_sanity(params, optimizers)
    state = strategy.initialize_state(scene_scale=scale)

    # Gradient statistics are only needed while a refinement step is still ahead (gsplat refines
    # at steps > start that are multiples of every).
    last_refine = min(cfg.iterations, cfg.refine_stop_iter) - 1
    last_refine -= last_refine % cfg.refine_every
    if last_refine <= cfg.refine_start_iter:
        last_refine = -1
    backend = resolve_backend(cfg.backend, device)

    groups, batches = _view_batches(views, cfg.iterations, batch, cfg.seed, device)
    background = colour.srgb_to_linear(torch.tensor(cfg.background, dtype=torch.float32, device=device))
    data = []  # per group of one image size: viewmats [V, 4, 4], Ks [V, 3, 3], images [V, H, W, 3], masks [V, H, W]
    behind = []  # per group: linear backgrounds [V, H, W, 3] where a view has its own, else None
    for members in groups:
        group = [views[i] for i in members]
        if any(v.background is not None for v in group):
            behind.append(colour.srgb_to_linear(torch.stack([
                torch.as_tensor(np.array(v.background, np.float32), device=device) if v.background is not None
                else torch.tensor(cfg.background, dtype=torch.float32, device=device).expand(v.camera.height, v.camera.width, 3)
                for v in group
            ])))
        else:
            behind.append(None)
        data.append((
            torch.as_tensor(np.stack([v.camera.world_to_camera for v in group]), dtype=torch.float32, device=device),
            torch.as_tensor(np.stack([v.camera.K for v in group]), dtype=torch.float32, device=device),
            torch.as_tensor(np.stack([np.asarray(v.image, np.float32)[..., :3] for v in group]), device=device),
            torch.as_tensor(np.stack([np.asarray(v.mask, bool) for v in group]), device=device),
            group[0].camera.width, group[0].camera.height,
        ))
    last_loss = None
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed)  # DefaultStrategy's split samples from the global generator
        for step, (group, index) in enumerate(batches):
            if should_stop is not None and should_stop():
                raise Cancelled("3DGS training cancelled")
            t = step / max(1, cfg.iterations - 1)
            optimizers["means"].param_groups[0]["lr"] = root * scale * math.exp(
                (1 - t) * math.log(cfg.means_lr) + t * math.log(cfg.means_lr_final))
            viewmats, Ks, targets, masks, width, height = data[group]
            rgb, alpha, info = rasterize(
                params["means"], params["quats"], torch.exp(params["scales"]), torch.sigmoid(params["opacities"]),
                torch.cat([params["sh0"], params["shN"]], 1), viewmats[index], Ks[index], width, height,
                sh_degree=min(step // cfg.sh_degree_interval, cfg.sh_degree), backend=backend,
                background=background if behind[group] is None else None, antialiased=cfg.antialiased,
            )
            if behind[group] is not None:  # seen over its own background, as it will be rendered
                rgb = rgb + (1 - alpha[..., None]) * behind[group][index]
            refining = step <= last_refine
            if refining:
                strategy.step_pre_backward(params, optimizers, state, step, info)
            loss = masked_loss(colour.linear_to_srgb(rgb), targets[index], masks[index], cfg.ssim_lambda)  # targets are sRGB
            if loss.requires_grad:  # nothing visible in these views: nothing to learn from them
                loss.backward()
                last_loss = loss.detach()
                for opt in optimizers.values():
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                if refining and info["means2d"].grad is not None:
                    strategy.step_post_backward(params, optimizers, state, step, info, packed=False)
            if progress is not None and ((step + 1) % cfg.progress_every == 0 or step + 1 == cfg.iterations):
                progress((step + 1) / cfg.iterations)
    result = Gaussians(**{name: params[name].detach() for name in params}, antialiased=cfg.antialiased)
    if stats is not None:
        stats.update(steps=cfg.iterations, seconds=time.perf_counter() - start, n_gaussians=len(result),
                     final_loss=float("nan") if last_loss is None else float(last_loss), scene_scale=scale,
                     batch_size=batch, backend=backend)
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
        from ..pointcloud import DevicePoints, render_points as render

        points = DevicePoints.of(points, device)  # one upload for every view
    rng = np.random.default_rng(seed)
    xyz = torch.as_tensor(points.xyz).to(device, torch.float64)
    views = []
    for cam in cameras:
        w2c = torch.as_tensor(cam.world_to_camera[2], dtype=torch.float64, device=xyz.device)
        z = xyz @ w2c[:3] + w2c[3]
        front = z[z > 0]
        n = len(front)  # numpy's median: the mean of the middle two (quantile() refuses > 2^24 values)
        pivot = float(front.kthvalue((n + 1) // 2).values + front.kthvalue(n // 2 + 1).values) / 2 if n else 1.0
        for j in range(per_camera):
            angles = np.radians(rng.uniform(-jitter_deg, jitter_deg, size=3))
            jittered = cam.with_pose(_orbit_jitter(cam, pivot, angles), name=f"{cam.name}~{j}")
            out = render(points, jittered, device=device)
            views.append(TrainView(jittered, np.asarray(out.image, np.float32), ~np.asarray(out.hole_mask, bool)))
    return views


__all__ = ["SplatConfig", "TrainView", "init_gaussians", "knn_scale", "make_reprojection_views", "masked_loss",
           "scene_scale", "train_gaussians"]
