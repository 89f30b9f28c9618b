"""The sky stage: a far layer for the pixels that have no depth, instead of black holes.

Which pixels are sky (``sky_mask``): those the depth stage left without depth — MoGe-2's own
validity mask (it marks the sky and whatever else lies at infinity), RGB-D depth that is 0,
non-finite or Blender's "hit nothing" value — plus, with ``sky_far_limit`` set, those farther
than that many metres (for a depth model without a mask, e.g. Depth Anything).  Specks smaller
than ``MIN_SKY_AREA`` of the image are sensor drop-outs, not sky: they stay holes.

One coherent source (``SkyPanorama``): an equirectangular panorama around the input camera,
filled once.  The input's sky pixels are projected into it; the rest is filled by the profile's
``sky_inpaint`` backend (OpenCV offline, Stable Diffusion inpainting in the full profile), with
the panorama wrapped left-right so its back seam closes.  Which directions are sky beyond the
input's frame follows the skyline: per longitude, everything above the lowest sky pixel seen
there (longitudes the input never saw take the skyline interpolated around the circle).  Every
expansion view samples its sky from this one panorama, so the sky is the same from view to view.

Represented far away (``far_points``, ``train_sky``): Gaussians on a sphere of radius
``RADIUS_FACTOR`` x the input's farthest depth around the input camera, one per panorama cell
of the sky region (fewer towards the poles), initialised from the panorama and trained briefly on
renders of it from cameras at the centre (their mask: the sky region only).  They are a
separate set: the scene's Gaussians never see them in training (the scene's masks leave sky
out), and they are exported beside the world as ``sky.ply`` with the panorama as ``sky.png``.

Panorama convention (engine.cameras, shared with the add-on's World background): column 0..W
runs over longitude -pi..pi with the input's forward direction at the centre and its right at
three quarters; row 0 is straight up (the input camera's -y), row H straight down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage

from . import images
from .cameras import PANORAMA_FROM_ENGINE, Camera, intrinsics_from_fov, look_at, pixel_rays

if TYPE_CHECKING:
    from .pipeline import Run
    from .splat.gaussians import Gaussians

MIN_SKY_AREA = 0.002  # fraction of the image: smaller depth-less specks are drop-outs, not sky
RADIUS_FACTOR = 10.0  # the sky sphere's radius, times the input's farthest depth: little parallax on a path
PANORAMA_WIDTH_PER_PIXEL = 4  # panorama width = this x the working long side (about the input's pixel size)
GAUSSIAN_STRIDE = 2  # one sky Gaussian per this many panorama pixels each way (at the equator)
REGION_MARGIN_PX = 3  # the sky region reaches this far below the skyline: no seam behind the scene's edge
# WonderWorld trains its sky ~400 steps.  On a CPU a step costs seconds, and the initialisation
# alone already matches the panorama (47 dB on the example at 96 px; 30 steps: 61 dB).
TRAIN_STEPS = {"cuda": 300, "cpu": 0}


# ---------------------------------------------------------------------------------------------
# which pixels are sky
# ---------------------------------------------------------------------------------------------


def sky_mask(depth: np.ndarray, far_limit: float = 0.0) -> np.ndarray:
    """Sky pixels of the input view: no depth, or farther than ``far_limit`` metres (0: no limit)."""
    depth = np.asarray(depth, np.float32)
    sky = ~(np.isfinite(depth) & (depth > 0))
    if far_limit > 0:
        sky |= np.isfinite(depth) & (depth > far_limit)
    labels, count = ndimage.label(sky)
    if count:
        sizes = ndimage.sum_labels(sky, labels, index=np.arange(1, count + 1))
        keep = np.concatenate([[False], sizes >= MIN_SKY_AREA * sky.size])
        sky = keep[labels]
    return sky


# ---------------------------------------------------------------------------------------------
# the panorama's geometry
# ---------------------------------------------------------------------------------------------


def panorama_size(long_side: int) -> tuple[int, int]:
    """(width, height) of the panorama for a working long side; width even, 2:1."""
    height = max(8, PANORAMA_WIDTH_PER_PIXEL * long_side // 2)
    return 2 * height, height


def panorama_directions(width: int, height: int) -> np.ndarray:
    """Engine-world unit directions of every panorama pixel centre: [H, W, 3]."""
    lon = (np.arange(width) + 0.5) / width * 2 * math.pi - math.pi
    lat = math.pi / 2 - (np.arange(height) + 0.5) / height * math.pi
    return latlon_directions(*np.meshgrid(lat, lon, indexing="ij"))


def latlon_directions(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    panorama = np.stack([np.cos(lat) * np.cos(lon), -np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)
    return panorama @ PANORAMA_FROM_ENGINE  # rows are vectors: this applies the transpose (the inverse)


def direction_pixels(directions: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Continuous panorama pixel coordinates (x, y; pixel centres at +0.5) of engine directions."""
    p = directions @ PANORAMA_FROM_ENGINE.T
    lon = np.arctan2(-p[..., 1], p[..., 0])
    lat = np.arctan2(p[..., 2], np.hypot(p[..., 0], p[..., 1]))
    return (lon + math.pi) / (2 * math.pi) * width, (math.pi / 2 - lat) / math.pi * height


