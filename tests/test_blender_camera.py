"""Camera side in real Blender: the shared convention against Blender's own projection, preset
keyframes -> sampled cameras -> trajectory file round trip, markers, the matched camera."""

from __future__ import annotations

import math

import numpy as np
import pytest


def _camera(scene, name="Cam"):
    import bpy

    obj = bpy.data.objects.new(name, bpy.data.cameras.new(name))
    scene.collection.objects.link(obj)
    scene.camera = obj
    return obj


@pytest.mark.parametrize(
    "fit, shift, size, pixel_aspect",
    [
        ("AUTO", (0.0, 0.0), (64, 48), (1, 1)),
        ("AUTO", (0.1, -0.05), (48, 64), (1, 1)),
        ("HORIZONTAL", (-0.2, 0.1), (40, 60), (1, 1)),
        ("VERTICAL", (0.05, 0.2), (80, 30), (1, 1)),
        ("AUTO", (0.1, 0.1), (64, 48), (2, 1)),
    ],
)
def test_projection_agrees_with_blender(clean_scene, addon, fit, shift, size, pixel_aspect):
    import mathutils
    from bpy_extras.object_utils import world_to_camera_view

    cameras, bridge = addon.engine.cameras, addon.gen3d_addon.camera_bridge
    scene = clean_scene
    scene.render.resolution_x, scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    scene.render.pixel_aspect_x, scene.render.pixel_aspect_y = pixel_aspect
    obj = _camera(scene)
    obj.data.sensor_fit, obj.data.lens = fit, 28.0
    obj.data.sensor_width, obj.data.sensor_height = 36.0, 20.0
    obj.data.shift_x, obj.data.shift_y = shift
    obj.location = (1.0, -2.0, 0.5)
    obj.rotation_euler = (1.2, 0.1, 0.4)
    clean_scene.view_layers[0].update()

    camera = bridge.camera_from_object(scene, obj)
    rng = np.random.default_rng(1)
    local = np.column_stack([rng.uniform(-1, 1, 50), rng.uniform(-1, 1, 50), rng.uniform(2, 6, 50)])
    points = cameras.transform_points(camera.camera_to_world, local)  # in front of the camera
    pixels, depth = cameras.project(camera, points)
    width, height = size
    for (u, v), z, point in zip(pixels, depth, points):
        ndc = world_to_camera_view(scene, obj, mathutils.Vector(point))
        assert ndc.z == pytest.approx(z, rel=1e-5)
        assert u == pytest.approx(ndc.x * width, abs=1e-3)
        assert v == pytest.approx((1.0 - ndc.y) * height, abs=1e-3)


def _assert_same(a, b):
    np.testing.assert_allclose(a.K, b.K, atol=1e-6)
    np.testing.assert_allclose(a.world_to_camera, b.world_to_camera, atol=1e-5)
    assert (a.width, a.height) == (b.width, b.height)


@pytest.mark.parametrize("preset", ["orbit", "look-around", "dolly", "pan", "spiral"])
def test_preset_keyframes_round_trip(clean_scene, addon, tmp_path, preset):
    import bpy

    trajectory = addon.engine.trajectory
    bridge, paths = addon.gen3d_addon.camera_bridge, addon.gen3d_addon.camera_paths
    scene = clean_scene
    scene.render.resolution_x, scene.render.resolution_y = 64, 48
    scene.frame_start, scene.frame_end = 1, 49
    obj = _camera(scene)
    obj.location, obj.rotation_euler = (0.5, -4.0, 1.5), (math.radians(80), 0.0, math.radians(10))
    bpy.context.view_layer.update()
    scene.gen3d_camera.scene_depth = 4.0
    expected = trajectory.preset(preset, bridge.camera_from_object(scene, obj), 5, **scene.gen3d_camera.parameters(preset))

    with bpy.context.temp_override(active_object=obj):
        assert bpy.ops.gen3d.add_camera_path(preset=preset, views=5) == {"FINISHED"}

    frames = [1, 13, 25, 37, 49]
    assert paths.marked_frames(scene) == frames
    assert bridge.keyframe_frames(obj) == frames
    for at in ("EVEN", "KEYFRAMES"):
        sampled = bridge.sample_animation(scene, obj, 5, at=at)
        assert [c.extra["frame"] for c in sampled] == frames
        for got, want in zip(sampled, expected):
            _assert_same(got, want)

    # Through the trajectory file the engine reads, and through job.json's schema.
    path = tmp_path / "trajectory.json"
    trajectory.save_trajectory(path, sampled, source="blender")
    for got, want in zip(trajectory.load_trajectory(path, resolution=(64, 48)), expected):
        _assert_same(got, want)
    protocol = addon.engine.protocol
    protocol.validate_job({"schema": protocol.JOB_SCHEMA_VERSION, "profile": "offline",
                           "trajectory": {"version": 1, "cameras": [c.to_dict() for c in sampled]}})

    # Keys are ordinary F-curves: no euler jump between neighbouring keys.
    scene.frame_set(1)
    previous = np.array(obj.rotation_euler)
    for frame in frames[1:]:
        scene.frame_set(frame)
        assert np.abs(np.array(obj.rotation_euler) - previous).max() < math.pi
        previous = np.array(obj.rotation_euler)


