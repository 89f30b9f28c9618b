"""Runs a generate job over its job folder, stage by stage, with events, cancel and resume.

Each stage reads the previous stages' files and writes its own (atomically) into
``JOB/<stage>/``; ``engine.job`` decides from the settings key whether a stage is already done.
Nothing here knows Blender: a client speaks to it only through job.json and events.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import cameras, images, protocol
from .errors import BadInputError, Cancelled, OutOfMemory, is_out_of_memory
from .job import JobFolder, read_npz, settings_key, write_json, write_npz
from .profiles import BackendContext, Profile, get_profile
from .settings import STAGE_FIELDS, Settings, default_cache_dir

log = logging.getLogger("engine")


@dataclass
class BackendPool:
    """Created backends (models), keyed by slot, backend, options and weights.

    A run owns its pool under the low-VRAM policy; a long-lived engine (``serve``) keeps one
    pool for all its runs, so a second request pays no model loading.
    """

    backends: dict[str, tuple[str, Any]] = field(default_factory=dict)  # "module:backend" -> (options key, backend)
    run: "Run | None" = None  # the run now using the pool: backends' warnings reach its client


@dataclass
class Run:
    """Everything a stage needs: the job, its settings, the backends' context, the client."""

    job: JobFolder
    request: dict[str, Any]  # the validated job.json
    settings: Settings
    profile: Profile
    device: str
    events: protocol.EventWriter
    should_stop: Callable[[], bool] = lambda: False
    memory: str = "low-vram"  # "low-vram": free each stage's models after it; "resident": keep them
    stage: str = ""
    pool: BackendPool = field(default_factory=BackendPool)
    input_depth: np.ndarray | None = None  # RGB-D input, read by the "given" geometry backend

    def __post_init__(self) -> None:
        self.pool.run = self

    def check(self) -> None:
        if self.should_stop():
            cancelled = Cancelled(f"cancelled during {self.stage}")
            cancelled.stage = self.stage
            raise cancelled

    def progress(self, fraction: float, message: str = "") -> None:
        self.check()
        self.events.emit("progress", stage=self.stage, fraction=round(float(fraction), 4), message=message)

    def preview(self, relative_path: str) -> None:
        self.events.emit("preview", stage=self.stage, path=relative_path)

    def warn(self, message: str) -> None:
        log.warning(message)
        self.events.emit("warning", message=message, stage=self.stage)

    def backend_context(self) -> BackendContext:
        pool = self.pool  # callbacks reach whichever run uses the pool when they fire
        return BackendContext(
            profile=self.profile,
            device=self.device,
            cache_dir=str(default_cache_dir()),
            model_overrides=dict(self.request.get("models") or {}),
            warn=lambda text: pool.run.warn(text),
            note=lambda text: pool.run.events.emit("progress", stage=pool.run.stage, fraction=0.0, message=text),
        )

    def backend(self, slot: str):
        """The profile's backend for ``slot``, taken from the pool or created there."""
        from importlib import import_module

        from .profiles import SLOTS

        name = self.backend_name(slot)
        if name is None:
            raise BadInputError(f"profile {self.profile.name!r} has no {slot.replace('_', ' ')} backend")
        module = import_module(f"engine.{SLOTS[slot]}")
        context = self.backend_context()
        if name == "given":  # holds this run's depth: never pooled
            return module.create(name, context, depth=self.input_depth)
        options: dict[str, Any] = {}
        if slot in ("background_inpaint", "expansion_inpaint", "text_to_image") and name != "opencv":
            options.update(steps=self.settings.inpaint_steps, guidance=self.settings.guidance)
        if slot == "layers":
            from .segment import LayerSettings
            from .settings import LAYER_FIELDS

            options["settings"] = LayerSettings(**self.settings.subset(LAYER_FIELDS))
        models = {model: context.sources(model) for model in self.profile.models}
        key = json.dumps([name, self.device, repr(options), models], sort_keys=True)
        # One entry per backend (geometry and expansion geometry share one MoGe-2).
        entry = f"{SLOTS[slot]}:{name}"
        pooled = self.pool.backends.get(entry)
        if pooled is None or pooled[0] != key:
            if pooled is not None:  # other settings or weights: never hold two copies of one model
                _release([pooled[1]], self.device)
            started = time.perf_counter()
            self.pool.backends[entry] = (key, module.create(name, context, **options))
            log.info("loaded %s backend %r in %.2f s", slot, name, time.perf_counter() - started)
        return self.pool.backends[entry][1]

    def backend_name(self, slot: str) -> str | None:
        # RGB-D input skips geometry estimation for the input view, whatever the profile.
        if slot == "geometry" and self.request.get("depth"):
            return "given"
        return self.profile.backends.get(slot)

    def release_backends(self) -> None:
        """Free the models created so far, so one stage's weights never sit beside the next's."""
        released = [backend for _, backend in self.pool.backends.values()]
        self.pool.backends.clear()
        _release(released, self.device)

    def stage_key(self, stage: str, previous: str) -> str:
        from .profiles import SLOTS

        slots = {slot: self.backend_name(slot) for slot in SLOTS}
        relevant = {
            "settings": self.settings.subset(STAGE_FIELDS[stage]),
            "backends": slots if stage in ("depth", "segment", "inpaint", "expand") else {},
            "models": self.request.get("models") or {},
            "request": {k: self.request.get(k) for k in ("prompt", "negative_prompt", "camera", "trajectory")}
            if stage in ("inputs", "inpaint", "expand")
            else {},
            "device": self.device if stage in ("splat",) else "",
        }
        return settings_key(relevant, previous)


