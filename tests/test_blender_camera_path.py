"""The camera path as one thing (real Blender): the preset with the panel's parameters is what
Generate sends the engine, what Preview Views shows and what Add Camera Path keys; an animated
camera's input view is its first sampled frame, whatever the current frame."""

from __future__ import annotations

import importlib
import json
import math

import numpy as np

from conftest import ADDON_MODULE, EXAMPLE


def _setup(scene, tmp_path):
    import bpy

    prefs = bpy.context.preferences.addons[ADDON_MODULE].preferences
    prefs.jobs_folder = str(tmp_path / "jobs")
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 64, 48, 100
    scene.frame_start, scene.frame_end = 1, 31
    scene.gen3d.image_path = str(EXAMPLE / "image.png")
    scene.gen3d.steps = 3
    obj = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))
    scene.collection.objects.link(obj)
    scene.camera = obj
    obj.location, obj.rotation_euler = (0.5, -4.0, 1.5), (math.radians(80), 0.0, math.radians(10))
    bpy.context.view_layer.update()
    return obj


def _same(a, b):
    np.testing.assert_allclose(a.world_to_camera, b.world_to_camera, atol=1e-5)
    np.testing.assert_allclose(a.K, b.K, atol=1e-6)


def _sent(addon, context):
    """What Generate hands the engine: (camera.json, trajectory.json cameras)."""
    generate = importlib.import_module(f"{ADDON_MODULE}.operators.generate")
    arguments, job_dir = generate.build_arguments(context)
    assert "--trajectory" in arguments and "--preset" not in arguments
    cameras, trajectory = addon.engine.cameras, addon.engine.trajectory
    camera = cameras.Camera.from_dict(json.loads((job_dir / "camera.json").read_text()))
    return camera, trajectory.load_trajectory(job_dir / "trajectory.json")


def test_preset_generate_preview_and_keys_are_one_path(clean_scene, addon, tmp_path):
    import bpy

    bridge, paths, trajectory = addon.gen3d_addon.camera_bridge, addon.gen3d_addon.camera_paths, addon.engine.trajectory
    scene = clean_scene
    obj = _setup(scene, tmp_path)
    path = scene.gen3d_camera
    path.preset, path.angle, path.height, path.scene_depth = "orbit", 50.0, 0.3, 4.0
    expected = trajectory.preset("orbit", bridge.camera_from_object(scene, obj), 4, scene_depth=4.0, angle=50.0, height=0.3)

    camera, sent = _sent(addon, bpy.context)
    _same(camera, expected[0])
    assert len(sent) == 4
    for got, want in zip(sent, expected):
        _same(got, want)

    assert bpy.ops.gen3d.preview_views() == {"FINISHED"}
    shown = sorted(bpy.data.collections[paths.PREVIEW_COLLECTION].objects, key=lambda o: o.name)
    assert [o.name for o in shown] == ["Gen3D input", "Gen3D view 1", "Gen3D view 2", "Gen3D view 3"]
    assert all(o.hide_render for o in shown)
    for got, want in zip(shown, expected):
        _same(bridge.camera_from_object(scene, got), want)

    path.angle = 80.0  # the preview follows the panel
    assert bpy.ops.gen3d.preview_views() == {"FINISHED"}
    shown = sorted(bpy.data.collections[paths.PREVIEW_COLLECTION].objects, key=lambda o: o.name)
    assert len(shown) == 4 and sum(o.name.startswith("Gen3D") for o in bpy.data.objects) == 4
    wider = trajectory.preset("orbit", bridge.camera_from_object(scene, obj), 4, scene_depth=4.0, angle=80.0, height=0.3)
    _same(bridge.camera_from_object(scene, shown[-1]), wider[-1])
    assert not np.allclose(wider[-1].world_to_camera, expected[-1].world_to_camera, atol=1e-3)

    # Keyed with Add Camera Path and generated as an animation: the same views again.
    with bpy.context.temp_override(active_object=obj):
        assert bpy.ops.gen3d.add_camera_path(preset="orbit", views=4) == {"FINISHED"}
    scene.gen3d.trajectory_source = "CAMERA"
    camera, sent = _sent(addon, bpy.context)
    for got, want in zip(sent, wider):
        _same(got, want)
    _same(camera, wider[0])
    assert bpy.ops.gen3d.preview_views(clear=True) == {"FINISHED"}
    assert paths.PREVIEW_COLLECTION not in bpy.data.collections and "Cam" in bpy.data.objects


def test_animation_input_is_its_first_sampled_frame(clean_scene, addon, tmp_path):
    import bpy

    bridge = addon.gen3d_addon.camera_bridge
    scene = clean_scene
    obj = _setup(scene, tmp_path)
    obj.keyframe_insert("location", frame=1)
    obj.location = (3.0, -2.0, 1.0)
    obj.keyframe_insert("location", frame=31)
    scene.gen3d.trajectory_source = "CAMERA"
    scene.frame_set(17)  # the artist looks at the middle of the animation
    scene.frame_set(1)
    at_start = bridge.camera_from_object(scene, obj)
    scene.frame_set(17)
    camera, sent = _sent(addon, bpy.context)
    _same(camera, at_start)
    _same(sent[0], at_start)
    assert [c.extra.get("frame") for c in sent] == [1, 11, 21, 31]
    assert scene.frame_current == 17
