"""Layer backends: which pixels are foreground, and the hidden background region Ω to inpaint.

``create(name, ctx, settings=None)``; ``backend.layers(image, depth, *, should_stop=None) -> Layers``.  Backends:

* ``depth-edges``  no network: segments are the regions bounded by depth discontinuities.
* ``sam``          segment-anything: the automatic mask generator plus box/point prompts placed
                   on the regions bounded by depth discontinuities (``SamPredictor``).

Both hand their candidate masks and scores to ``apply_layer_rules`` (the paper's rules, one
function): keep masks with predicted IoU > 0.85 and area within 0.5 %..60 % of the image; a kept
mask is foreground when its median depth is below θ_d, the 35th percentile of the depth; the
hidden region is Ω = M_fg ∩ {D > θ_d}, widened along the depth edges next to the foreground so
no halo of foreground colour stays in the background layer.  Every number is a ``LayerSettings``
field, overridable through the profile's settings.

SAM weights: ``engine.models.resolve_source(ctx, "sam")`` gives the original checkpoint (a plain
state dict, ``.pth``) or a ``.safetensors`` file; it is read without pickle (``weights_only``) and
the architecture (vit_h / vit_l / vit_b, or ``tiny:sam``) is read off the tensor shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from .depth_geometry import depth_edges
from .errors import BadInputError, Cancelled, MissingModelError, cancel_inside
from .models import Layout, resolve_source


@dataclass(frozen=True)
class LayerSettings:
    mask_iou_threshold: float = 0.85  # keep masks whose predicted IoU is above this
    mask_min_area: float = 0.005  # ... and whose area is at least this fraction of the image
    mask_max_area: float = 0.60  # ... and at most this fraction
    foreground_percentile: float = 35.0  # θ_d: a mask is foreground when its median depth < this percentile
    depth_edge_threshold: float = 0.1  # a depth edge: neighbours whose depths differ by more than 10 %
    hidden_dilation_px: int = 3  # how far Ω grows along depth edges around the foreground
    sam_points_per_side: int = 32  # automatic generator grid (32 = segment-anything's default)

    @classmethod
    def from_ctx(cls, ctx) -> "LayerSettings":
        """Defaults, overridden by any same-named key of the profile's settings."""
        given = getattr(getattr(ctx, "profile", None), "settings", None) or {}
        return cls(**{f.name: given[f.name] for f in fields(cls) if f.name in given})


@dataclass
class Layers:
    foreground: np.ndarray  # bool [H, W]: union of the foreground masks
    hidden: np.ndarray  # bool [H, W]: Ω, the hidden background region to inpaint
    masks: list[np.ndarray] = field(default_factory=list)  # bool [H, W] each: the kept masks
    info: dict[str, Any] = field(default_factory=dict)  # θ_d, counts, which masks are foreground


# ---------------------------------------------------------------------------------------------
# the paper's rules (shared by every backend)
# ---------------------------------------------------------------------------------------------


def apply_layer_rules(
    masks: list[np.ndarray], scores: list[float], depth: np.ndarray, settings: LayerSettings = LayerSettings()
) -> Layers:
    """The paper's layer rules on candidate masks (bool [H, W]) with their predicted IoU scores."""
    depth = np.asarray(depth, dtype=np.float32)
    valid = np.isfinite(depth) & (depth > 0)
    if not valid.any():
        raise BadInputError("the depth map has no valid pixel: cannot split foreground from background")
    total = depth.size
    theta = float(np.percentile(depth[valid], settings.foreground_percentile))

    kept: list[np.ndarray] = []
    foreground_ids: list[int] = []
    for mask, score in zip(masks, scores):
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != depth.shape:
            raise BadInputError(f"mask {mask.shape} and depth {depth.shape} differ in size")
        area = mask.sum() / total
        if not (score > settings.mask_iou_threshold and settings.mask_min_area <= area <= settings.mask_max_area):
            continue
        kept.append(mask)
        inside = depth[mask & valid]
        if inside.size and float(np.median(inside)) < theta:
            foreground_ids.append(len(kept) - 1)

    foreground = np.zeros(depth.shape, bool)
    for i in foreground_ids:
        foreground |= kept[i]
    # Ω: the background hidden behind the foreground is everything the foreground covers.  The
    # paper writes M_fg ∩ {D > θ_d}; read literally with the visible depth D that is only the
    # masks' spill onto the background, and the layer behind an object would stay empty, so we
    # take the whole foreground (documented in docs/METHOD-CHOICES.md).
    hidden = foreground & valid
    if foreground.any() and settings.hidden_dilation_px > 0:
        radius = settings.hidden_dilation_px
        band = ndimage.binary_dilation(depth_edges(depth, settings.depth_edge_threshold, both_sides=True), iterations=radius)
        hidden |= ndimage.binary_dilation(foreground, iterations=radius) & band
    return Layers(
        foreground=foreground,
        hidden=hidden,
        masks=kept,
        info={
            "theta_d": theta,
            "candidates": len(masks),
            "kept": len(kept),
            "foreground_masks": foreground_ids,
        },
    )


