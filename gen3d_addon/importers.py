"""Bring a finished job's results into the scene (points; Gaussians come with geometry nodes).

Results are in the engine world (the input camera's OpenCV frame); they are parented to an
empty placed at the input camera, so they line up with the Blender camera that framed the
input image, at metric scale, and the artist moves the whole world by moving the empty.
"""

from __future__ import annotations

import json
from pathlib import Path

import bpy
import numpy as np

from ..engine import cameras
from . import ply

COLLECTION_PREFIX = "Gen3D"


def world_from_engine(job_dir: Path) -> np.ndarray:
    """4x4 matrix taking engine-world points into Blender's world (identity when no camera was given)."""
    camera_file = Path(job_dir) / "camera.json"
    if not camera_file.is_file():
        # No Blender camera framed the input: look along +Y from the origin, Z up.
        return np.array([[1.0, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]])
    camera = cameras.Camera.from_dict(json.loads(camera_file.read_text(encoding="utf-8")))
    return camera.camera_to_world


def _result_collection(context, job_dir: Path, mode: str) -> bpy.types.Collection:
    name = f"{COLLECTION_PREFIX} {job_dir.name}"
    if mode == "REPLACE":
        old = bpy.data.collections.get(name)
        if old is not None and old.get("gen3d_job"):  # only ever our own collection
            for obj in list(old.all_objects):
                bpy.data.objects.remove(obj, do_unlink=True)
            bpy.data.collections.remove(old)
    collection = bpy.data.collections.new(name)
    collection["gen3d_job"] = str(job_dir)
    context.scene.collection.children.link(collection)
    return collection


def points_object(name: str, xyz: np.ndarray, rgb: np.ndarray) -> bpy.types.Object:
    """A mesh of loose vertices with a colour attribute, set without Python loops."""
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(len(xyz))
    mesh.vertices.foreach_set("co", np.ascontiguousarray(xyz, dtype=np.float32).ravel())
    colour = mesh.color_attributes.new("Col", "FLOAT_COLOR", "POINT")
    rgba = np.concatenate([rgb.astype(np.float32), np.ones((len(rgb), 1), np.float32)], axis=1)
    colour.data.foreach_set("color", rgba.ravel())
    mesh.update()
    return bpy.data.objects.new(name, mesh)


def import_job(context, job_dir: Path | str, *, mode: str = "REPLACE") -> bpy.types.Collection:
    job_dir = Path(job_dir)
    vertices = ply.read_vertices(job_dir / "points.ply")
    xyz = np.stack([vertices["x"], vertices["y"], vertices["z"]], axis=1)
    rgb = np.stack([vertices["red"], vertices["green"], vertices["blue"]], axis=1) / 255.0
    collection = _result_collection(context, job_dir, mode)
    root = bpy.data.objects.new(f"{COLLECTION_PREFIX} world", None)
    root.matrix_world = world_from_engine(job_dir).tolist()  # rows, as mathutils.Matrix takes them
    collection.objects.link(root)
    points = points_object(f"{COLLECTION_PREFIX} points", xyz, rgb)
    collection.objects.link(points)
    points.parent = root
    return collection
