"""Trajectory presets and the trajectory file format."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.cameras import Camera, intrinsics_from_fov, look_at
from engine.trajectory import PRESETS, TrajectoryError, load_trajectory, preset, save_trajectory


@pytest.fixture(params=["identity", "posed"])
def input_camera(request) -> Camera:
    pose = np.eye(4) if request.param == "identity" else look_at([1.0, -0.5, 2.0], [0.0, 0.3, 5.0])
    return Camera(intrinsics_from_fov(64, 48, 55.0), pose, 64, 48, name="input")


def forward(camera: Camera) -> np.ndarray:
    return camera.camera_to_world[:3, 2]


def relative(cameras, input_camera):
    """Poses (camera-to-world) in the input camera's frame."""
    return [input_camera.world_to_camera @ cam.camera_to_world for cam in cameras]


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_are_rigid_start_at_the_input_and_keep_intrinsics(name, input_camera):
    cameras = preset(name, input_camera, 12, scene_depth=3.0)
    assert len(cameras) == 12
    assert np.array_equal(cameras[0].world_to_camera, input_camera.world_to_camera)
    for cam in cameras:
        rotation = cam.world_to_camera[:3, :3]
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-9)
        assert np.linalg.det(rotation) == pytest.approx(1.0)
        assert np.array_equal(cam.K, input_camera.K) and (cam.width, cam.height) == (64, 48)
        # The image's up stays the world's up (-y of the input frame): no roll.
        right = (input_camera.world_to_camera[:3, :3] @ cam.camera_to_world[:3, 0])
        assert abs(right[1]) < 1e-9
    assert len({cam.name for cam in cameras}) == 12
    assert any(not np.allclose(cam.world_to_camera, cameras[0].world_to_camera) for cam in cameras[1:])


def test_orbit_keeps_its_radius_and_turns_counter_clockwise_seen_from_above(input_camera):
    cameras = preset("orbit", input_camera, 8, scene_depth=2.0)
    poses = relative(cameras, input_camera)
    pivot = np.array([0.0, 0.0, 2.0])
    for pose in poses:
        assert np.linalg.norm(pose[:3, 3] - pivot) == pytest.approx(2.0)
        assert pose[1, 3] == pytest.approx(0.0)  # stays level
        np.testing.assert_allclose(pose[:3, 2], (pivot - pose[:3, 3]) / 2.0, atol=1e-12)  # looks at the pivot
    # 360° over 8 views, no repeated start: 45° steps.  From above (x right, z ahead on the map),
    # counter-clockwise from behind the pivot means moving right first.
    assert poses[1][0, 3] > 0 and poses[2][:3, 3] == pytest.approx([2.0, 0.0, 2.0])
    assert poses[4][:3, 3] == pytest.approx([0.0, 0.0, 4.0])
    clockwise = relative(preset("orbit", input_camera, 3, scene_depth=2.0, angle=-90, radius=1.0), input_camera)
    assert clockwise[-1][:3, 3] == pytest.approx([-1.0, 0.0, 1.0])  # partial sweep ends at its angle


def test_look_around_turns_left_in_place(input_camera):
    poses = relative(preset("look-around", input_camera, 4, angle=360), input_camera)
    for pose in poses:
        assert pose[:3, 3] == pytest.approx(np.zeros(3), abs=1e-12)
    assert poses[1][:3, 2] == pytest.approx([-1.0, 0.0, 0.0], abs=1e-12)  # 90° left
    assert poses[2][:3, 2] == pytest.approx([0.0, 0.0, -1.0], abs=1e-12)
    tilted = relative(preset("look-around", input_camera, 3, angle=90, pitch=20), input_camera)
    assert tilted[1][1, 2] == pytest.approx(-np.sin(np.radians(20)))  # looks up mid-sweep
    assert tilted[2][:3, 2] == pytest.approx([-1.0, 0.0, 0.0], abs=1e-12)