def depth_regions(depth: np.ndarray, threshold: float) -> list[np.ndarray]:
    """Connected regions bounded by depth edges; edge pixels join their nearest region."""
    edges = depth_edges(depth, threshold, both_sides=True)
    labels, count = ndimage.label(~edges)
    if count == 0:
        return []
    if edges.any():
        _, (rows, cols) = ndimage.distance_transform_edt(labels == 0, return_indices=True)
        labels = labels[rows, cols]
    return [labels == i for i in range(1, count + 1)]


# ---------------------------------------------------------------------------------------------
# depth-edges (offline)
# ---------------------------------------------------------------------------------------------


class DepthEdgeLayers:
    """Segments from depth discontinuities.  They carry no predicted IoU, so each scores 1.0 and
    only the area and depth rules apply."""

    name = "depth-edges"

    def __init__(self, ctx, settings: LayerSettings | None = None):
        self.settings = settings or LayerSettings.from_ctx(ctx)

    def layers(self, image: np.ndarray, depth: np.ndarray, *, should_stop=None) -> Layers:
        _check_pair(image, depth)
        if should_stop and should_stop():  # one quick pass: checked once
            raise Cancelled("cancelled before the depth-edge layers")
        regions = depth_regions(depth, self.settings.depth_edge_threshold)
        return apply_layer_rules(regions, [1.0] * len(regions), depth, self.settings)


def _check_pair(image: np.ndarray, depth: np.ndarray) -> None:
    if np.ndim(image) != 3 or np.shape(image)[2] != 3:
        raise BadInputError(f"expected an RGB image [H, W, 3], got shape {np.shape(image)}")
    if np.shape(depth) != np.shape(image)[:2]:
        raise BadInputError(f"depth {np.shape(depth)} and image {np.shape(image)[:2]} differ in size")


# ---------------------------------------------------------------------------------------------
# SAM
# ---------------------------------------------------------------------------------------------

SAM_CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors")
# A SAM source is one checkpoint file (the official ones are bare state-dict pickles, read with
# torch.load(weights_only=True) below), or a folder holding one: sam_checkpoint() checks that.
SAM_LAYOUT = Layout(small_files=("*.pth", "*.pt", "*.safetensors"))


def load_state_dict(path: Path, device: Any = "cpu") -> dict[str, Any]:
    """A checkpoint's tensors, read to ``device``, never unpickling code."""
    import torch

    device = torch.device(device)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device=str(device))
    # Memory-mapped when the tensors go on to a GPU: read once, straight into the copies there.
    state = torch.load(str(path), map_location=device, weights_only=True, mmap=device.type == "cuda")
    return state.get("model", state) if isinstance(state.get("model", None), dict) else state


