"""Geometry backends: given depth, offline completion, tiny MoGe-2 and tiny Depth Anything.

The tiny models have random weights: their depth means nothing.  These tests prove the loading
path (real checkpoint layouts, from_pretrained) and the output contract, not accuracy.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine import depth as depth_mod
from engine.cameras import Camera, intrinsics_from_fov
from engine.errors import BadInputError, MissingModelError
from engine.profiles import BackendContext, Profile

H = W = 64


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("gen3d-cache"))


def _ctx(cache_dir: str, models: dict[str, tuple[str, ...]], **kwargs) -> BackendContext:
    profile = Profile(name="test", description="", backends={}, models=models)
    return BackendContext(profile=profile, cache_dir=cache_dir, allow_download=False, warn=lambda s: None, note=lambda s: None, **kwargs)


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((H, W, 3), dtype=np.float32)


def _camera(fov: float = 60.0) -> Camera:
    return Camera(intrinsics_from_fov(W, H, fov), np.eye(4), W, H, "hint")


def _check(estimate: depth_mod.DepthEstimate) -> None:
    assert estimate.depth.shape == (H, W) and estimate.depth.dtype == np.float32
    assert estimate.valid.shape == (H, W) and estimate.valid.dtype == bool
    assert estimate.K.shape == (3, 3) and estimate.K.dtype == np.float64
    assert np.all(np.isfinite(estimate.depth))
    assert np.all(estimate.depth[estimate.valid] > 0) and np.all(estimate.depth[~estimate.valid] == 0)


# --- given ----------------------------------------------------------------------------------


def test_given_depth_marks_bad_pixels_invalid():
    raw = np.full((H, W), 3.0, np.float32)
    raw[0, 0], raw[0, 1], raw[0, 2], raw[0, 3] = np.nan, np.inf, 0.0, -1.0
    backend = depth_mod.create("given", _ctx("", {}), depth=raw)
    estimate = backend.estimate(_image(), _camera())
    _check(estimate)
    assert not estimate.valid[0, :4].any() and estimate.valid.sum() == H * W - 4
    np.testing.assert_allclose(estimate.K, _camera().K)


def test_given_depth_wrong_size_is_a_clear_error():
    backend = depth_mod.create("given", _ctx("", {}), depth=np.ones((32, 32), np.float32))
    with pytest.raises(BadInputError, match="32x32 but the image is 64x64"):
        backend.estimate(_image(), None)


def test_given_depth_called_without_a_camera_hint_uses_the_worldscore_focal():
    # The pipeline always passes the input camera (the client's, or --fov's): tests/test_requests.py.
    backend = depth_mod.create("given", _ctx("", {}), depth=np.ones((H, W), np.float32))
    estimate = backend.estimate(_image(), None)
    assert estimate.K[0, 0] == pytest.approx(W * 500 / 512) and estimate.K[0, 2] == W / 2


# --- completion -----------------------------------------------------------------------------


def test_completion_fills_holes_from_the_far_side():
    # Near plane (2 m) on the left, far plane (6 m) on the right; the disocclusion hole a camera
    # moving right would see opens at the boundary.  It must be filled with the far plane.
    rendered = np.full((H, W), 6.0, np.float32)
    rendered[:, :28] = 2.0
    hole = np.zeros((H, W), bool)
    hole[8:56, 28:40] = True
    rendered[hole] = 0.0
    backend = depth_mod.create("completion", _ctx("", {}))
    estimate = backend.estimate(_image(), _camera(), rendered_depth=rendered, hole_mask=hole)
    _check(estimate)
    assert estimate.valid.all()
    np.testing.assert_allclose(estimate.depth[hole], 6.0, rtol=1e-4)
    np.testing.assert_array_equal(estimate.depth[~hole], rendered[~hole])


# --- MoGe-2 -----------------------------------------------------------------------------------


def test_tiny_moge_round_trip_through_from_pretrained(cache_dir):
    import torch

    ctx = _ctx(cache_dir, {"moge": ("tiny:moge",)})
    backend = depth_mod.create("moge", ctx)
    checkpoint = depth_mod.Path(cache_dir) / "tiny" / "moge" / "model.pt"
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)  # the real layout, no pickle
    assert set(saved) == {"model_config", "model"} and saved["model_config"] == depth_mod.TINY_MOGE_CONFIG
    loaded = backend.model.state_dict()
    assert all(torch.equal(loaded[k], saved["model"][k]) for k in saved["model"])

    free = backend.estimate(_image(), None)
    _check(free)
    assert free.valid.any()
    assert free.K[0, 2] == pytest.approx(W / 2) and free.K[1, 2] == pytest.approx(H / 2)

    hinted = backend.estimate(_image(), _camera(70.0))
    _check(hinted)
    np.testing.assert_allclose(hinted.K, _camera(70.0).K)
    assert hinted.valid.any()


def test_moge_loads_as_moge_does_built_on_its_device(cache_dir):
    import torch
    from moge.model.v2 import MoGeModel

    ctx = _ctx(cache_dir, {"moge": ("tiny:moge",)})
    depth_mod.create("moge", ctx)  # builds the tiny checkpoint into the cache
    checkpoint = depth_mod.Path(cache_dir) / "tiny" / "moge" / "model.pt"
    ours, theirs = depth_mod.load_moge(checkpoint).eval(), MoGeModel.from_pretrained(checkpoint).eval()
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))
    image = torch.from_numpy(_image().transpose(2, 0, 1).copy())
    a, b = ours.infer(image), theirs.infer(image)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in b)


@pytest.mark.gpu
def test_moge_built_and_read_on_cuda_holds_the_checkpoints_tensors(cache_dir):
    """On CUDA the model is built there and the checkpoint read there (memory-mapped): every tensor on the card, equal to the file's."""
    import torch

    ctx = _ctx(cache_dir, {"moge": ("tiny:moge",)})
    depth_mod.create("moge", ctx)
    checkpoint = depth_mod.Path(cache_dir) / "tiny" / "moge" / "model.pt"
    model = depth_mod.load_moge(checkpoint, "cuda")
    saved = torch.load(str(checkpoint), map_location="cpu", weights_only=True)["model"]
    state = model.state_dict()
    assert all(t.device.type == "cuda" for t in state.values())
    assert all(torch.equal(state[k].cpu(), v) for k, v in saved.items() if k in state)


