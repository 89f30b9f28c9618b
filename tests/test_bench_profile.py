"""The ``bench`` profile and its random full-size models (engine.random_models).

Building them takes GBs, so these tests check the configs instead: against the published
values, and by parameter count of the models built on PyTorch's meta device (no memory).
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch

from engine import models, random_models
from engine.profiles import BackendContext, get_profile


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_bench_is_full_with_random_sources():
    full, bench = get_profile("full"), get_profile("bench")
    assert bench.backends == full.backends
    assert set(bench.models) == set(full.models)
    for model, sources in bench.models.items():
        assert sources == (f"random:{model}",)
        assert model in random_models.BUILDERS
    assert "benchmark" in bench.description.lower() and "random" in bench.description.lower()


def test_random_source_builds_once_into_the_cache(tmp_path, monkeypatch):
    calls = []

    def builder(folder: Path) -> None:
        calls.append(folder)
        (folder / "model.pt").write_bytes(b"weights")

    monkeypatch.setitem(random_models.BUILDERS, "moge", builder)
    ctx = BackendContext(profile=get_profile("bench"), cache_dir=str(tmp_path))
    first = models.resolve_source(ctx, "moge")
    assert first == tmp_path / "random" / "moge" and (first / "model.pt").read_bytes() == b"weights"
    assert models.resolve_source(ctx, "moge") == first and len(calls) == 1


def test_stable_diffusion_15_configs():
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet, vae, text = random_models.SD15_UNET, random_models.SD15_VAE, random_models.SD15_TEXT
    assert unet["block_out_channels"] == (320, 640, 1280, 1280) and unet["layers_per_block"] == 2
    assert unet["cross_attention_dim"] == 768 and unet["attention_head_dim"] == 8 and unet["sample_size"] == 64
    assert vae["block_out_channels"] == (128, 256, 512, 512) and vae["latent_channels"] == 4
    assert (text["hidden_size"], text["num_hidden_layers"], text["num_attention_heads"]) == (768, 12, 12)
    assert (text["intermediate_size"], text["vocab_size"], text["max_position_embeddings"]) == (3072, 49408, 77)
    assert random_models.CONTROLNET_SD15["conditioning_embedding_out_channels"] == (16, 32, 96, 256)
    with torch.device("meta"):
        # The published parameter counts of stable-diffusion-v1-5 (and -inpainting: 5 more input
        # channels of the first 3x3 convolution) and of the SD1.5 ControlNets.
        assert _count(UNet2DConditionModel(**unet)) == 859_520_964
        assert _count(UNet2DConditionModel(**{**unet, "in_channels": 9})) == 859_520_964 + 5 * 320 * 9
        assert _count(AutoencoderKL(**vae)) == 83_653_863
        assert _count(CLIPTextModel(CLIPTextConfig(**random_models._text_config(text, 514)))) == 123_060_480
        assert _count(ControlNetModel(**random_models.CONTROLNET_SD15)) == 361_279_120


def test_clip_vit_b32_config():
    from transformers import CLIPModel

    config = random_models.clip_config(514)
    assert (config.vision_config.hidden_size, config.vision_config.patch_size, config.vision_config.image_size) == (768, 32, 224)
    assert (config.text_config.hidden_size, config.text_config.num_hidden_layers, config.projection_dim) == (512, 12, 512)
    with torch.device("meta"):
        assert _count(CLIPModel(config)) == 151_277_313  # openai/clip-vit-base-patch32


def test_sam_vit_h_is_segment_anythings_own():
    from segment_anything import sam_model_registry

    from engine.segment import sam_architecture

    with torch.device("meta"):
        sam = sam_model_registry["vit_h"]()
    assert _count(sam) == 641_090_608
    arch = sam_architecture(sam.state_dict())  # what the loader reads back off the checkpoint
    assert (arch["embed_dim"], arch["depth"], arch["num_heads"], arch["img_size"]) == (1280, 32, 16, 1024)
    assert arch["global_attn_indexes"] == [7, 15, 23, 31] and arch["window_size"] == 14


def test_moge2_vitl_config():
    from moge.model.v2 import MoGeModel

    config = random_models.MOGE2_VITL
    assert config["encoder"] == {"backbone": "dinov2_vitl14", "intermediate_layers": [5, 11, 17, 23], "dim_out": 1024}
    assert config["neck"]["dim_in"] == [1026, 2, 2, 2, 2] and config["neck"]["num_res_blocks"] == [0, 2, 2, 2, 0]
    for head, channels in (("points_head", 3), ("normal_head", 3), ("mask_head", 1)):
        assert config[head]["dim_res_blocks"] == [1024, 256, 128, 64, 32] and config[head]["dim_out"][-1] == channels
    assert config["scale_head"] == {"dims": [1024, 1024, 1024, 1]}
    assert config["remap_output"] == "exp" and config["num_tokens_range"] == [1200, 3600]
    inspect.signature(MoGeModel).bind(**config)  # every key is a constructor argument


def test_depth_anything_v2_large_config():
    from transformers import DepthAnythingForDepthEstimation

    config = random_models.depth_anything_config()
    backbone = config.backbone_config
    assert (backbone.hidden_size, backbone.num_hidden_layers, backbone.num_attention_heads) == (1024, 24, 16)
    assert config.depth_estimation_type == "metric" and config.max_depth == 20
    with torch.device("meta"):
        assert _count(DepthAnythingForDepthEstimation(config)) == pytest.approx(335.3e6, rel=1e-3)  # the paper's ViT-L


def test_bench_models_e2e_times_every_stage_and_model_call_of_a_tiny_run(tmp_path):
    # The GPU benchmark's harness wraps engine functions and backends by name: run it on the tiny
    # profile so an engine change that breaks a wrapper fails here, not in a device call.
    import json
    import subprocess
    import sys

    from engine.protocol import STAGES

    root = Path(__file__).resolve().parent.parent
    runs = ["1,iterations=3,inpaint_steps=1,reprojections=0"] * 2
    done = subprocess.run([sys.executable, "bench/bench_models.py", "e2e", "--profile", "tiny", "--device", "cpu",
                           "--resolution", "48", "--out", str(tmp_path), "--runs", *runs],
                          cwd=root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    cold, warm = json.loads((tmp_path / "bench_models_e2e.json").read_text())["runs"]
    for record in (cold, warm):
        assert "error" not in record, record
        assert set(record["stages"]) == set(STAGES)
        assert record["splat"]["steps"] == 3
        assert {"geometry.estimate", "layers.layers", "train_gaussians", "render_points"} <= set(record["calls"])
    assert cold["loads_s"] and not warm["loads_s"]  # the warm run takes its models from the pool
