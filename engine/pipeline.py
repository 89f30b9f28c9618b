"""Runs a generate job over its job folder, stage by stage, with events, cancel and resume.

Each stage declares what it reads and produces (``STAGE_SPECS``): artifacts of earlier stages
(``ARTIFACTS``, typed files in ``JOB/<stage>/``), settings, job.json fields, backend slots and
whether the device matters.  A stage sees only what it declared (``Run.read``, ``Run.settings``,
``Run.request`` raise ``UndeclaredRead`` otherwise), and its key hashes exactly that, with the
content of the input files and of the artifacts it reads, the engine's version and the stage's
code version: a stage is redone when anything it reads changed, or the code that runs it, and
only then.  Nothing here knows Blender: a client speaks to it only through job.json and events.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import __version__, cameras, images, protocol
from .errors import BadInputError, Cancelled, OutOfMemory, is_out_of_memory
from .job import JobFolder, content_digest, read_npz, settings_key, write_json, write_npz
from .profiles import BackendContext, Profile, get_profile
from .settings import LAYER_FIELDS, Settings, default_cache_dir

log = logging.getLogger("engine")


@dataclass
class BackendPool:
    """Created backends (models), keyed by slot, backend, options and weights.

    A run owns its pool under the low-VRAM policy; a long-lived engine (``serve``) keeps one
    pool for all its runs, so a second request pays no model loading.
    """

    backends: dict[str, tuple[str, Any]] = field(default_factory=dict)  # "module:backend" -> (options key, backend)
    run: "Run | None" = None  # the run now using the pool: backends' warnings reach its client


@dataclass(frozen=True)
class Artifact:
    """A file one stage produces and later stages read, only through ``Run.read``."""

    stage: str  # the producing stage; the file lives in JOB/<stage>/
    file: str
    kind: str  # "image" (float RGB), "arrays" (npz dict), "points" (PointCloud), "json", "camera", "file" (a path)
    optional: bool = False  # may be absent (then ``Run.read`` returns None)


ARTIFACTS: dict[str, Artifact] = {
    "image": Artifact("inputs", "image.png", "image"),  # the working-resolution input image
    "input_depth": Artifact("inputs", "depth.npz", "arrays", optional=True),  # RGB-D input: depth
    "input_camera": Artifact("inputs", "camera.json", "camera"),
    "depth": Artifact("depth", "depth.npz", "arrays"),  # depth (0 where none or sky), K, sky
    "layers": Artifact("segment", "layers.npz", "arrays"),  # foreground, hidden
    "scene_points": Artifact("inpaint", "points.npz", "points"),  # both layers, lifted
    "scene_prompt": Artifact("inpaint", "prompt.json", "json"),  # the prompt every inpainting uses
    # The far layer (engine.sky); absent when the input view has no sky.
    "sky_panorama": Artifact("sky", "panorama.npz", "arrays", optional=True),  # colour, region, radius
    "sky_image": Artifact("sky", "sky.png", "file", optional=True),  # the panorama, equirectangular
    "sky_gaussians": Artifact("sky", "sky.ply", "file", optional=True),
    "world_points": Artifact("expand", "points.npz", "points"),
    "views": Artifact("expand", "views.npz", "arrays"),  # images, masks
    "view_cameras": Artifact("expand", "views.json", "json"),
    "gaussians": Artifact("splat", "gaussians.ply", "file"),
    "points_ply": Artifact("export", "../points.ply", "file"),  # the results, at the job's top level
    "gaussians_ply": Artifact("export", "../gaussians.ply", "file"),
    "sky_ply": Artifact("export", "../sky.ply", "file", optional=True),
    "sky_png": Artifact("export", "../sky.png", "file", optional=True),
}


@dataclass(frozen=True)
class StageSpec:
    """What one stage reads and produces; its resume key is computed from exactly this."""

    reads: tuple[str, ...] = ()  # ARTIFACTS of earlier stages (their content goes into the key)
    produces: tuple[str, ...] = ()
    settings: tuple[str, ...] = ()  # engine.settings.Settings fields
    slots: tuple[str, ...] = ()  # backend slots (their backend names and model sources go into the key)
    request: tuple[str, ...] = ()  # job.json fields; the files named by INPUT_FILES by their content
    device: bool = False  # the device changes the result (not only the speed)
    # The stage's code version: raise it when a change to the stage's code changes what it writes
    # between releases (a release changes engine.__version__, which every key holds too).
    version: int = 1


DIFFUSION = ("inpaint_steps", "guidance", "diffusion_solver", "cuda_graphs", "seed")  # what a diffusion backend reads
INPUT_FILES = ("image", "depth")  # job.json fields naming files: keyed by the bytes they hold

STAGE_SPECS: dict[str, StageSpec] = {
    "inputs": StageSpec(
        produces=("image", "input_depth", "input_camera"),
        settings=("resolution", "fov", *DIFFUSION),
        slots=("text_to_image",),
        request=("image", "depth", "camera", "prompt", "negative_prompt"),
    ),
    "depth": StageSpec(reads=("image", "input_depth", "input_camera"), produces=("depth",),
                       settings=("sky", "sky_far_limit"), slots=("geometry",)),
    "segment": StageSpec(reads=("image", "depth"), produces=("layers",), settings=LAYER_FIELDS, slots=("layers",)),
    "inpaint": StageSpec(
        reads=("image", "depth", "input_camera", "layers"),
        produces=("scene_points", "scene_prompt"),
        settings=(*DIFFUSION, "depth_edge_threshold"),
        slots=("caption", "background_inpaint"),
        request=("prompt", "negative_prompt"),
    ),
    "sky": StageSpec(
        reads=("image", "depth", "input_camera", "scene_prompt"),
        produces=("sky_panorama", "sky_image", "sky_gaussians"),
        settings=(*DIFFUSION, "antialiased"),
        slots=("sky_inpaint",),
        request=("negative_prompt",),
        device=True,  # its Gaussians are trained longer on CUDA
    ),
    "expand": StageSpec(
        reads=("image", "depth", "input_camera", "scene_points", "scene_prompt", "sky_panorama"),
        produces=("world_points", "views", "view_cameras"),
        settings=("steps", "preset", "preset_angle", *DIFFUSION, "depth_edge_threshold",
                  "align_fit", "align_correction", "align_seam_tolerance", "align_falloff", "align_seam_smoothing",
                  "align_seam_spread", "align_seam_adaptive", "align_seam_edge_radius", "depth_ramp_radius"),
        slots=("expansion_inpaint", "expansion_geometry"),
        request=("camera", "trajectory", "negative_prompt"),
    ),
    "splat": StageSpec(
        reads=("world_points", "views", "view_cameras", "sky_panorama"),
        produces=("gaussians",),
        settings=("splat_schedule", "iterations", "reprojections", "jitter_deg", "sh_degree", "antialiased", "seed"),
        device=True,  # the full 3DGS recipe on CUDA, a short one on the CPU
    ),
    "export": StageSpec(reads=("world_points", "gaussians", "sky_image", "sky_gaussians"),
                        produces=("points_ply", "gaussians_ply", "sky_ply", "sky_png")),
}
assert tuple(STAGE_SPECS) == protocol.STAGES


class UndeclaredRead(RuntimeError):
    """A stage read something its StageSpec does not declare (its key would not cover it): a bug."""


class _Declared:
    """The part of the settings or the request a stage declared; reading anything else raises."""

    def __init__(self, stage: str, what: str, values: dict[str, Any], allowed: tuple[str, ...]):
        self._stage, self._what, self._values, self._allowed = stage, what, values, allowed

    def _check(self, name: str) -> None:
        if name not in self._allowed:
            raise UndeclaredRead(f"stage {self._stage!r} read {self._what} {name!r}, which its StageSpec does not declare")

    def get(self, name: str, default: Any = None) -> Any:
        self._check(name)
        return self._values.get(name, default)

    def __getitem__(self, name: str) -> Any:
        self._check(name)
        return self._values[name]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]


@dataclass
class Run:
    """Everything a stage needs: the job, its settings, the backends' context, the client."""

    job: JobFolder
    job_request: dict[str, Any]  # the validated job.json
    all_settings: Settings
    profile: Profile
    device: str
    events: protocol.EventWriter
    should_stop: Callable[[], bool] = lambda: False
    memory: str = "low-vram"  # "low-vram": free each stage's models after it; "resident": keep them
    prefetch: bool = False  # load every later stage's models on threads from the first stage that runs
    stage: str = ""
    pool: BackendPool = field(default_factory=BackendPool)
    input_depth: np.ndarray | None = None  # RGB-D input, read by the "given" geometry backend
    written: set[str] = field(default_factory=set)  # the running stage's artifacts written so far

    def __post_init__(self) -> None:
        self.pool.run = self

    @property
    def spec(self) -> StageSpec | None:
        return STAGE_SPECS.get(self.stage)

    @property
    def settings(self) -> Settings | _Declared:
        """Inside a stage, the settings it declared; outside, all of them."""
        spec = self.spec
        return self.all_settings if spec is None else _Declared(self.stage, "setting", self.all_settings.to_dict(), spec.settings)

    @property
    def request(self) -> dict[str, Any] | _Declared:
        """Inside a stage, the job.json fields it declared; outside, all of them."""
        spec = self.spec
        return self.job_request if spec is None else _Declared(self.stage, "job.json field", self.job_request, spec.request)

    # -- artifacts --------------------------------------------------------------------------------

    def _artifact(self, name: str, declared: tuple[str, ...], verb: str) -> Artifact:
        if name not in declared:
            raise UndeclaredRead(f"stage {self.stage!r} {verb} artifact {name!r}, which its StageSpec does not declare")
        return ARTIFACTS[name]

    def artifact_path(self, name: str) -> Path:
        artifact = ARTIFACTS[name]
        return self.job.stage_dir(artifact.stage) / artifact.file

    def has_artifact(self, name: str) -> bool:
        """Produced by its stage's last finished run (an old file of an earlier run does not count)."""
        artifact = ARTIFACTS[name]
        record = self.job.done_record(artifact.stage) or {}
        return artifact.file in record.get("outputs", []) and self.artifact_path(name).exists()

    def read(self, name: str) -> Any:
        """A declared artifact, loaded by its kind (None for an absent optional one)."""
        artifact = self._artifact(name, self.spec.reads, "read")
        if not self.has_artifact(name):
            if artifact.optional:
                return None
            raise FileNotFoundError(f"{artifact.stage}/{artifact.file} (artifact {name!r}) is missing; run with --fresh")
        path = self.artifact_path(name)
        if artifact.kind == "image":
            return _read_image(path)
        if artifact.kind == "arrays":
            return read_npz(path)
        if artifact.kind == "points":
            return _load_points(path)
        if artifact.kind in ("json", "camera"):
            data = json.loads(path.read_text(encoding="utf-8"))
            return cameras.Camera.from_dict(data) if artifact.kind == "camera" else data
        return path

    def write(self, name: str, value: Any = None, **arrays: np.ndarray) -> None:
        """Write one of the stage's declared artifacts (atomically); thread-safe."""
        artifact = self._artifact(name, self.spec.produces, "wrote")
        path = self.artifact_path(name)
        if artifact.kind == "image":
            images.save_png(path, value)
        elif artifact.kind == "arrays":
            write_npz(path, **arrays)
        elif artifact.kind == "points":
            write_npz(path, xyz=value.xyz, rgb=value.rgb, radius=value.radius)
        elif artifact.kind == "json":
            write_json(path, value)
        elif artifact.kind == "camera":
            write_json(path, value.to_dict())
        else:
            raise TypeError(f"artifact {name!r} is a file: write it at run.output_path({name!r})")
        self.written.add(name)

    def output_path(self, name: str) -> Path:
        """Where to write a declared "file" artifact (the writer must write it atomically)."""
        self._artifact(name, self.spec.produces, "wrote")
        self.written.add(name)
        return self.artifact_path(name)

    # -- events -----------------------------------------------------------------------------------

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

    # -- backends ---------------------------------------------------------------------------------

    def backend_context(self) -> BackendContext:
        pool = self.pool  # callbacks reach whichever run uses the pool when they fire
        return BackendContext(
            profile=self.profile,
            device=self.device,
            cache_dir=str(default_cache_dir()),
            model_overrides=dict(self.job_request.get("models") or {}),
            warn=lambda text: pool.run.warn(text),
            note=lambda text: pool.run.events.emit("progress", stage=pool.run.stage, fraction=0.0, message=text),
        )

    def backend(self, slot: str):
        """The profile's backend for ``slot``, taken from the pool (waiting for a prefetch) or created there."""
        if self.spec is not None and slot not in self.spec.slots:
            raise UndeclaredRead(f"stage {self.stage!r} used backend slot {slot!r}, which its StageSpec does not declare")
        name = self.backend_name(slot)
        if name is None:
            raise BadInputError(f"profile {self.profile.name!r} has no {slot.replace('_', ' ')} backend")
        if name == "given":  # holds this run's depth: never pooled
            from importlib import import_module

            from .profiles import SLOTS

            return import_module(f"engine.{SLOTS[slot]}").create(name, self.backend_context(), depth=self.input_depth)
        entry = self._start_load(slot, name)
        return self._wait_for(entry)

    def _start_load(self, slot: str, name: str) -> str:
        """Start creating ``slot``'s backend on a worker thread unless the pool has it (or is
        creating it) with the same options and weights; returns its pool entry."""
        from importlib import import_module

        from .profiles import SLOTS

        module_name = SLOTS[slot]
        context = self.backend_context()
        options: dict[str, Any] = {}
        settings = self.all_settings  # a prefetch runs inside an earlier stage, which declares none of these
        if slot in ("background_inpaint", "expansion_inpaint", "sky_inpaint", "text_to_image") and name != "opencv":
            options.update(steps=settings.inpaint_steps, guidance=settings.guidance,
                           solver=settings.diffusion_solver, cuda_graphs=settings.cuda_graphs)
        if slot == "layers":
            from .segment import LayerSettings

            options["settings"] = LayerSettings(**{name: getattr(settings, name) for name in LAYER_FIELDS})
        key = json.dumps([name, self.device, repr(options), self.model_sources()], sort_keys=True)
        # One entry per backend (geometry and expansion geometry share one MoGe-2).
        entry = f"{module_name}:{name}"
        pooled = self.pool.backends.get(entry)
        if pooled is None or pooled[0] != key:
            if pooled is not None:  # other settings or weights: never hold two copies of one model
                _release([pooled[1]], self.device)
            self.pool.backends[entry] = (key, _load_on_thread(
                lambda: import_module(f"engine.{module_name}").create(name, context, **options), slot, name))
        return entry

    def _wait_for(self, entry: str) -> Any:
        """The pool's backend ``entry``, once loaded, while this thread polls for a cancel every 50 ms.

        A load is one long call with no check inside (importing segment-anything alone takes
        2.4 s, for torchvision): a cancel during it takes effect at once, and the load left
        behind finishes on its thread and is released.  A failed load leaves the pool, so the
        next use tries again, and raises here, in the stage that needs the model.
        """
        from concurrent.futures import Future, wait

        key, loaded = self.pool.backends[entry]
        if not isinstance(loaded, Future):
            return loaded
        while not wait([loaded], timeout=0.05).done:
            if self.should_stop():
                del self.pool.backends[entry]
                _release([loaded], self.device)
                self.check()
        if loaded.exception() is not None:
            del self.pool.backends[entry]
            raise loaded.exception()
        self.pool.backends[entry] = (key, loaded.result())
        return loaded.result()

    def prefetch_backends(self, stages: Sequence[str]) -> list[str]:
        """Start loading the models ``stages`` will use, all at once on worker threads, so that
        later stages' loads overlap the first stages' work (a resident engine's cold start).

        Slots used only on some inputs are left to their stage: text to image without a prompt,
        the caption with one, and the sky's inpainter (it is the expansion's model in every
        profile, and an input without sky never needs it).  Returns the pool entries started.
        """
        request = self.job_request
        skipped = {"sky_inpaint", "caption" if request.get("prompt") else "text_to_image"}
        if request.get("image"):
            skipped.add("text_to_image")
        entries = []
        for stage in stages:
            for slot in STAGE_SPECS[stage].slots:
                name = self.backend_name(slot)
                if slot in skipped or name in (None, "given"):
                    continue
                entry = self._start_load(slot, name)
                if entry not in entries:
                    entries.append(entry)
        return entries

    def backend_name(self, slot: str) -> str | None:
        # RGB-D input skips geometry estimation for the input view, whatever the profile.
        if slot == "geometry" and self.job_request.get("depth"):
            return "given"
        return self.profile.backends.get(slot)

    def model_sources(self) -> dict[str, tuple[str, ...]]:
        context = self.backend_context()
        return {model: context.sources(model) for model in self.profile.models}

    def release_backends(self) -> None:
        """Free the models created so far, so one stage's weights never sit beside the next's."""
        released = [backend for _, backend in self.pool.backends.values()]
        self.pool.backends.clear()
        _release(released, self.device)

    def stage_key(self, stage: str) -> str:
        """The hash of everything ``stage`` declares it reads (earlier stages' artifacts by content)."""
        spec = STAGE_SPECS[stage]
        request = {}
        for name in spec.request:
            value = self.job_request.get(name)
            request[name] = content_digest(self.job.path(value)) if name in INPUT_FILES and value else value
        relevant = {
            "stage": stage,
            "engine": __version__,  # a new release never resumes from results of the old code
            "code": spec.version,
            "settings": self.all_settings.subset(spec.settings),
            "backends": {slot: self.backend_name(slot) for slot in spec.slots},
            "models": self.model_sources() if spec.slots else {},
            "request": request,
            "device": self.device if spec.device else "",
            "reads": {name: content_digest(self.artifact_path(name)) if self.has_artifact(name) else None for name in spec.reads},
        }
        return settings_key(relevant)


