"""Inpainting backends.

OpenCV is checked for accuracy on analytic images (the background depth completion in
tests/test_depth_geometry.py).  The diffusion
backends run tiny models with random weights: their fills mean nothing; the tests prove the
real layouts, the from_pretrained loading path and the call contract (known pixels kept,
seeds, progress, cancel, depth conditioning wired in).
"""

from __future__ import annotations

import numpy as np
import pytest

from engine import inpaint
from engine.depth_geometry import complete_far_side
from engine.errors import BadInputError, Cancelled, MissingModelError
from engine.models import resolve_source, resolve_weights
from engine.profiles import BackendContext, get_profile

H = W = 64


pytestmark = pytest.mark.usefixtures("hf_offline", "one_torch_thread")


@pytest.fixture(scope="module")
def ctx(tiny_ctx):
    return tiny_ctx


def _gradient(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([x / w, y / h, 0.25 + 0.5 * (x + y) / (w + h)], axis=-1).astype(np.float32)


def _square(h: int, w: int, cy: int, cx: int, r: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return (np.abs(y - cy) < r) & (np.abs(x - cx) < r)


# ------------------------------------------------------------------------------ OpenCV


@pytest.mark.parametrize("method", ["telea", "ns"])
def test_opencv_fills_gradient_and_keeps_known_pixels(ctx, method):
    image = _gradient(H, W)
    mask = _square(H, W, 30, 34, 6)
    out = inpaint.create("opencv", ctx, method=method).inpaint(image, mask)
    assert out.dtype == np.float32 and out.shape == image.shape
    assert np.array_equal(out[~mask], image[~mask])  # bit-exact
    error = np.abs(out - image)[mask]
    assert error.mean() < 0.02 and error.max() < 0.08  # the gradient spans 1.0 over the image


def test_opencv_large_hole_uses_coarse_fill(ctx):
    image = _gradient(128, 128)
    mask = _square(128, 128, 60, 64, 40)  # 80x80 hole: deep beyond cv2's band
    multi = inpaint.create("opencv", ctx).inpaint(image, mask)
    single = inpaint.create("opencv", ctx, band=1e9).inpaint(image, mask)  # cv2.inpaint alone
    assert np.array_equal(multi[~mask], image[~mask])
    err_multi, err_single = np.abs(multi - image)[mask].max(), np.abs(single - image)[mask].max()
    assert err_multi < 0.1
    assert err_multi < 0.5 * err_single


def test_opencv_pyramid_for_very_large_holes():
    image = _gradient(128, 128)
    mask = _square(128, 128, 64, 64, 50)
    out = inpaint.fill_holes(image, mask, max_unknowns=1000)  # membrane solved at 1/4 size
    assert np.abs(out - image)[mask].max() < 0.1
    coarse = inpaint.membrane_fill(image, mask, max_unknowns=1000)
    assert np.abs(coarse - image)[mask].max() < 0.02


def test_opencv_rejects_bad_input(ctx):
    with pytest.raises(ValueError):
        inpaint.create("opencv", ctx, method="nope")
    with pytest.raises(BadInputError):
        inpaint.create("opencv", ctx).inpaint(_gradient(8, 8), np.ones((8, 8), bool))
    with pytest.raises(BadInputError):
        inpaint.create("opencv", ctx).inpaint(_gradient(8, 8), np.ones((4, 4), bool))
    with pytest.raises(ValueError):
        inpaint.create("lama", ctx)


def test_opencv_cancel_and_progress(ctx):
    backend = inpaint.create("opencv", ctx)
    image, mask = _gradient(16, 16), _square(16, 16, 8, 8, 3)
    with pytest.raises(Cancelled):
        backend.inpaint(image, mask, should_stop=lambda: True)
    calls = []
    backend.inpaint(image, mask, progress=calls.append)
    assert calls == [1.0]


def test_control_depth_is_normalised_near_bright():
    depth = np.array([[1.0, 2.0], [3.0, 0.0]], np.float32)
    control = inpaint.control_depth(depth)
    assert control.shape == (2, 2, 3)
    np.testing.assert_allclose(control[..., 0], [[1.0, 0.5], [0.0, 0.0]])


# ------------------------------------------------------------------------------ diffusion (tiny)


def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    image = np.random.default_rng(seed).random((H, W, 3), dtype=np.float32)
    return image, _square(H, W, 32, 28, 12)


@pytest.fixture(scope="module")
def sd(ctx):
    return inpaint.create("sd-inpaint", ctx, steps=2)


def test_tiny_sd_inpaint_real_layout(ctx, sd):
    folder = resolve_source(ctx, "sd-inpaint")
    assert (folder / "model_index.json").is_file()
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (folder / sub).is_dir(), sub
    # The published layout: fp16 safetensors are the only safetensors of the inpainting repo.
    assert (folder / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    assert sd.pipe.unet.config.in_channels == 9  # the inpainting UNet: latent + mask + masked latent
    assert type(sd.pipe).__name__ == "StableDiffusionInpaintPipeline"


def test_tiny_sd_inpaint_contract(sd):
    image, mask = _scene()
    calls = []
    a = sd.inpaint(image, mask, prompt="a room", seed=1, progress=calls.append)
    assert a.shape == image.shape and a.dtype == np.float32
    assert np.array_equal(a[~mask], image[~mask])
    assert np.all((a >= 0) & (a <= 1))
    assert len(calls) >= 2 and calls[-1] == 1.0 and calls == sorted(calls)  # one report per step
    assert np.array_equal(a, sd.inpaint(image, mask, prompt="a room", seed=1))
    assert not np.array_equal(a[mask], sd.inpaint(image, mask, prompt="a room", seed=2)[mask])


def test_tiny_sd_inpaint_cancel_stops_early(sd):
    image, mask = _scene()
    calls = []
    with pytest.raises(Cancelled):
        sd.inpaint(image, mask, seed=1, progress=calls.append, should_stop=lambda: bool(calls))
    assert len(calls) == 1 and calls[0] < 1.0  # stopped after the first of several steps
    # The pipeline stays usable after a cancel.
    assert sd.inpaint(image, mask, seed=1).shape == image.shape


def test_tiny_sd_inpaint_odd_size(sd):
    image = np.random.default_rng(3).random((50, 70, 3), dtype=np.float32)
    mask = _square(50, 70, 25, 35, 10)
    out = sd.inpaint(image, mask, seed=0)
    assert out.shape == image.shape and np.array_equal(out[~mask], image[~mask])


def test_tiny_controlnet_depth_inpaint(ctx):
    folder = resolve_source(ctx, "controlnet-depth")
    assert (folder / "config.json").is_file() and (folder / "diffusion_pytorch_model.fp16.safetensors").is_file()
    backend = inpaint.create("sd-controlnet-depth", ctx, steps=2)
    assert type(backend.pipe).__name__ == "StableDiffusionControlNetInpaintPipeline"
    image, mask = _scene()
    wall = np.full((H, W), 4.0, np.float32)
    ramp = np.tile(np.linspace(1.0, 6.0, W, dtype=np.float32), (H, 1))
    occluded = wall.copy()
    occluded[mask] = 1.0  # the foreground in front of the wall, to be removed
    a = backend.inpaint(image, mask, depth=wall, seed=5)
    assert np.array_equal(a[~mask], image[~mask])
    assert np.array_equal(a, backend.inpaint(image, mask, depth=wall, seed=5))
    # The depth reaches the ControlNet: another depth map, same seed, another fill.
    assert not np.array_equal(a[mask], backend.inpaint(image, mask, depth=ramp, seed=5)[mask])
    # The depth inside the hole is conditioning too: the caller passes the surface to paint
    # (the pipeline completes it from the far side first), never the removed foreground's.
    assert not np.array_equal(a, backend.inpaint(image, mask, depth=occluded, seed=5))
    assert np.array_equal(a, backend.inpaint(image, mask, depth=complete_far_side(occluded, mask)[0], seed=5))
    with pytest.raises(BadInputError):
        backend.inpaint(image, mask)
    with pytest.raises(Cancelled):
        backend.inpaint(image, mask, depth=wall, should_stop=lambda: True)


def test_tiny_inpainters_share_sd_components_and_free_them(ctx, sd):
    import gc
    import weakref

    from diffusers import StableDiffusionControlNetInpaintPipeline

    backend = inpaint.create("sd-controlnet-depth", ctx, steps=2)
    for name in ("unet", "vae", "text_encoder", "tokenizer"):
        assert getattr(backend.pipe, name) is getattr(sd.pipe, name), name  # one copy of the weights
    assert backend.pipe.scheduler is not sd.pipe.scheduler  # per-call scheduler state stays apart
    # Same seed, same image as a ControlNet pipeline with its own copy (how it loaded before).
    image, mask = _scene()
    wall = np.full((H, W), 4.0, np.float32)
    shared = backend.inpaint(image, mask, depth=wall, prompt="a room", seed=5)
    from diffusers import ControlNetModel

    own = inpaint.load_sd_pipeline(
        StableDiffusionControlNetInpaintPipeline,
        resolve_weights(ctx, "sd-inpaint", inpaint.SD_LAYOUT),
        "cpu",
        controlnet=ControlNetModel.from_pretrained(str(resolve_source(ctx, "controlnet-depth")), variant="fp16"),
    )
    assert own.unet is not sd.pipe.unet
    backend.pipe = own
    assert np.array_equal(shared, backend.inpaint(image, mask, depth=wall, prompt="a room", seed=5))
    # A component is freed when no backend holds it: not while the other one still does.
    other = inpaint.create("sd-inpaint", ctx, steps=2)
    unet = weakref.ref(other.pipe.unet)
    assert unet() is sd.pipe.unet
    other.release()
    gc.collect()
    assert unet() is not None and inpaint.create("sd-inpaint", ctx).pipe.unet is sd.pipe.unet


def test_tiny_sd_components_freed_after_last_release(ctx, tmp_path):
    import gc
    import shutil
    import weakref

    # Weights of their own (a copy in another folder): the module's `sd` holds the profile's.
    folder = shutil.copytree(resolve_source(ctx, "sd-inpaint"), tmp_path / "sd-inpaint")
    own = BackendContext(
        profile=ctx.profile, cache_dir=ctx.cache_dir, allow_download=False, model_overrides={"sd-inpaint": str(folder)}
    )
    a = inpaint.create("sd-controlnet-depth", own, steps=2)
    b = inpaint.create("sd-inpaint", own, steps=2)
    unet = weakref.ref(a.pipe.unet)
    assert b.pipe.unet is unet()
    a.release()
    gc.collect()
    assert unet() is not None
    b.release()
    gc.collect()
    assert unet() is None and (str(folder.resolve()), "cpu") not in inpaint._SD_INPAINT


def test_full_profile_offline_names_ids_and_local_override(ctx):
    full = get_profile("full")
    offline_ctx = BackendContext(profile=full, cache_dir=ctx.cache_dir, allow_download=False, warn=lambda s: None, note=lambda s: None)
    with pytest.raises(MissingModelError) as info:
        inpaint.create("sd-inpaint", offline_ctx)
    message = str(info.value)
    assert "stable-diffusion-v1-5/stable-diffusion-inpainting" in message
    assert "sd-legacy/stable-diffusion-inpainting" in message
    # A local folder in the diffusers layout loads through the same code as a Hub snapshot.
    local = BackendContext(
        profile=full,
        cache_dir=ctx.cache_dir,
        allow_download=False,
        model_overrides={"sd-inpaint": str(resolve_source(ctx, "sd-inpaint"))},
    )
    backend = inpaint.create("sd-inpaint", local, steps=2)
    image, mask = _scene()
    assert np.array_equal(backend.inpaint(image, mask, seed=0)[~mask], image[~mask])


def test_multistep_solver_and_the_text_encoder_runs_once_per_prompt(ctx):
    backend = inpaint.create("sd-inpaint", ctx, steps=3)
    assert type(backend.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert backend.scheduler.config.algorithm_type == "dpmsolver++"
    assert backend.scheduler.config.steps_offset == backend.pipe.scheduler.config.steps_offset  # the model's schedule
    encodes = []
    hook = backend.pipe.text_encoder.register_forward_hook(lambda *args: encodes.append(1))
    try:
        image, mask = _scene()
        calls = []
        a = backend.inpaint(image, mask, prompt="a room", seed=1, progress=calls.append)
        assert len(calls) == 3  # a multistep solver: one UNet step per requested step (PNDM adds one)
        b = backend.inpaint(image, mask, prompt="a room", seed=1)
        assert np.array_equal(a, b) and len(encodes) == 2  # prompt + negative, encoded on the first call only
        backend.inpaint(image, mask, prompt="a hall", seed=1)
        assert len(encodes) == 4
    finally:
        hook.remove()
    pndm = inpaint.create("sd-inpaint", ctx, steps=3, solver="pndm")
    assert type(pndm.scheduler).__name__ == "PNDMScheduler" and pndm.scheduler.config.skip_prk_steps
    assert not np.array_equal(a[mask], pndm.inpaint(image, mask, prompt="a room", seed=1)[mask])
    with pytest.raises(ValueError):
        inpaint.create("sd-inpaint", ctx, steps=3, solver="euler")


def _scheduler_runs(scheduler, steps: int) -> bool:
    """Whether the scheduler's own loop over ``steps`` steps ends in finite latents."""
    import torch

    try:
        scheduler.set_timesteps(steps)
        latents = torch.zeros(1, 4, 4, 4)
        for timestep in scheduler.timesteps:
            latents = scheduler.step(torch.full_like(latents, 0.1), timestep, latents).prev_sample
    except (IndexError, AssertionError):  # diffusers' own failures one step past the schedule
        return False
    return bool(torch.isfinite(latents).all())


@pytest.mark.parametrize("solver", inpaint.SOLVERS)
def test_the_step_limit_is_the_most_each_solver_takes_on_the_sd_schedule(sd, solver):
    """MAX_DIFFUSION_STEPS against the installed diffusers: each solver's scheduler, on the SD 1.5
    schedule the tiny model saves, runs at the limit and fails one step past it."""
    from engine.settings import MAX_DIFFUSION_STEPS

    most = MAX_DIFFUSION_STEPS[solver]
    assert _scheduler_runs(inpaint.solver_scheduler(sd.pipe.scheduler, solver), most)
    assert not _scheduler_runs(inpaint.solver_scheduler(sd.pipe.scheduler, solver), most + 1)


# Past CLIP's 75 prompt tokens (over 100 with the tiny tokenizer: two windows or more).
LONG_PROMPT = " ".join(["a quiet harbour with fishing boats, stone houses and gulls"] * 3)


def test_a_short_prompt_gives_diffusers_own_embeddings(sd):
    import torch

    expected = sd.pipe.encode_prompt("a room", sd.pipe.device, 1, True, "blurry")
    got = inpaint.prompt_embeddings(sd.pipe, "a room", "blurry", True)
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
    assert inpaint.prompt_embeddings(sd.pipe, "a room", "", False)[1] is None  # no guidance: no negative


def test_a_prompt_past_77_tokens_is_encoded_whole_in_windows_of_75(sd):
    tokenizer = sd.pipe.tokenizer
    tokens = len(tokenizer(LONG_PROMPT + " red", add_special_tokens=False, verbose=False).input_ids)
    windows = -(-tokens // 75)
    assert windows >= 2
    red, negative = inpaint.prompt_embeddings(sd.pipe, LONG_PROMPT + " red", "blurry", True)
    assert red.shape[1] == 77 * windows and negative.shape == red.shape  # the negative padded to the same length
    truncated = sd.pipe.encode_prompt(LONG_PROMPT + " red", sd.pipe.device, 1, False)[0]  # diffusers: the first 75 only
    assert red[:, :77].equal(truncated)  # each window is CLIP's own 77-token encoding


def test_the_end_of_a_long_prompt_changes_the_inpainting_and_no_truncation_warning(sd, caplog):
    """Before: diffusers cut the prompt at 77 tokens (a warning each run), so its end did nothing."""
    image, mask = _scene()
    with caplog.at_level("WARNING"):
        red = sd.inpaint(image, mask, prompt=LONG_PROMPT + " red", seed=1)
        blue = sd.inpaint(image, mask, prompt=LONG_PROMPT + " blue", seed=1)
    assert not np.array_equal(red[mask], blue[mask])
    assert not [r for r in caplog.records if "truncated" in r.getMessage()]


def test_two_inpainters_prefetched_at_once_share_one_sd_copy_and_no_meta_tensors(ctx, tmp_path):
    """A prefetching run starts both backends' loads on threads at once.  Built side by side,
    accelerate's process-wide meta patch (diffusers' ``from_pretrained``) gave one model the
    other's meta parameters and stayed on for every later model; loads now take turns."""
    import itertools
    import shutil

    import torch

    from engine.pipeline import _load_on_thread

    folder = shutil.copytree(resolve_source(ctx, "sd-inpaint"), tmp_path / "sd-inpaint")  # none loaded yet
    own = BackendContext(
        profile=ctx.profile, cache_dir=ctx.cache_dir, allow_download=False, model_overrides={"sd-inpaint": str(folder)}
    )
    loads = [_load_on_thread(lambda name=name: inpaint.create(name, own, steps=2), "expansion_inpaint", name)
             for name in ("sd-controlnet-depth", "sd-inpaint")]
    a, b = (load.result(timeout=120) for load in loads)
    assert a.base is b.base and a.pipe.unet is b.pipe.unet
    modules = [a.pipe.unet, a.pipe.vae, a.pipe.text_encoder, a.pipe.controlnet]
    assert not [t for m in modules for t in itertools.chain(m.parameters(), m.buffers()) if t.is_meta]
    assert torch.nn.Linear(2, 2).weight.device.type == "cpu"  # nothing left patched