# backend -> (its model, what the cancel names, its blocks in the order they run)
NETWORK_BLOCKS = {
    "moge": ("MoGe-2", lambda m: [*m.encoder.backbone.blocks, m.neck, m.points_head]),
    "depth-anything": ("Depth Anything", lambda m: [*m.backbone.encoder.layer, m.neck, m.head]),
}


@pytest.mark.parametrize("name", NETWORK_BLOCKS)
def test_cancel_during_the_forward_stops_it_after_the_block_that_ran(cache_dir, name):
    """The network's inference is one call: a cancel set by its first block stops it before the
    next block (no later block, no head runs), and the hooks are gone after the call."""
    from engine.errors import Cancelled

    what, blocks_of = NETWORK_BLOCKS[name]
    backend = depth_mod.create(name, _ctx(cache_dir, {name: (f"tiny:{name}",)}))
    blocks = blocks_of(backend.model)
    ran = [0] * len(blocks)
    for index, block in enumerate(blocks):
        block.register_forward_hook(lambda module, inputs, output, index=index: ran.__setitem__(index, ran[index] + 1))
    with pytest.raises(Cancelled, match=what):
        backend.estimate(_image(), None, should_stop=lambda: ran[0] > 0)
    assert ran == [1] + [0] * (len(blocks) - 1)
    assert not any(module._forward_pre_hooks for module in backend.model.modules())

    ran[:] = [0] * len(blocks)
    _check(backend.estimate(_image(), None, should_stop=lambda: False))
    assert all(ran), ran  # not cancelled: every block runs


def test_moge_missing_weights_names_ids_and_local_advice(tmp_path):
    ctx = _ctx(str(tmp_path), {"moge": ("Ruicheng/moge-2-vitl-normal", str(tmp_path / "nowhere" / "model.pt"))})
    with pytest.raises(MissingModelError) as info:
        depth_mod.create("moge", ctx)
    message = str(info.value)
    assert "Ruicheng/moge-2-vitl-normal" in message and "nowhere" in message
    assert "--model moge=" in message


# --- Depth Anything ---------------------------------------------------------------------------


def test_tiny_depth_anything_round_trip(cache_dir):
    from transformers import DepthAnythingForDepthEstimation

    ctx = _ctx(cache_dir, {"depth-anything": ("tiny:depth-anything",)})
    backend = depth_mod.create("depth-anything", ctx)
    folder = depth_mod.Path(cache_dir) / "tiny" / "depth-anything"
    assert (folder / "config.json").exists() and (folder / "model.safetensors").exists()
    assert (folder / "preprocessor_config.json").exists()
    assert isinstance(backend.model, DepthAnythingForDepthEstimation) and not backend.metric

    estimate = backend.estimate(_image(), None)
    _check(estimate)
    assert estimate.valid.all()
    assert estimate.depth.min() == pytest.approx(depth_mod.RELATIVE_NEAR_M, rel=1e-4)
    assert estimate.depth.max() == pytest.approx(depth_mod.RELATIVE_FAR_M, rel=1e-4)
    hinted = backend.estimate(_image(), _camera(40.0))
    np.testing.assert_allclose(hinted.K, _camera(40.0).K)


def test_relative_to_metric_keeps_order():
    disparity = np.array([[0.0, 1.0], [2.0, 4.0]], np.float32)
    metres = depth_mod.relative_to_metric(disparity, near=1.0, far=10.0)
    assert metres[0, 0] == pytest.approx(10.0) and metres[1, 1] == pytest.approx(1.0)
    assert metres[0, 1] > metres[1, 0] > metres[1, 1]  # larger disparity = nearer
    assert math.isclose(1 / metres[1, 0], 0.1 + 0.5 * 0.9, rel_tol=1e-5)  # linear in inverse depth


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(BadInputError, match="unknown geometry backend"):
        depth_mod.create("nope", _ctx("", {}))
