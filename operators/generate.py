"""Generate / Cancel: run the engine on the scene's Gen3D settings and import the result.

Invoked from the UI, Generate is modal: a timer pumps the engine's events, so Blender stays
responsive, the status bar and panel show progress, and Esc cancels.  Called from a script
(EXEC_DEFAULT) it blocks until the engine ends, for batch use and tests.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import bpy

from ..engine import cameras, trajectory
from ..gen3d_addon import camera_bridge, importers
from ..gen3d_addon.engine_client import EngineRun, EngineServer
from ..gen3d_addon.preferences import (
    EXTENSION_ROOT,
    get_preferences,
    jobs_root,
    parse_model_overrides,
    resolved_engine_python,
)

# The run in flight (one at a time per Blender session): the Cancel operator and the panel read it.
_active: EngineRun | None = None
# The long-lived engine when "Keep engine loaded" is on; started by the first Generate.
_server: EngineServer | None = None


def engine_server(context) -> EngineServer | None:
    """The shared engine for this run, or None for a one-shot engine."""
    global _server
    prefs = get_preferences(context)
    if not prefs.keep_engine_loaded:
        return None
    python = resolved_engine_python(prefs)
    if _server is not None and (_server.python != python or _server.device != prefs.device):
        _server.stop()  # settings changed: the next run starts a matching engine
        _server = None
    if _server is None:
        _server = EngineServer(python, cwd=EXTENSION_ROOT, device=prefs.device)
    return _server


def active_run() -> EngineRun | None:
    return _active


class InputError(ValueError):
    """Something the user must fix before the engine can start."""


def _job_folder(context, image: Path | None) -> Path:
    # One folder per scene and input: a re-run resumes the finished stages of the last one.
    stem = image.stem if image else "text"
    name = re.sub(r"[^\w.-]+", "_", f"{context.scene.name}-{stem}")
    return jobs_root(get_preferences(context)) / name


def build_arguments(context) -> tuple[list[str], Path]:
    """The engine command line for the scene's settings; writes cameras into the job folder."""
    scene = context.scene
    settings = scene.gen3d
    prefs = get_preferences(context)
    image = Path(bpy.path.abspath(settings.image_path)) if settings.image_path else None
    if image is None and not settings.prompt.strip():
        raise InputError("Choose an input image (or type a prompt for text-to-scene)")
    if image is not None and not image.is_file():
        raise InputError(f"Input image not found: {image}")
    job_dir = _job_folder(context, image)
    job_dir.mkdir(parents=True, exist_ok=True)
    args = ["generate", str(image) if image else "", "--out", str(job_dir)]
    args += ["--profile", prefs.profile, "--device", prefs.device, "--seed", str(settings.seed)]
    args += ["--steps", str(settings.steps), "--resolution", str(settings.resolution)]
    if settings.splat_iterations:
        args += ["--iterations", str(settings.splat_iterations)]
    if settings.prompt.strip():
        args += ["--prompt", settings.prompt]
    if settings.negative_prompt.strip():
        args += ["--negative-prompt", settings.negative_prompt]
    if settings.depth_path:
        depth = Path(bpy.path.abspath(settings.depth_path))
        if not depth.is_file():
            raise InputError(f"Depth file not found: {depth}")
        args += ["--depth", str(depth)]
    try:
        for name, source in parse_model_overrides(prefs.model_overrides).items():
            args += ["--model", f"{name}={source}"]
        camera_object = scene.camera
        if settings.use_scene_camera and camera_object is not None:
            input_camera = camera_bridge.camera_from_object(scene, camera_object)
            _write_json(job_dir / "camera.json", input_camera.to_dict())
            args += ["--camera", str(job_dir / "camera.json")]
        if settings.trajectory_source == "CAMERA":
            if camera_object is None:
                raise InputError("Camera animation needs a scene camera")
            path = camera_bridge.sample_animation(scene, camera_object, settings.steps + 1)
            trajectory.save_trajectory(job_dir / "trajectory.json", path, source=f"blender:{camera_object.name}")
            args += ["--trajectory", str(job_dir / "trajectory.json")]
        else:
            args += ["--preset", settings.preset]
    except (cameras.CameraError, ValueError) as exc:
        raise InputError(str(exc)) from exc
    return args, job_dir


def _write_json(path: Path, data) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    tmp.replace(path)


PREVIEW_IMAGE = "Gen3D preview"


