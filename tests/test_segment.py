"""Layer rules on synthetic masks, the depth-edges backend, and tiny SAM end to end.

Tiny SAM has random weights: its masks mean nothing.  Its tests check the loading path (a bare
state dict, read without pickle, architecture from the tensor shapes) and the output contract.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine import segment as seg
from engine.profiles import BackendContext, Profile

H = W = 64


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _ctx(cache_dir: str = "", models=None, settings=None) -> BackendContext:
    profile = Profile(name="test", description="", backends={}, models=models or {}, settings=settings or {})
    return BackendContext(profile=profile, cache_dir=cache_dir, allow_download=False, warn=lambda s: None, note=lambda s: None)


def _box(r0, r1, c0, c1) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[r0:r1, c0:c1] = True
    return mask


def _scene() -> np.ndarray:
    """A far wall at 8 m with a box 2 m away (rows/cols 20..40)."""
    depth = np.full((H, W), 8.0, np.float32)
    depth[20:40, 20:40] = 2.0
    return depth


# --- the rules --------------------------------------------------------------------------------


def test_rules_filter_by_predicted_iou_and_area():
    depth = _scene()
    good = _box(20, 40, 20, 40)  # 9.8 % of the image
    low_iou = _box(0, 10, 0, 10)
    tiny = _box(0, 2, 0, 2)  # 0.1 %
    huge = _box(0, 64, 0, 48)  # 75 %
    layers = seg.apply_layer_rules([good, low_iou, tiny, huge], [0.95, 0.80, 0.99, 0.99], depth)
    assert len(layers.masks) == 1 and np.array_equal(layers.masks[0], good)
    assert layers.info["candidates"] == 4 and layers.info["kept"] == 1
    # exactly at the threshold is not "above" it
    assert seg.apply_layer_rules([good], [0.85], depth).masks == []


def test_foreground_is_median_depth_below_35th_percentile():
    rng = np.random.default_rng(0)
    depth = rng.uniform(1.0, 10.0, (H, W)).astype(np.float32)
    theta = np.percentile(depth, 35)
    near = _box(0, 16, 0, 16)
    far = _box(40, 56, 40, 56)
    depth[near] = theta * 0.9
    depth[far] = theta * 1.1
    theta = np.percentile(depth, 35)
    layers = seg.apply_layer_rules([near, far], [0.9, 0.9], depth)
    assert layers.info["theta_d"] == pytest.approx(theta)
    assert layers.info["foreground_masks"] == [0]
    assert np.array_equal(layers.foreground, near)
    # a different percentile setting moves θ_d and with it the decision
    wide = seg.apply_layer_rules([near, far], [0.9, 0.9], depth, seg.LayerSettings(foreground_percentile=95.0))
    assert wide.info["foreground_masks"] == [0, 1]


def test_hidden_region_is_the_foreground_widened_along_depth_edges():
    depth = _scene()
    # A SAM-like mask that spills two pixels past the box onto the wall.
    mask = _box(18, 42, 18, 42)
    layers = seg.apply_layer_rules([mask], [0.9], depth, seg.LayerSettings(hidden_dilation_px=0))
    assert layers.info["foreground_masks"] == [0]
    assert np.array_equal(layers.hidden, mask)  # everything behind the foreground is hidden background
    # Widened: pixels just outside the mask, along the box's depth edge, join Ω ...
    widened = seg.apply_layer_rules([_box(20, 40, 20, 40)], [0.9], depth, seg.LayerSettings(hidden_dilation_px=3))
    assert widened.hidden[19, 30] and widened.hidden[30, 40] and widened.hidden[20, 30] and widened.hidden[30, 30]
    # ... but only near the edge: the wall far from the box stays out.
    assert not widened.hidden[5, 5] and not widened.hidden[10, 30]


def test_no_foreground_means_no_hidden_region():
    layers = seg.apply_layer_rules([_box(0, 10, 0, 20)], [0.9], _scene())
    assert not layers.foreground.any() and not layers.hidden.any()


def test_settings_come_from_the_profile():
    settings = seg.LayerSettings.from_ctx(_ctx(settings={"mask_iou_threshold": 0.5, "unrelated": 1}))
    assert settings.mask_iou_threshold == 0.5 and settings.mask_max_area == 0.60


# --- depth-edges backend --------------------------------------------------------------------------


def test_depth_edges_backend_finds_the_near_box():
    depth = _scene()
    image = np.zeros((H, W, 3), np.float32)
    layers = seg.create("depth-edges", _ctx()).layers(image, depth)
    assert layers.foreground.dtype == bool and layers.foreground.shape == (H, W)
    box = _box(20, 40, 20, 40)
    assert (layers.foreground & box).sum() >= 0.9 * box.sum()
    assert not layers.foreground[:10].any()
    assert layers.hidden.any() and not layers.hidden[:10].any()  # a ring along the box edge


# --- SAM -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["vit_h", "vit_l", "vit_b"])
def test_architecture_of_official_checkpoints_is_recovered(kind):
    import torch
    from segment_anything import sam_model_registry

    with torch.device("meta"):  # shapes only: no memory, no weights
        official = sam_model_registry[kind]()
        arch = seg.sam_architecture(official.state_dict())
        rebuilt = seg.build_sam(arch)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in official.state_dict().items()}
    assert arch["window_size"] == 14 and arch["img_size"] == 1024 and arch["decoder_heads"] == 8


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory):
    cache = tmp_path_factory.mktemp("sam-cache")
    ctx = _ctx(str(cache), {"sam": ("tiny:sam",)}, {"sam_points_per_side": 4})
    return seg.create("sam", ctx), cache


def test_tiny_sam_checkpoint_is_a_bare_state_dict(tiny_sam):
    import torch

    backend, cache = tiny_sam
    path = cache / "tiny" / "sam" / "sam_tiny.pth"
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert seg.sam_architecture(state) == seg.TINY_SAM_ARCH
    loaded = backend.model.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_sam_loads_without_a_random_initialisation_into_the_same_model(tiny_sam):
    """Built on the meta device: the global random generator is untouched (a load on a prefetch
    thread cannot disturb the stage running beside it) and every tensor is the checkpoint's."""
    import torch

    _, cache = tiny_sam
    path = cache / "tiny" / "sam" / "sam_tiny.pth"
    before = torch.random.get_rng_state()
    model = seg.load_sam(path)
    assert torch.equal(torch.random.get_rng_state(), before)
    state = seg.load_state_dict(path)
    reference = seg.build_sam(seg.sam_architecture(state))
    reference.load_state_dict(state)
    ours, theirs = dict(model.named_buffers()), dict(reference.named_buffers())
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in theirs)  # pixel_mean/std too
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), reference.parameters()))


