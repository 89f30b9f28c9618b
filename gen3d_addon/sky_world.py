"""A world's sky in Blender: its far Gaussians come in with the world (``importers.import_job``);
only when the artist asks does its panorama (``JOB/sky.png``) become the scene's World background,
so their own assets can be lit by it.

The World is a new one, "Gen3D Sky <job>": an Environment Texture of the panorama, turned by a
Mapping node from Blender's world axes into the panorama's (``engine.cameras.panorama_from_world``,
from the world empty's rotation now, so a turned world keeps its sky in place).  The scene's
earlier World is kept (a fake user, so saving does not drop it) and named on the new one, and
Undo restores it; nothing here runs on import.
"""

from __future__ import annotations

from pathlib import Path

import bpy
import mathutils
import numpy as np

from ..engine import cameras

SKY_PROPERTY = "gen3d_sky"  # object custom property: the far Gaussians of a world
RADIUS_PROPERTY = "gen3d_sky_radius"  # ... and their sphere's radius in the object's own units
PREVIOUS_WORLD = "gen3d_previous_world"  # World custom property: the World it replaced


def sky_objects(collection: bpy.types.Collection) -> list[bpy.types.Object]:
    return [obj for obj in collection.objects if obj.get(SKY_PROPERTY)]


def sky_collection(context) -> bpy.types.Collection | None:
    """The Gen3D result whose sky to use: the active object's, else the newest with a sky."""
    results = [c for c in bpy.data.collections if c.get("gen3d_job") and sky_objects(c)]
    active = context.active_object
    for collection in results:
        if active is not None and active.name in collection.objects:
            return collection
    return max(results, key=lambda c: c.get("gen3d_version", 1), default=None)


def _node(tree, kind: str, location: tuple[float, float]):
    node = tree.nodes.new(kind)
    node.location = location
    return node


def use_sky_as_world(scene: bpy.types.Scene, collection: bpy.types.Collection) -> bpy.types.World:
    """Make ``collection``'s sky panorama the scene's World background; returns the new World."""
    job = Path(collection["gen3d_job"])
    panorama = job / "sky.png"
    if not panorama.is_file():
        raise OSError(f"{job} has no sky.png: generate the world again with the sky on")
    skies = sky_objects(collection)
    root = skies[0].parent if skies and skies[0].parent is not None else None
    placement = np.array(root.matrix_world) if root is not None else np.eye(4)
    rotation = mathutils.Matrix(cameras.panorama_from_world(placement).tolist())

    world = bpy.data.worlds.new(f"Gen3D Sky {job.name}")
    if world.node_tree is None:  # Blender before 5.0 makes a World without nodes
        world.use_nodes = True
    tree = world.node_tree
    tree.nodes.clear()
    coordinates = _node(tree, "ShaderNodeTexCoord", (-800, 0))
    mapping = _node(tree, "ShaderNodeMapping", (-600, 0))
    mapping.vector_type = "VECTOR"  # a direction: turned, never moved
    mapping.inputs["Rotation"].default_value = rotation.to_euler("XYZ")
    texture = _node(tree, "ShaderNodeTexEnvironment", (-350, 0))
    texture.image = bpy.data.images.load(str(panorama), check_existing=True)
    texture.projection = "EQUIRECTANGULAR"
    background = _node(tree, "ShaderNodeBackground", (-100, 0))
    output = _node(tree, "ShaderNodeOutputWorld", (100, 0))
    tree.links.new(coordinates.outputs["Generated"], mapping.inputs["Vector"])
    tree.links.new(mapping.outputs["Vector"], texture.inputs["Vector"])
    tree.links.new(texture.outputs["Color"], background.inputs["Color"])
    tree.links.new(background.outputs["Background"], output.inputs["Surface"])

    previous = scene.world
    if previous is not None:
        previous.use_fake_user = True  # the artist's World stays in the file, unused
        world[PREVIOUS_WORLD] = previous.name
    scene.world = world
    return world
