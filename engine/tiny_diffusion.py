"""Tiny diffusion and CLIP models of the real classes, saved in the real folder layouts.

Each ``build_*`` writes into an empty folder what the matching Hugging Face repository holds,
under the same file names and variants (tests/data/model_listings/ has the listings read):

* ``sd-inpaint``: stable-diffusion-v1-5/stable-diffusion-inpainting publishes its weights only
  as fp16 safetensors (``unet/diffusion_pytorch_model.fp16.safetensors``,
  ``text_encoder/model.fp16.safetensors``, ...) besides pickles: saved as fp16 variant files;
* ``sd``: stable-diffusion-v1-5/stable-diffusion-v1-5 has full-precision safetensors: saved so;
* ``controlnet-depth``: lllyasviel/control_v11f1p_sd15_depth shows fp16 safetensors: saved so;
* ``clip``: openai/clip-vit-base-patch32's main branch publishes the pickle
  ``pytorch_model.bin``: saved as that pickle, so the tiny profile reads the pickle path
  (``torch.load(weights_only=True)`` inside transformers) the real model takes.

The backends load them through exactly the ``from_pretrained`` calls they use for the real
weights.  The weights are random (seeded): the images they make are noise-like and mean nothing.

Sizes are chosen so a 64x64 image takes a fraction of a second per step on one CPU core:
two UNet levels of 8 and 16 channels, one layer each, cross-attention width 16.  As in the
real models, the VAE has four levels (latents 1/8 of the image side: ``vae_scale_factor`` 8,
read from its config by the pipelines) and the ControlNet's conditioning embedding has four
levels, downsampling the control image by the same 8.
"""

from __future__ import annotations

import json
from pathlib import Path