def test_dolly_pan_and_spiral_scale_with_the_scene(input_camera):
    for depth in (1.0, 10.0):
        dolly = relative(preset("dolly", input_camera, 4, scene_depth=depth), input_camera)
        assert [p[2, 3] for p in dolly] == pytest.approx([0.0, 0.4 * depth, 0.0, -0.4 * depth], abs=1e-12)
        assert all(p[:3, :3] == pytest.approx(np.eye(3)) for p in dolly)
        pan = relative(preset("pan", input_camera, 4, scene_depth=depth, distance=-0.5), input_camera)
        assert [p[0, 3] for p in pan] == pytest.approx([0.0, -0.5, 0.0, 0.5], abs=1e-12)
        spiral = relative(preset("spiral", input_camera, 9, scene_depth=depth), input_camera)
        offsets = [np.linalg.norm(p[:2, 3]) for p in spiral]
        assert offsets[-1] == pytest.approx(0.15 * depth) and spiral[-1][2, 3] == pytest.approx(0.2 * depth)


def test_bad_preset_arguments(input_camera):
    with pytest.raises(TrajectoryError, match="unknown trajectory preset"):
        preset("zigzag", input_camera, 4)
    with pytest.raises(TrajectoryError, match="no parameter"):
        preset("orbit", input_camera, 4, radious=2.0)
    with pytest.raises(TrajectoryError):
        preset("orbit", input_camera, 0)
    with pytest.raises(TrajectoryError):
        preset("dolly", input_camera, 4, scene_depth=-1.0)
    assert len(preset("pan", input_camera, 1)) == 1


def test_file_round_trip_is_exact(tmp_path, input_camera):
    cameras = preset("spiral", input_camera, 7, scene_depth=2.5)
    cameras[3].extra = {"frame": 12}
    path = tmp_path / "trajectory.json"
    save_trajectory(path, cameras, source="preset:spiral")
    loaded = load_trajectory(path, resolution=(64, 48))
    assert len(loaded) == len(cameras)
    for a, b in zip(cameras, loaded):
        assert np.array_equal(a.K, b.K) and np.array_equal(a.world_to_camera, b.world_to_camera)
        assert (a.width, a.height, a.name, a.extra) == (b.width, b.height, b.name, b.extra)
    data = json.loads(path.read_text())
    assert data["version"] == 1 and data["source"] == "preset:spiral"


def write(path, content) -> str:
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def test_bad_files_raise_trajectory_error(tmp_path, input_camera):
    good = input_camera.to_dict()
    other_size = input_camera.resized(32, 24).to_dict()
    mirrored = dict(good, world_to_camera=np.diag([1.0, 1.0, -1.0, 1.0]).tolist())
    cases = {
        "missing": None,
        "not json": "{cameras: [",
        "not an object": [good],
        "wrong version": {"version": 2, "cameras": [good]},
        "no version": {"cameras": [good]},
        "empty": {"version": 1, "cameras": []},
        "no cameras": {"version": 1},
        "mixed resolution": {"version": 1, "cameras": [good, other_size]},
        "bad camera": {"version": 1, "cameras": [good, mirrored]},
        "unknown key": {"version": 1, "cameras": [dict(good, fov=50)]},
        "bad source": {"version": 1, "source": 3, "cameras": [good]},
    }
    for label, content in cases.items():
        path = tmp_path / f"{label}.json"
        if content is not None:
            write(path, content)
        with pytest.raises(TrajectoryError) as info:
            load_trajectory(path)
        assert str(path) in str(info.value), label
    ok = write(tmp_path / "ok.json", {"version": 1, "cameras": [good]})
    with pytest.raises(TrajectoryError, match="expected 128x96"):
        load_trajectory(ok, resolution=(128, 96))
    with pytest.raises(TrajectoryError):
        save_trajectory(tmp_path / "none.json", [])
    with pytest.raises(TrajectoryError):
        save_trajectory(tmp_path / "mixed.json", [input_camera, input_camera.resized(32, 24)])