def sam_architecture(state: dict[str, Any]) -> dict[str, Any]:
    """The constructor arguments of a SAM checkpoint, read off its tensor shapes.

    Gives segment-anything's own vit_h / vit_l / vit_b settings for the official checkpoints
    and the tiny model's settings for ``tiny:sam``.  The mask decoder's head count has no
    tensor of its own: it is SAM's 8.
    """
    def count(prefix: str, suffix: str) -> int:
        return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix) and k.endswith(suffix)})

    try:
        patch = state["image_encoder.patch_embed.proj.weight"]  # [D, 3, p, p]
        embed_dim, patch_size = int(patch.shape[0]), int(patch.shape[-1])
        grid = int(state["image_encoder.pos_embed"].shape[1])  # [1, g, g, D]
        depth = count("image_encoder.blocks.", ".norm1.weight")
        rel = [state[f"image_encoder.blocks.{i}.attn.rel_pos_h"] for i in range(depth)]
        global_ids = [i for i, r in enumerate(rel) if r.shape[0] == 2 * grid - 1]
        windowed = [r for i, r in enumerate(rel) if i not in global_ids]
        return {
            "img_size": grid * patch_size,
            "patch_size": patch_size,
            "embed_dim": embed_dim,
            "depth": depth,
            "num_heads": embed_dim // int(rel[0].shape[1]),
            "mlp_ratio": state["image_encoder.blocks.0.mlp.lin1.weight"].shape[0] / embed_dim,
            "global_attn_indexes": global_ids,
            "window_size": (int(windowed[0].shape[0]) + 1) // 2 if windowed else 0,
            "prompt_dim": int(state["image_encoder.neck.0.weight"].shape[0]),
            "mask_in_chans": int(state["prompt_encoder.mask_downscaling.3.weight"].shape[0]),
            "decoder_depth": count("mask_decoder.transformer.layers.", ".norm1.weight"),
            "decoder_mlp_dim": int(state["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0]),
            "decoder_heads": 8,
            "iou_head_depth": count("mask_decoder.iou_prediction_head.layers.", ".weight"),
            "iou_head_hidden_dim": int(state["mask_decoder.iou_prediction_head.layers.0.weight"].shape[0]),
            "num_multimask_outputs": int(state["mask_decoder.mask_tokens.weight"].shape[0]) - 1,
        }
    except (KeyError, IndexError) as exc:
        raise BadInputError(f"not a segment-anything checkpoint (missing {exc})") from None


def build_sam(arch: dict[str, Any]):
    """A ``Sam`` of segment-anything's own classes, wired as its ``_build_sam`` does."""
    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    grid = arch["img_size"] // arch["patch_size"]
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=arch["depth"],
            embed_dim=arch["embed_dim"],
            img_size=arch["img_size"],
            mlp_ratio=arch["mlp_ratio"],
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=arch["num_heads"],
            patch_size=arch["patch_size"],
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=arch["global_attn_indexes"],
            window_size=arch["window_size"],
            out_chans=arch["prompt_dim"],
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=arch["prompt_dim"],
            image_embedding_size=(grid, grid),
            input_image_size=(arch["img_size"], arch["img_size"]),
            mask_in_chans=arch["mask_in_chans"],
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=arch["num_multimask_outputs"],
            transformer=TwoWayTransformer(
                depth=arch["decoder_depth"],
                embedding_dim=arch["prompt_dim"],
                mlp_dim=arch["decoder_mlp_dim"],
                num_heads=arch["decoder_heads"],
            ),
            transformer_dim=arch["prompt_dim"],
            iou_head_depth=arch["iou_head_depth"],
            iou_head_hidden_dim=arch["iou_head_hidden_dim"],
        ),
        pixel_mean=PIXEL_STATS["pixel_mean"],
        pixel_std=PIXEL_STATS["pixel_std"],
    )


# segment-anything's pixel normalisation: buffers its checkpoints do not hold (not persistent).
PIXEL_STATS = {"pixel_mean": [123.675, 116.28, 103.53], "pixel_std": [58.395, 57.12, 57.375]}


TINY_SAM_ARCH: dict[str, Any] = {
    "img_size": 128,  # 8x8 patch grid
    "patch_size": 16,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "mlp_ratio": 4.0,
    "global_attn_indexes": [1],
    "window_size": 4,
    "prompt_dim": 32,
    "mask_in_chans": 4,
    "decoder_depth": 2,
    "decoder_mlp_dim": 64,
    "decoder_heads": 8,
    "iou_head_depth": 3,
    "iou_head_hidden_dim": 32,
    "num_multimask_outputs": 3,
}


def build_tiny_sam(folder: Path) -> None:
    """A tiny SAM with random weights, saved as the official checkpoints are: a bare state dict."""
    import torch

    torch.manual_seed(0)
    torch.save(build_sam(TINY_SAM_ARCH).state_dict(), folder / "sam_tiny.pth")


def sam_checkpoint(path: Path) -> Path:
    if path.is_file():
        return path
    found = sorted(p for p in path.iterdir() if p.suffix in SAM_CHECKPOINT_SUFFIXES)
    if len(found) != 1:
        raise MissingModelError(
            "sam", [str(path)], hint=f"the folder must hold exactly one SAM checkpoint ({', '.join(SAM_CHECKPOINT_SUFFIXES)})"
        )
    return found[0]


def load_sam(path: Path, device: Any = "cpu"):
    """SAM from a checkpoint, its tensors read straight to ``device`` and built on the meta device
    (ViT-H's 636M parameters are never randomly initialised only to be overwritten)."""
    import torch

    from .models import meta_loaded

    state = load_state_dict(sam_checkpoint(path), device)
    arch = sam_architecture(state)
    stats = {name: torch.tensor(values, device=device).view(-1, 1, 1) for name, values in PIXEL_STATS.items()}
    model = meta_loaded(lambda: build_sam(arch), state, stats)
    if model is None:  # a checkpoint that does not match key for key: the strict error names the keys
        model = build_sam(arch)
        model.load_state_dict(state, strict=True)
    return model.to(device).eval()


