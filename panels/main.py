"""The Gen3D sidebar panel (3D viewport > N > Gen3D): inputs, path, quality, run, result."""

from __future__ import annotations

import bpy

from ..gen3d_addon.preferences import get_preferences, resolved_engine_python
from ..operators import generate
from ..operators.generate import PREVIEW_IMAGE


class GEN3D_PT_main(bpy.types.Panel):
    bl_label = "Gen3D"
    bl_idname = "GEN3D_PT_main"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Gen3D"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.gen3d
        prefs = get_preferences(context)
        if prefs.engine_location == "LOCAL" and not resolved_engine_python(prefs).is_file():
            box = layout.box()
            box.label(text="Engine not set up", icon="ERROR")
            box.operator("gen3d.setup_engine", icon="CONSOLE")

        col = layout.column(align=True)
        col.label(text="Input")
        col.prop(settings, "image_path", text="")
        col.prop(settings, "depth_path")
        col.prop(settings, "prompt")
        col.prop(settings, "negative_prompt")
        layout.prop(prefs, "profile")

        col = layout.column(align=True)
        col.label(text="Camera path")
        col.prop(settings, "use_scene_camera")
        col.prop(settings, "trajectory_source", text="")
        if settings.trajectory_source == "PRESET":
            col.prop(context.scene.gen3d_camera, "preset")
        col.prop(settings, "steps")
        col.operator("gen3d.preview_views", icon="HIDE_OFF")

        col = layout.column(align=True)
        col.label(text="Quality")
        col.prop(settings, "resolution")
        col.prop(settings, "splat_iterations")
        col.prop(settings, "seed")
        col.prop(prefs, "device")
        layout.prop(settings, "import_mode")

        run = generate.active_run()
        if run is not None:
            layout.label(text=f"{run.stage}: {run.message}", icon="TIME")
            layout.progress(factor=run.fraction, text=f"{run.fraction * 100:.0f}%")
            layout.operator("gen3d.cancel", icon="CANCEL")
        else:
            row = layout.row(align=True)
            row.operator("gen3d.generate", icon="PLAY")
            row.operator("gen3d.generate", text="", icon="FILE_REFRESH").fresh = True  # Regenerate from scratch
            last = generate.last_run()
            if last is not None and last.message:
                layout.label(text=last.message[:1000])
        preview = bpy.data.images.get(PREVIEW_IMAGE)
        if preview is not None and preview.preview is not None:
            layout.template_icon(icon_value=preview.preview.icon_id, scale=8.0)
        if settings.job_dir:
            layout.label(text=f"Job: {settings.job_dir}", icon="FILE_FOLDER")


CLASSES = [GEN3D_PT_main]
