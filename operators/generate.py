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
from bpy.app.handlers import persistent

from ..engine import cameras, trajectory
from ..gen3d_addon import camera_paths, importers
from ..engine.remote import RemoteError, RemoteServer
from ..gen3d_addon.engine_client import EngineRun, EngineServer
from ..gen3d_addon.preferences import (
    EXTENSION_ROOT,
    get_preferences,
    jobs_root,
    parse_model_overrides,
    remote_target,
    resolved_engine_python,
)

# Run state lives here, at runtime, never in the .blend: a file saved mid-run must not open
# "running".  The run in flight (one per Blender session; Cancel and the panel read it) and the
# last one that ended (its message stays in the panel until the next file is loaded).
_active: EngineRun | None = None
_last: EngineRun | None = None
# The long-lived engine when "Keep engine loaded" is on; started by the first Generate.
_server: EngineServer | None = None


def engine_server(context) -> EngineServer | RemoteServer | None:
    """The shared engine for this run, or None for a one-shot engine."""
    global _server
    prefs = get_preferences(context)
    if prefs.engine_location == "REMOTE":
        return remote_server(prefs)
    if not prefs.keep_engine_loaded:
        return None
    python = resolved_engine_python(prefs)
    if _server is not None and (getattr(_server, "python", None) != python or _server.device != prefs.device):
        _server.stop()  # settings changed: the next run starts a matching engine
        _server = None
    if _server is None:
        _server = EngineServer(python, cwd=EXTENSION_ROOT, device=prefs.device)
    return _server


def remote_server(prefs) -> RemoteServer:
    """The remote engine always stays loaded: one ssh connection serves this session's runs."""
    global _server
    try:
        target = remote_target(prefs)
    except RemoteError as exc:
        raise InputError(f"Remote engine: {exc}") from exc
    if _server is not None and (getattr(_server, "target", None) != target or _server.device != prefs.device):
        _server.stop()
        _server = None
    if _server is None:
        _server = RemoteServer(target, device=prefs.device)
    return _server


def active_run() -> EngineRun | None:
    return _active


def last_run() -> EngineRun | None:
    return _last


class InputError(ValueError):
    """Something the user must fix before the engine can start."""


def _job_folder(context, image: Path | None) -> Path:
    # One folder per scene and input: a re-run resumes the finished stages of the last one.
    stem = image.stem if image else "text"
    name = re.sub(r"[^\w.-]+", "_", f"{context.scene.name}-{stem}")
    return jobs_root(get_preferences(context)) / name


def build_arguments(context, fresh: bool = False) -> tuple[list[str], Path]:
    """The engine command line for the scene's settings; writes cameras into the job folder.
    ``fresh``: regenerate from scratch (the engine forgets the job's finished stages)."""
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
    if fresh:
        args.append("--fresh")
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
        if settings.trajectory_source == "CAMERA" and camera_object is None:
            raise InputError("Camera animation needs a scene camera")
        if camera_object is not None and (settings.use_scene_camera or settings.trajectory_source == "CAMERA"):
            # The views the preview shows, input first (for an animation: its first sampled frame).
            path = camera_paths.planned_views(scene, camera_object)
            if settings.use_scene_camera:
                _write_json(job_dir / "camera.json", path[0].to_dict())
                args += ["--camera", str(job_dir / "camera.json")]
            trajectory.save_trajectory(job_dir / "trajectory.json", path, source=f"blender:{camera_object.name}")
            args += ["--trajectory", str(job_dir / "trajectory.json")]
        else:  # no camera framed the input: the engine's preset around its own estimate
            args += ["--preset", scene.gen3d_camera.preset]
    except (cameras.CameraError, ValueError) as exc:
        raise InputError(str(exc)) from exc
    return args, job_dir


def _write_json(path: Path, data) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    tmp.replace(path)


PREVIEW_IMAGE = "Gen3D preview"


def _show_preview(run: EngineRun) -> None:
    """Load the run's latest preview image for the panel (the panel itself loads nothing)."""
    image = bpy.data.images.get(PREVIEW_IMAGE)
    if not run.preview_path or (image is not None and image.filepath == run.preview_path):
        return
    if not Path(run.preview_path).is_file():
        return
    if image is None:
        image = bpy.data.images.load(run.preview_path)
        image.name = PREVIEW_IMAGE
    else:
        image.filepath = run.preview_path
        image.reload()
    image.preview_ensure()


def _finish(operator, context, run: EngineRun) -> set[str]:
    global _active, _last
    _active, _last = None, run
    _show_preview(run)
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
    fresh: bpy.props.BoolProperty(
        name="Regenerate from scratch",
        description="Redo every stage instead of resuming the job's finished ones",
        default=False,
        options={"SKIP_SAVE"},
    )

    _timer = None
    _run: EngineRun | None = None

    @classmethod
    def poll(cls, context):
        return _active is None

    def _start(self, context) -> EngineRun | None:
        global _active, _last
        try:
            arguments, job_dir = build_arguments(context, fresh=self.fresh)
            server = engine_server(context)
        except InputError as exc:
            self.report({"ERROR"}, str(exc))
            return None
        importers.keep_sh_of(job_dir / "gaussians.ply")  # the run rewrites it: earlier imports keep their SH
        python = Path(server.target.python) if isinstance(server, RemoteServer) else resolved_engine_python(get_preferences(context))
        run = EngineRun(python, arguments, cwd=EXTENSION_ROOT, job_dir=job_dir, server=server)
        context.scene.gen3d.job_dir = str(job_dir)
        run.start()
        if run.done:  # could not even start
            self.report({"ERROR"}, run.error)
            _last = run
            return None
        _active = run
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
            _show_preview(run)
            if context.workspace is not None:
                context.workspace.status_text_set(f"Gen3D: {run.message}  {run.fraction * 100:.0f}%  (Esc to cancel)")
            for area in context.screen.areas if context.screen else ():
                if area.type == "VIEW_3D":
                    area.tag_redraw()
            if run.done:
                context.window_manager.event_timer_remove(self._timer)
                return _finish(self, context, run)
        return {"PASS_THROUGH"}

    def cancel(self, context):
        """Blender ends the modal run (a file is loaded, the window closes, Blender quits): stop
        the engine; finished stages stay in the job folder."""
        global _active, _last
        context.window_manager.event_timer_remove(self._timer)
        if context.workspace is not None:
            context.workspace.status_text_set(None)
        if self._run is not None and _active is self._run:
            self._run.cancel()
            _active, _last = None, self._run


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


def stop_engines() -> None:
    """Cancel the run in flight and stop the kept engine: nothing outlives the file or Blender."""
    global _active, _last, _server
    if _active is not None:
        _active.stop(timeout=5.0)
        _active, _last = None, _active
    if _server is not None:
        _server.stop()
        _server = None


@persistent
def _on_load_pre(*_args) -> None:
    stop_engines()  # the run belongs to the file being closed


@persistent
def _on_load_post(*_args) -> None:
    global _last
    _last = None  # the new file starts with a clean panel


def register_extra() -> None:
    bpy.app.handlers.load_pre.append(_on_load_pre)
    bpy.app.handlers.load_post.append(_on_load_post)


def unregister_extra() -> None:
    """Disabling the add-on, or quitting (Blender disables every add-on on the way out), must not
    leave an engine running."""
    bpy.app.handlers.load_post.remove(_on_load_post)
    bpy.app.handlers.load_pre.remove(_on_load_pre)
    stop_engines()


CLASSES = [GEN3D_OT_generate, GEN3D_OT_cancel, GEN3D_OT_release_engine]
