"""Geometry backends: metric z-depth and intrinsics of one image, behind one interface.

``create(name, ctx, **kwargs) -> DepthBackend``; ``backend.estimate(image, camera_hint,
should_stop=None)`` returns a ``DepthEstimate`` (the networks poll ``should_stop`` before each of
their modules and raise ``Cancelled``).  Backends:

* ``given``          RGB-D input: the depth map arrives with the image (``create(..., depth=...)``).
* ``completion``     no network: completes the holes of a rendered expansion view's depth from
                     the far side of each hole (``estimate(..., rendered_depth=, hole_mask=)``).
* ``moge``           MoGe-2 (``dlr-moge``): metric point map, depth, validity mask, intrinsics.
* ``depth-anything`` Depth Anything V2 through ``transformers``; metric checkpoints give metres,
                     relative ones are mapped to metres by a documented near/far default.

Model weights come through ``engine.models.resolve_source`` (model names ``"moge"`` and
``"depth-anything"``); ``tiny:moge`` / ``tiny:depth-anything`` are built here (``BUILDERS``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .cameras import Camera
from .depth_geometry import complete_far_side, sanitize_depth
from .errors import BadInputError, cancel_inside
from .models import TRANSFORMERS, Layout, resolve_source, resolve_weights

# With no camera given, the focal length WorldScore uses (f = 500 px at 512 px wide,
# horizontal field of view ~54.2 degrees), scaled to the image width.
DEFAULT_FOCAL_PER_WIDTH = 500.0 / 512.0

# Relative (affine-invariant inverse) depth is mapped linearly in inverse depth so that the
# nearest pixel lands at RELATIVE_NEAR_M and the farthest at RELATIVE_FAR_M metres.
RELATIVE_NEAR_M = 1.0
RELATIVE_FAR_M = 20.0


@dataclass
class DepthEstimate:
    depth: np.ndarray  # float32 [H, W] metres, z-depth; 0 where not valid
    K: np.ndarray  # float64 [3, 3] pixel intrinsics (pixel centres at +0.5)
    valid: np.ndarray  # bool [H, W]


class DepthBackend(Protocol):
    name: str

    def estimate(self, image: np.ndarray, camera_hint: Camera | None = None, **kwargs: Any) -> DepthEstimate: ...


# ---------------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------------


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise BadInputError(f"expected an RGB image [H, W, 3], got shape {image.shape}")
    return image.astype(np.float32, copy=False)


def default_intrinsics(width: int, height: int) -> np.ndarray:
    focal = DEFAULT_FOCAL_PER_WIDTH * width
    return np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])


def hint_intrinsics(camera_hint: Camera | None, width: int, height: int) -> np.ndarray | None:
    """The hint's K at the image's resolution (same field of view), or None without a hint."""
    if camera_hint is None:
        return None
    if abs(camera_hint.width / camera_hint.height - width / height) > 0.01 * width / height:
        raise BadInputError(
            f"camera {camera_hint.name!r} is {camera_hint.width}x{camera_hint.height} but the image is "
            f"{width}x{height}: their aspect ratios differ"
        )
    return camera_hint.resized(width, height).K.copy()


def _resize_to(array: np.ndarray, height: int, width: int) -> np.ndarray:
    import cv2

    return cv2.resize(array, (width, height), interpolation=cv2.INTER_LINEAR)


# ---------------------------------------------------------------------------------------------
# given (RGB-D)
# ---------------------------------------------------------------------------------------------


class GivenDepth:
    """The input's own depth map (RGB-D input): validated, never estimated."""

    name = "given"

    def __init__(self, ctx, depth: np.ndarray | None = None):
        if depth is None:
            raise BadInputError("the 'given' geometry needs a depth map with the input image (RGB-D input)")
        depth = np.asarray(depth)
        if depth.ndim == 3 and depth.shape[2] == 1:
            depth = depth[..., 0]
        if depth.ndim != 2:
            raise BadInputError(f"depth map must be [H, W], got shape {depth.shape}")
        self.depth, self.valid = sanitize_depth(depth)
        if not self.valid.any():
            raise BadInputError("the depth map has no valid pixel (all zero, negative or non-finite)")
        self.ctx = ctx

    def estimate(self, image: np.ndarray, camera_hint: Camera | None = None, **_: Any) -> DepthEstimate:
        height, width = _check_image(image).shape[:2]
        if self.depth.shape != (height, width):
            raise BadInputError(
                f"depth map is {self.depth.shape[1]}x{self.depth.shape[0]} but the image is {width}x{height}; "
                "they must be the same size"
            )
        K = hint_intrinsics(camera_hint, width, height)
        if K is None:
            self.ctx.warn("no camera with the RGB-D input: assuming a default focal length")
            K = default_intrinsics(width, height)
        return DepthEstimate(self.depth.copy(), K, self.valid.copy())


