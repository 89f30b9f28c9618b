"""On request only, the imported world's sky as the scene's World background (undoable)."""

from __future__ import annotations

import bpy

from ..gen3d_addon import sky_world


class GEN3D_OT_sky_world(bpy.types.Operator):
    """Set the scene's World to an Environment Texture of the Gen3D world's sky panorama (sky.png),
    turned to match the world, so your own assets are lit by it.  The earlier World is kept; undo restores it"""

    bl_idname = "gen3d.sky_world"
    bl_label = "Use Sky as World Background"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return sky_world.sky_collection(context) is not None

    def execute(self, context):
        collection = sky_world.sky_collection(context)
        try:
            world = sky_world.use_sky_as_world(context.scene, collection)
        except OSError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        previous = world.get(sky_world.PREVIOUS_WORLD)
        self.report({"INFO"}, f"World: {world.name}" + (f" (your {previous!r} is kept)" if previous else ""))
        return {"FINISHED"}


CLASSES = [GEN3D_OT_sky_world]
