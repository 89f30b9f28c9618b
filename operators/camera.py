"""Camera operators: a camera matched to the input image, trajectory presets as keyframes,
timeline markers on the frames that become expansion views."""

from __future__ import annotations

import json
from pathlib import Path

import bpy
import mathutils
import numpy as np

from ..engine import cameras, trajectory
from ..gen3d_addon import camera_bridge, camera_paths, importers
from ..gen3d_addon.properties import PRESET_ITEMS


class Gen3DCameraSettings(bpy.types.PropertyGroup):
    """Scene.gen3d_camera: how the camera path is built and sampled."""

    sampling: bpy.props.EnumProperty(
        name="Views at", items=camera_bridge.SAMPLING_ITEMS, default="EVEN",
        description="Which frames of the camera animation become expansion views",
    )
    preset: bpy.props.EnumProperty(name="Preset", items=PRESET_ITEMS, default="orbit")
    scene_depth: bpy.props.FloatProperty(
        name="Scene depth", default=3.0, min=0.01, subtype="DISTANCE", unit="LENGTH",
        description="Distance to the scene's centre of interest; presets scale with it (Add Matched Camera "
        "From job sets it from the generated depth)",
    )
    angle: bpy.props.FloatProperty(
        name="Angle", default=30.0, description="Orbit / look-around sweep (degrees; the engine's default too)"
    )
    pitch: bpy.props.FloatProperty(name="Pitch", default=0.0, description="Look-around tilt up (degrees)")
    height: bpy.props.FloatProperty(name="Height", default=0.0, unit="LENGTH", description="Orbit lift (metres)")
    radius: bpy.props.FloatProperty(
        name="Radius", default=0.0, unit="LENGTH", description="Orbit / spiral radius (0: from scene depth)"
    )
    distance: bpy.props.FloatProperty(
        name="Distance", default=0.0, unit="LENGTH", description="Dolly / pan travel (0: from scene depth)"
    )
    turns: bpy.props.FloatProperty(name="Turns", default=2.0, min=0.1, description="Spiral turns")
    forward: bpy.props.FloatProperty(
        name="Forward", default=0.0, unit="LENGTH", description="Spiral push-in (0: from scene depth)"
    )

    def parameters(self, name: str) -> dict[str, float]:
        """The preset's keyword parameters from these settings; 0 means "the preset's default"
        for the distances that default to a share of the scene depth."""
        params = {"scene_depth": self.scene_depth}
        for key in camera_paths.preset_parameters(name):
            value = getattr(self, key)
            if key in ("radius", "distance", "forward") and value == 0.0:
                continue
            params[key] = value
        return params


def _target_camera(context) -> bpy.types.Object | None:
    obj = context.active_object
    if obj is not None and obj.type == "CAMERA":
        return obj
    return context.scene.camera


def _job_camera(job_dir: Path) -> cameras.Camera | None:
    """The input camera of a finished job with the intrinsics the engine used (estimated or given)."""
    inputs = job_dir / "inputs" / "camera.json"
    depth = job_dir / "depth" / "depth.npz"
    if not inputs.is_file():
        return None
    camera = cameras.Camera.from_dict(json.loads(inputs.read_text(encoding="utf-8")))
    if depth.is_file():
        with np.load(depth, allow_pickle=False) as data:
            camera = cameras.Camera(data["K"], camera.world_to_camera, camera.width, camera.height, camera.name)
    return camera


class GEN3D_OT_add_camera(bpy.types.Operator):
    """Add a camera matched to the input image: its aspect (render size) and focal length,
    from your value or from the intrinsics the engine estimated in the last job"""

    bl_idname = "gen3d.add_camera"
    bl_label = "Add Matched Camera"
    bl_options = {"REGISTER", "UNDO"}

    focal_source: bpy.props.EnumProperty(
        name="Focal length",
        items=[("USER", "Lens", "Use the lens below"), ("JOB", "From job", "The intrinsics of the last finished job")],
        default="USER",
    )
    lens: bpy.props.FloatProperty(name="Lens", default=35.0, min=1.0, subtype="DISTANCE_CAMERA", unit="CAMERA")
    set_resolution: bpy.props.BoolProperty(
        name="Set render size", default=True, description="Set the render resolution to the input image's size"
    )

    def execute(self, context):
        scene = context.scene
        settings = scene.gen3d
        width, height = scene.render.resolution_x, scene.render.resolution_y
        if settings.image_path:
            path = Path(bpy.path.abspath(settings.image_path))
            if not path.is_file():
                self.report({"ERROR"}, f"Input image not found: {path}")
                return {"CANCELLED"}
            image = bpy.data.images.load(str(path), check_existing=True)
            width, height = image.size
            if width == 0 or height == 0:
                self.report({"ERROR"}, f"Cannot read the size of {path}")
                return {"CANCELLED"}
        data = bpy.data.cameras.new("Gen3D Camera")
        data.sensor_fit = "AUTO"
        data.lens = self.lens
        job_dir = None
        if self.focal_source == "JOB":
            job_dir = Path(bpy.path.abspath(settings.job_dir)) if settings.job_dir else None
            job = _job_camera(job_dir) if job_dir else None
            if job is None:
                bpy.data.cameras.remove(data)
                self.report({"ERROR"}, "No finished job with intrinsics (run Generate first, or use Lens)")
                return {"CANCELLED"}
            # The job ran at a working resolution; the same field of view at the image's size.
            try:
                blender = cameras.to_blender(job.resized(width, height), data.sensor_width)
            except cameras.CameraError as exc:
                bpy.data.cameras.remove(data)
                self.report({"ERROR"}, str(exc))
                return {"CANCELLED"}
            data.lens, data.shift_x, data.shift_y = blender["lens"], blender["shift_x"], blender["shift_y"]
            depth = camera_paths.scene_depth_from_job(job_dir)
            if depth:  # size the path presets to the generated scene too
                scene.gen3d_camera.scene_depth = depth
        obj = bpy.data.objects.new("Gen3D Camera", data)
        context.collection.objects.link(obj)
        # The job's input view (where its results land), else where results without a camera
        # land: at the origin looking along +Y, Z up.
        obj.matrix_world = mathutils.Matrix((importers.world_from_engine(job_dir) @ cameras.CV_FROM_BLENDER).tolist())
        if self.set_resolution:
            scene.render.resolution_x, scene.render.resolution_y = width, height
        scene.camera = obj
        for other in context.selected_objects:
            other.select_set(False)
        obj.select_set(True)
        context.view_layer.objects.active = obj
        self.report({"INFO"}, f"Gen3D camera {width}x{height}, {data.lens:.1f} mm, now the scene camera")
        return {"FINISHED"}