TEXT_DIM = 16  # text-encoder width = UNet/ControlNet cross-attention width
MAX_TOKENS = 77  # the real CLIP context length, so prompts truncate the same way
_BLOCKS = (8, 16)
_VAE_BLOCKS = (8, 8, 16, 16)  # four levels: the real VAE's downsampling by 8
_GROUPS = 4  # GroupNorm groups must divide every channel count above
_DOWN = ("CrossAttnDownBlock2D", "DownBlock2D")
_UP = ("UpBlock2D", "CrossAttnUpBlock2D")
_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins GPT-2/CLIP byte-level BPE uses for the 256 byte values."""
    visible = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    symbols = {b: chr(b) for b in visible}
    extra = 0
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def _apply_merges(word: tuple[str, ...], ranks: dict[tuple[str, str], int]) -> tuple[str, ...]:
    """Byte-pair encoding of one word: merge the lowest-ranked adjacent pair until none is left."""
    while len(word) > 1:
        pairs = [(ranks[pair], pair) for pair in zip(word, word[1:]) if pair in ranks]
        if not pairs:
            break
        first, second = min(pairs)[1]
        merged, i = [], 0
        while i < len(word):
            if i + 1 < len(word) and word[i] == first and word[i + 1] == second:
                merged.append(first + second)
                i += 2
            else:
                merged.append(word[i])
                i += 1
        word = tuple(merged)
    return word


def _word_merges(words: list[str]) -> list[tuple[str, str]]:
    """Merges that make each (lower-case ASCII) word one token, as CLIP's vocabulary does for
    common English words: for each word in turn, its pieces under the merges so far are joined
    left to right by new, later-ranked merges, which cannot split any word made whole before."""
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for text in words:
        pieces = _apply_merges(tuple(text[:-1]) + (text[-1] + "</w>",), ranks)
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            if pair not in ranks:
                ranks[pair] = len(merges)
                merges.append(pair)
            pieces = (pieces[0] + pieces[1],) + pieces[2:]
    return merges


def prompt_words() -> list[str]:
    """The words of every prompt the engine writes itself (the background template, its colour
    names and scene categories, the zero-shot "a photo of a ..." texts), each once."""
    import re

    from . import prompting

    texts = [prompting.background_prompt("scene", list(prompting.COLOUR_NAMES)), "a photo of a", *prompting.SCENE_CATEGORIES]
    return list(dict.fromkeys(re.findall(r"[a-z]+", " ".join(texts).lower())))


def save_tokenizer(path: Path) -> int:
    """A byte-level CLIP tokenizer of a small vocabulary; returns its vocab size.

    Written as the repositories hold it: ``vocab.json`` and ``merges.txt`` (and the
    ``tokenizer.json`` that CLIP's repository also has).

    CLIP's base vocabulary (every byte, alone and word-final) plus merges that make each word of
    the engine's own prompts one token (``prompt_words``), as in the real vocabulary, so those
    prompts take as many tokens as with the real tokenizer; other text still tokenizes, into
    more tokens.
    """
    from transformers import CLIPTokenizer

    symbols = _byte_symbols()
    merges = _word_merges(prompt_words())
    tokens = symbols + [s + "</w>" for s in symbols] + [a + b for a, b in merges] + [_BOS, _EOS]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_TOKENS)
    tokenizer.save_pretrained(str(path))
    path = Path(path)
    (path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (path / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    return len(vocab)


def _text_config(vocab_size: int):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=TEXT_DIM,
        intermediate_size=2 * TEXT_DIM,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=MAX_TOKENS,
        projection_dim=TEXT_DIM,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )


def _unet(in_channels: int):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8,
        in_channels=in_channels,
        out_channels=4,
        block_out_channels=_BLOCKS,
        layers_per_block=1,
        down_block_types=_DOWN,
        up_block_types=_UP,
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=2,
        norm_num_groups=_GROUPS,
    )


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(_VAE_BLOCKS),
        up_block_types=("UpDecoderBlock2D",) * len(_VAE_BLOCKS),
        block_out_channels=_VAE_BLOCKS,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=_GROUPS,
        sample_size=64,
    )


def _scheduler():
    from diffusers import PNDMScheduler

    # Stable Diffusion v1's own scheduler configuration.
    return PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True, steps_offset=1
    )


def _save_sd(path: Path, pipeline_cls, unet_in_channels: int, seed: int, variant: str | None) -> None:
    import torch
    from transformers import CLIPTextModel, CLIPTokenizer

    path = Path(path)
    vocab_size = save_tokenizer(path / "tokenizer")
    torch.manual_seed(seed)
    pipe = pipeline_cls(
        vae=_vae(),
        text_encoder=CLIPTextModel(_text_config(vocab_size)),
        tokenizer=CLIPTokenizer.from_pretrained(str(path / "tokenizer")),
        unet=_unet(unet_in_channels),
        scheduler=_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    if variant == "fp16":
        for module in (pipe.unet, pipe.vae, pipe.text_encoder):
            module.to(torch.float16)
    pipe.save_pretrained(str(path), variant=variant)
    (path / "tokenizer" / "tokenizer.json").unlink()  # Stable Diffusion's tokenizer/ has vocab.json + merges.txt only


def build_sd_inpaint(path: Path) -> None:
    """Stable Diffusion inpainting layout: the UNet takes 9 channels (latent, mask, masked latent)."""
    from diffusers import StableDiffusionInpaintPipeline

    _save_sd(path, StableDiffusionInpaintPipeline, 9, seed=1, variant="fp16")


def build_sd(path: Path) -> None:
    """Stable Diffusion text-to-image layout (4-channel UNet)."""
    from diffusers import StableDiffusionPipeline

    _save_sd(path, StableDiffusionPipeline, 4, seed=2, variant=None)


def build_controlnet_depth(path: Path) -> None:
    """A depth ControlNet matching the tiny UNets above (``ControlNetModel`` folder layout)."""
    import torch
    from diffusers import ControlNetModel

    torch.manual_seed(3)
    controlnet = ControlNetModel(
        in_channels=4,
        block_out_channels=_BLOCKS,
        layers_per_block=1,
        down_block_types=_DOWN,
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=2,
        norm_num_groups=_GROUPS,
        conditioning_embedding_out_channels=_VAE_BLOCKS,  # 4 levels: downsamples by the VAE's 8
    )
    # A new ControlNet starts with zero convolutions (no effect until trained); a trained one
    # does not, so give them random weights and the control image really reaches the UNet.
    zero_convs = [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block, controlnet.controlnet_cond_embedding.conv_out]
    with torch.no_grad():
        for conv in zero_convs:
            conv.weight.normal_(0.0, 0.1)
    controlnet.to(torch.float16).save_pretrained(str(path), variant="fp16")


def build_clip(path: Path) -> None:
    """A CLIP model + processor in the ``openai/clip-vit-base-patch32`` layout (32x32 input)."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPVisionConfig

    path = Path(path)
    vocab_size = save_tokenizer(path)
    vision = CLIPVisionConfig(
        hidden_size=TEXT_DIM,
        intermediate_size=2 * TEXT_DIM,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        projection_dim=TEXT_DIM,
    )
    config = CLIPConfig(text_config=_text_config(vocab_size).to_dict(), vision_config=vision.to_dict(), projection_dim=TEXT_DIM)
    torch.manual_seed(4)
    model = CLIPModel(config)
    model.config.save_pretrained(str(path))
    # The published pickle (transformers itself only writes safetensors).
    torch.save(model.state_dict(), path / "pytorch_model.bin")
    # The repository's preprocessor_config.json (the tokenizer files are written above).
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(str(path))


# "tiny:<name>" -> builder; engine.models builds into its cache on first use.
BUILDERS = {
    "sd-inpaint": build_sd_inpaint,
    "sd": build_sd,
    "controlnet-depth": build_controlnet_depth,
    "clip": build_clip,
}