def _load_on_thread(create: Callable[[], Any], slot: str, name: str):
    """``create()`` started on a daemon thread (an engine exiting on a cancel does not wait for
    a load it left behind); a Future of the backend.  Loads run one after another
    (``models.LOADING``), beside the stages' work rather than beside each other."""
    import threading
    from concurrent.futures import Future

    from .models import LOADING

    future: Future = Future()

    def work() -> None:
        try:
            with LOADING:
                started = time.perf_counter()
                future.set_result(create())
        except BaseException as exc:  # handed to the waiting stage by Run._wait_for
            future.set_exception(exc)
        else:
            log.info("loaded %s backend %r in %.2f s", slot, name, time.perf_counter() - started)

    threading.Thread(target=work, name=f"backend-load-{slot}", daemon=True).start()
    return future


def _release(backends: list[Any], device: str) -> None:
    """Free these backends (a load still running is freed when it finishes)."""
    from concurrent.futures import Future

    if not backends:
        return
    for backend in backends:
        if isinstance(backend, Future):
            backend.add_done_callback(lambda f: f.exception() is None and _release([f.result()], device))
        elif hasattr(backend, "release"):
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


def stage_inputs(run: Run, out: Path) -> None:
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
    run.write("image", image)
    if request.get("depth"):
        run.write("input_depth", depth=images.load_depth(run.job.path(request["depth"]), (width, height)))
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
        if request.get("depth"):  # no model estimates a focal length for RGB-D input
            run.warn(f"no camera with the RGB-D input: assuming a {settings.fov:g}° horizontal field of view (--fov)")
    # "given": K came from the client, or is the only one there is (RGB-D input): it overrides a model's estimate.
    given = bool(request.get("camera") or request.get("depth"))
    run.write("input_camera", cameras.Camera(K, np.eye(4), width, height, "input", {"given": given}))
    run.preview("inputs/image.png")


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def stage_depth(run: Run, out: Path) -> None:
    from .sky import sky_mask

    image = run.read("image")
    input_depth = run.read("input_depth")
    run.input_depth = None if input_depth is None else input_depth["depth"]
    camera = run.read("input_camera")
    geometry = run.backend("geometry")
    run.progress(0.0, "estimating depth")
    estimate = geometry.estimate(image, camera if camera.extra.get("given") else None, should_stop=run.should_stop)
    K = camera.K if camera.extra.get("given") else _plausible_intrinsics(estimate.K, camera, run)
    depth = np.where(estimate.valid, estimate.depth, 0.0).astype(np.float32)
    settings = run.settings
    sky = sky_mask(depth, settings.sky_far_limit) if settings.sky else np.zeros(depth.shape, bool)
    depth[sky] = 0.0  # sky beyond the far limit lifts no points either
    if not np.any(depth > 0):
        raise BadInputError("the geometry stage found no valid depth in the input image")
    run.write("depth", depth=depth, K=np.asarray(K, dtype=np.float64), sky=sky)


