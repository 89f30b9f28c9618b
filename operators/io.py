"""Import a job, import/export standard 3DGS .ply (also in File > Import / File > Export)."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import bpy
import mathutils
import numpy as np
from bpy.app.handlers import persistent
from bpy_extras.io_utils import ExportHelper, ImportHelper

from ..engine import protocol
from ..gen3d_addon import importers, ply
from ..gen3d_addon.preferences import EXTENSION_ROOT, get_preferences, resolved_engine_python
from ..gen3d_addon.properties import IMPORT_MODE_ITEMS


class GEN3D_OT_import_job(bpy.types.Operator):
    """Import a finished Gen3D job folder (points.ply, gaussians.ply) into its own collection"""

    bl_idname = "gen3d.import_job"
    bl_label = "Import Gen3D Job"
    bl_options = {"REGISTER", "UNDO"}

    directory: bpy.props.StringProperty(name="Job folder", subtype="DIR_PATH", description="Empty: the last job")
    mode: bpy.props.EnumProperty(name="Mode", items=IMPORT_MODE_ITEMS, default="REPLACE")

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
    """Import 3D Gaussian Splatting: standard .ply (Gen3D, INRIA, gsplat...), and through the engine
    PlayCanvas compressed .ply (SuperSplat), Niantic .spz and PlayCanvas .sog"""

    bl_idname = "gen3d.import_gaussians"
    bl_label = "Import 3DGS PLY"
    bl_options = {"REGISTER", "UNDO", "PRESET"}

    filename_ext = ".ply"
    filter_glob: bpy.props.StringProperty(default="*.ply;*.spz;*.sog", options={"HIDDEN"})
    y_down: bpy.props.BoolProperty(
        name="OpenCV axes (Y down)",
        default=True,
        description="The file uses OpenCV/COLMAP axes (Y down, Z forward), as most 3DGS trainers; "
        "turn the object so the scene stands upright in Blender",
    )
    store_sh: bpy.props.BoolProperty(
        name="Store SH in .blend",
        default=False,
        description="Copy the view-dependent colour coefficients (SH rest, only export reads them) into the .blend: "
        "self-contained, about 3x heavier; off: export reads them from this file, which must stay where it is",
    )

    def execute(self, context):
        try:
            try:
                if Path(self.filepath).suffix.lower() in (".spz", ".sog"):
                    raise ply.OtherFormat(self.filepath, Path(self.filepath).suffix[1:].upper())
                obj = importers.import_gaussians_file(context, self.filepath, store_sh=self.store_sh)
            except ply.OtherFormat as other:
                with tempfile.TemporaryDirectory(prefix="gen3d-") as folder:  # gone after: the SH go into the .blend
                    standard = Path(folder) / (Path(self.filepath).stem + ".ply")
                    _engine_convert(context, Path(self.filepath), standard, other.format)
                    obj = importers.import_gaussians_file(context, standard, name=f"Gen3D {Path(self.filepath).stem}",
                                                          store_sh=True)
        except (OSError, ValueError) as exc:
            message = str(exc)
            self.report({"ERROR"}, message if self.filepath in message else f"Cannot import {self.filepath}: {message}")
            return {"CANCELLED"}
        if self.y_down:  # placed by the camera.json of the file's job folder, else upright at the origin
            obj.matrix_world = mathutils.Matrix(importers.world_from_engine(Path(self.filepath).parent).tolist())
        for other in context.selected_objects:
            other.select_set(False)
        obj.select_set(True)
        context.view_layer.objects.active = obj
        self.report({"INFO"}, f"Imported {len(obj.data.vertices)} Gaussians as {obj.name}")
        return {"FINISHED"}


def _engine_convert(context, source: Path, target: Path, what: str) -> None:
    """Convert a splat file with the engine (`python -m engine convert`, gsply in its environment),
    so the add-on itself stays free of compiled packages."""
    python = resolved_engine_python(get_preferences(context))
    if not python.is_file():
        raise OSError(f"{source.name} is {what}: converting it needs the engine (Set up engine in the Gen3D preferences)")
    done = subprocess.run([str(python), "-m", "engine", "convert", str(source), str(target)], cwd=EXTENSION_ROOT,
                          capture_output=True, text=True, timeout=600)
    events = [protocol.parse_event(line) for line in done.stdout.splitlines() if line.startswith("{")]
    errors = [e["message"] for e in events if e["type"] == "error"]
    if done.returncode != 0 or not target.is_file():
        raise OSError(errors[-1] if errors else f"the engine could not convert {source.name} ({what}): {done.stderr[-300:]}")


class _ExportGaussians(ExportHelper):
    """What the PLY and SPZ exports share (a mixin: Blender registers each operator on its own)."""

    bl_options = {"REGISTER", "PRESET"}

    use_transform: bpy.props.BoolProperty(
        name="Apply object transform",
        default=True,
        description="Write the Gaussians where they are in the scene: the object's world matrix moves "
        "positions and turns rotations, scales and view-dependent colour (SH); off: its own coordinates",
    )
    y_down: bpy.props.BoolProperty(
        name="OpenCV axes (Y down)",
        default=True,
        description="Write OpenCV/COLMAP axes (Y down, Z forward) as most 3DGS viewers expect: the inverse "
        "of the import option, so an imported file exports as it came",
    )

    @classmethod
    def poll(cls, context):
        return importers.is_gaussians(context.active_object)

    def execute(self, context):
        obj = context.active_object
        matrix = np.array(obj.matrix_world, np.float64) if self.use_transform else np.eye(4)
        if self.y_down:
            matrix = np.linalg.inv(importers.OPENCV_TO_BLENDER) @ matrix
        try:
            gaussians = importers.gaussians_from_object(obj, matrix)
            if Path(self.filepath).suffix.lower() == ".spz":
                with tempfile.TemporaryDirectory(prefix="gen3d-") as folder:
                    importers.write_gaussians(Path(folder) / "standard.ply", gaussians)
                    _engine_convert(context, Path(folder) / "standard.ply", Path(self.filepath), "SPZ")
            else:
                importers.write_gaussians(self.filepath, gaussians)
        except (OSError, ValueError) as exc:
            self.report({"ERROR"}, f"Cannot export {self.filepath}: {exc}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Exported {len(gaussians['xyz'])} Gaussians to {self.filepath}")
        return {"FINISHED"}


class GEN3D_OT_store_sh(bpy.types.Operator):
    """Copy the view-dependent colour (SH) of the selected Gaussians from the PLY they were imported
    from into the .blend, so it exports without that file (about 3x heavier)"""

    bl_idname = "gen3d.store_sh"
    bl_label = "Store SH in .blend"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return any(importers.is_gaussians(obj) and importers.refers_sh(obj.data) for obj in context.selected_objects)

    def execute(self, context):
        stored = []
        try:
            for obj in context.selected_objects:
                if importers.is_gaussians(obj) and importers.store_sh_in_blend(obj.data):
                    stored.append(obj.name)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"SH stored in the .blend for {', '.join(stored)}")
        return {"FINISHED"}


@persistent
def _sync_applied_transforms(scene, depsgraph) -> None:
    """After Apply Transform (Blender moves only the positions) turn the Gaussians' rotations,
    scales and SH to match, so they render and export as they look."""
    for update in depsgraph.updates:
        mesh = update.id.original if update.is_updated_geometry else None
        if isinstance(mesh, bpy.types.Object):
            mesh = mesh.data
        if isinstance(mesh, bpy.types.Mesh) and importers.FRAME in mesh and not mesh.is_editmode:
            importers.sync_frame(mesh)


@persistent
def _upgrade_node_groups(*_args) -> None:
    """A file saved with an older add-on gets today's Gaussians group, its settings kept."""
    upgraded = importers.upgrade_node_groups()
    if upgraded:
        print(f"Gen3D: upgraded the splats of {', '.join(upgraded)} to this add-on's version")


