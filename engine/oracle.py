"""Oracle backends for ``eval-world`` only (no profile names them): the truth, or the truth made wrong on purpose.

``eval-world`` puts only our part of world expansion on trial (alignment, lifting, merging,
3DGS), so the models are replaced by Blender's ground truth:

* ``OracleInpainter`` fills a view's holes with Blender's true render of that camera;
* ``OracleDepth`` returns the view's true z-depth passed through a seeded model of how
  monocular depth estimators fail (``ERROR_LEVELS``), applied in this order:

  1. **blurred depth edges**: within ``2·edge_blur_px`` pixels of a depth discontinuity (a
     relative jump over 5 %) the depth is replaced by its Gaussian blur (σ = ``edge_blur_px``,
     over valid pixels only), so pixels between a foreground and the background get depths in
     between: the "flying pixels" of real estimators;
  2. **smooth warp**: depth × exp(w(x, y)), w a sum of six random plane waves of at most 1.5
     cycles per image, scaled so max |w| = ``warp`` (log depth: ``warp`` = 0.08 is ±8 %);
  3. **per-view scale and shift**: × exp(``scale``·n₁) + ``shift``·n₂·median(depth), n ~ N(0, 1).

  Pixels without true depth (sky) stay without depth.  The same (seed, level, view) always
  gives the same error.

| level | scale (log σ) | shift (× median) | warp (max log) | edge blur (px) |
|---|---|---|---|---|
| none | 0 | 0 | 0 | 0 |
| mild | 0.05 | 0.01 | 0.03 | 1 |
| typical | 0.15 | 0.03 | 0.08 | 2 |
| severe | 0.30 | 0.06 | 0.15 | 3 |
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .cameras import Camera
from .depth import DepthEstimate
from .errors import BadInputError
from .depth_geometry import depth_edges


@dataclass(frozen=True)
class ErrorLevel:
    scale: float  # standard deviation of the per-view log scale error
    shift: float  # standard deviation of the per-view shift, times the view's median depth
    warp: float  # largest |log| of the smooth multiplicative warp
    edge_blur_px: float  # Gaussian sigma of the blur across depth edges (0: sharp edges)

    def to_dict(self) -> dict:
        return asdict(self)


ERROR_LEVELS: dict[str, ErrorLevel] = {
    "none": ErrorLevel(0.0, 0.0, 0.0, 0.0),
    "mild": ErrorLevel(0.05, 0.01, 0.03, 1.0),
    "typical": ErrorLevel(0.15, 0.03, 0.08, 2.0),
    "severe": ErrorLevel(0.30, 0.06, 0.15, 3.0),
}
EDGE_JUMP = 0.05  # relative depth jump that makes a discontinuity for the edge blur
WARP_WAVES = 6
WARP_MAX_CYCLES = 1.5  # per image (the larger side)


def _blur_valid(depth: np.ndarray, valid: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    weight = gaussian_filter(valid.astype(np.float64), sigma, mode="nearest")
    total = gaussian_filter(np.where(valid, depth, 0.0).astype(np.float64), sigma, mode="nearest")
    return np.where(weight > 1e-6, total / np.maximum(weight, 1e-6), 0.0)


def smooth_warp(shape: tuple[int, int], amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth random log-depth field [H, W] with max |w| = amplitude (0 gives zeros)."""
    height, width = shape
    if amplitude <= 0:
        return np.zeros(shape)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    field = np.zeros(shape)
    for _ in range(WARP_WAVES):
        cycles = rng.uniform(0.3, WARP_MAX_CYCLES)
        angle = rng.uniform(0, 2 * math.pi)
        field += rng.normal() * np.cos(2 * math.pi * cycles * (x * math.cos(angle) + y * math.sin(angle)) + rng.uniform(0, 2 * math.pi))
    return amplitude * field / max(np.abs(field).max(), 1e-12)


def corrupt_depth(depth: np.ndarray, level: ErrorLevel, rng: np.random.Generator) -> np.ndarray:
    """The true z-depth [H, W] (0 = none) as an estimator with these errors would return it."""
    depth = np.asarray(depth, dtype=np.float64)
    valid = np.isfinite(depth) & (depth > 0)
    out = np.where(valid, depth, 0.0)
    if level.edge_blur_px > 0:
        from scipy.ndimage import binary_dilation

        band = binary_dilation(depth_edges(out, EDGE_JUMP), iterations=max(1, math.ceil(2 * level.edge_blur_px)))
        out = np.where(band & valid, _blur_valid(out, valid, level.edge_blur_px), out)
    out = out * np.exp(smooth_warp(out.shape, level.warp, rng))
    median = float(np.median(out[valid])) if valid.any() else 0.0
    out = out * math.exp(level.scale * rng.normal()) + level.shift * rng.normal() * median
    return np.where(valid & (out > 0), out, 0.0).astype(np.float32)


@dataclass
class OracleView:
    camera: Camera  # engine world, working resolution
    image: np.ndarray  # [H, W, 3] float32, Blender's render
    depth: np.ndarray  # [H, W] float32 true z-depth


class OracleInpainter:
    """Fills holes with Blender's render of the view being expanded (found by its known pixels)."""

    name = "oracle-truth"

    def __init__(self, views: list[OracleView]):
        self.views = views
        self.last_view = -1  # which view the last call filled (OracleDepth checks it)

    def inpaint(self, image, mask, *, depth=None, prompt="", negative_prompt="", seed=0, progress=None, should_stop=None):
        known = ~np.asarray(mask, dtype=bool)
        image = np.asarray(image, dtype=np.float32)
        if not known.any():
            raise BadInputError("oracle inpainting needs some rendered pixels to know which view it fills")
        errors = [float(np.abs(view.image[known] - image[known]).mean()) for view in self.views]
        self.last_view = int(np.argmin(errors))
        return np.where(mask[..., None], self.views[self.last_view].image, image).astype(np.float32)


class OracleDepth:
    """The true depth of the expanded view through ``corrupt_depth`` at one error level."""

    def __init__(self, views: list[OracleView], level: str, seed: int, inpainter: OracleInpainter | None = None):
        if level not in ERROR_LEVELS:
            raise BadInputError(f"unknown depth error level {level!r}; choose one of {', '.join(ERROR_LEVELS)}")
        self.views, self.level, self.seed, self.inpainter = views, level, seed, inpainter
        self.name = f"oracle-depth-{level}"

    def view_index(self, camera: Camera) -> int:
        for index, view in enumerate(self.views):
            if np.allclose(view.camera.world_to_camera, camera.world_to_camera, atol=1e-5):
                return index
        raise BadInputError(f"oracle depth: camera {camera.name!r} is none of the evaluated path's views")

    def estimate(self, image, camera_hint: Camera | None = None, **_) -> DepthEstimate:
        if camera_hint is None:
            raise BadInputError("oracle depth needs the camera of the view")
        index = self.view_index(camera_hint)
        if self.inpainter is not None and self.inpainter.last_view not in (-1, index):
            raise BadInputError(f"oracle inpainting filled view {self.inpainter.last_view} but depth is asked for view {index}")
        rng = np.random.default_rng([self.seed, list(ERROR_LEVELS).index(self.level), index])
        depth = corrupt_depth(self.views[index].depth, ERROR_LEVELS[self.level], rng)
        return DepthEstimate(depth, camera_hint.K.copy(), depth > 0)
