"""Camera paths: presets and the trajectory file (numpy only: the Blender add-on imports this).

All presets live in the engine world (the input camera's OpenCV frame: x right, y down,
z forward; world up is -y) and are expressed relative to ``input_camera``'s pose, so they also
work for an input camera that is not the identity.  The first camera of every preset *is* the
input camera.  Angles are in degrees, distances in metres; distances default to fractions of
``scene_depth`` (e.g. the median depth of the input view) so a preset suits any scene size.

"Counter-clockwise seen from above" means: looking down the world's +y axis (from above) with
the input view direction pointing up on the map, the camera moves counter-clockwise, i.e. it
first moves to the right (+x) while turning left to keep the pivot in view.

Trajectory file (JSON)::

    {"version": 1, "source": "preset:orbit", "cameras": [Camera.to_dict(), ...]}

All cameras of a file share one resolution.
"""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .cameras import Camera, CameraError, look_at

TRAJECTORY_VERSION = 1


class TrajectoryError(ValueError):
    """A trajectory that cannot be used: unknown preset, bad parameters, bad file."""


def _positive(name: str, value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise TrajectoryError(f"{name} must be a positive number, not {value!r}")
    return float(value)


def _fractions(n_views: int, closed: bool) -> np.ndarray:
    """n_views path parameters t in [0, 1]; a closed path stops one step before its start."""
    if n_views < 1:
        raise TrajectoryError(f"n_views must be at least 1, not {n_views}")
    return np.arange(n_views) / (n_views if closed else max(n_views - 1, 1))


def _yaw_pitch(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """Unit viewing direction in the engine world: yaw > 0 turns left (counter-clockwise seen
    from above), pitch > 0 looks up."""
    yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
    return np.array([-math.sin(yaw) * math.cos(pitch), -math.sin(pitch), math.cos(yaw) * math.cos(pitch)])


def _orbit(t: np.ndarray, scene_depth: float, angle: float = 360.0, radius: float | None = None, height: float = 0.0):
    """Around a pivot on the optical axis at ``radius`` (default ``scene_depth``), sweeping
    ``angle`` degrees counter-clockwise seen from above (negative: clockwise), looking at the
    pivot; ``height`` lifts the path (metres, up)."""
    radius = _positive("radius", radius if radius is not None else scene_depth)
    pivot = np.array([0.0, 0.0, radius])
    poses = []
    for theta in np.radians(angle) * t:
        eye = pivot + radius * np.array([math.sin(theta), 0.0, -math.cos(theta)]) + np.array([0.0, -height, 0.0])
        poses.append(look_at(eye, pivot + np.array([0.0, -height, 0.0])))
    return poses


def _look_around(t: np.ndarray, scene_depth: float, angle: float = 360.0, pitch: float = 0.0):
    """Turn in place: yaw sweeps ``angle`` degrees counter-clockwise seen from above (turning
    left; negative: right) while the view tilts up to ``pitch`` degrees (negative: down) at the
    middle of the sweep and back, so the path starts and ends level."""
    return [look_at(np.zeros(3), _yaw_pitch(angle * f, pitch * math.sin(math.pi * f))) for f in t]


def _dolly(t: np.ndarray, scene_depth: float, distance: float | None = None):
    """Forward to ``distance`` (default 0.4 × scene_depth), back through the start to
    -``distance`` and return, along the optical axis."""
    distance = distance if distance is not None else 0.4 * scene_depth
    return [look_at([0.0, 0.0, z], [0.0, 0.0, z + 1.0]) for z in distance * np.sin(2 * np.pi * t)]


def _pan(t: np.ndarray, scene_depth: float, distance: float | None = None):
    """Sideways: right to ``distance`` (default 0.25 × scene_depth; negative: left first),
    across to -``distance`` and back, always looking straight ahead."""
    distance = distance if distance is not None else 0.25 * scene_depth
    return [look_at([x, 0.0, 0.0], [x, 0.0, 1.0]) for x in distance * np.sin(2 * np.pi * t)]


def _spiral(
    t: np.ndarray, scene_depth: float, radius: float | None = None, turns: float = 2.0, forward: float | None = None
):
    """An outward spiral in the image plane, radius growing to ``radius`` (default 0.15 ×
    scene_depth) over ``turns`` turns, counter-clockwise as the viewer sees it, while pushing in
    by ``forward`` (default 0.2 × scene_depth); looks at the pivot on the axis at scene_depth."""
    radius = radius if radius is not None else 0.15 * scene_depth
    forward = forward if forward is not None else 0.2 * scene_depth
    if forward >= scene_depth:
        raise TrajectoryError("spiral: forward must stay short of scene_depth (the pivot)")
    pivot = np.array([0.0, 0.0, scene_depth])
    poses = []
    for fraction in t:
        phi = 2 * np.pi * turns * fraction
        eye = np.array([radius * fraction * math.cos(phi), -radius * fraction * math.sin(phi), forward * fraction])
        poses.append(look_at(eye, pivot))
    return poses


# name -> (pose function, is the path closed)
PRESETS: dict[str, tuple[Callable[..., list[np.ndarray]], bool]] = {
    "orbit": (_orbit, True),
    "look-around": (_look_around, True),
    "dolly": (_dolly, True),
    "pan": (_pan, True),
    "spiral": (_spiral, False),
}


def preset(name: str, input_camera: Camera, n_views: int, *, scene_depth: float = 1.0, **params: Any) -> list[Camera]:
    """``n_views`` cameras along preset ``name`` (see ``PRESETS`` and each function's docstring
    for its parameters); the first is ``input_camera``.  Closed presets (orbit/look-around over
    360°, dolly, pan) do not repeat the start at the end.  K and resolution are the input's."""
    if name not in PRESETS:
        raise TrajectoryError(f"unknown trajectory preset {name!r}; choose one of {', '.join(PRESETS)}")
    function, closed = PRESETS[name]
    scene_depth = _positive("scene_depth", scene_depth)
    if name in ("orbit", "look-around"):
        closed = abs(params.get("angle", 360.0)) >= 360.0
    allowed = list(inspect.signature(function).parameters)[2:]
    unknown = set(params) - set(allowed)
    if unknown:
        raise TrajectoryError(
            f"preset {name!r} has no parameter {', '.join(sorted(unknown))}; it takes {', '.join(allowed)}"
        )
    try:
        relative = function(_fractions(int(n_views), closed), scene_depth, **params)
    except CameraError as exc:
        raise TrajectoryError(f"preset {name!r}: {exc}") from exc
    base = input_camera.world_to_camera
    cameras = [input_camera.with_pose(pose @ base, name=f"{name}_{k:03d}") for k, pose in enumerate(relative)]
    cameras[0] = input_camera.with_pose(base.copy(), name=f"{name}_000")  # exactly the input pose
    return cameras


def _check(cameras: Sequence[Camera], where: str) -> None:
    if not cameras:
        raise TrajectoryError(f"{where} needs at least one camera")
    sizes = {(cam.width, cam.height) for cam in cameras}
    if len(sizes) > 1:
        raise TrajectoryError(f"{where}: cameras have different resolutions {sorted(sizes)}")


def save_trajectory(path: str | Path, cameras: Sequence[Camera], source: str = "") -> None:
    cameras = list(cameras)
    _check(cameras, f"trajectory {path}")
    data = {"version": TRAJECTORY_VERSION, "source": source, "cameras": [cam.to_dict() for cam in cameras]}
    Path(path).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def load_trajectory(path: str | Path, *, resolution: tuple[int, int] | None = None) -> list[Camera]:
    """Cameras of a trajectory file; ``resolution`` (width, height), if given, must match."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TrajectoryError(f"cannot read trajectory {path}: {exc.strerror or exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TrajectoryError(f"trajectory {path} is not valid JSON: {exc}") from exc
    cameras = parse_trajectory(data, f"trajectory {path}")
    if resolution is not None and (cameras[0].width, cameras[0].height) != tuple(resolution):
        raise TrajectoryError(
            f"trajectory {path} is {cameras[0].width}x{cameras[0].height}, "
            f"expected {resolution[0]}x{resolution[1]}"
        )
    return cameras


def parse_trajectory(data: Any, where: str = "trajectory") -> list[Camera]:
    """Cameras of a trajectory file's contents (already parsed JSON), validated as data."""
    if not isinstance(data, dict):
        raise TrajectoryError(f"{where} must hold a JSON object")
    if data.get("version") != TRAJECTORY_VERSION:
        raise TrajectoryError(
            f"{where} has version {data.get('version')!r}; this engine reads version {TRAJECTORY_VERSION}"
        )
    if not isinstance(data.get("source", ""), str):
        raise TrajectoryError(f"{where}: 'source' must be a string")
    entries = data.get("cameras")
    if not isinstance(entries, list) or not entries:
        raise TrajectoryError(f"{where} has no cameras (expected a non-empty list under 'cameras')")
    cameras = []
    for index, entry in enumerate(entries):
        try:
            cameras.append(Camera.from_dict(entry))
        except CameraError as exc:
            raise TrajectoryError(f"{where}, camera {index}: {exc}") from exc
    _check(cameras, where)
    return cameras