def _plausible_intrinsics(K: np.ndarray, fallback: cameras.Camera, run: Run) -> np.ndarray:
    """The model's intrinsics, unless they describe no real lens (then the input camera's field of view)."""
    K = np.asarray(K, dtype=np.float64)
    fov = 2 * np.degrees(np.arctan(fallback.width / (2 * K[0, 0]))) if np.isfinite(K[0, 0]) and K[0, 0] > 0 else 0.0
    if np.all(np.isfinite(K)) and K[1, 1] > 0 and 5.0 <= fov <= 170.0:
        return K
    fallback_fov = 2 * np.degrees(np.arctan(fallback.width / (2 * fallback.K[0, 0])))
    run.warn(f"the geometry model's focal length is implausible; using a {fallback_fov:.4g}° field of view instead")
    return fallback.K


def _depth_camera(run: Run) -> tuple[np.ndarray, np.ndarray, cameras.Camera]:
    image = run.read("image")
    data = run.read("depth")
    camera = run.read("input_camera")
    camera = cameras.Camera(data["K"], camera.world_to_camera, camera.width, camera.height, camera.name)
    return image, data["depth"], camera


def stage_segment(run: Run, out: Path) -> None:
    image = run.read("image")
    depth = run.read("depth")["depth"]
    layers = run.backend("layers").layers(image, depth, should_stop=run.should_stop)
    run.write("layers", foreground=layers.foreground, hidden=layers.hidden)
    images.save_png(out / "foreground.png", layers.foreground)
    run.preview("segment/foreground.png")