def camera_directions(camera: Camera) -> np.ndarray:
    """Engine-world unit directions through every pixel centre of ``camera``: [H, W, 3]."""
    rays = pixel_rays(camera) @ camera.world_to_camera[:3, :3]  # camera -> world: R^T applied to row vectors
    return rays / np.linalg.norm(rays, axis=-1, keepdims=True)


REMAP_LIMIT = 32767  # OpenCV's remap: maps and images under SHRT_MAX a side
ROW = 4096


def _remap(array: np.ndarray, x: np.ndarray, y: np.ndarray, nearest: bool = False) -> np.ndarray:
    """``array`` sampled at panorama pixel coordinates, wrapping in longitude."""
    import cv2

    height = array.shape[0]
    mode = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    map_x = (x - 0.5).astype(np.float32)
    map_y = np.clip(y - 0.5, 0, height - 1).astype(np.float32)
    if max(map_x.shape) < REMAP_LIMIT:
        return cv2.remap(array, map_x, map_y, mode, borderMode=cv2.BORDER_WRAP)
    # OpenCV's remap takes maps under 32767 a side (the far points' 1 x n map at 512 px is wider):
    # sample the points as rows of a 2-D map and put them back in their shape.
    count = map_x.size
    rows = -(-count // ROW)
    flat_x, flat_y = (np.resize(m.ravel(), rows * ROW).reshape(rows, ROW) for m in (map_x, map_y))
    sampled = cv2.remap(array, flat_x, flat_y, mode, borderMode=cv2.BORDER_WRAP)
    return sampled.reshape(rows * ROW, *array.shape[2:])[:count].reshape(*map_x.shape, *array.shape[2:])


# ---------------------------------------------------------------------------------------------
# the panorama
# ---------------------------------------------------------------------------------------------


@dataclass
class SkyPanorama:
    colour: np.ndarray  # [H, W, 3] float32 display colours, filled everywhere
    region: np.ndarray  # [H, W] bool: the directions that are sky (the sky Gaussians' support)
    radius: float  # metres: the far sphere's radius around the input camera

    def sample(self, camera: Camera) -> tuple[np.ndarray, np.ndarray]:
        """(colour [H, W, 3], sky [H, W]) of the panorama seen by ``camera`` (sky at infinity)."""
        height, width = self.region.shape
        x, y = direction_pixels(camera_directions(camera), width, height)
        colour = _remap(self.colour, x, y)
        sky = _remap(self.region.astype(np.uint8), x, y, nearest=True).astype(bool)
        return colour, sky

    def background(self, camera: Camera) -> np.ndarray:
        """What the sky layer shows behind the scene in ``camera``: the sky, black elsewhere."""
        colour, sky = self.sample(camera)
        return np.where(sky[..., None], colour, 0.0).astype(np.float32)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"colour": self.colour.astype(np.float16), "region": self.region, "radius": np.float64(self.radius)}

    @classmethod
    def from_arrays(cls, data: dict[str, np.ndarray]) -> "SkyPanorama":
        return cls(np.asarray(data["colour"], np.float32), np.asarray(data["region"], bool), float(data["radius"]))


def project_input(image: np.ndarray, sky: np.ndarray, camera: Camera, size: tuple[int, int]):
    """The input view in the panorama: (colour, known sky colour, sky seen, seen at all) [H, W].

    Colours are taken one pixel inside the sky, so none blends in a non-sky neighbour."""
    import cv2

    width, height = size
    directions = panorama_directions(width, height)
    local = directions @ camera.world_to_camera[:3, :3].T
    ahead = local[..., 2] > 1e-6
    z = np.where(ahead, local[..., 2], 1.0)
    u = camera.K[0, 0] * local[..., 0] / z + camera.K[0, 2]
    v = camera.K[1, 1] * local[..., 1] / z + camera.K[1, 2]
    seen = ahead & (u >= 0) & (u < camera.width) & (v >= 0) & (v < camera.height)
    map_u, map_v = np.where(seen, u - 0.5, -1).astype(np.float32), np.where(seen, v - 0.5, -1).astype(np.float32)
    colour = cv2.remap(np.ascontiguousarray(image, np.float32), map_u, map_v, cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE)
    inner = ndimage.binary_erosion(sky, iterations=1, border_value=1)
    column = np.where(seen, np.floor(u), 0).astype(int).clip(0, camera.width - 1)
    row = np.where(seen, np.floor(v), 0).astype(int).clip(0, camera.height - 1)
    return colour, seen & inner[row, column], seen & sky[row, column], seen


