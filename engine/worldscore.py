"""WorldScore's static track (arXiv 2504.00983): its cases, camera layouts and output folder.

Facts read from github.com/haoyi-duan/WorldScore at commit 344983c1 (2025-12-09), on 2026-12-01:

* ``worldscore/benchmark/helpers/camera_generator.py``: each layout moves the *current* camera
  by one fixed step in a world-to-camera matrix ``RT = [R | T]`` in PyTorch3D's camera axes
  (x left, y up, z forward), the current camera re-centred to the identity first, so keyframe
  k+1 is ``D(layout) @ RT_k``: push_in/pull_out ``T_z -= / += speed``, move_left/right
  ``T_x -= / += speed/2``, pan_left/right ``R @ rot_y(+-30 deg)``, orbit_left/right
  ``Tr(0,0,speed) @ rot_y(-+30 deg) @ Tr(0,0,-speed)``; ``rot_y(t) = [[cos,0,-sin],[0,1,0],[sin,0,cos]]``.
  Between two keyframes: ``frames - 2`` cameras at ``t = i/(frames - 1)``, rotation by slerp,
  translation linearly.  Saved as camera-to-world in Blender axes:
  ``inverse(diag(-1, 1, -1, 1) @ RT)``, in camera_data.json
  ``{"focal_length", "scale" (= camera_speed), "cameras", "cameras_interp"}``.
* ``config/base_config.yaml``: focal_length 500, frames 50; model configs resolution [512, 512].
* ``worldscore/benchmark/helpers/dataloader.py``: a case's folder is
  ``<output_dir>/static/<visual_style>/<scene_type>/<category>/<name>`` with category the
  image's parent folder and name its stem; ``data_exists()`` (re-implemented in
  :func:`data_exists`) and ``generate_prompt_list``.
* ``worldscore/benchmark/helpers/helper.py``: image_data.json = the static.json entry plus
  num_scenes, total_frames, anchor_frame_idx; time.txt ``generate_time: <s>``; frames/000.png...;
  videos/output.mp4 at config fps (default 10).  ``utils.center_crop`` makes input_image.png.
* ``worldscore/benchmark/helpers/evaluator.py`` also needs ``len(cameras_interp) ==
  total_frames == len(frames)`` and reads camera_path, prompt_list and content_list.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .cameras import CV_FROM_BLENDER, Camera, rigid_inverse

FOCAL = 500.0  # px at 512 x 512, principal point at the centre
SIZE = 512
FRAMES = 50  # per scene (base_config "frames")
FPS = 10  # Helper.save: config.get("fps", 10)
ROTATION_DEG = 30.0  # CameraGen.rotation_range_theta
# camera_speed in the engine's metres (WorldScore's per-model unit; its camera error divides
# translations by it, so it sets how far the camera travels, not the score's scale).
DEFAULT_SPEED = 0.5
# One scene per layout (utils.layout_info "scenenum"); intra layouts stay in the input's scene.
LAYOUT_TYPE = {
    "push_in": "intra",
    "pull_out": "inter",
    "move_left": "inter",
    "move_right": "inter",
    "orbit_left": "intra",
    "orbit_right": "intra",
    "pan_left": "inter",
    "pan_right": "inter",
}
PT3D_TO_BLENDER = np.diag([-1.0, 1.0, -1.0, 1.0])


class WorldScoreError(ValueError):
    pass


def _rot_y(degrees: float) -> np.ndarray:
    theta = math.radians(degrees)
    c, s = math.cos(theta), math.sin(theta)
    matrix = np.eye(4)
    matrix[:3, :3] = [[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]]
    return matrix


def _translate(x: float = 0.0, z: float = 0.0) -> np.ndarray:
    matrix = np.eye(4)
    matrix[0, 3], matrix[2, 3] = x, z
    return matrix


def layout_step(layout: str, speed: float) -> np.ndarray:
    """The world-to-camera step D of one layout, applied to a camera re-centred at the identity."""
    steps = {
        "push_in": lambda: _translate(z=-speed),
        "pull_out": lambda: _translate(z=speed),
        "move_left": lambda: _translate(x=-0.5 * speed),
        "move_right": lambda: _translate(x=0.5 * speed),
        "pan_left": lambda: _rot_y(ROTATION_DEG),
        "pan_right": lambda: _rot_y(-ROTATION_DEG),
        "orbit_left": lambda: _translate(z=speed) @ _rot_y(-ROTATION_DEG) @ _translate(z=-speed),
        "orbit_right": lambda: _translate(z=speed) @ _rot_y(ROTATION_DEG) @ _translate(z=-speed),
    }
    if layout not in steps:
        raise WorldScoreError(f"unknown WorldScore camera layout {layout!r}; choose one of {', '.join(steps)}")
    return steps[layout]()


def keyframes(camera_path: Sequence[str], speed: float) -> list[np.ndarray]:
    """World-to-camera (PyTorch3D axes) of the keyframes; the first is the identity."""
    if not camera_path:
        raise WorldScoreError("camera_path is empty")
    result = [np.eye(4)]
    for layout in camera_path:
        result.append(layout_step(layout, speed) @ result[-1])
    return result


def interpolate(keyframe_list: Sequence[np.ndarray], frames: int = FRAMES) -> list[np.ndarray]:
    """``(len - 1) * (frames - 1) + 1`` cameras: each keyframe pair joined by slerp + lerp."""
    from scipy.spatial.transform import Rotation, Slerp

    result = [keyframe_list[0]]
    for first, second in zip(keyframe_list[:-1], keyframe_list[1:]):
        slerp = Slerp([0.0, 1.0], Rotation.from_matrix(np.stack([first[:3, :3], second[:3, :3]])))
        for i in range(1, frames - 1):
            t = i / (frames - 1)
            matrix = np.eye(4)
            matrix[:3, :3] = slerp([t]).as_matrix()[0]
            matrix[:3, 3] = first[:3, 3] + t * (second[:3, 3] - first[:3, 3])
            result.append(matrix)
        result.append(second)
    return result


def to_blender_c2w(world_to_camera_pt3d: np.ndarray) -> np.ndarray:
    return rigid_inverse(PT3D_TO_BLENDER @ world_to_camera_pt3d)


def camera_data(camera_path: Sequence[str], speed: float, frames: int = FRAMES) -> dict[str, Any]:
    """camera_data.json exactly as WorldScore's CameraGen.save_cameras writes it."""
    keys = keyframes(camera_path, speed)
    return {
        "focal_length": FOCAL,
        "scale": speed,
        "cameras": [to_blender_c2w(m).tolist() for m in keys],
        "cameras_interp": [to_blender_c2w(m).tolist() for m in interpolate(keys, frames)],
    }


