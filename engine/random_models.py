"""Full-size models of the ``full`` profile's architectures with RANDOM weights: GPU benchmarks only.

``random:<name>`` sources (profile ``bench``) are built here into ``<cache>/random/<name>`` in the
real on-disk layouts, and the backends load them through exactly the calls they use for the
trained weights.  Same classes, same published configs, so the same FLOPs and memory as the
trained models; the images they make are meaningless.  Each is GBs (SD folders ~4.3 GB in fp32,
SAM ViT-H 2.5 GB): build them on the benchmark machine, never commit or ship them.

The configs below are the published ``config.json`` values of the Hugging Face repositories
named in ``engine.profiles`` (written from those files; comments say where a value is ours):

* ``sd-inpaint`` / ``sd``: stable-diffusion-v1-5 (``unet/``, ``vae/``, ``text_encoder/``,
  ``scheduler/``); the inpainting UNet differs only by ``in_channels`` 9.
* ``controlnet-depth``: lllyasviel/control_v11f1p_sd15_depth (the SD1.5 UNet's encoder half).
* ``clip``: openai/clip-vit-base-patch32.
* ``moge``: MoGe-2 ViT-L (microsoft/MoGe ``configs/train/v2.json``, model section).
* ``sam``: segment-anything's own ``sam_model_registry["vit_h"]`` (no checkpoint).
* ``depth-anything``: Depth-Anything-V2-Metric-Indoor-Large-hf.

Each is saved under the file names and variants its repository publishes (as the tiny models
are, engine.tiny_diffusion), so the benchmark loads through the same weights choice: fp16
safetensors for ``sd-inpaint`` and ``controlnet-depth``, full-precision safetensors for ``sd``,
the pickle ``pytorch_model.bin`` for ``clip``.

The tokenizers are CLIP's byte-level base vocabulary without the learned merges
(``engine.tiny_diffusion.save_tokenizer``): the SD pipelines pad every prompt to the 77
positions anyway, so the compute is the real one; the text encoders keep the published
vocabulary size (49408 rows) and only the special-token ids follow our tokenizer.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

# --- Stable Diffusion 1.5 -------------------------------------------------------------------

SD15_UNET: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,  # 9 for the inpainting UNet (latent, mask, masked-image latent)
    "out_channels": 4,
    "center_input_sample": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}

SD15_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}

# CLIP ViT-L/14's text tower, as in stable-diffusion-v1-5/text_encoder/config.json.
SD15_TEXT: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "projection_dim": 768,
}

SD15_SCHEDULER: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
}

# control_v11f1p_sd15_depth/config.json: the SD1.5 UNet's encoder half plus the conditioning embedding.
CONTROLNET_SD15: dict[str, Any] = {
    "in_channels": 4,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": SD15_UNET["down_block_types"],
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "conditioning_embedding_out_channels": (16, 32, 96, 256),
    "controlnet_conditioning_channel_order": "rgb",
}

# --- CLIP ViT-B/32 (openai/clip-vit-base-patch32) -------------------------------------------

CLIP_B32_TEXT: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 512,
    "intermediate_size": 2048,
    "num_hidden_layers": 12,
    "num_attention_heads": 8,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 512,
}
CLIP_B32_VISION: dict[str, Any] = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "image_size": 224,
    "patch_size": 32,
    "hidden_act": "quick_gelu",
    "projection_dim": 512,
}
CLIP_B32_PROJECTION = 512

# --- MoGe-2 ViT-L (microsoft/MoGe configs/train/v2.json, "model") ---------------------------

_MOGE_HEAD = {
    "dim_in": [1024, 256, 128, 64, 32],
    "dim_res_blocks": [1024, 256, 128, 64, 32],
    "num_res_blocks": [0, 1, 1, 1, 0],
    "res_block_in_norm": "none",
    "res_block_hidden_norm": "none",
    "resamplers": ["conv_transpose", "conv_transpose", "conv_transpose", "bilinear"],
}
MOGE2_VITL: dict[str, Any] = {
    "encoder": {"backbone": "dinov2_vitl14", "intermediate_layers": [5, 11, 17, 23], "dim_out": 1024},
    "neck": {
        "dim_in": [1026, 2, 2, 2, 2],
        "dim_out": None,
        "dim_res_blocks": [1024, 256, 128, 64, 32],
        "num_res_blocks": [0, 2, 2, 2, 0],
        "res_block_in_norm": "none",
        "res_block_hidden_norm": "none",
        "resamplers": ["conv_transpose", "conv_transpose", "conv_transpose", "bilinear"],
    },
    "points_head": {**_MOGE_HEAD, "dim_out": [None, None, None, None, 3]},
    "normal_head": {**_MOGE_HEAD, "dim_out": [None, None, None, None, 3]},  # the -normal checkpoint
    "mask_head": {**_MOGE_HEAD, "dim_out": [None, None, None, None, 1]},
    "scale_head": {"dims": [1024, 1024, 1024, 1]},
    "remap_output": "exp",
    "num_tokens_range": [1200, 3600],
}

# --- Depth Anything V2 Large, metric indoor -------------------------------------------------

DEPTH_ANYTHING_V2_L_BACKBONE: dict[str, Any] = {
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "mlp_ratio": 4,
    "patch_size": 14,
    "image_size": 518,
    "layerscale_value": 1.0,
    "out_indices": [5, 12, 18, 24],
    "reshape_hidden_states": False,
}
DEPTH_ANYTHING_V2_L: dict[str, Any] = {
    "reassemble_hidden_size": 1024,
    "reassemble_factors": [4, 2, 1, 0.5],
    "neck_hidden_sizes": [256, 512, 1024, 1024],
    "fusion_hidden_size": 256,
    "head_hidden_size": 32,
    "patch_size": 14,
    "depth_estimation_type": "metric",
    "max_depth": 20,  # the indoor metric model's range (metres)
}


# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _on_gpu_if_any(seed: int):
    """Create parameters on the GPU when there is one: PyTorch's default initialisation of
    ~1e9 weights takes minutes on a few CPU cores and a second on a GPU."""
    import torch

    torch.manual_seed(seed)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        yield


def _text_config(config: dict[str, Any], vocab_size: int) -> dict[str, Any]:
    """A published text config with our tokenizer's special-token ids (BOS, EOS = pad: its last two)."""
    return {**config, "bos_token_id": vocab_size - 2, "eos_token_id": vocab_size - 1, "pad_token_id": vocab_size - 1}