def stage_inpaint(run: Run, out: Path) -> None:
    """Fill the background hidden behind the foreground, then lift both layers to points."""
    from .depth_geometry import complete_far_side
    from .pointcloud import PointCloud, unproject

    image, depth, camera = _depth_camera(run)
    hidden = run.read("layers")["hidden"]
    # The scene prompt: every inpainting of this job uses it, here and in the expansion.
    prompt = run.request.get("prompt") or ""
    if not prompt:
        prompt = run.backend("caption").prompt(image)
        log.info("scene prompt: %s", prompt)
    visible = unproject(camera, image, depth, depth > 0, edge_threshold=run.settings.depth_edge_threshold)
    layers = [visible]
    if hidden.any():
        # The background's depth behind the foreground: conditions the inpainting and places its points.
        background_depth, _ = complete_far_side(depth, hidden)
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
    run.write("scene_points", points)
    run.write("scene_prompt", {"prompt": prompt, "visible_points": len(visible), "points": len(points)})


def _load_points(path: Path):
    from .pointcloud import PointCloud

    data = read_npz(path)
    return PointCloud(data["xyz"], data["rgb"], data["radius"])


def stage_sky(run: Run, out: Path) -> None:
    from .sky import stage_sky as sky_stage

    sky_stage(run, out)


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