def engine_cameras(c2w_blender: Sequence[Sequence[Sequence[float]]], size: int = SIZE, name: str = "ws") -> list[Camera]:
    """WorldScore's Blender camera-to-world matrices as engine cameras (OpenCV world-to-camera),
    f = 500 px at 512 px scaled to ``size``, principal point at the centre."""
    focal = FOCAL * size / SIZE
    K = np.array([[focal, 0.0, size / 2.0], [0.0, focal, size / 2.0], [0.0, 0.0, 1.0]])
    return [
        Camera(K, CV_FROM_BLENDER @ rigid_inverse(np.asarray(c2w, dtype=np.float64)), size, size, f"{name}_{k:03d}")
        for k, c2w in enumerate(c2w_blender)
    ]


def scene_count(camera_path: Sequence[str]) -> int:
    return len(camera_path)  # every static layout is one scene


def total_frames(camera_path: Sequence[str], frames: int = FRAMES) -> int:
    return scene_count(camera_path) * (frames - 1) + 1


def anchor_frame_idx(camera_path: Sequence[str], frames: int = FRAMES) -> list[int]:
    return [k * (frames - 1) for k in range(scene_count(camera_path) + 1)]


def prompt_list(entry: dict[str, Any]) -> list[str]:
    """dataloader.generate_prompt_list: each scene prompt followed by the style."""
    style = entry.get("style", "")
    return [p + " " + style if p.endswith(".") else p + ". " + style for p in entry.get("prompt_list", [])]


def inpainting_prompt(entry: dict[str, Any]) -> str:
    """The prompt for the new content: the next scene's for inter layouts, else the input's."""
    prompts = prompt_list(entry)
    if not prompts:
        return ""
    inter = LAYOUT_TYPE.get(entry["camera_path"][0]) == "inter"
    return prompts[1] if inter and len(prompts) > 1 else prompts[0]


def case_folder(entry: dict[str, Any]) -> Path:
    """static/<visual_style>/<scene_type>/<category>/<name>, relative to worldscore_output."""
    image = entry["image"].replace("\\", "/")
    category, name = image.split("/")[-2] if "/" in image else "uncategorised", image.split("/")[-1].split(".")[0]
    return Path("static", entry["visual_style"], entry["scene_type"], category, name)


def image_data(entry: dict[str, Any], frames: int = FRAMES) -> dict[str, Any]:
    """image_data.json: the static.json entry plus what Helper.store_data adds."""
    path = entry["camera_path"]
    return {**entry, "num_scenes": scene_count(path), "total_frames": total_frames(path, frames), "anchor_frame_idx": anchor_frame_idx(path, frames)}


def check_entry(entry: Any, where: str) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise WorldScoreError(f"{where} is not a JSON object")
    if entry.get("visual_movement") != "static":
        raise WorldScoreError(f"{where}: only WorldScore's static track is supported (visual_movement {entry.get('visual_movement')!r})")
    for key in ("image", "visual_style", "scene_type", "camera_path"):
        if key not in entry:
            raise WorldScoreError(f"{where} lacks {key!r}")
    if not isinstance(entry["camera_path"], list) or not entry["camera_path"]:
        raise WorldScoreError(f"{where}: camera_path must be a non-empty list of layouts")
    for layout in entry["camera_path"]:
        if layout not in LAYOUT_TYPE:
            raise WorldScoreError(f"{where}: unknown camera layout {layout!r}; WorldScore's are {', '.join(LAYOUT_TYPE)}")
    return entry


def centre_crop_box(width: int, height: int) -> tuple[int, int, int, int]:
    """utils.center_crop's box for a square target: the largest centred square."""
    side_w, side_h = (height, height) if width > height else (width, width)
    left, top = (width - side_w) // 2, (height - side_h) // 2
    return left, top, left + side_w, top + side_h


def data_exists(root: Path | str, camera_path: Sequence[str], frames: int = FRAMES) -> bool:
    """WorldScore's completeness rule for a static case, re-implemented from
    worldscore/benchmark/helpers/dataloader.py DataLoader.data_exists (commit 344983c1): the
    folder holds frames/, image_data.json, camera_data.json and input_image.png, and frames/
    has at least scene_num * (frames - 1) + 1 .png/.jpg files."""
    root = str(root)
    if not os.path.exists(root):
        return False
    entries = os.listdir(root)
    for name in ("frames", "image_data.json", "camera_data.json", "input_image.png"):
        if name not in entries:
            return False
    count = len([f for f in os.listdir(os.path.join(root, "frames")) if f.endswith(".png") or f.endswith(".jpg")])
    return count >= total_frames(camera_path, frames)
