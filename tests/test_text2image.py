"""Text input with a tiny Stable Diffusion (random weights: the image means nothing)."""

from __future__ import annotations

import numpy as np
import pytest

from engine import text2image
from engine.errors import BadInputError, Cancelled
from engine.models import resolve_source


pytestmark = pytest.mark.usefixtures("hf_offline", "one_torch_thread")


@pytest.fixture(scope="module")
def ctx(tiny_ctx):
    return tiny_ctx


@pytest.fixture(scope="module")
def t2i(ctx):
    return text2image.create("sd", ctx, steps=2)


def test_real_layout(ctx, t2i):
    folder = resolve_source(ctx, "sd")
    assert (folder / "model_index.json").is_file()
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (folder / sub).is_dir(), sub
    assert type(t2i.pipe).__name__ == "StableDiffusionPipeline"
    assert t2i.pipe.unet.config.in_channels == 4


def test_generate_size_seed_progress(t2i):
    calls = []
    a = t2i.generate("a castle on a hill", width=64, height=64, seed=3, progress=calls.append)
    assert a.shape == (64, 64, 3) and a.dtype == np.float32
    assert np.all((a >= 0) & (a <= 1))
    assert len(calls) >= 2 and calls[-1] == 1.0 and calls == sorted(calls)
    assert np.array_equal(a, t2i.generate("a castle on a hill", width=64, height=64, seed=3))
    assert not np.array_equal(a, t2i.generate("a castle on a hill", width=64, height=64, seed=4))
    # Any size: generated at the next size the UNet takes, centre-cropped.
    assert t2i.generate("a castle", width=70, height=50, seed=0).shape == (50, 70, 3)


def test_cancel_and_bad_input(t2i):
    calls = []
    with pytest.raises(Cancelled):
        t2i.generate("a castle", width=64, height=64, progress=calls.append, should_stop=lambda: bool(calls))
    assert len(calls) == 1 and calls[0] < 1.0
    with pytest.raises(BadInputError):
        t2i.generate("   ")
    with pytest.raises(ValueError):
        text2image.create("dall-e", None)


def test_the_end_of_a_prompt_past_77_tokens_changes_the_image(t2i):
    """The prompt is encoded whole (engine.inpaint.prompt_embeddings), not cut at CLIP's 77 tokens."""
    long = " ".join(["a castle on a hill above a misty valley at dawn"] * 3)
    red = t2i.generate(long + " red", width=64, height=64, seed=3)
    blue = t2i.generate(long + " blue", width=64, height=64, seed=3)
    assert not np.array_equal(red, blue)