# ---------------------------------------------------------------------------------------------
# completion (offline expansion geometry)
# ---------------------------------------------------------------------------------------------


class CompletionDepth:
    """Offline expansion geometry: the rendered depth with its holes completed classically."""

    name = "completion"

    def __init__(self, ctx, gap: float = 0.1):
        self.ctx = ctx
        self.gap = gap

    def estimate(
        self,
        image: np.ndarray,
        camera_hint: Camera | None = None,
        *,
        rendered_depth: np.ndarray | None = None,
        hole_mask: np.ndarray | None = None,
        **_: Any,  # should_stop: one quick classical pass, nothing to check inside
    ) -> DepthEstimate:
        height, width = _check_image(image).shape[:2]
        if rendered_depth is None or hole_mask is None:
            raise BadInputError("the 'completion' geometry needs the rendered depth and hole mask of the view")
        if np.shape(rendered_depth) != (height, width):
            raise BadInputError(f"rendered depth {np.shape(rendered_depth)} does not match the image {height}x{width}")
        # Pixels the render left without depth are holes too.
        depth, valid = complete_far_side(rendered_depth, np.asarray(hole_mask, bool) | ~(np.asarray(rendered_depth) > 0), min_gap=self.gap)
        K = hint_intrinsics(camera_hint, width, height)
        if K is None:
            raise BadInputError("the 'completion' geometry needs the camera of the rendered view")
        return DepthEstimate(depth, K, valid)


# ---------------------------------------------------------------------------------------------
# MoGe-2
# ---------------------------------------------------------------------------------------------

_HEAD = {
    "dim_res_blocks": [32, 16, 16, 8, 8],
    "num_res_blocks": [0, 1, 1, 1, 0],
    "res_block_in_norm": "none",
    "res_block_hidden_norm": "none",
    "resamplers": ["conv_transpose", "conv_transpose", "conv_transpose", "bilinear"],
}

# The layout of MoGe-2's published config (configs/train/v2.json of microsoft/MoGe) with every
# width shrunk.  The backbone is chosen by name and dinov2_vits14 is the smallest DINOv2 that
# MoGe's hub loader offers; its depth is fixed by that name.
TINY_MOGE_CONFIG: dict[str, Any] = {
    "encoder": {"backbone": "dinov2_vits14", "intermediate_layers": [2, 5, 8, 11], "dim_out": 32},
    "neck": {**_HEAD, "dim_in": [34, 2, 2, 2, 2], "dim_out": None},
    "points_head": {**_HEAD, "dim_in": [32, 16, 16, 8, 8], "dim_out": [None, None, None, None, 3]},
    "mask_head": {**_HEAD, "dim_in": [32, 16, 16, 8, 8], "dim_out": [None, None, None, None, 1]},
    "normal_head": {**_HEAD, "dim_in": [32, 16, 16, 8, 8], "dim_out": [None, None, None, None, 3]},
    "scale_head": {"dims": [384, 32, 1]},
    "remap_output": "exp",
    "num_tokens_range": [16, 64],
}


