"""The camera convention module (the real-Blender check lives in test_blender_camera.py)."""

import math

import numpy as np
import pytest

from engine import cameras


def blender_camera(**overrides):
    values = dict(
        lens=35.0, sensor_width=36.0, sensor_height=24.0, sensor_fit="AUTO", shift_x=0.0, shift_y=0.0,
        resolution_x=640, resolution_y=480, matrix_world=np.eye(4),
    )
    values.update(overrides)
    return cameras.from_blender(**values)


def test_horizontal_fit_focal_and_centre():
    camera = blender_camera()
    assert camera.K[0, 0] == pytest.approx(35.0 / 36.0 * 640)
    assert camera.K[1, 1] == pytest.approx(camera.K[0, 0])
    assert camera.K[0, 2] == pytest.approx(320) and camera.K[1, 2] == pytest.approx(240)


def test_portrait_auto_fit_uses_the_long_side_and_shift():
    camera = blender_camera(resolution_x=480, resolution_y=640, shift_x=0.1, shift_y=-0.05)
    assert camera.K[1, 1] == pytest.approx(35.0 / 36.0 * 640)
    assert camera.K[0, 2] == pytest.approx(240 - 0.1 * 640)
    assert camera.K[1, 2] == pytest.approx(320 - 0.05 * 640)


def test_vertical_fit_uses_sensor_height():
    camera = blender_camera(sensor_fit="VERTICAL")
    assert camera.K[1, 1] == pytest.approx(35.0 / 24.0 * 480)


def test_blender_axes_become_opencv_axes():
    # A Blender camera rotated 90 degrees about X looks along +Y with +Z up.
    angle = math.pi / 2
    matrix = np.array([[1, 0, 0, 0], [0, math.cos(angle), -math.sin(angle), 0], [0, math.sin(angle), math.cos(angle), 0], [0, 0, 0, 1]])
    camera = blender_camera(matrix_world=matrix)
    pixels, depth = cameras.project(camera, np.array([[0.0, 5.0, 0.0], [0.0, 5.0, 1.0]]))
    assert depth[0] == pytest.approx(5.0)
    assert pixels[0] == pytest.approx([320, 240])
    assert pixels[1][1] < 240  # world up is image up


def test_to_blender_round_trip_and_scaled_object_matrix():
    camera = blender_camera(resolution_x=300, resolution_y=200, shift_x=0.03, shift_y=0.02)
    settings = cameras.to_blender(camera)
    again = cameras.from_blender(
        lens=settings["lens"], sensor_width=settings["sensor_width"], sensor_height=24.0,
        sensor_fit=settings["sensor_fit"], shift_x=settings["shift_x"], shift_y=settings["shift_y"],
        resolution_x=300, resolution_y=200, matrix_world=np.diag([2.0, 2.0, 2.0, 1.0]) @ np.array(settings["matrix_world"]),
    )
    np.testing.assert_allclose(again.K, camera.K, atol=1e-9)
    np.testing.assert_allclose(again.world_to_camera[:3, :3], camera.world_to_camera[:3, :3], atol=1e-9)


def test_unsupported_cameras_are_refused_clearly():
    with pytest.raises(cameras.CameraError, match="perspective"):
        blender_camera(camera_type="ORTHO")
    with pytest.raises(cameras.CameraError, match="panoramic"):
        blender_camera(camera_type="PANO")
    with pytest.raises(cameras.CameraError, match="empty"):
        blender_camera(resolution_x=0)
    with pytest.raises(cameras.CameraError, match="rigid"):
        cameras.Camera(np.eye(3), np.diag([1.0, 1.0, -1.0, 1.0]), 4, 4)


def test_relative_to_makes_the_reference_the_identity():
    reference = cameras.Camera(np.eye(3) * 100, cameras.look_at([1, 2, 3], [0, 0, 0]), 64, 48)
    other = reference.with_pose(cameras.look_at([2, 2, 3], [0, 0, 0]))
    ref_rel, other_rel = cameras.relative_to([reference, other], reference)
    np.testing.assert_allclose(ref_rel.world_to_camera, np.eye(4), atol=1e-12)
    # Distances between camera centres are preserved.
    assert np.linalg.norm(other_rel.center) == pytest.approx(1.0)


def test_look_at_and_pixel_rays_agree_with_project():
    camera = cameras.Camera(cameras.intrinsics_from_fov(64, 48, 60), cameras.look_at([0, 0, -3], [0, 0, 0]), 64, 48)
    rays = cameras.pixel_rays(camera)
    point_cam = rays[10, 20] * 2.5
    world = cameras.transform_points(camera.camera_to_world, point_cam[None])
    pixels, depth = cameras.project(camera, world)
    assert pixels[0] == pytest.approx([20.5, 10.5])
    assert depth[0] == pytest.approx(2.5)


def test_dict_round_trip_and_bad_dicts():
    camera = blender_camera()
    assert cameras.Camera.from_dict(camera.to_dict()).to_dict() == camera.to_dict()
    with pytest.raises(cameras.CameraError, match="unknown keys"):
        cameras.Camera.from_dict({**camera.to_dict(), "fov": 3})
    with pytest.raises(cameras.CameraError, match="malformed"):
        cameras.Camera.from_dict({"K": [1, 2], "world_to_camera": np.eye(4).tolist(), "width": 4, "height": 4})
