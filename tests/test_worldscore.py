"""WorldScore's static-track conventions (engine.worldscore) against facts read from its source,
github.com/haoyi-duan/WorldScore @ 344983c1 (2025-12-09), read on 2026-12-01:
camera_generator.py (layouts, interpolation, Blender camera-to-world), dataloader.py
(data_exists, case folder), utils.center_crop, helper.py (image_data.json)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from engine import worldscore
from engine.cameras import project, relative_to


def _path(layout: str, speed: float = 1.0) -> list:
    cams = worldscore.engine_cameras(worldscore.camera_data([layout], speed)["cameras_interp"])
    return relative_to(cams, cams[0])  # the engine world: the input camera's OpenCV frame


def _yaw_left_deg(camera) -> float:
    forward = camera.camera_to_world[:3, 2]
    return math.degrees(math.atan2(-forward[0], forward[2]))


def test_first_camera_is_worldscores_identity_in_blender_axes():
    data = worldscore.camera_data(["push_in"], 0.5)
    # CameraGen starts from RT = I; saved as inverse(diag(-1, 1, -1, 1) @ I).
    np.testing.assert_allclose(data["cameras"][0], np.diag([-1.0, 1.0, -1.0, 1.0]))
    assert data["focal_length"] == 500 and data["scale"] == 0.5
    assert len(data["cameras"]) == 2 and len(data["cameras_interp"]) == 50  # frames: 50 (base_config)


@pytest.mark.parametrize(
    "layout, centre, yaw",
    [
        ("push_in", (0, 0, 1.0), 0.0),  # T_z -= speed: one speed forward
        ("pull_out", (0, 0, -1.0), 0.0),
        ("move_left", (-0.5, 0, 0), 0.0),  # T_x -= speed * 0.5 (magnitude 0.5)
        ("move_right", (0.5, 0, 0), 0.0),
        ("pan_left", (0, 0, 0), 30.0),  # rotation_range_theta = 30
        ("pan_right", (0, 0, 0), -30.0),
    ],
)
def test_layout_end_poses(layout, centre, yaw):
    path = _path(layout)
    np.testing.assert_allclose(path[-1].center, centre, atol=1e-9)
    assert _yaw_left_deg(path[-1]) == pytest.approx(yaw, abs=1e-6)
    assert _yaw_left_deg(path[0]) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("layout, side", [("orbit_left", -1), ("orbit_right", 1)])
def test_orbit_keyframe_looks_at_the_pivot(layout, side):
    speed = 2.0
    path = _path(layout, speed)
    pivot = np.array([[0.0, 0.0, speed]])  # radius = camera_speed, on the input's optical axis
    for camera in (path[0], path[-1]):
        pixel, depth = project(camera, pivot)
        np.testing.assert_allclose(pixel[0], [256.0, 256.0], atol=1e-6)
        assert depth[0] == pytest.approx(speed)
    assert np.sign(path[-1].center[0]) == side
    assert abs(_yaw_left_deg(path[-1])) == pytest.approx(30.0)
    # Between keyframes: rotation slerped (here about one axis: t * 30 deg), world-to-camera
    # translation lerped, t = i / 49.
    end = path[-1].world_to_camera
    for i, camera in enumerate(path):
        t = i / 49
        assert abs(_yaw_left_deg(camera)) == pytest.approx(30.0 * t, abs=1e-6)
        np.testing.assert_allclose(camera.world_to_camera[:3, 3], t * end[:3, 3], atol=1e-9)


def test_interpolation_is_slerp_and_lerp_at_i_over_49():
    pan = _path("pan_left")
    assert [round(_yaw_left_deg(c), 6) for c in pan[:3]] == [0.0, round(30 / 49, 6), round(60 / 49, 6)]
    push = _path("push_in", 0.49)
    np.testing.assert_allclose([c.center[2] for c in push], np.arange(50) * 0.01, atol=1e-9)


def test_bookkeeping_of_one_scene():
    assert worldscore.total_frames(["pan_left"]) == 50
    assert worldscore.anchor_frame_idx(["pan_left"]) == [0, 49]
    entry = {"image": "static/photorealistic/indoor/dining_spaces/003.png", "visual_movement": "static",
             "visual_style": "photorealistic", "scene_type": "indoor", "camera_path": ["move_left"],
             "prompt_list": ["a dining room", "a kitchen."], "style": "Photorealistic."}
    assert str(worldscore.case_folder(entry)) == "static/photorealistic/indoor/dining_spaces/003"
    assert worldscore.prompt_list(entry) == ["a dining room. Photorealistic.", "a kitchen. Photorealistic."]
    assert worldscore.inpainting_prompt(entry) == "a kitchen. Photorealistic."  # inter: the next scene
    assert worldscore.inpainting_prompt({**entry, "camera_path": ["orbit_left"]}) == "a dining room. Photorealistic."
    data = worldscore.image_data(entry)
    assert (data["num_scenes"], data["total_frames"], data["anchor_frame_idx"]) == (1, 50, [0, 49])
    with pytest.raises(worldscore.WorldScoreError, match="pull_left"):
        worldscore.check_entry({**entry, "camera_path": ["pull_left"]}, "case")  # commented out in CameraGen


def test_centre_crop_box_matches_center_crop():
    assert worldscore.centre_crop_box(320, 240) == (40, 0, 280, 240)
    assert worldscore.centre_crop_box(241, 480) == (0, 119, 241, 360)
    assert worldscore.centre_crop_box(100, 100) == (0, 0, 100, 100)


def test_data_exists_rule(tmp_path):
    root = tmp_path / "case"
    assert not worldscore.data_exists(root, ["push_in"])
    (root / "frames").mkdir(parents=True)
    for name in ("image_data.json", "camera_data.json", "input_image.png"):
        (root / name).write_text("{}")
    for k in range(49):
        (root / "frames" / f"{k:03d}.png").write_bytes(b"")
    assert not worldscore.data_exists(root, ["push_in"])  # 49 < 1 * (50 - 1) + 1
    (root / "frames" / "049.jpg").write_bytes(b"")
    assert worldscore.data_exists(root, ["push_in"])
    (root / "camera_data.json").unlink()
    assert not worldscore.data_exists(root, ["push_in"])
    json.dumps(worldscore.camera_data(["orbit_right"], 1.0))  # plain JSON, as WorldScore reads it