def _release(backends: list[Any], device: str) -> None:
    if not backends:
        return
    for backend in backends:
        if hasattr(backend, "release"):
            backend.release()
    backends.clear()
    if device.startswith("cuda"):
        import gc

        import torch

        gc.collect()
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------
# stages
# ---------------------------------------------------------------------------------------------


def stage_inputs(run: Run, out: Path) -> list[str]:
    """The working-resolution image (+ depth) and the input camera in the engine world."""
    request, settings = run.request, run.settings
    if request.get("image"):
        image = images.load_image(run.job.path(request["image"]), settings.resolution)
    else:
        width, height = images.working_size(4, 3, settings.resolution)
        run.progress(0.0, "text to image")
        generator = run.backend("text_to_image")
        image = generator.generate(
            request.get("prompt", ""),
            width=width,
            height=height,
            seed=settings.seed,
            negative_prompt=request.get("negative_prompt", ""),
            progress=lambda f: run.progress(f, "text to image"),
            should_stop=run.should_stop,
        )
    height, width = image.shape[:2]
    outputs = ["image.png", "camera.json"]
    images.save_png(out / "image.png", image)
    if request.get("depth"):
        depth = images.load_depth(run.job.path(request["depth"]), (width, height))
        write_npz(out / "depth.npz", depth=depth)
        outputs.append("depth.npz")
    if request.get("camera"):
        client_camera = cameras.Camera.from_dict(request["camera"])
        if abs(client_camera.width / client_camera.height - width / height) > 0.02 * width / height:
            raise BadInputError(
                f"the camera's aspect ({client_camera.width}x{client_camera.height}) differs from the "
                f"image's ({width}x{height}); set the render resolution to the image's aspect"
            )
        K = client_camera.resized(width, height).K
    else:
        K = cameras.intrinsics_from_fov(width, height, settings.fov)
    # "given": whether K came from the client (it then overrides a model's estimate).
    camera = cameras.Camera(K, np.eye(4), width, height, "input", {"given": bool(request.get("camera"))})
    write_json(out / "camera.json", camera.to_dict())
    run.preview("inputs/image.png")
    return outputs


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def _input_camera(run: Run) -> cameras.Camera:
    return cameras.Camera.from_dict(json.loads((run.job.stage_dir("inputs") / "camera.json").read_text()))


def stage_depth(run: Run, out: Path) -> list[str]:
    image = _read_image(run.job.stage_dir("inputs") / "image.png")
    depth_file = run.job.stage_dir("inputs") / "depth.npz"
    if depth_file.exists():
        run.input_depth = read_npz(depth_file)["depth"]
    camera = _input_camera(run)
    estimate = run.backend("geometry").estimate(image, camera if camera.extra.get("given") else None)
    K = camera.K if camera.extra.get("given") else _plausible_intrinsics(estimate.K, camera, run)
    depth = np.where(estimate.valid, estimate.depth, 0.0).astype(np.float32)
    if not np.any(depth > 0):
        raise BadInputError("the geometry stage found no valid depth in the input image")
    write_npz(out / "depth.npz", depth=depth, K=np.asarray(K, dtype=np.float64))
    return ["depth.npz"]