def test_a_sam_checkpoint_missing_a_tensor_is_refused_naming_it(tiny_sam, tmp_path):
    import torch

    _, cache = tiny_sam
    state = seg.load_state_dict(cache / "tiny" / "sam" / "sam_tiny.pth")
    del state["mask_decoder.iou_token.weight"]
    torch.save(state, tmp_path / "cut.pth")
    with pytest.raises(RuntimeError, match="mask_decoder.iou_token.weight"):
        seg.load_sam(tmp_path / "cut.pth")


def test_tiny_sam_runs_generator_and_prompts_end_to_end(tiny_sam):
    backend, _ = tiny_sam
    image = np.random.default_rng(1).random((H, W, 3), dtype=np.float32)
    depth = _scene()
    masks, scores, prompted = backend.candidate_masks(image, depth)
    assert prompted == len(seg.depth_prompts(depth, backend.settings)) >= 1
    assert len(masks) == len(scores) >= prompted
    assert all(m.shape == (H, W) and m.dtype == bool for m in masks)
    assert all(isinstance(s, float) for s in scores)

    layers = backend.layers(image, depth)
    assert layers.foreground.shape == layers.hidden.shape == (H, W)
    assert layers.foreground.dtype == layers.hidden.dtype == bool
    assert layers.info["prompted"] == prompted and layers.info["kept"] == len(layers.masks)


def test_cancel_during_the_sam_image_encoder_stops_it_after_the_block_that_ran(tiny_sam):
    """The image encoder is one call: a cancel set by its first block stops SAM before the second
    block and before any mask decoding; the hooks are gone after."""
    from engine.errors import Cancelled

    backend, _ = tiny_sam
    modules = [*backend.model.image_encoder.blocks, backend.model.mask_decoder]
    ran = [0] * len(modules)
    handles = [module.register_forward_hook(lambda m, i, o, index=index: ran.__setitem__(index, ran[index] + 1))
               for index, module in enumerate(modules)]
    try:
        image = np.random.default_rng(1).random((H, W, 3), dtype=np.float32)
        with pytest.raises(Cancelled, match="SAM"):
            backend.candidate_masks(image, _scene(), should_stop=lambda: ran[0] > 0)
    finally:
        for handle in handles:
            handle.remove()
    assert ran == [1] + [0] * (len(modules) - 1)
    assert not any(module._forward_pre_hooks for module in backend.model.modules())


def test_tiny_sam_keeps_fp32_weights_on_the_cpu(tiny_sam):
    import torch

    assert all(p.dtype == torch.float32 for p in tiny_sam[0].model.parameters())


@pytest.mark.gpu
def test_tiny_sam_fp16_weights_on_cuda(tmp_path):
    """fp16 weights under autocast: the generator's whole path (filters, boxes, NMS) and the prompts."""
    import torch
    from segment_anything import SamAutomaticMaskGenerator

    ctx = _ctx(str(tmp_path), {"sam": ("tiny:sam",)}, {"sam_points_per_side": 4})
    ctx.device = "cuda"
    backend = seg.create("sam", ctx)
    assert all(p.dtype == torch.float16 for p in backend.model.parameters())
    image = np.random.default_rng(1).random((H, W, 3), dtype=np.float32)
    pixels = (image * 255).astype(np.uint8)
    keep_all = SamAutomaticMaskGenerator(backend.model, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    with torch.inference_mode(), backend._autocast():
        records = keep_all.generate(pixels)
    assert records and all(np.isfinite(r["predicted_iou"]) for r in records)
    layers = backend.layers(image, _scene())
    assert layers.info["prompted"] >= 1 and layers.foreground.shape == (H, W)


def test_depth_prompts_sit_inside_their_regions():
    prompts = seg.depth_prompts(_scene(), seg.LayerSettings())
    assert len(prompts) == 1  # the wall is 90 % of the image: too large to keep, not prompted
    box, point = prompts[0]
    np.testing.assert_array_equal(box, [20, 20, 40, 40])
    assert 20 <= point[0] <= 40 and 20 <= point[1] <= 40


def test_deduplicate_keeps_the_best_of_near_copies():
    a = _box(10, 30, 10, 30)
    b = _box(10, 30, 10, 31)
    c = _box(40, 50, 40, 50)
    kept, scores = seg.deduplicate([a, b, c], [0.9, 0.95, 0.5])
    assert scores == [0.95, 0.5] and np.array_equal(kept[0], b)
