"""Camera paths as real keyframes, and timeline markers on the frames that become views.

Presets come from engine.trajectory (numpy only), so the add-on and the engine agree on what
"orbit" or "spiral" means.  A preset is computed from the camera's current pose (its first
view *is* that pose) and written as ordinary location/rotation keyframes the artist can then
edit in the timeline and graph editor.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import bpy
import mathutils
import numpy as np
from bpy_extras import anim_utils

from ..engine import cameras, trajectory
from . import camera_bridge

MARKER_PREFIX = "Gen3D"


def preset_parameters(name: str) -> list[str]:
    """The keyword parameters preset ``name`` takes besides scene_depth (e.g. angle, radius)."""
    function = trajectory.PRESETS[name][0]
    return [p for p in inspect.signature(function).parameters if p not in ("t", "scene_depth")]


def preset_cameras(scene: bpy.types.Scene, obj: bpy.types.Object, name: str, n_views: int,
                   **params: Any) -> list[cameras.Camera]:
    """The preset's cameras in Blender's world, starting at ``obj``'s current pose.

    Presets are relative to the input camera's pose, so the Blender-world camera goes in as is.
    """
    return trajectory.preset(name, camera_bridge.camera_from_object(scene, obj), n_views, **params)


def _rotation_path(obj: bpy.types.Object) -> str:
    mode = obj.rotation_mode
    return {"QUATERNION": "rotation_quaternion", "AXIS_ANGLE": "rotation_axis_angle"}.get(mode, "rotation_euler")


def clear_transform_keys(obj: bpy.types.Object) -> None:
    """Remove the object's location/rotation F-curves (other animation is kept)."""
    anim = obj.animation_data
    if anim is None or anim.action is None:
        return
    if hasattr(anim_utils, "animdata_get_channelbag_for_assigned_slot"):  # slotted actions (4.4+)
        channelbag = anim_utils.animdata_get_channelbag_for_assigned_slot(anim)
        owner = channelbag.fcurves if channelbag is not None else None
    else:  # 4.2 LTS
        owner = anim.action.fcurves
    for fcurve in camera_bridge.fcurves(anim):
        if fcurve.data_path in ("location", "rotation_euler", "rotation_quaternion", "rotation_axis_angle"):
            owner.remove(fcurve)


def keyframe_cameras(obj: bpy.types.Object, path: list[cameras.Camera], frames: list[int]) -> None:
    """Key ``obj`` (location + rotation in its own rotation mode) to each camera's pose."""
    if len(path) != len(frames):
        raise ValueError(f"{len(path)} cameras for {len(frames)} frames")
    rotation_path = _rotation_path(obj)
    previous = None
    for camera, frame in zip(path, frames):
        world = camera.camera_to_world @ cameras.CV_FROM_BLENDER  # OpenCV camera -> Blender camera axes
        obj.matrix_world = mathutils.Matrix(world.tolist()) @ mathutils.Matrix.Diagonal((*obj.matrix_world.to_scale(), 1.0))
        location, rotation, _ = obj.matrix_basis.decompose()
        obj.location = location
        if rotation_path == "rotation_euler":
            # Continue from the previous key so a full orbit does not jump by 360° between keys.
            euler = rotation.to_euler(obj.rotation_mode, previous) if previous else rotation.to_euler(obj.rotation_mode)
            obj.rotation_euler = euler
            previous = euler
        elif rotation_path == "rotation_quaternion":
            obj.rotation_quaternion = rotation
        else:
            axis, angle = rotation.to_axis_angle()
            obj.rotation_axis_angle = (angle, *axis)
        obj.keyframe_insert("location", frame=frame)
        obj.keyframe_insert(rotation_path, frame=frame)