def _plausible_intrinsics(K: np.ndarray, fallback: cameras.Camera, run: Run) -> np.ndarray:
    """The model's intrinsics, unless they describe no real lens (then the default field of view)."""
    K = np.asarray(K, dtype=np.float64)
    fov = 2 * np.degrees(np.arctan(fallback.width / (2 * K[0, 0]))) if np.isfinite(K[0, 0]) and K[0, 0] > 0 else 0.0
    if np.all(np.isfinite(K)) and K[1, 1] > 0 and 5.0 <= fov <= 170.0:
        return K
    run.warn(f"the geometry model's focal length is implausible; using a {run.settings.fov:g}° field of view instead")
    return fallback.K


def _depth_camera(run: Run) -> tuple[np.ndarray, np.ndarray, cameras.Camera]:
    image = _read_image(run.job.stage_dir("inputs") / "image.png")
    data = read_npz(run.job.stage_dir("depth") / "depth.npz")
    camera = _input_camera(run)
    camera = cameras.Camera(data["K"], camera.world_to_camera, camera.width, camera.height, camera.name)
    return image, data["depth"], camera


def stage_segment(run: Run, out: Path) -> list[str]:
    image, depth, _ = _depth_camera(run)
    layers = run.backend("layers").layers(image, depth)
    write_npz(out / "layers.npz", foreground=layers.foreground, hidden=layers.hidden)
    images.save_png(out / "foreground.png", layers.foreground)
    run.preview("segment/foreground.png")
    return ["layers.npz", "foreground.png"]


def stage_inpaint(run: Run, out: Path) -> list[str]:
    """Fill the background hidden behind the foreground, then lift both layers to points."""
    from . import inpaint
    from .pointcloud import PointCloud, unproject

    image, depth, camera = _depth_camera(run)
    hidden = read_npz(run.job.stage_dir("segment") / "layers.npz")["hidden"]
    prompt = run.request.get("prompt") or ""
    if not prompt and hidden.any():
        prompt = run.backend("caption").prompt(image)
        log.info("background prompt: %s", prompt)
    visible = unproject(camera, image, depth, depth > 0, edge_threshold=run.settings.depth_edge_threshold)
    layers = [visible]
    if hidden.any():
        # The background's depth behind the foreground: conditions the inpainting and places its points.
        background_depth = inpaint.complete_depth(depth, hidden)
        background = run.backend("background_inpaint").inpaint(
            image,
            hidden,
            depth=background_depth,
            prompt=prompt,
            negative_prompt=run.request.get("negative_prompt") or "",
            seed=run.settings.seed,
            progress=lambda f: run.progress(0.9 * f, "background"),
            should_stop=run.should_stop,
        )
        images.save_png(out / "background.png", np.where(hidden[..., None], background, image))
        run.preview("inpaint/background.png")
        layers.append(unproject(camera, background, background_depth, hidden, edge_threshold=run.settings.depth_edge_threshold))
    points = PointCloud.concat(layers)
    write_npz(out / "points.npz", xyz=points.xyz, rgb=points.rgb, radius=points.radius)
    write_json(out / "prompt.json", {"prompt": prompt, "visible_points": len(visible), "points": len(points)})
    return ["points.npz", "prompt.json"]


def _load_points(path: Path):
    from .pointcloud import PointCloud

    data = read_npz(path)
    return PointCloud(data["xyz"], data["rgb"], data["radius"])


def expansion_cameras(run: Run, input_camera: cameras.Camera, depth: np.ndarray) -> list[cameras.Camera]:
    """The N cameras to expand into, in the engine world, at the working resolution."""
    from . import trajectory

    settings = run.settings
    if run.request.get("trajectory"):
        path = trajectory.parse_trajectory(run.request["trajectory"], "the job's trajectory")
        reference = cameras.Camera.from_dict(run.request["camera"]) if run.request.get("camera") else path[0]
        path = cameras.relative_to(path, reference)
        for camera in path:
            if abs(camera.width / camera.height - input_camera.width / input_camera.height) > 0.02:
                raise BadInputError("trajectory cameras must have the input image's aspect ratio")
        path = [camera.resized(input_camera.width, input_camera.height) for camera in path]
    else:
        # Presets that sweep an angle take the setting; distance presets scale with the scene.
        sweep = {"angle": settings.preset_angle} if settings.preset in ("orbit", "look-around") else {}
        path = trajectory.preset(
            settings.preset, input_camera, settings.steps + 1, scene_depth=float(np.median(depth[depth > 0])), **sweep
        )
    # The input view is already generated: a path that starts there does not repeat it.
    if path and np.allclose(path[0].world_to_camera, input_camera.world_to_camera, atol=1e-6):
        path = path[1:]
    return path