def _mirror(context, run: EngineRun) -> None:
    """Copy the run's state into the scene settings the panel draws (the panel loads nothing)."""
    settings = context.scene.gen3d
    settings.running = not run.done
    settings.stage = run.stage
    settings.progress = run.fraction
    settings.message = run.message[:1000]
    if run.preview_path and run.preview_path != settings.preview_path and Path(run.preview_path).is_file():
        settings.preview_path = run.preview_path
        image = bpy.data.images.get(PREVIEW_IMAGE)
        if image is None:
            image = bpy.data.images.load(run.preview_path)
            image.name = PREVIEW_IMAGE
        else:
            image.filepath = run.preview_path
            image.reload()
        image.preview_ensure()


def _finish(operator, context, run: EngineRun) -> set[str]:
    global _active
    _active = None
    _mirror(context, run)
    if context.workspace is not None:
        context.workspace.status_text_set(None)
    for warning in run.warnings:
        operator.report({"WARNING"}, warning)
    if run.state == "finished":
        try:
            collection = importers.import_job(context, run.job_dir, mode=context.scene.gen3d.import_mode)
        except (OSError, ValueError) as exc:
            operator.report({"ERROR"}, f"Gen3D finished but importing {run.job_dir} failed: {exc}")
            return {"CANCELLED"}
        operator.report({"INFO"}, f"Gen3D: imported {collection.name} from {run.job_dir}")
        return {"FINISHED"}
    if run.state == "cancelled":
        operator.report({"WARNING"}, "Gen3D cancelled; finished stages are kept and the next Generate resumes")
        return {"CANCELLED"}
    operator.report({"ERROR"}, f"Gen3D: {run.error}")
    return {"CANCELLED"}


class GEN3D_OT_generate(bpy.types.Operator):
    """Generate a 3D scene from the input image with the Gen3D engine"""

    bl_idname = "gen3d.generate"
    bl_label = "Generate"
    bl_options = {"REGISTER"}

    timeout: bpy.props.FloatProperty(
        name="Timeout", description="Blocking runs only: cancel after this many seconds (0: none)", default=0.0, min=0.0
    )

    _timer = None
    _run: EngineRun | None = None

    @classmethod
    def poll(cls, context):
        return _active is None

    def _start(self, context) -> EngineRun | None:
        global _active
        try:
            arguments, job_dir = build_arguments(context)
        except InputError as exc:
            self.report({"ERROR"}, str(exc))
            return None
        run = EngineRun(
            resolved_engine_python(get_preferences(context)),
            arguments,
            cwd=EXTENSION_ROOT,
            job_dir=job_dir,
            server=engine_server(context),
        )
        context.scene.gen3d.job_dir = str(job_dir)
        run.start()
        if run.done:  # could not even start
            self.report({"ERROR"}, run.error)
            _mirror(context, run)
            return None
        _active = run
        _mirror(context, run)
        return run

    def execute(self, context):
        run = self._start(context)
        if run is None:
            return {"CANCELLED"}
        run.wait(timeout=self.timeout or None)
        return _finish(self, context, run)

    def invoke(self, context, event):
        self._run = self._start(context)
        if self._run is None:
            return {"CANCELLED"}
        self._timer = context.window_manager.event_timer_add(0.1, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        run = self._run
        if event.type == "ESC":
            run.cancel()
        if event.type == "TIMER":
            run.pump()
            _mirror(context, run)
            if context.workspace is not None:
                context.workspace.status_text_set(f"Gen3D: {run.message}  {run.fraction * 100:.0f}%  (Esc to cancel)")
            for area in context.screen.areas if context.screen else ():
                if area.type == "VIEW_3D":
                    area.tag_redraw()
            if run.done:
                context.window_manager.event_timer_remove(self._timer)
                return _finish(self, context, run)
        return {"PASS_THROUGH"}


class GEN3D_OT_cancel(bpy.types.Operator):
    """Stop the running Gen3D job after its current step (finished stages are kept)"""

    bl_idname = "gen3d.cancel"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context):
        return _active is not None

    def execute(self, context):
        _active.cancel()
        return {"FINISHED"}


class GEN3D_OT_release_engine(bpy.types.Operator):
    """Shut down the kept engine process and free the memory its models hold"""

    bl_idname = "gen3d.release_engine"
    bl_label = "Release engine"

    @classmethod
    def poll(cls, context):
        return _active is None and _server is not None and _server.alive

    def execute(self, context):
        _server.stop()
        self.report({"INFO"}, "Gen3D engine released")
        return {"FINISHED"}


def unregister_extra() -> None:
    """Disabling the add-on (or quitting) must not leave an engine running."""
    if _active is not None:
        _active.cancel()
    if _server is not None:
        _server.stop()


CLASSES = [GEN3D_OT_generate, GEN3D_OT_cancel, GEN3D_OT_release_engine]