def add_preset(scene: bpy.types.Scene, obj: bpy.types.Object, name: str, n_views: int, *,
               replace: bool = True, **params: Any) -> list[int]:
    """Key preset ``name`` onto camera ``obj`` over the scene's frame range; returns the frames.

    The path starts from the camera's pose at the current frame; the keys go evenly from
    frame_start to frame_end, so evenly sampling the animation gives the preset's views back.
    """
    path = preset_cameras(scene, obj, name, n_views, **params)
    frames = camera_bridge.expansion_frames(scene, obj, len(path), at="EVEN")
    if len(set(frames)) != len(frames):
        raise cameras.CameraError(
            f"{len(path)} views do not fit in frames {scene.frame_start}-{scene.frame_end}; lengthen the frame range"
        )
    if replace:
        clear_transform_keys(obj)
    keyframe_cameras(obj, path, frames)
    scene.frame_set(frames[0])
    return frames


def mark_frames(scene: bpy.types.Scene, frames: list[int]) -> None:
    """Timeline markers on the expansion views (our earlier markers are replaced, others kept)."""
    for marker in [m for m in scene.timeline_markers if m.name.startswith(MARKER_PREFIX)]:
        scene.timeline_markers.remove(marker)
    for index, frame in enumerate(frames):
        label = "input" if index == 0 else f"view {index}"
        scene.timeline_markers.new(f"{MARKER_PREFIX} {label}", frame=frame)


def marked_frames(scene: bpy.types.Scene) -> list[int]:
    return sorted(m.frame for m in scene.timeline_markers if m.name.startswith(MARKER_PREFIX))


def scene_depth_from_job(job_dir) -> float | None:
    """Median depth of a finished job's input view (metres), to size presets to the scene."""
    depth_file = Path(job_dir) / "depth" / "depth.npz"
    if not depth_file.is_file():
        return None
    with np.load(depth_file, allow_pickle=False) as data:
        depth = data["depth"]
    valid = depth[np.isfinite(depth) & (depth > 0)]
    return float(np.median(valid)) if valid.size else None


def planned_views(scene: bpy.types.Scene, obj: bpy.types.Object) -> list[cameras.Camera]:
    """The views Generate uses, input first, in Blender's world: the keyframed animation sampled
    at its expansion frames (the input is the first of them), or the panel's preset with the
    panel's parameters from the camera's pose at the current frame.  The preview cameras, the
    keys Add Camera Path writes and the engine's trajectory all come from here."""
    settings = scene.gen3d
    if settings.trajectory_source == "CAMERA":
        return camera_bridge.sample_animation(scene, obj, settings.steps + 1)
    path = scene.gen3d_camera
    return preset_cameras(scene, obj, path.preset, settings.steps + 1, **path.parameters(path.preset))


PREVIEW_COLLECTION = "Gen3D Preview"
PREVIEW_TAG = "gen3d_preview"


def clear_preview() -> None:
    """Remove the preview cameras (only ours) and their collection when it is left empty."""
    collection = bpy.data.collections.get(PREVIEW_COLLECTION)
    for obj in [o for o in bpy.data.objects if o.get(PREVIEW_TAG)]:
        bpy.data.objects.remove(obj, do_unlink=True)
    if collection is not None and not collection.objects and not collection.children:
        bpy.data.collections.remove(collection)


def show_preview(scene: bpy.types.Scene, obj: bpy.types.Object, views: list[cameras.Camera]) -> list[bpy.types.Object]:
    """One camera object per view (sharing ``obj``'s lens) in the Gen3D Preview collection, so
    the viewport draws where the world will grow; they never render."""
    clear_preview()
    collection = bpy.data.collections.get(PREVIEW_COLLECTION)
    if collection is None:
        collection = bpy.data.collections.new(PREVIEW_COLLECTION)
    if collection.name not in scene.collection.children:
        scene.collection.children.link(collection)
    made = []
    for index, view in enumerate(views):
        label = "input" if index == 0 else f"view {index}"
        preview = bpy.data.objects.new(f"{MARKER_PREFIX} {label}", obj.data)
        preview[PREVIEW_TAG] = True
        preview.hide_render = True
        preview.matrix_world = mathutils.Matrix((view.camera_to_world @ cameras.CV_FROM_BLENDER).tolist())
        preview.show_name = True
        collection.objects.link(preview)
        made.append(preview)
    return made
