"""Blender camera objects <-> engine.cameras.Camera (the shared convention module)."""

from __future__ import annotations

import bpy
import numpy as np

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


def sample_animation(scene: bpy.types.Scene, obj: bpy.types.Object, count: int) -> list[cameras.Camera]:
    """``count`` cameras evenly spaced over the scene's frame range (first frame included).

    Raises CameraError when the camera does not move: a path needs keyframes.
    """
    if obj.animation_data is None or obj.animation_data.action is None:
        raise cameras.CameraError(
            f"camera {obj.name!r} has no keyframes; add a path preset (Gen3D > Camera path) or keyframe it"
        )
    start, end = scene.frame_start, scene.frame_end
    frames = [round(start + (end - start) * i / max(1, count - 1)) for i in range(count)]
    current = scene.frame_current
    sampled = []
    try:
        for frame in frames:
            scene.frame_set(frame)
            camera = camera_from_object(scene, obj, name=f"{obj.name}@{frame}")
            camera.extra["frame"] = frame
            sampled.append(camera)
    finally:
        scene.frame_set(current)
    return sampled