def stage_expand(run: Run, out: Path) -> None:
    """World expansion: render -> inpaint holes -> depth -> align along rays -> lift -> merge."""
    from concurrent.futures import ThreadPoolExecutor

    from .align import AlignSettings, align_depth
    from .depth_geometry import depth_edges, repair_depth_ramps
    from .pointcloud import PointCloud, render_points, unproject
    from .sky import SkyPanorama

    image, depth, camera = _depth_camera(run)
    points = run.read("scene_points")
    path = expansion_cameras(run, camera, depth)
    # Training views: the input view plus each completed expansion view (full frame valid).
    view_images, view_masks, view_cameras = [image], [depth > 0], [camera.to_dict()]
    stats = []
    prompt = run.read("scene_prompt")["prompt"]  # the user's, or the one built from the input image
    panorama = run.read("sky_panorama")
    sky = None if panorama is None else SkyPanorama.from_arrays(panorama)

    def save_view(name: str, completed: np.ndarray) -> None:
        images.save_png(out / name, completed)
        run.preview(f"expand/{name}")  # once the file is there (events are thread-safe)

    # Files are written on a thread: each view's PNG encoding (~0.1 s at 512²) overlaps the next
    # view's models, and at the end the two npz files are written side by side.  One worker keeps
    # the previews in order; the files are the same bytes as before.
    written = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="expand-writer") as writer:
        for index, view in enumerate(path):
            run.progress(index / max(1, len(path)), f"view {index + 1}/{len(path)}")
            rendered = render_points(points, view, device=run.device)
            completed = rendered.image
            hole = rendered.hole_mask
            record: dict[str, Any] = {"view": index + 1, "hole_fraction": float(hole.mean())}
            if sky is not None:
                # The sky comes from the one panorama: not a hole to inpaint, nothing to lift.
                sky_colour, sky_view = sky.sample(view)
                sky_view &= hole
                completed = np.where(sky_view[..., None], sky_colour, completed).astype(np.float32)
                hole = hole & ~sky_view
                record["sky_fraction"] = float(sky_view.mean())
            if hole.any():
                completed = run.backend("expansion_inpaint").inpaint(
                    completed,
                    hole,
                    depth=rendered.depth,
                    prompt=prompt,
                    negative_prompt=run.request.get("negative_prompt") or "",
                    seed=run.settings.seed + index + 1,
                    should_stop=run.should_stop,
                )
                run.check()
                estimate = run.backend("expansion_geometry").estimate(
                    completed, view, rendered_depth=rendered.depth, hole_mask=hole, should_stop=run.should_stop
                )
                new_depth = np.where(estimate.valid, estimate.depth, 0.0).astype(np.float32)
                ramp_radius = round(run.settings.depth_ramp_radius * max(new_depth.shape))  # 3 px at 512
                new_depth, ramp = repair_depth_ramps(new_depth, ramp_radius, device=run.device)
                record["ramp_fraction"] = float(ramp[hole].mean())
                align_settings = AlignSettings.from_settings(run.settings)
                aligned, align_stats = align_depth(new_depth, rendered.depth, hole, view, settings=align_settings, device=run.device)
                record.update(align_stats.to_dict())
                for message in align_stats.warnings(align_settings):
                    run.warn(f"expansion view {index + 1}: {message}")
                # Depth edges are judged on the view as it will be once merged (the existing surface
                # around the hole): a seam pixel pinned to that surface is then no edge.
                composed = np.where(hole, aligned, rendered.depth)
                lifted = hole & (aligned > 0) & ~depth_edges(composed, run.settings.depth_edge_threshold)
                fresh = unproject(view, completed, composed, lifted, edge_threshold=None)
                # No de-duplication: the new points come from this view's holes, where no existing
                # point lands, so a duplicate test in this view drops none (eval-world: 0 of ~4.4k
                # candidates on three scenes) and costs a render.
                points = PointCloud.concat([points, fresh])
            record["points"] = len(points)
            stats.append(record)
            written.append(writer.submit(save_view, f"view_{index + 1:02d}.png", completed))
            view_images.append(completed)
            # Trained where some geometry explains the pixel (not the sky, nor where nothing was lifted).
            scene = ~rendered.hole_mask | (lifted if hole.any() else False)
            view_masks.append(scene)
            view_cameras.append(view.to_dict())
        written.append(writer.submit(run.write, "world_points", points))
        run.write("views", images=np.stack(view_images).astype(np.float16), masks=np.stack(view_masks))
    for done in written:
        done.result()  # a failed write fails the stage
    run.write("view_cameras", {"cameras": view_cameras, "steps": stats, "prompt": prompt})