def stage_expand(run: Run, out: Path) -> list[str]:
    """World expansion: render -> inpaint holes -> depth -> align along rays -> lift -> merge."""
    from concurrent.futures import ThreadPoolExecutor

    from .align import align_depth
    from .pointcloud import merge, render_points, unproject

    image, depth, camera = _depth_camera(run)
    points = _load_points(run.job.stage_dir("inpaint") / "points.npz")
    path = expansion_cameras(run, camera, depth)
    # Training views: the input view plus each completed expansion view (full frame valid).
    view_images, view_masks, view_cameras = [image], [depth > 0], [camera.to_dict()]
    stats = []
    prompt = run.request.get("prompt") or ""

    def save_view(name: str, completed: np.ndarray) -> None:
        images.save_png(out / name, completed)
        run.preview(f"expand/{name}")  # once the file is there (events are thread-safe)

    # Files are written on a thread: each view's PNG encoding (~0.1 s at 512²) overlaps the next
    # view's models, and at the end the two npz files are compressed side by side (zlib releases
    # the GIL).  One worker keeps the previews in order; the files are the same bytes as before.
    written = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="expand-writer") as writer:
        for index, view in enumerate(path):
            run.progress(index / max(1, len(path)), f"view {index + 1}/{len(path)}")
            rendered = render_points(points, view, device=run.device)
            hole = rendered.hole_mask
            completed = rendered.image
            record: dict[str, Any] = {"view": index + 1, "hole_fraction": float(hole.mean())}
            if hole.any():
                completed = run.backend("expansion_inpaint").inpaint(
                    rendered.image,
                    hole,
                    depth=rendered.depth,
                    prompt=prompt,
                    negative_prompt=run.request.get("negative_prompt") or "",
                    seed=run.settings.seed + index + 1,
                    should_stop=run.should_stop,
                )
                estimate = run.backend("expansion_geometry").estimate(
                    completed, view, rendered_depth=rendered.depth, hole_mask=hole
                )
                new_depth = np.where(estimate.valid, estimate.depth, 0.0).astype(np.float32)
                aligned, align_stats = align_depth(new_depth, rendered.depth, hole, view, device=run.device)
                record.update(align_stats.to_dict())
                fresh = unproject(view, completed, aligned, hole & (aligned > 0), edge_threshold=run.settings.depth_edge_threshold)
                points = merge(points, fresh, view, device=run.device)
            record["points"] = len(points)
            stats.append(record)
            written.append(writer.submit(save_view, f"view_{index + 1:02d}.png", completed))
            view_images.append(completed)
            view_masks.append(np.ones(hole.shape, dtype=bool))
            view_cameras.append(view.to_dict())
        written.append(writer.submit(write_npz, out / "points.npz", xyz=points.xyz, rgb=points.rgb, radius=points.radius))
        write_npz(out / "views.npz", images=np.stack(view_images).astype(np.float16), masks=np.stack(view_masks))
    for done in written:
        done.result()  # a failed write fails the stage
    write_json(out / "views.json", {"cameras": view_cameras, "steps": stats})
    return ["points.npz", "views.npz", "views.json"]


def stage_splat(run: Run, out: Path) -> list[str]:
    from .export import write_gaussians_ply
    from .splat import SplatConfig, TrainView, make_reprojection_views, train_gaussians

    points = _load_points(run.job.stage_dir("expand") / "points.npz")
    data = read_npz(run.job.stage_dir("expand") / "views.npz")
    view_cameras = [
        cameras.Camera.from_dict(c)
        for c in json.loads((run.job.stage_dir("expand") / "views.json").read_text())["cameras"]
    ]
    views = [
        TrainView(camera, image.astype(np.float32), mask)
        for camera, image, mask in zip(view_cameras, data["images"], data["masks"])
    ]
    settings = run.settings
    if settings.reprojections:
        views += make_reprojection_views(
            points,
            view_cameras,
            per_camera=settings.reprojections,
            jitter_deg=settings.jitter_deg,
            seed=settings.seed,
            device=run.device,
        )
    # The full recipe on a GPU; a few hundred steps at low SH degree on a CPU, unless set.
    config = SplatConfig() if run.device.startswith("cuda") else SplatConfig.cpu_fast()
    config.seed = settings.seed
    if settings.iterations:
        config.iterations = settings.iterations
    if settings.sh_degree >= 0:
        config.sh_degree = settings.sh_degree
    gaussians = train_gaussians(
        views,
        points,
        config,
        device=run.device,
        progress=lambda f: run.progress(f, "3D Gaussians"),
        should_stop=run.should_stop,
    )
    write_gaussians_ply(out / "gaussians.ply", gaussians)
    return ["gaussians.ply"]