def skyline_region(sky_seen: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """The sky directions of the whole panorama: the sky seen, and what the input did not see
    above the skyline (per column, the lowest sky row seen; unseen columns interpolated)."""
    height, width = sky_seen.shape
    rows = np.arange(height)[:, None]
    columns = np.flatnonzero(sky_seen.any(axis=0))
    if not len(columns):
        return np.zeros_like(sky_seen)
    lowest = (height - 1 - np.argmax(sky_seen[::-1], axis=0))[columns]
    skyline = np.interp(np.arange(width), columns, lowest, period=width)
    region = sky_seen | (~seen & (rows <= skyline[None, :]))
    return ndimage.binary_dilation(region, structure=np.array([[0], [1], [1]], bool), iterations=REGION_MARGIN_PX)


def fill_panorama(colour: np.ndarray, known: np.ndarray, inpainter, **inpaint_options: Any) -> np.ndarray:
    """The panorama filled by ``inpainter`` from its known pixels, wrapped left-right so both
    sides of the back seam are filled from the same context."""
    width = colour.shape[1]
    pad = width // 4
    wrapped = np.concatenate([colour[:, -pad:], colour, colour[:, :pad]], axis=1)
    wrapped_known = np.concatenate([known[:, -pad:], known, known[:, :pad]], axis=1)
    filled = inpainter.inpaint(wrapped, ~wrapped_known, **inpaint_options)
    return np.clip(np.asarray(filled, np.float32)[:, pad : pad + width], 0.0, 1.0)


def build_panorama(image: np.ndarray, sky: np.ndarray, depth: np.ndarray, camera: Camera, long_side: int,
                   inpainter, **inpaint_options: Any) -> SkyPanorama | None:
    """The sky panorama of the input view, or None when it has no sky."""
    size = panorama_size(long_side)
    colour, known, sky_seen, seen = project_input(image, sky, camera, size)
    if not known.any():
        return None
    region = skyline_region(sky_seen, seen)
    filled = fill_panorama(np.where(known[..., None], colour, 0.0).astype(np.float32), known, inpainter, **inpaint_options)
    far = float(np.max(depth[depth > 0])) if np.any(depth > 0) else 1.0
    return SkyPanorama(filled, region, RADIUS_FACTOR * far)


# ---------------------------------------------------------------------------------------------
# far Gaussians
# ---------------------------------------------------------------------------------------------


@dataclass
class FarPoints:
    """The sky's starting points: the PointCloud fields ``init_gaussians`` reads."""

    xyz: np.ndarray
    rgb: np.ndarray
    radius: np.ndarray


def far_points(panorama: SkyPanorama) -> FarPoints:
    """Points on the far sphere over the sky region, about equally spaced (fewer rows' points
    towards the poles), coloured from the panorama; each one's radius is its spacing."""
    height, width = panorama.region.shape
    rows = max(2, height // GAUSSIAN_STRIDE)
    step = math.pi / rows
    lats, lons = [], []
    for i in range(rows):
        lat = math.pi / 2 - (i + 0.5) * step
        count = max(1, round(2 * rows * math.cos(lat)))
        lons.append((np.arange(count) + 0.5) / count * 2 * math.pi - math.pi)
        lats.append(np.full(count, lat))
    directions = latlon_directions(np.concatenate(lats), np.concatenate(lons))
    x, y = direction_pixels(directions, width, height)
    inside = _remap(panorama.region.astype(np.uint8), x[None], y[None], nearest=True)[0].astype(bool)
    rgb = _remap(panorama.colour, x[None], y[None])[0]
    n = int(inside.sum())
    return FarPoints(
        (panorama.radius * directions[inside]).astype(np.float32),
        rgb[inside].astype(np.float32),
        np.full(n, panorama.radius * step, np.float32),
    )


def centre_cameras(panorama: SkyPanorama) -> list[Camera]:
    """Six 90-degree cameras at the centre (a cube map), at about the panorama's pixel size."""
    size = max(8, panorama.region.shape[0] // 2)
    K = intrinsics_from_fov(size, size, 90.0)
    axes = {"front": (0, 0, 1), "back": (0, 0, -1), "right": (1, 0, 0), "left": (-1, 0, 0),
            "up": (0, -1, 0), "down": (0, 1, 0)}
    views = []
    for name, forward in axes.items():
        up = (0.0, 0.0, 1.0) if name in ("up", "down") else (0.0, -1.0, 0.0)
        views.append(Camera(K, look_at((0.0, 0.0, 0.0), forward, up), size, size, f"sky-{name}"))
    return views


def train_sky(panorama: SkyPanorama, device: str, seed: int = 0, steps: int | None = None,
              progress=None, should_stop=None, antialiased: bool = True) -> "Gaussians":
    """Far Gaussians initialised from the panorama and fitted to it, on sky pixels only."""
    from .splat import SplatConfig, TrainView, init_gaussians, train_gaussians

    points = far_points(panorama)
    views = []
    for camera in centre_cameras(panorama):
        colour, sky = panorama.sample(camera)
        if sky.any():
            views.append(TrainView(camera, colour, sky))
    config = SplatConfig(
        iterations=TRAIN_STEPS["cuda" if str(device).startswith("cuda") else "cpu"] if steps is None else steps,
        sh_degree=0, init_opacity=0.9, init_scale_mult=0.7, refine_start_iter=1_000_000, batch_size=2,
        means_lr=1.6e-5, means_lr_final=1.6e-7, seed=seed, antialiased=antialiased,
    )
    init = init_gaussians(points, sh_degree=0, opacity=config.init_opacity, scale_mult=config.init_scale_mult,
                          device=device)
    if not config.iterations:
        return replace(init, antialiased=antialiased)
    return train_gaussians(views, points, config, device=device, init=init, progress=progress, should_stop=should_stop)


def with_sky(scene: "Gaussians", sky: "Gaussians | None") -> "Gaussians":
    """The scene and its sky as one set (the sky's higher SH bands zero) for a render."""
    import torch

    from .splat.gaussians import Gaussians

    if sky is None:
        return scene
    sky = sky.to(scene.device)
    rest = torch.zeros(len(sky), scene.shN.shape[1], 3, dtype=scene.shN.dtype, device=scene.device)
    rest[:, : sky.shN.shape[1]] = sky.shN[:, : scene.shN.shape[1]]
    parts = [(scene.means, sky.means), (scene.quats, sky.quats), (scene.scales, sky.scales),
             (scene.opacities, sky.opacities), (scene.sh0, sky.sh0), (scene.shN, rest)]
    return Gaussians(*(torch.cat(pair) for pair in parts), antialiased=scene.antialiased)


def read_world(job_dir: Path | str, device: str = "cpu") -> "Gaussians":
    """A finished job's Gaussians with its sky (``sky.ply``, when it has one): what to render."""
    from .export import read_gaussians_ply

    job_dir = Path(job_dir)
    sky_file = job_dir / "sky.ply"
    sky = read_gaussians_ply(sky_file, device) if sky_file.is_file() else None
    return with_sky(read_gaussians_ply(job_dir / "gaussians.ply", device), sky)


# ---------------------------------------------------------------------------------------------
# the stage
# ---------------------------------------------------------------------------------------------


def stage_sky(run: "Run", out: Path) -> None:
    """The sky panorama and its far Gaussians, when the input view has sky (else nothing)."""
    from .export import write_gaussians_ply

    data = run.read("depth")
    sky = data.get("sky")
    if sky is None or not sky.any():
        return
    image = run.read("image")
    camera = run.read("input_camera")
    camera = Camera(data["K"], camera.world_to_camera, camera.width, camera.height, camera.name)
    prompt = run.read("scene_prompt")["prompt"]
    run.progress(0.0, "sky panorama")
    panorama = build_panorama(
        image, sky, data["depth"], camera, max(image.shape[:2]), run.backend("sky_inpaint"),
        prompt=f"sky, {prompt}" if prompt else "sky", negative_prompt=run.request.get("negative_prompt") or "",
        seed=run.settings.seed, progress=lambda f: run.progress(0.5 * f, "sky panorama"), should_stop=run.should_stop,
    )
    if panorama is None:
        return
    run.write("sky_panorama", **panorama.arrays())
    images.save_png(run.output_path("sky_image"), panorama.colour)
    run.preview("sky/sky.png")
    gaussians = train_sky(panorama, run.device, seed=run.settings.seed, antialiased=run.settings.antialiased,
                          progress=lambda f: run.progress(0.5 + 0.5 * f, "sky Gaussians"), should_stop=run.should_stop)
    write_gaussians_ply(run.output_path("sky_gaussians"), gaussians)