def stage_splat(run: Run, out: Path) -> None:
    from dataclasses import replace

    from .export import write_gaussians_ply
    from .sky import SkyPanorama
    from .splat import SplatConfig, TrainView, make_reprojection_views, train_gaussians

    points = run.read("world_points")
    data = run.read("views")
    view_cameras = [cameras.Camera.from_dict(c) for c in run.read("view_cameras")["cameras"]]
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
    panorama = run.read("sky_panorama")
    if panorama is not None:
        # The scene is fitted as it will be seen: over its sky (sky pixels stay out of the masks).
        sky = SkyPanorama.from_arrays(panorama)
        views = [replace(view, background=sky.background(view.camera)) for view in views]
    config = SplatConfig.schedule(settings.splat_schedule, run.device)
    config.seed, config.antialiased = settings.seed, settings.antialiased
    config.max_gaussians = int(np.count_nonzero(data["masks"]))  # no more than the generated views' pixels
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
    write_gaussians_ply(run.output_path("gaussians"), gaussians)


def stage_export(run: Run, out: Path) -> None:
    """The final results, at the job folder's top level where clients look for them."""
    from .export import write_points_ply
    from .job import atomic_path

    write_points_ply(run.output_path("points_ply"), run.read("world_points"))
    copies = [("gaussians", "gaussians_ply"), ("sky_gaussians", "sky_ply"), ("sky_image", "sky_png")]
    for source, result in copies:
        path = run.read(source)
        if path is None:  # the sky's, without sky: an earlier run's must not stay beside this world
            run.artifact_path(result).unlink(missing_ok=True)
            continue
        with atomic_path(run.output_path(result)) as tmp:
            shutil.copyfile(path, tmp)