def test_sampling_needs_keyframes_and_even_sampling(clean_scene, addon):
    bridge, cameras = addon.gen3d_addon.camera_bridge, addon.engine.cameras
    scene = clean_scene
    scene.frame_start, scene.frame_end = 1, 100
    obj = _camera(scene)
    with pytest.raises(cameras.CameraError, match="no keyframes"):
        bridge.sample_animation(scene, obj, 3)
    obj.keyframe_insert("location", frame=1)
    obj.location = (0.0, 0.0, 5.0)
    obj.keyframe_insert("location", frame=30)
    assert bridge.expansion_frames(scene, obj, 4) == [1, 34, 67, 100]
    assert bridge.expansion_frames(scene, obj, 4, at="KEYFRAMES") == [1, 30]
    scene.gen3d_camera.sampling = "KEYFRAMES"  # at=None follows the scene setting (Generate's call)
    sampled = bridge.sample_animation(scene, obj, 4)
    assert [c.extra["frame"] for c in sampled] == [1, 30]
    np.testing.assert_allclose(sampled[1].center, [0.0, 0.0, 5.0], atol=1e-6)


def test_add_camera_matches_image(clean_scene, addon, tmp_path):
    import bpy

    image = bpy.data.images.new("input", 80, 40)
    image.filepath_raw = str(tmp_path / "input.png")
    image.file_format = "PNG"
    image.save()
    bpy.data.images.remove(image)
    scene = clean_scene
    scene.gen3d.image_path = str(tmp_path / "input.png")
    assert bpy.ops.gen3d.add_camera(lens=24.0) == {"FINISHED"}
    obj = scene.camera
    assert obj is not None and obj.data.lens == pytest.approx(24.0)
    assert (scene.render.resolution_x, scene.render.resolution_y) == (80, 40)
    camera = addon.gen3d_addon.camera_bridge.camera_from_object(scene, obj)
    # At the origin looking along +Y with Z up: where job results without a camera land.
    np.testing.assert_allclose(camera.camera_to_world, addon.gen3d_addon.importers.world_from_engine(None), atol=1e-6)
    assert camera.K[0, 0] == pytest.approx(24.0 / 36.0 * 80)


def test_add_camera_is_placed_by_the_job_not_the_working_directory(clean_scene, addon, tmp_path, monkeypatch):
    import json

    import bpy

    cameras, importers = addon.engine.cameras, addon.gen3d_addon.importers
    pose = cameras.look_at([1.0, -5.0, 2.0], [0.0, 0.0, 1.0], up=[0.0, 0.0, -1.0])
    client = cameras.Camera(cameras.intrinsics_from_fov(80, 40, 50.0), pose, 80, 40)
    stray = tmp_path / "cwd"
    stray.mkdir()
    (stray / "camera.json").write_text(json.dumps(client.to_dict()))  # where Blender was started
    monkeypatch.chdir(stray)
    scene = clean_scene
    scene.render.resolution_x, scene.render.resolution_y = 80, 40
    assert bpy.ops.gen3d.add_camera(lens=24.0) == {"FINISHED"}
    placed = addon.gen3d_addon.camera_bridge.camera_from_object(scene, scene.camera)
    np.testing.assert_allclose(placed.camera_to_world, importers.world_from_engine(None), atol=1e-6)
    # From a job: its input view, so the camera looks through the job's results as the input did.
    job = tmp_path / "job"
    (job / "inputs").mkdir(parents=True)
    (job / "camera.json").write_text(json.dumps(client.to_dict()))
    engine_view = cameras.Camera(client.K, np.eye(4), 80, 40)
    (job / "inputs" / "camera.json").write_text(json.dumps(engine_view.to_dict()))
    scene.gen3d.job_dir = str(job)
    assert bpy.ops.gen3d.add_camera(focal_source="JOB") == {"FINISHED"}
    placed = addon.gen3d_addon.camera_bridge.camera_from_object(scene, scene.camera)
    np.testing.assert_allclose(placed.camera_to_world, client.camera_to_world, atol=1e-5)
