"""The background prompt: colour statistics, CLIP zero-shot category (tiny CLIP), template.

The tiny CLIP has random weights: its category is arbitrary; the test proves the loading
path and that the answer is one of the categories asked for.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine import prompting
from engine.models import resolve_source


pytestmark = pytest.mark.usefixtures("hf_offline", "one_torch_thread")


@pytest.fixture(scope="module")
def ctx(tiny_ctx):
    return tiny_ctx


def _bands(*colours, h: int = 60, w: int = 40) -> np.ndarray:
    """Horizontal bands: each (rgb, fraction of the height)."""
    image = np.zeros((h, w, 3), np.float32)
    row = 0
    for rgb, fraction in colours:
        rows = round(h * fraction)
        image[row : row + rows] = rgb
        row += rows
    return image


def test_template_exact():
    assert (
        prompting.background_prompt("forest", ["green", "brown"])
        == "high-resolution forest background with green and brown colours, photorealistic, 8K"
    )
    assert prompting.background_prompt("beach", ["blue"]) == "high-resolution beach background with blue colours, photorealistic, 8K"
    assert (
        prompting.background_prompt("scene", ["blue", "white", "grey"])
        == "high-resolution scene background with blue, white and grey colours, photorealistic, 8K"
    )


def test_dominant_colours_named_and_ranked():
    sky_and_grass = _bands(((0.15, 0.3, 0.8), 0.7), ((0.2, 0.6, 0.2), 0.3))
    assert prompting.dominant_colours(sky_and_grass) == ["blue", "green"]
    assert prompting.dominant_colours(_bands(((0.95, 0.95, 0.95), 1.0))) == ["white"]
    sunset = _bands(((0.95, 0.55, 0.1), 0.5), ((0.05, 0.1, 0.4), 0.3), ((0.05, 0.05, 0.05), 0.2))
    assert prompting.dominant_colours(sunset) == ["orange", "navy", "black"]


def test_minor_colours_dropped():
    image = _bands(((0.8, 0.1, 0.1), 0.95), ((0.95, 0.9, 0.15), 0.05))
    assert prompting.dominant_colours(image) == ["red"]
    noisy = np.clip(image + np.random.default_rng(0).normal(0, 0.02, image.shape), 0, 1).astype(np.float32)
    assert prompting.dominant_colours(noisy) == ["red"]


def test_colour_stats_backend_offline(ctx):
    prompter = prompting.create("colour-stats", ctx)
    image = _bands(((0.45, 0.28, 0.12), 0.6), ((0.88, 0.82, 0.66), 0.4))
    assert prompter.prompt(image) == "high-resolution scene background with brown and beige colours, photorealistic, 8K"


def test_tiny_clip_zero_shot(ctx):
    folder = resolve_source(ctx, "clip")
    # openai/clip-vit-base-patch32's published layout: the pickle pytorch_model.bin, no safetensors.
    for name in ("config.json", "pytorch_model.bin", "preprocessor_config.json", "vocab.json", "merges.txt"):
        assert (folder / name).is_file(), name
    categories = ("kitchen", "forest", "beach")
    prompter = prompting.create("clip", ctx, categories=categories)
    image = _bands(((0.2, 0.6, 0.2), 0.6), ((0.45, 0.28, 0.12), 0.4))
    scores = prompter.scores(image)
    assert set(scores) == set(categories)
    assert sum(scores.values()) == pytest.approx(1.0, abs=1e-5)
    category = prompter.category(image)
    assert category in categories
    assert prompter.prompt(image) == f"high-resolution {category} background with green and brown colours, photorealistic, 8K"


def test_unknown_backend(ctx):
    with pytest.raises(ValueError):
        prompting.create("lavis", ctx)