def build_tiny_moge(folder: Path) -> None:
    """A tiny MoGe-2 with random weights, written as the real ``model.pt`` checkpoint."""
    import torch
    from moge.model.v2 import MoGeModel

    torch.manual_seed(0)
    model = MoGeModel(**TINY_MOGE_CONFIG)
    with torch.no_grad():
        # Random output layers would call nearly every pixel invalid; a positive mask bias keeps
        # the tiny model's (meaningless) depth flowing through the rest of the pipeline.
        model.mask_head.output_blocks[-1].bias.fill_(4.0)
    torch.save({"model_config": TINY_MOGE_CONFIG, "model": model.state_dict()}, folder / "model.pt")


# MoGe publishes one pickle, model.pt ({"model_config": dict, "model": state dict}); MoGe's own
# MoGeModel.from_pretrained reads it with torch.load(weights_only=True): tensors and plain
# containers only, never pickled code.
MOGE_LAYOUT = Layout(required=("model.pt",), small_files=())
DEPTH_ANYTHING_LAYOUT = Layout(components=(("", TRANSFORMERS),), required=("config.json", "preprocessor_config.json"))


def load_moge(checkpoint: Path, device: Any = "cpu"):
    """MoGe-2 from its ``model.pt`` as MoGe's own ``from_pretrained`` loads it (a non-strict load
    of the checkpoint's state dict), but built and read on ``device``: on a GPU its random
    initialisation takes milliseconds instead of seconds on the CPU, and the tensors are copied
    once.  (It cannot be built on the meta device: DINOv2's constructor reads tensor values.)"""
    import torch
    from moge.model.v2 import MoGeModel

    device = torch.device(device)
    data = torch.load(str(checkpoint), map_location=device, weights_only=True, mmap=device.type == "cuda")
    with torch.device(device):
        model = MoGeModel(**data["model_config"])
    model.load_state_dict(data["model"], strict=False)
    return model


def _moge_checkpoint(path: Path) -> Path:
    return path / "model.pt" if path.is_dir() else path


class MoGeDepth:
    """MoGe-2: metric depth, validity mask and intrinsics (the user's focal length when given)."""

    name = "moge"

    def __init__(self, ctx):
        import torch

        self.ctx = ctx
        checkpoint = _moge_checkpoint(resolve_source(ctx, "moge", MOGE_LAYOUT))
        self.device = torch.device(ctx.device)
        model = load_moge(checkpoint, self.device)
        self.fp16 = self.device.type == "cuda"
        self.model = (model.half() if self.fp16 else model).to(self.device).eval()

    def estimate(self, image: np.ndarray, camera_hint: Camera | None = None, *, should_stop=None, **_: Any) -> DepthEstimate:
        import torch

        image = _check_image(image)
        height, width = image.shape[:2]
        K = hint_intrinsics(camera_hint, width, height)
        fov_x = None if K is None else math.degrees(2.0 * math.atan(width / (2.0 * K[0, 0])))
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).to(self.device)
        with warnings.catch_warnings(), cancel_inside(self.model, should_stop, "MoGe-2"):
            # MoGe wraps its fp32 post-processing in a CPU autocast that torch says it ignores.
            warnings.filterwarnings("ignore", message=".*CPU autocast.*")
            output = self.model.infer(tensor, fov_x=fov_x, use_fp16=self.fp16)
        depth = output["depth"].float().cpu().numpy()
        valid = output["mask"].cpu().numpy() if "mask" in output else np.ones(depth.shape, bool)
        depth, finite = sanitize_depth(depth)
        if K is None:
            # MoGe's intrinsics are normalised by the image size (principal point 0.5, 0.5).
            K = np.diag([width, height, 1.0]) @ output["intrinsics"].float().cpu().numpy().astype(np.float64)
        return DepthEstimate(depth, K, valid & finite)


# ---------------------------------------------------------------------------------------------
# Depth Anything V2 (transformers)
# ---------------------------------------------------------------------------------------------