class SamLayers:
    """SAM masks (automatic grid + prompts on depth regions) under the paper's rules."""

    name = "sam"

    def __init__(self, ctx, settings: LayerSettings | None = None):
        import torch
        from segment_anything import SamAutomaticMaskGenerator, SamPredictor

        self.settings = settings or LayerSettings.from_ctx(ctx)
        self.device = torch.device(ctx.device)
        # fp16 weights on CUDA (ViT-H: 1.25 GB instead of 2.5); fp32 on the CPU, where fp16 is slow.
        dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.model = load_sam(resolve_source(ctx, "sam", SAM_LAYOUT), self.device).to(dtype=dtype)
        self.predictor = SamPredictor(self.model)
        # The generator's own IoU filter uses the paper's threshold; the rules apply it again.
        self.generator = SamAutomaticMaskGenerator(
            self.model,
            points_per_side=self.settings.sam_points_per_side,
            pred_iou_thresh=self.settings.mask_iou_threshold,
        )

    def _autocast(self):
        import torch

        # Autocast over the fp16 weights: SamPredictor and the mask generator feed float32 tensors
        # (point coordinates, pixels) that must meet the weights in fp16.
        return torch.autocast("cuda", dtype=torch.float16, enabled=self.device.type == "cuda")

    def candidate_masks(self, image: np.ndarray, depth: np.ndarray, should_stop=None) -> tuple[list[np.ndarray], list[float], int]:
        """(masks, predicted IoUs, how many came from depth prompts).

        ``should_stop()`` is polled before every module of SAM runs (each block of the image
        encoder, the prompt encoder and mask decoder of each batch of grid prompts and of each
        depth prompt), so a cancel ends SAM within one block.
        """
        import torch

        pixels = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        masks: list[np.ndarray] = []
        scores: list[float] = []
        with torch.inference_mode(), self._autocast(), cancel_inside(self.model, should_stop, "SAM"):
            for record in self.generator.generate(pixels):
                masks.append(np.asarray(record["segmentation"], dtype=bool))
                scores.append(float(record["predicted_iou"]))
            self.predictor.set_image(pixels)
            prompted = 0
            for box, point in depth_prompts(depth, self.settings):
                result, iou, _ = self.predictor.predict(
                    point_coords=point[None], point_labels=np.array([1]), box=box, multimask_output=False
                )
                masks.append(np.asarray(result[0], dtype=bool))
                scores.append(float(iou[0]))
                prompted += 1
            self.predictor.reset_image()
        return masks, scores, prompted

    def layers(self, image: np.ndarray, depth: np.ndarray, *, should_stop=None) -> Layers:
        _check_pair(image, depth)
        masks, scores, prompted = self.candidate_masks(image, depth, should_stop)
        masks, scores = deduplicate(masks, scores)
        result = apply_layer_rules(masks, scores, depth, self.settings)
        result.info["prompted"] = prompted
        return result


def depth_prompts(depth: np.ndarray, settings: LayerSettings) -> list[tuple[np.ndarray, np.ndarray]]:
    """(box [x0, y0, x1, y1], point [x, y]) in pixels for each depth region of a keepable size.

    The point is the region's most interior pixel (farthest from its border), so it lies inside
    the region even when the region is not convex.
    """
    prompts = []
    for region in depth_regions(depth, settings.depth_edge_threshold):
        if not settings.mask_min_area <= region.mean() <= settings.mask_max_area:
            continue
        rows, cols = np.nonzero(region)
        inside = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
        row, col = np.unravel_index(int(np.argmax(inside)), inside.shape)
        box = np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], dtype=np.float32)
        prompts.append((box, np.array([col + 0.5, row + 0.5], dtype=np.float32)))
    return prompts


def deduplicate(masks: list[np.ndarray], scores: list[float], iou: float = 0.9) -> tuple[list[np.ndarray], list[float]]:
    """Best-scored first; drop a mask overlapping an already kept one by more than ``iou``."""
    kept: list[np.ndarray] = []
    kept_scores: list[float] = []
    for i in np.argsort(scores)[::-1]:
        mask = masks[i]
        if any((mask & other).sum() > iou * (mask | other).sum() for other in kept):
            continue
        kept.append(mask)
        kept_scores.append(scores[i])
    return kept, kept_scores


# ---------------------------------------------------------------------------------------------

BACKENDS = {"depth-edges": DepthEdgeLayers, "sam": SamLayers}

# "tiny:<name>" builders for engine.models
BUILDERS = {"sam": build_tiny_sam}


def create(name: str, ctx, settings: LayerSettings | None = None):
    try:
        cls = BACKENDS[name]
    except KeyError:
        raise BadInputError(f"unknown layers backend {name!r}; choose one of: {', '.join(BACKENDS)}") from None
    return cls(ctx, settings)