STAGE_FUNCTIONS: dict[str, Callable[[Run, Path], None]] = {
    "inputs": stage_inputs,
    "depth": stage_depth,
    "segment": stage_segment,
    "inpaint": stage_inpaint,
    "sky": stage_sky,
    "expand": stage_expand,
    "splat": stage_splat,
    "export": stage_export,
}


def run_job(run: Run) -> dict[str, str]:
    """Run (or resume) every stage; returns the result files relative to the job folder."""
    total = len(protocol.STAGES)
    prefetched = not run.prefetch
    for index, stage in enumerate(protocol.STAGES):
        run.stage = stage
        run.check()
        key = run.stage_key(stage)
        run.events.emit("stage_start", stage=stage, index=index, total=total)
        if run.job.is_done(stage, key):
            run.events.emit("stage_done", stage=stage, seconds=0.0, cached=True)
            continue
        if not prefetched:  # from here on every stage runs (each one's key reads the one before)
            run.prefetch_backends(protocol.STAGES[index:])
            prefetched = True
        started = time.perf_counter()
        out = run.job.begin(stage)
        run.written = set()
        try:
            STAGE_FUNCTIONS[stage](run, out)
        except Cancelled as exc:
            exc.stage = stage
            raise
        except Exception as exc:
            if is_out_of_memory(exc):
                raise _out_of_memory(run, stage) from exc
            raise
        seconds = round(time.perf_counter() - started, 3)
        peak = _peak_memory_mb(run.device)
        outputs = [ARTIFACTS[name].file for name in STAGE_SPECS[stage].produces if name in run.written]
        run.job.finish(stage, key, outputs, seconds=seconds, peak_vram_mb=peak)
        if run.memory == "low-vram":
            run.release_backends()
        run.events.emit("stage_done", stage=stage, seconds=seconds, cached=False, peak_vram_mb=peak)
        log.info("stage %s done in %.2f s", stage, seconds)
    run.stage = ""
    outputs = {"points": "points.ply", "gaussians": "gaussians.ply", "job": "job.json"}
    if run.has_artifact("sky_ply"):
        outputs.update(sky="sky.ply", sky_image="sky.png")
    return outputs


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
    settings = [f"--resolution (now {run.all_settings.resolution})"]
    if stage == "splat":
        settings.insert(0, f"--set reprojections=N (now {run.all_settings.reprojections})")
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
    prefetch: bool | None = None,
) -> Run:
    """The run of the job in ``job_dir``.  ``prefetch`` (default: resident on CUDA) loads the
    models of every stage to run at once, overlapping the first stages (``Run.prefetch_backends``)."""
    job = JobFolder(job_dir)
    request = job.read()
    profile = get_profile(request["profile"])
    overrides = {**profile.settings, **(request.get("settings") or {})}
    settings = Settings.from_dict(overrides)
    if prefetch is None:
        prefetch = memory == "resident" and device.startswith("cuda")
    return Run(job, request, settings, profile, device, events, should_stop, memory, prefetch, pool=pool or BackendPool())
