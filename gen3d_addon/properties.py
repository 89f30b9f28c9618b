"""Per-scene Gen3D settings (Scene.gen3d) and the state of the running job shown in the panel."""

from __future__ import annotations

import bpy

TRAJECTORY_SOURCES = [
    ("PRESET", "Preset", "A camera path preset computed by the engine around the input view"),
    ("CAMERA", "Camera animation", "Sample the scene camera's keyframed animation over the frame range"),
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
    preset: bpy.props.EnumProperty(name="Preset", items=PRESET_ITEMS, default="orbit")
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
    import_mode: bpy.props.EnumProperty(
        name="On re-run",
        items=[
            ("REPLACE", "Replace", "Replace the previous result of Gen3D (never your own objects)"),
            ("NEW", "New version", "Keep previous results and add a new collection"),
        ],
        default="REPLACE",
    )
    # State of the last/running job, written by the Generate operator.
    job_dir: bpy.props.StringProperty(name="Job folder", subtype="DIR_PATH")
    running: bpy.props.BoolProperty(default=False)
    stage: bpy.props.StringProperty(default="")
    progress: bpy.props.FloatProperty(default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    message: bpy.props.StringProperty(default="")
    preview_path: bpy.props.StringProperty(default="")


CLASSES = [Gen3DSceneSettings]


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.gen3d = bpy.props.PointerProperty(type=Gen3DSceneSettings)


def unregister() -> None:
    del bpy.types.Scene.gen3d
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
