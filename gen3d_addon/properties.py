"""Per-scene Gen3D settings (Scene.gen3d)."""

from __future__ import annotations

import bpy

TRAJECTORY_SOURCES = [
    ("PRESET", "Preset", "A camera path preset around the input view, with the Camera Path panel's parameters"),
    ("CAMERA", "Camera animation", "Sample the scene camera's keyframed animation over the frame range"),
]
# What an import does with the job's earlier imports (Generate's re-run, Import Gen3D Job).
IMPORT_MODE_ITEMS = [
    ("REPLACE", "Replace", "Replace earlier imports of this job (never your own objects)"),
    ("NEW", "New version", "Keep earlier imports and add a new collection"),
]
PRESET_ITEMS = [
    ("orbit", "Orbit", "Counter-clockwise orbit around the scene centre (the paper's default)"),
    ("look-around", "Look around", "Rotate in place"),
    ("dolly", "Dolly", "Move forward and back"),
    ("pan", "Pan", "Move sideways"),
    ("spiral", "Spiral", "Orbit while moving in"),
]


class Gen3DSceneSettings(bpy.types.PropertyGroup):
    image_path: bpy.props.StringProperty(name="Image", subtype="FILE_PATH", description="Input image")
    depth_path: bpy.props.StringProperty(
        name="Depth",
        subtype="FILE_PATH",
        description="Optional depth for RGB-D input: .npy (metres), 16-bit PNG (millimetres) or OpenEXR (Z pass)",
    )
    prompt: bpy.props.StringProperty(name="Prompt", description="Text prompt (alone: text-to-scene)")
    negative_prompt: bpy.props.StringProperty(name="Negative", description="What the inpainting should avoid")
    use_scene_camera: bpy.props.BoolProperty(
        name="Input from scene camera",
        description="The input image was taken by the scene camera: its lens and pose frame the generated world",
        default=True,
    )
    trajectory_source: bpy.props.EnumProperty(name="Path", items=TRAJECTORY_SOURCES, default="PRESET")
    steps: bpy.props.IntProperty(
        name="Expansion views", description="N: new views generated along the path", default=4, min=0, max=64
    )
    resolution: bpy.props.IntProperty(
        name="Resolution", description="Working resolution (long side, pixels)", default=384, min=64, max=2048
    )
    splat_iterations: bpy.props.IntProperty(
        name="3DGS iterations", description="0: the profile's default", default=0, min=0, max=100000
    )
    seed: bpy.props.IntProperty(name="Seed", default=0, min=0)
    import_mode: bpy.props.EnumProperty(name="On re-run", items=IMPORT_MODE_ITEMS, default="REPLACE")
    # The last job's folder (Re-import, Add Matched Camera from job).  Run progress is runtime
    # state of the Generate operator, never saved with the file.
    job_dir: bpy.props.StringProperty(name="Job folder", subtype="DIR_PATH")


CLASSES = [Gen3DSceneSettings]


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.gen3d = bpy.props.PointerProperty(type=Gen3DSceneSettings)


def unregister() -> None:
    del bpy.types.Scene.gen3d
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
