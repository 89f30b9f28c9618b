"""Import a job, import/export standard 3DGS .ply (also in File > Import / File > Export)."""

from __future__ import annotations

from pathlib import Path

import bpy
import mathutils
from bpy_extras.io_utils import ExportHelper, ImportHelper

from ..gen3d_addon import importers


class GEN3D_OT_import_job(bpy.types.Operator):
    """Import a finished Gen3D job folder (points.ply, gaussians.ply) into its own collection"""

    bl_idname = "gen3d.import_job"
    bl_label = "Import Gen3D Job"
    bl_options = {"REGISTER", "UNDO"}

    directory: bpy.props.StringProperty(name="Job folder", subtype="DIR_PATH", description="Empty: the last job")
    mode: bpy.props.EnumProperty(
        name="Mode",
        items=[
            ("REPLACE", "Replace", "Replace earlier imports of this job (never your own objects)"),
            ("NEW", "New version", "Keep earlier imports and add a new collection"),
        ],
        default="REPLACE",
    )

    def execute(self, context):
        folder = self.directory or context.scene.gen3d.job_dir
        if not folder:
            self.report({"ERROR"}, "Choose a job folder")
            return {"CANCELLED"}
        try:
            collection = importers.import_job(context, Path(bpy.path.abspath(folder)), mode=self.mode)
        except (OSError, ValueError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Imported {collection.name}")
        return {"FINISHED"}


class GEN3D_OT_import_gaussians(bpy.types.Operator, ImportHelper):
    """Import a standard 3D Gaussian Splatting .ply (from Gen3D or other tools)"""

    bl_idname = "gen3d.import_gaussians"
    bl_label = "Import 3DGS PLY"
    bl_options = {"REGISTER", "UNDO", "PRESET"}

    filename_ext = ".ply"
    filter_glob: bpy.props.StringProperty(default="*.ply", options={"HIDDEN"})
    y_down: bpy.props.BoolProperty(
        name="OpenCV axes (Y down)",
        default=True,
        description="The file uses OpenCV/COLMAP axes (Y down, Z forward), as most 3DGS trainers; "
        "turn the object so the scene stands upright in Blender",
    )

    def execute(self, context):
        try:
            obj = importers.import_gaussians_file(context, self.filepath)
        except (OSError, ValueError) as exc:
            self.report({"ERROR"}, f"Cannot import {self.filepath}: {exc}")
            return {"CANCELLED"}
        if self.y_down:
            obj.matrix_world = mathutils.Matrix(importers.world_from_engine(Path()).tolist())
        for other in context.selected_objects:
            other.select_set(False)
        obj.select_set(True)
        context.view_layer.objects.active = obj
        self.report({"INFO"}, f"Imported {len(obj.data.vertices)} Gaussians as {obj.name}")
        return {"FINISHED"}


class GEN3D_OT_export_gaussians(bpy.types.Operator, ExportHelper):
    """Export the active Gaussians object as a standard 3DGS .ply (pre-activation values, in the
    object's own coordinates, as the file was imported)"""

    bl_idname = "gen3d.export_gaussians"
    bl_label = "Export 3DGS PLY"
    bl_options = {"REGISTER"}

    filename_ext = ".ply"
    filter_glob: bpy.props.StringProperty(default="*.ply", options={"HIDDEN"})

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        return obj is not None and obj.type == "MESH" and "rot" in obj.data.attributes

    def execute(self, context):
        try:
            gaussians = importers.gaussians_from_object(context.active_object)
            importers.write_gaussians(self.filepath, gaussians)
        except (OSError, ValueError) as exc:
            self.report({"ERROR"}, f"Cannot export {self.filepath}: {exc}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Exported {len(gaussians['xyz'])} Gaussians to {self.filepath}")
        return {"FINISHED"}


def _menu_import(self, context):
    self.layout.operator(GEN3D_OT_import_gaussians.bl_idname, text="Gaussian Splats (.ply)")


def _menu_export(self, context):
    self.layout.operator(GEN3D_OT_export_gaussians.bl_idname, text="Gaussian Splats (.ply)")


CLASSES = [GEN3D_OT_import_job, GEN3D_OT_import_gaussians, GEN3D_OT_export_gaussians]


def register_extra() -> None:
    bpy.types.TOPBAR_MT_file_import.append(_menu_import)
    bpy.types.TOPBAR_MT_file_export.append(_menu_export)


def unregister_extra() -> None:
    bpy.types.TOPBAR_MT_file_export.remove(_menu_export)
    bpy.types.TOPBAR_MT_file_import.remove(_menu_import)