class GEN3D_OT_export_gaussians(_ExportGaussians, bpy.types.Operator):
    """Export the active Gaussians object as a standard 3DGS .ply (pre-activation values, every
    property the imported file had), placed where it is in the scene"""

    bl_idname = "gen3d.export_gaussians"
    bl_label = "Export 3DGS PLY"

    filename_ext = ".ply"
    filter_glob: bpy.props.StringProperty(default="*.ply", options={"HIDDEN"})


class GEN3D_OT_export_spz(_ExportGaussians, bpy.types.Operator):
    """Export the active Gaussians object as Niantic SPZ v4 (quantised, ~10x smaller; web viewers),
    through the engine"""

    bl_idname = "gen3d.export_spz"
    bl_label = "Export SPZ"

    filename_ext = ".spz"
    filter_glob: bpy.props.StringProperty(default="*.spz", options={"HIDDEN"})


def _menu_import(self, context):
    self.layout.operator(GEN3D_OT_import_gaussians.bl_idname, text="Gaussian Splats (.ply)")


def _menu_export(self, context):
    self.layout.operator(GEN3D_OT_export_gaussians.bl_idname, text="Gaussian Splats (.ply)")
    self.layout.operator(GEN3D_OT_export_spz.bl_idname, text="Gaussian Splats (.spz)")


CLASSES = [GEN3D_OT_import_job, GEN3D_OT_import_gaussians, GEN3D_OT_export_gaussians, GEN3D_OT_export_spz, GEN3D_OT_store_sh]


def register_extra() -> None:
    bpy.app.handlers.depsgraph_update_post.append(_sync_applied_transforms)
    bpy.app.handlers.load_post.append(_upgrade_node_groups)
    bpy.types.TOPBAR_MT_file_import.append(_menu_import)
    bpy.types.TOPBAR_MT_file_export.append(_menu_export)


def unregister_extra() -> None:
    bpy.types.TOPBAR_MT_file_export.remove(_menu_export)
    bpy.types.TOPBAR_MT_file_import.remove(_menu_import)
    bpy.app.handlers.load_post.remove(_upgrade_node_groups)
    bpy.app.handlers.depsgraph_update_post.remove(_sync_applied_transforms)