def stage_export(run: Run, out: Path) -> list[str]:
    """The final results, at the job folder's top level where clients look for them."""
    from .export import write_points_ply
    from .job import atomic_path

    write_points_ply(run.job.root / "points.ply", _load_points(run.job.stage_dir("expand") / "points.npz"))
    with atomic_path(run.job.root / "gaussians.ply") as tmp:
        shutil.copyfile(run.job.stage_dir("splat") / "gaussians.ply", tmp)
    return ["../points.ply", "../gaussians.ply"]


STAGE_FUNCTIONS: dict[str, Callable[[Run, Path], list[str]]] = {
    "inputs": stage_inputs,
    "depth": stage_depth,
    "segment": stage_segment,
    "inpaint": stage_inpaint,
    "expand": stage_expand,
    "splat": stage_splat,
    "export": stage_export,
}


def run_job(run: Run) -> dict[str, str]:
    """Run (or resume) every stage; returns the result files relative to the job folder."""
    previous = ""
    total = len(protocol.STAGES)
    for index, stage in enumerate(protocol.STAGES):
        run.stage = stage
        run.check()
        key = run.stage_key(stage, previous)
        previous = key
        run.events.emit("stage_start", stage=stage, index=index, total=total)
        if run.job.is_done(stage, key):
            run.events.emit("stage_done", stage=stage, seconds=0.0, cached=True)
            continue
        started = time.perf_counter()
        out = run.job.begin(stage)
        try:
            outputs = STAGE_FUNCTIONS[stage](run, out)
        except Cancelled as exc:
            exc.stage = stage
            raise
        except Exception as exc:
            if is_out_of_memory(exc):
                raise _out_of_memory(run, stage) from exc
            raise
        seconds = round(time.perf_counter() - started, 3)
        peak = _peak_memory_mb(run.device)
        run.job.finish(stage, key, outputs, seconds=seconds, peak_vram_mb=peak)
        if run.memory == "low-vram":
            run.release_backends()
        run.events.emit("stage_done", stage=stage, seconds=seconds, cached=False, peak_vram_mb=peak)
        log.info("stage %s done in %.2f s", stage, seconds)
    return {"points": "points.ply", "gaussians": "gaussians.ply", "job": "job.json"}


def _peak_memory_mb(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    import torch

    peak = torch.cuda.max_memory_allocated() / 2**20
    torch.cuda.reset_peak_memory_stats()
    return round(peak, 1)


def _out_of_memory(run: Run, stage: str) -> OutOfMemory:
    """The peak memory at the failure and the setting to lower (the stage's own knob first)."""
    if run.device.startswith("cuda"):
        import torch

        total = torch.cuda.get_device_properties(torch.device(run.device)).total_memory / 2**20
        peak = f"peak {torch.cuda.max_memory_allocated(run.device) / 2**20:.0f} MB of {total:.0f} MB on {run.device}"
    else:
        try:
            import resource
        except ImportError:  # Windows
            peak = f"on {run.device}"
        else:
            # The resident peak of this process: ru_maxrss is KiB on Linux, bytes on macOS.
            unit = 2**20 if sys.platform == "darwin" else 2**10
            peak = f"peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / unit:.0f} MB resident on {run.device}"
    settings = [f"--resolution (now {run.settings.resolution})"]
    if stage == "splat":
        settings.insert(0, f"--set reprojections=N (now {run.settings.reprojections})")
    hint = "lower " + " or ".join(settings) + (", or use --device cpu" if run.device.startswith("cuda") else "")
    return OutOfMemory(f"out of memory in the {stage} stage ({peak}): {hint}; finished stages are kept", hint)


def make_run(
    job_dir: Path,
    events: protocol.EventWriter,
    *,
    device: str,
    should_stop=lambda: False,
    memory: str = "low-vram",
    pool: BackendPool | None = None,
) -> Run:
    job = JobFolder(job_dir)
    request = job.read()
    profile = get_profile(request["profile"])
    overrides = {**profile.settings, **(request.get("settings") or {})}
    settings = Settings.from_dict(overrides)
    return Run(job, request, settings, profile, device, events, should_stop, memory, pool=pool or BackendPool())