def build_tiny_depth_anything(folder: Path) -> None:
    """A tiny Depth Anything V2 (random weights) saved as a transformers repo folder."""
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    torch.manual_seed(0)
    backbone = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        patch_size=14,
        image_size=56,
        out_features=["stage1", "stage2", "stage3", "stage4"],
        reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=32,
        neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16,
        head_hidden_size=8,
        depth_estimation_type="relative",
    )
    DepthAnythingForDepthEstimation(config).save_pretrained(str(folder))
    # The real repos' preprocessor settings, at 56 px instead of 518.
    DPTImageProcessor(
        size={"height": 56, "width": 56},
        keep_aspect_ratio=True,
        ensure_multiple_of=14,
        resample=3,
        do_pad=False,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(str(folder))


def relative_to_metric(disparity: np.ndarray, near: float = RELATIVE_NEAR_M, far: float = RELATIVE_FAR_M) -> np.ndarray:
    """Affine-invariant inverse depth -> metres, linear in inverse depth between near and far."""
    low, high = float(np.min(disparity)), float(np.max(disparity))
    normalised = (disparity - low) / max(high - low, 1e-12)
    return (1.0 / (1.0 / far + normalised * (1.0 / near - 1.0 / far))).astype(np.float32)


class DepthAnythingDepth:
    """Depth Anything V2: metric checkpoints give metres; relative ones use near/far defaults."""

    name = "depth-anything"

    def __init__(self, ctx, near: float = RELATIVE_NEAR_M, far: float = RELATIVE_FAR_M):
        import torch
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        self.ctx = ctx
        self.near, self.far = near, far
        resolved = resolve_weights(ctx, "depth-anything", DEPTH_ANYTHING_LAYOUT)
        folder = str(resolved.path)
        self.device = torch.device(ctx.device)
        dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.processor = AutoImageProcessor.from_pretrained(folder)
        model = AutoModelForDepthEstimation.from_pretrained(folder, dtype=dtype, **resolved.weights[""].kwargs())
        self.model = model.to(self.device).eval()
        self.metric = getattr(self.model.config, "depth_estimation_type", "relative") == "metric"
        if not self.metric:
            ctx.note(f"depth-anything gives relative depth: mapped to {near:g}..{far:g} m")

    def estimate(self, image: np.ndarray, camera_hint: Camera | None = None, *, should_stop=None, **_: Any) -> DepthEstimate:
        import torch

        image = _check_image(image)
        height, width = image.shape[:2]
        inputs = self.processor(images=np.clip(image, 0.0, 1.0), return_tensors="pt", do_rescale=False)
        pixel_values = inputs["pixel_values"].to(self.device, self.model.dtype)
        with torch.inference_mode(), cancel_inside(self.model, should_stop, "Depth Anything"):
            predicted = self.model(pixel_values=pixel_values).predicted_depth  # [1, h, w]
        predicted = _resize_to(predicted[0].float().cpu().numpy(), height, width)
        depth = predicted if self.metric else relative_to_metric(predicted, self.near, self.far)
        depth, valid = sanitize_depth(depth)
        K = hint_intrinsics(camera_hint, width, height)
        return DepthEstimate(depth, default_intrinsics(width, height) if K is None else K, valid)


# ---------------------------------------------------------------------------------------------

BACKENDS = {
    "given": GivenDepth,
    "completion": CompletionDepth,
    "moge": MoGeDepth,
    "depth-anything": DepthAnythingDepth,
}

# "tiny:<name>" builders for engine.models
BUILDERS = {"moge": build_tiny_moge, "depth-anything": build_tiny_depth_anything}


def create(name: str, ctx, **kwargs: Any) -> DepthBackend:
    """A geometry backend; ``kwargs`` go to its constructor (e.g. ``depth=`` for ``given``)."""
    try:
        cls = BACKENDS[name]
    except KeyError:
        raise BadInputError(f"unknown geometry backend {name!r}; choose one of: {', '.join(BACKENDS)}") from None
    return cls(ctx, **kwargs)