class GEN3D_OT_add_camera_path(bpy.types.Operator):
    """Key a camera path preset onto the camera (active camera, else the scene camera), starting
    from its current pose, evenly over the frame range; edit the keys afterwards as you like"""

    bl_idname = "gen3d.add_camera_path"
    bl_label = "Add Camera Path"
    bl_options = {"REGISTER", "UNDO"}

    preset: bpy.props.EnumProperty(name="Preset", items=PRESET_ITEMS, default="orbit")
    views: bpy.props.IntProperty(
        name="Keys", default=5, min=2, max=256, description="Keyframes (the first is the current pose)"
    )
    replace: bpy.props.BoolProperty(
        name="Replace keys", default=True, description="Remove the camera's location/rotation keys first"
    )

    @classmethod
    def poll(cls, context):
        return _target_camera(context) is not None

    def invoke(self, context, event):
        self.preset = context.scene.gen3d_camera.preset
        self.views = context.scene.gen3d.steps + 1
        return self.execute(context)

    def execute(self, context):
        scene, obj = context.scene, _target_camera(context)
        params = scene.gen3d_camera.parameters(self.preset)
        try:
            frames = camera_paths.add_preset(scene, obj, self.preset, self.views, replace=self.replace, **params)
        except (cameras.CameraError, trajectory.TrajectoryError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        camera_paths.mark_frames(scene, frames)
        scene.gen3d_camera.sampling = "EVEN"
        self.report({"INFO"}, f"{self.preset}: {len(frames)} keys on {obj.name}, frames {frames[0]}-{frames[-1]}")
        return {"FINISHED"}


class GEN3D_OT_mark_views(bpy.types.Operator):
    """Put timeline markers on the frames that Generate turns into expansion views"""

    bl_idname = "gen3d.mark_views"
    bl_label = "Mark Expansion Views"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return _target_camera(context) is not None

    def execute(self, context):
        scene = context.scene
        try:
            frames = camera_bridge.expansion_frames(scene, _target_camera(context), scene.gen3d.steps + 1)
        except cameras.CameraError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        camera_paths.mark_frames(scene, frames)
        return {"FINISHED"}


class GEN3D_OT_preview_views(bpy.types.Operator):
    """Show the views Generate will use as cameras in the Gen3D Preview collection (input first),
    from the path settings as they are now; again to update, with Clear to remove them"""

    bl_idname = "gen3d.preview_views"
    bl_label = "Preview Views"
    bl_options = {"REGISTER", "UNDO"}

    clear: bpy.props.BoolProperty(name="Clear", default=False, description="Remove the preview cameras")

    def execute(self, context):
        scene = context.scene
        if self.clear:
            camera_paths.clear_preview()
            return {"FINISHED"}
        if scene.camera is None:
            self.report({"ERROR"}, "Set a scene camera: the views are placed from its pose")
            return {"CANCELLED"}
        try:
            views = camera_paths.planned_views(scene, scene.camera)
        except (cameras.CameraError, trajectory.TrajectoryError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        camera_paths.show_preview(scene, scene.camera, views)
        frames = [view.extra["frame"] for view in views if "frame" in view.extra]
        if frames:
            camera_paths.mark_frames(scene, frames)
        self.report({"INFO"}, f"{len(views)} views in the {camera_paths.PREVIEW_COLLECTION} collection")
        return {"FINISHED"}


CLASSES = [Gen3DCameraSettings, GEN3D_OT_add_camera, GEN3D_OT_add_camera_path, GEN3D_OT_mark_views, GEN3D_OT_preview_views]


def register_extra() -> None:
    bpy.types.Scene.gen3d_camera = bpy.props.PointerProperty(type=Gen3DCameraSettings)


def unregister_extra() -> None:
    del bpy.types.Scene.gen3d_camera
