"""Camera conventions, shared by the engine and the Blender add-on (numpy only, no bpy, no torch).

Conventions, used everywhere in this project:

* **Intrinsics** ``K`` map camera coordinates to *continuous* pixel coordinates in which pixel
  ``(i, j)`` (column, row) covers ``[i, i+1) x [j, j+1)``, so its centre is ``(i + 0.5, j + 0.5)``
  and a centred principal point is ``(W/2, H/2)``.  gsplat and Blender both use this.
* **Camera axes** are OpenCV's: x right, y down, z forward (depth is the z coordinate).
  Blender's camera looks down its local -Z with +Y up; ``CV_FROM_BLENDER`` flips between them.
* **Extrinsics** are world-to-camera 4x4 matrices (rigid; any object scale is removed).
* **Engine world**: the engine works in the input camera's OpenCV frame (input camera =
  identity).  ``job.json`` keeps where that frame sits in the client's world
  (``Camera.world_to_camera`` of the input camera as the client gave it), so results can be
  placed back exactly, at metric scale.
* **Sky panorama** (``JOB/sky.png``, engine.sky): equirectangular in the engine world, its centre
  column along the input view (+z), three quarters across to its right (+x), its top row
  straight up (-y).  That is Blender's equirectangular layout in a frame whose +X is forward,
  +Y left and +Z up (``PANORAMA_FROM_ENGINE``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

# Blender camera-local axes -> OpenCV camera axes (and its own inverse).
CV_FROM_BLENDER = np.diag([1.0, -1.0, -1.0, 1.0])
# Engine-world directions -> the sky panorama's axes (x forward, y left, z up).
PANORAMA_FROM_ENGINE = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


class CameraError(ValueError):
    """A camera that this project cannot use (orthographic, panoramic, degenerate...)."""


@dataclass
class Camera:
    K: np.ndarray  # [3, 3] pinhole intrinsics, continuous pixel coordinates
    world_to_camera: np.ndarray  # [4, 4] rigid, OpenCV axes
    width: int
    height: int
    name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. {"frame": 12} from Blender

    def __post_init__(self) -> None:
        self.K = np.asarray(self.K, dtype=np.float64).reshape(3, 3)
        self.world_to_camera = np.asarray(self.world_to_camera, dtype=np.float64).reshape(4, 4)
        self.width, self.height = int(self.width), int(self.height)
        if self.width <= 0 or self.height <= 0:
            raise CameraError(f"camera {self.name!r}: resolution {self.width}x{self.height} is empty")
        if not np.all(np.isfinite(self.K)) or not np.all(np.isfinite(self.world_to_camera)):
            raise CameraError(f"camera {self.name!r} has non-finite values")
        if self.K[0, 0] <= 0 or self.K[1, 1] <= 0:
            raise CameraError(f"camera {self.name!r}: focal length must be positive")
        rotation = self.world_to_camera[:3, :3]
        if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-4) or np.linalg.det(rotation) < 0:
            raise CameraError(f"camera {self.name!r}: world_to_camera is not a rigid transform")

    @property
    def camera_to_world(self) -> np.ndarray:
        return rigid_inverse(self.world_to_camera)

    @property
    def center(self) -> np.ndarray:
        return self.camera_to_world[:3, 3]

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "K": self.K.tolist(),
            "world_to_camera": self.world_to_camera.tolist(),
            "width": self.width,
            "height": self.height,
        }
        if self.name:
            data["name"] = self.name
        if self.extra:
            data["extra"] = dict(self.extra)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Camera":
        if not isinstance(data, dict):
            raise CameraError("a camera must be a JSON object")
        unknown = set(data) - {"K", "world_to_camera", "width", "height", "name", "extra"}
        if unknown:
            raise CameraError(f"camera has unknown keys: {', '.join(sorted(unknown))}")
        try:
            return cls(
                K=data["K"],
                world_to_camera=data["world_to_camera"],
                width=data["width"],
                height=data["height"],
                name=str(data.get("name", "")),
                extra=dict(data.get("extra") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, CameraError):
                raise
            raise CameraError(f"camera is malformed: {exc}") from exc

    def resized(self, width: int, height: int) -> "Camera":
        """The same camera rendering at another resolution (same field of view)."""
        scale = np.diag([width / self.width, height / self.height, 1.0])
        return Camera(scale @ self.K, self.world_to_camera.copy(), width, height, self.name, dict(self.extra))

    def with_pose(self, world_to_camera: np.ndarray, name: str = "") -> "Camera":
        return Camera(self.K.copy(), world_to_camera, self.width, self.height, name or self.name, dict(self.extra))


def rigid_inverse(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float64)
    inverse = np.eye(4)
    inverse[:3, :3] = matrix[:3, :3].T
    inverse[:3, 3] = -matrix[:3, :3].T @ matrix[:3, 3]
    return inverse


def intrinsics_from_fov(width: int, height: int, fov_x_deg: float) -> np.ndarray:
    """Centred pinhole intrinsics with the given horizontal field of view."""
    if not 1.0 <= fov_x_deg <= 170.0:
        raise CameraError(f"field of view {fov_x_deg}° is outside 1°..170°")
    focal = width / (2.0 * math.tan(math.radians(fov_x_deg) / 2.0))
    return np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])


def look_at(eye: Sequence[float], target: Sequence[float], up: Sequence[float] = (0.0, -1.0, 0.0)) -> np.ndarray:
    """World-to-camera (OpenCV axes) for a camera at ``eye`` looking at ``target``.

    ``up`` is the world direction that should appear up in the image; the default suits the
    engine world (the input camera's OpenCV frame, whose up is -y).
    """
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    forward = target - eye
    norm = np.linalg.norm(forward)
    if norm < 1e-12:
        raise CameraError("look_at: eye and target coincide")
    forward /= norm
    right = np.cross(forward, up)  # OpenCV axes are right-handed: x = y(down) x z(forward)
    if np.linalg.norm(right) < 1e-9:
        raise CameraError("look_at: viewing direction is parallel to up")
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    camera_to_world = np.eye(4)
    camera_to_world[:3, 0], camera_to_world[:3, 1], camera_to_world[:3, 2] = right, down, forward
    camera_to_world[:3, 3] = eye
    return rigid_inverse(camera_to_world)


# ---------------------------------------------------------------------------------------------
# Blender cameras.  The add-on reads these plain numbers off bpy objects and calls these
# functions; nothing here touches bpy, so the conversion is tested on both sides.
# ---------------------------------------------------------------------------------------------


def _sensor_fit(sensor_fit: str, width_px: float, height_px: float) -> str:
    if sensor_fit == "AUTO":
        return "HORIZONTAL" if width_px >= height_px else "VERTICAL"
    if sensor_fit not in ("HORIZONTAL", "VERTICAL"):
        raise CameraError(f"unknown sensor fit {sensor_fit!r}")
    return sensor_fit


def orthonormalize(matrix_world: np.ndarray) -> np.ndarray:
    """Drop scale/shear from an object matrix, keeping rotation and location."""
    matrix = np.asarray(matrix_world, dtype=np.float64).reshape(4, 4).copy()
    u, _, vt = np.linalg.svd(matrix[:3, :3])
    rotation = u @ vt
    if np.linalg.det(rotation) < 0:
        raise CameraError("camera object matrix is mirrored (negative scale)")
    matrix[:3, :3] = rotation
    matrix[3] = (0.0, 0.0, 0.0, 1.0)
    return matrix


def from_blender(
    *,
    lens: float,
    sensor_width: float,
    sensor_height: float,
    sensor_fit: str,
    shift_x: float,
    shift_y: float,
    resolution_x: int,
    resolution_y: int,
    matrix_world: Any,
    camera_type: str = "PERSP",
    pixel_aspect_x: float = 1.0,
    pixel_aspect_y: float = 1.0,
    name: str = "",
) -> Camera:
    """A Blender perspective camera (data + object matrix + render size) as a ``Camera``.

    ``resolution_*`` are the final render size in pixels (resolution times percentage).
    """
    if camera_type != "PERSP":
        kind = {"ORTHO": "orthographic", "PANO": "panoramic"}.get(camera_type, camera_type.lower())
        raise CameraError(
            f"camera {name!r} is {kind}; Gen3D needs a perspective camera "
            "(Camera properties > Lens > Type: Perspective)"
        )
    if lens <= 0 or sensor_width <= 0 or sensor_height <= 0:
        raise CameraError(f"camera {name!r}: lens and sensor size must be positive")
    # Blender's viewplane (BKE_camera_params_compute_viewplane), in x-pixel units.
    y_correction = pixel_aspect_y / pixel_aspect_x
    fit = _sensor_fit(sensor_fit, resolution_x * pixel_aspect_x, resolution_y * pixel_aspect_y)
    sensor = sensor_height if sensor_fit == "VERTICAL" else sensor_width
    view_factor = resolution_x if fit == "HORIZONTAL" else y_correction * resolution_y
    fx = lens / sensor * view_factor
    fy = fx / y_correction
    cx = resolution_x / 2.0 - shift_x * view_factor
    cy = resolution_y / 2.0 + shift_y * view_factor / y_correction
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    camera_to_world = orthonormalize(matrix_world) @ CV_FROM_BLENDER
    return Camera(K, rigid_inverse(camera_to_world), resolution_x, resolution_y, name)


def to_blender(camera: Camera, sensor_width: float = 36.0) -> dict[str, Any]:
    """Blender camera settings that reproduce ``camera`` (square pixels, AUTO sensor fit).

    Returns ``lens, sensor_width, sensor_fit, shift_x, shift_y, resolution_x, resolution_y,
    matrix_world`` (a 4x4 list).  Blender has one focal length, so fx and fy must agree.
    """
    fx, fy, cx, cy = camera.K[0, 0], camera.K[1, 1], camera.K[0, 2], camera.K[1, 2]
    if abs(fx - fy) > 1e-3 * fx:
        raise CameraError(f"camera {camera.name!r}: fx={fx:.2f} and fy={fy:.2f} differ; Blender needs square pixels")
    fit_size = max(camera.width, camera.height)
    return {
        "lens": fx / fit_size * sensor_width,
        "sensor_width": sensor_width,
        "sensor_fit": "AUTO",
        "shift_x": (camera.width / 2.0 - cx) / fit_size,
        "shift_y": (cy - camera.height / 2.0) / fit_size,
        "resolution_x": camera.width,
        "resolution_y": camera.height,
        "matrix_world": (camera.camera_to_world @ CV_FROM_BLENDER).tolist(),
    }


def relative_to(cameras: Sequence[Camera], reference: Camera) -> list[Camera]:
    """Re-express cameras in ``reference``'s OpenCV frame (the engine world)."""
    reference_to_world = reference.camera_to_world
    return [cam.with_pose(cam.world_to_camera @ reference_to_world) for cam in cameras]


def panorama_from_world(engine_to_world: np.ndarray) -> np.ndarray:
    """3x3 rotation taking client-world directions into the sky panorama's axes, for a world
    placed by ``engine_to_world`` (its rotation only: scale and translation do not turn the sky)."""
    u, _, vt = np.linalg.svd(np.asarray(engine_to_world, np.float64)[:3, :3])
    return PANORAMA_FROM_ENGINE @ (u @ vt).T


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 transform to [N, 3] points."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def project(camera: Camera, points_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points [N, 3] -> (continuous pixel coordinates [N, 2], depth [N])."""
    camera_points = transform_points(camera.world_to_camera, points_world)
    depth = camera_points[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        pixels = (camera_points @ camera.K.T)[:, :2] / depth[:, None]
    return pixels, depth


def pixel_rays(camera: Camera) -> np.ndarray:
    """Camera-space directions with z = 1 through every pixel centre: [H, W, 3]."""
    cols = np.arange(camera.width, dtype=np.float64) + 0.5
    rows = np.arange(camera.height, dtype=np.float64) + 0.5
    u, v = np.meshgrid(cols, rows)
    fx, fy, cx, cy = camera.K[0, 0], camera.K[1, 1], camera.K[0, 2], camera.K[1, 2]
    return np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], axis=-1)
