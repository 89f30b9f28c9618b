"""Sub-panels of Gen3D: the camera path (matched camera, presets as keyframes, expansion views)
and the imported result's display settings."""

from __future__ import annotations

import bpy

from ..gen3d_addon import camera_paths, importers, nodes, render_settings, sky_world, splat_draw


class GEN3D_PT_camera_path(bpy.types.Panel):
    bl_label = "Camera Path"
    bl_idname = "GEN3D_PT_camera_path"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Gen3D"
    bl_parent_id = "GEN3D_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        scene = context.scene
        settings = scene.gen3d_camera
        layout.operator("gen3d.add_camera", icon="CAMERA_DATA")
        col = layout.column(align=True)
        col.prop(settings, "preset")
        col.prop(settings, "scene_depth")
        for key in camera_paths.preset_parameters(settings.preset):
            col.prop(settings, key)
        row = layout.row(align=True)
        row.operator("gen3d.add_camera_path", icon="KEYFRAME")
        row.operator("gen3d.preview_views", text="", icon="HIDE_OFF")
        row.operator("gen3d.preview_views", text="", icon="X").clear = True
        row = layout.row(align=True)
        row.prop(settings, "sampling", text="")
        row.operator("gen3d.mark_views", text="", icon="MARKER_HLT")
        if scene.gen3d.trajectory_source != "CAMERA":
            layout.label(text="Generate uses these keys with Path: Camera animation", icon="INFO")


class GEN3D_PT_result(bpy.types.Panel):
    bl_label = "Result"
    bl_idname = "GEN3D_PT_result"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Gen3D"
    bl_parent_id = "GEN3D_PT_main"

    def draw(self, context):
        layout = self.layout
        row = layout.row(align=True)
        row.operator("gen3d.import_job", text="Re-import Job", icon="IMPORT")
        row.operator("gen3d.import_gaussians", text="", icon="FILEBROWSER")
        row.operator("gen3d.export_gaussians", text="", icon="EXPORT")
        issues = render_settings.splat_issues(context.scene)
        col = layout.column(align=True)
        for issue in issues:  # what keeps the splats from rendering as trained; never changed silently
            col.label(text=issue, icon="ERROR")
        if issues:
            layout.operator("gen3d.splat_render_settings", icon="SHADING_RENDERED")
        if sky_world.sky_collection(context) is not None:  # the World changes only on this click
            layout.operator("gen3d.sky_world", icon="WORLD")
        obj = context.active_object
        modifier = obj.modifiers.get(importers.GAUSSIANS_GROUP) if obj is not None else None
        if modifier is None or modifier.node_group is None:
            return
        col = layout.column(align=True)
        inputs = nodes.input_identifiers(modifier.node_group)
        for name in ("Scale", "Min Opacity", "Viewport Fraction", "Viewport Quads"):
            if name in inputs:  # a group of an older version has other inputs until the file's load upgrades it
                col.prop(modifier, f'["{inputs[name]}"]', text=name)
        col.prop(obj, f'["{splat_draw.DRAW_PROPERTY}"]', text="Splats in Viewport")
        if importers.refers_sh(obj.data):  # export reads the SH rest from the PLY it came from
            layout.operator("gen3d.store_sh", icon="PACKAGE")


CLASSES = [GEN3D_PT_camera_path, GEN3D_PT_result]
