"""One undoable click that sets the render settings the splats need (gen3d_addon/render_settings.py)."""

from __future__ import annotations

import bpy

from ..gen3d_addon import render_settings


class GEN3D_OT_splat_render_settings(bpy.types.Operator):
    """Set what the Gaussians need to render as trained: Standard view transform, 256 transparent
    bounces, 1 px pixel filter, transparent film (undo reverts it)"""

    bl_idname = "gen3d.splat_render_settings"
    bl_label = "Use Splat Render Settings"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        issues = render_settings.splat_issues(context.scene)
        render_settings.apply_splat_settings(context.scene)
        self.report({"INFO"}, f"Set {len(issues)} render setting(s) for the splats" if issues else "Render settings already suit the splats")
        return {"FINISHED"}


CLASSES = [GEN3D_OT_splat_render_settings]