def _save_sd(path: Path, pipeline_cls, unet_in_channels: int, seed: int, variant: str | None) -> None:
    import torch

    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from .tiny_diffusion import save_tokenizer

    path = Path(path)
    vocab = save_tokenizer(path / "tokenizer")
    with _on_gpu_if_any(seed):
        pipe = pipeline_cls(
            vae=AutoencoderKL(**SD15_VAE),
            text_encoder=CLIPTextModel(CLIPTextConfig(**_text_config(SD15_TEXT, vocab))),
            tokenizer=CLIPTokenizer.from_pretrained(str(path / "tokenizer")),
            unet=UNet2DConditionModel(**{**SD15_UNET, "in_channels": unet_in_channels}),
            scheduler=PNDMScheduler(**SD15_SCHEDULER),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    dtype = torch.float16 if variant == "fp16" else torch.float32
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.to("cpu", dtype)
    pipe.save_pretrained(str(path), variant=variant)


def build_sd_inpaint(path: Path) -> None:
    from diffusers import StableDiffusionInpaintPipeline

    _save_sd(path, StableDiffusionInpaintPipeline, 9, seed=1, variant="fp16")


def build_sd(path: Path) -> None:
    from diffusers import StableDiffusionPipeline

    _save_sd(path, StableDiffusionPipeline, 4, seed=2, variant=None)


def build_controlnet_depth(path: Path) -> None:
    import torch
    from diffusers import ControlNetModel

    # The zero convolutions stay zero (as a new ControlNet's): the compute is the same.
    with _on_gpu_if_any(3):
        model = ControlNetModel(**CONTROLNET_SD15)
    model.to("cpu", torch.float16).save_pretrained(str(path), variant="fp16")


def clip_config(vocab_size: int):
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config=_text_config(CLIP_B32_TEXT, vocab_size),
        vision_config=CLIP_B32_VISION,
        projection_dim=CLIP_B32_PROJECTION,
    )


def build_clip(path: Path) -> None:
    import torch
    from transformers import CLIPImageProcessor, CLIPModel

    from .tiny_diffusion import save_tokenizer

    path = Path(path)
    vocab = save_tokenizer(path)
    with _on_gpu_if_any(4):
        model = CLIPModel(clip_config(vocab))
    model.config.save_pretrained(str(path))
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, path / "pytorch_model.bin")  # the published pickle
    # CLIPImageProcessor's defaults are the repo's preprocessor: resize 224, centre crop 224, CLIP mean/std.
    CLIPImageProcessor().save_pretrained(str(path))


def build_moge(path: Path) -> None:
    import torch
    from moge.model.v2 import MoGeModel

    with _on_gpu_if_any(0):
        model = MoGeModel(**MOGE2_VITL)
        with torch.no_grad():
            # As tiny:moge: random output layers would call about half the pixels invalid; a
            # positive mask bias keeps the depth flowing through the pipeline (no compute change).
            model.mask_head.output_blocks[-1].bias.fill_(4.0)
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    torch.save({"model_config": MOGE2_VITL, "model": state}, Path(path) / "model.pt")


def build_sam(path: Path) -> None:
    import torch
    from segment_anything import sam_model_registry

    with _on_gpu_if_any(5):
        model = sam_model_registry["vit_h"]()
    # A bare state dict, like sam_vit_h_4b8939.pth.
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, Path(path) / "sam_vit_h_random.pth")


def depth_anything_config():
    from transformers import DepthAnythingConfig, Dinov2Config

    backbone = Dinov2Config(**DEPTH_ANYTHING_V2_L_BACKBONE)
    return DepthAnythingConfig(backbone_config=backbone, **DEPTH_ANYTHING_V2_L)


def build_depth_anything(path: Path) -> None:
    from transformers import DepthAnythingForDepthEstimation, DPTImageProcessor

    with _on_gpu_if_any(6):
        model = DepthAnythingForDepthEstimation(depth_anything_config())
    model.to("cpu").save_pretrained(str(path))
    DPTImageProcessor(
        size={"height": 518, "width": 518},
        keep_aspect_ratio=True,
        ensure_multiple_of=14,
        resample=3,
        do_pad=False,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(str(path))


# "random:<name>" -> builder(folder); engine.models builds into <cache>/random/<name>.
BUILDERS = {
    "sd-inpaint": build_sd_inpaint,
    "sd": build_sd,
    "controlnet-depth": build_controlnet_depth,
    "clip": build_clip,
    "moge": build_moge,
    "sam": build_sam,
    "depth-anything": build_depth_anything,
}
