"""Blender camera objects <-> engine.cameras.Camera (the shared convention module)."""

from __future__ import annotations

import bpy
import numpy as np
from bpy_extras import anim_utils

from ..engine import cameras


def render_size(scene: bpy.types.Scene) -> tuple[int, int]:
    render = scene.render
    scale = render.resolution_percentage / 100.0
    return max(1, round(render.resolution_x * scale)), max(1, round(render.resolution_y * scale))


def camera_from_object(scene: bpy.types.Scene, obj: bpy.types.Object, *, name: str = "") -> cameras.Camera:
    """The camera as the engine sees it, at the scene's render size and the current frame."""
    if obj is None or obj.type != "CAMERA":
        raise cameras.CameraError("no camera: set the scene camera (Scene properties > Camera)")
    data = obj.data
    width, height = render_size(scene)
    return cameras.from_blender(
        lens=data.lens,
        sensor_width=data.sensor_width,
        sensor_height=data.sensor_height,
        sensor_fit=data.sensor_fit,
        shift_x=data.shift_x,
        shift_y=data.shift_y,
        resolution_x=width,
        resolution_y=height,
        matrix_world=np.array(obj.matrix_world),
        camera_type=data.type,
        pixel_aspect_x=scene.render.pixel_aspect_x,
        pixel_aspect_y=scene.render.pixel_aspect_y,
        name=name or obj.name,
    )


SAMPLING_ITEMS = [
    ("EVEN", "Evenly", "Views evenly spaced over the scene's frame range"),
    ("KEYFRAMES", "At keyframes", "One view at each keyframe of the camera inside the frame range"),
]


def fcurves(anim) -> list:
    """The F-curves animating one ID: its action slot's channelbag (Blender 4.4+ slotted
    actions), or the action's own F-curves (4.2 LTS)."""
    if anim is None or anim.action is None:
        return []
    if hasattr(anim_utils, "animdata_get_channelbag_for_assigned_slot"):
        channelbag = anim_utils.animdata_get_channelbag_for_assigned_slot(anim)
        return list(channelbag.fcurves) if channelbag else []
    return list(anim.action.fcurves)


def keyframe_frames(obj: bpy.types.Object) -> list[int]:
    """Frames holding a keyframe of the camera object or its lens data, sorted."""
    frames: set[int] = set()
    for owner in (obj, obj.data):
        for fcurve in fcurves(owner.animation_data if owner is not None else None):
            frames.update(round(key.co[0]) for key in fcurve.keyframe_points)
    return sorted(frames)


def _sampling(scene: bpy.types.Scene) -> str:
    settings = getattr(scene, "gen3d_camera", None)
    return settings.sampling if settings is not None else "EVEN"


def expansion_frames(scene: bpy.types.Scene, obj: bpy.types.Object, count: int, *, at: str | None = None) -> list[int]:
    """The frames that become views: ``count`` evenly spaced over the frame range (first frame
    included), or every keyframe in the frame range (``at="KEYFRAMES"``; ``count`` is ignored).
    ``at=None`` follows the scene's Gen3D camera setting (Scene.gen3d_camera.sampling)."""
    at = at or _sampling(scene)
    start, end = scene.frame_start, scene.frame_end
    if at == "KEYFRAMES":
        frames = [frame for frame in keyframe_frames(obj) if start <= frame <= end]
        if not frames:
            raise cameras.CameraError(f"camera {obj.name!r} has no keyframes between frames {start} and {end}")
        return frames
    if at != "EVEN":
        raise ValueError(f"sampling must be EVEN or KEYFRAMES, not {at!r}")
    return [round(start + (end - start) * i / max(1, count - 1)) for i in range(count)]


def sample_frames(scene: bpy.types.Scene, obj: bpy.types.Object, frames: list[int]) -> list[cameras.Camera]:
    """The camera at each frame (frame in ``extra``); the current frame is restored after."""
    current, subframe = scene.frame_current, scene.frame_subframe
    sampled = []
    try:
        for frame in frames:
            scene.frame_set(frame)
            camera = camera_from_object(scene, obj, name=f"{obj.name}@{frame}")
            camera.extra["frame"] = frame
            sampled.append(camera)
    finally:
        scene.frame_set(current, subframe=subframe)
    return sampled


def sample_animation(
    scene: bpy.types.Scene, obj: bpy.types.Object, count: int, *, at: str | None = None
) -> list[cameras.Camera]:
    """The animated camera at its expansion frames (see expansion_frames).

    Raises CameraError when the camera does not move: a path needs keyframes.
    """
    if not keyframe_frames(obj):
        raise cameras.CameraError(
            f"camera {obj.name!r} has no keyframes; add a path preset (Gen3D > Camera path) or keyframe it"
        )
    return sample_frames(scene, obj, expansion_frames(scene, obj, count, at=at))
