"""Model profiles: which backend runs each stage, with which weights.

A profile maps each model slot to a backend name (implemented in the stage module named in
``SLOTS``) and each model name to a list of sources tried in order: Hugging Face ids,
local folders/files, or ``tiny:<name>`` (a small model of the real class built in code, saved
to the cache and loaded back through the same loading path as the real weights).

Users override any model with ``--model NAME=ID_OR_PATH`` (engine CLI) or in the add-on's
preferences; an override replaces the whole candidate list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# slot -> stage module that implements its backends
SLOTS = {
    "geometry": "depth",  # depth + intrinsics of the input image
    "expansion_geometry": "depth",  # depth of each completed expansion view
    "layers": "segment",  # foreground / hidden-background masks
    "background_inpaint": "inpaint",  # fills the hidden background behind the foreground
    "expansion_inpaint": "inpaint",  # fills the holes of each rendered expansion view
    "sky_inpaint": "inpaint",  # fills the sky panorama from the input's sky pixels (engine.sky)
    "text_to_image": "text2image",  # text input -> first image (None: text input unsupported)
    "caption": "prompting",  # prompt for background inpainting when the user gives none
}


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    backends: dict[str, str | None]  # slot -> backend name
    models: dict[str, tuple[str, ...]] = field(default_factory=dict)  # model -> candidate sources
    settings: dict[str, Any] = field(default_factory=dict)  # defaults overriding engine.settings


PROFILES: dict[str, Profile] = {
    "offline": Profile(
        name="offline",
        description=(
            "No neural weights: RGB-D input (depth given), layers from depth discontinuities, "
            "classical (OpenCV) inpainting of colour and depth."
        ),
        backends={
            "geometry": "given",
            "expansion_geometry": "completion",
            "layers": "depth-edges",
            "background_inpaint": "opencv",
            "expansion_inpaint": "opencv",
            "sky_inpaint": "opencv",
            "text_to_image": None,
            "caption": "colour-stats",
        },
    ),
    "tiny": Profile(
        name="tiny",
        description=(
            "Models of the real classes built in code from small configs with random weights, "
            "loaded through the same from_pretrained paths as the real ones: proves every line "
            "of the model code on a CPU in minutes. Its images are meaningless."
        ),
        backends={
            "geometry": "moge",
            "expansion_geometry": "moge",
            "layers": "sam",
            "background_inpaint": "sd-controlnet-depth",
            "expansion_inpaint": "sd-inpaint",
            "sky_inpaint": "sd-inpaint",
            "text_to_image": "sd",
            "caption": "clip",
        },
        models={
            "moge": ("tiny:moge",),
            "depth-anything": ("tiny:depth-anything",),  # the second geometry backend
            "sam": ("tiny:sam",),
            "sd-inpaint": ("tiny:sd-inpaint",),
            "controlnet-depth": ("tiny:controlnet-depth",),
            "sd": ("tiny:sd",),
            "clip": ("tiny:clip",),
        },
        settings={"sam_points_per_side": 8},  # 64 grid prompts instead of 1024: CI speed
    ),
    "full": Profile(
        name="full",
        description="The paper's models from Hugging Face (or local copies): for a GPU and the internet.",
        backends={
            "geometry": "moge",  # or "depth-anything"
            "expansion_geometry": "moge",
            "layers": "sam",
            "background_inpaint": "sd-controlnet-depth",
            "expansion_inpaint": "sd-inpaint",
            "sky_inpaint": "sd-inpaint",
            "text_to_image": "sd",
            "caption": "clip",
        },
        models={
            "moge": ("Ruicheng/moge-2-vitl-normal", "Ruicheng/moge-2-vitl"),
            # metric depth first (metres straight from the model), then the relative model
            "depth-anything": ("depth-anything/Depth-Anything-V2-Metric-Indoor-Large-hf", "depth-anything/Depth-Anything-V2-Large-hf"),
            # the official checkpoint (a bare state dict; the hub has no segment-anything copy from Meta)
            "sam": ("https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",),
            # runwayml's repos are gone (2024); these are its mirrors, tried in order.
            "sd-inpaint": ("stable-diffusion-v1-5/stable-diffusion-inpainting", "sd-legacy/stable-diffusion-inpainting"),
            "controlnet-depth": ("lllyasviel/control_v11f1p_sd15_depth",),
            "sd": ("stable-diffusion-v1-5/stable-diffusion-v1-5", "sd-legacy/stable-diffusion-v1-5"),
            "clip": ("openai/clip-vit-base-patch32",),
        },
    ),
}

# Benchmarks only (bench/bench_models.py): the full profile's backends on its architectures,
# built in code from the published configs with RANDOM weights (engine.random_models; GBs each,
# for a GPU machine).  Same compute and memory as the trained models; its images are meaningless.
PROFILES["bench"] = Profile(
    name="bench",
    description=(
        "Benchmarks only: the full profile's models at full size with random weights (same compute, "
        "meaningless images); built on first use, several GB."
    ),
    backends=dict(PROFILES["full"].backends),
    models={model: (f"random:{model}",) for model in PROFILES["full"].models},
    settings=dict(PROFILES["full"].settings),
)


class ProfileError(ValueError):
    pass


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ProfileError(f"unknown profile {name!r}; choose one of: {', '.join(PROFILES)}") from None


def model_sources(profile: Profile, model: str, overrides: dict[str, str] | None = None) -> tuple[str, ...]:
    """Candidate sources for ``model``: the user's override alone, or the profile's list."""
    if overrides and overrides.get(model):
        return (overrides[model],)
    return profile.models.get(model, ())


@dataclass
class BackendContext:
    """What a stage backend gets when it is created."""

    profile: Profile
    device: str = "cpu"  # "cpu" or "cuda"
    cache_dir: str = ""  # tiny models and downloaded weights live here (engine.settings.default_cache_dir)
    model_overrides: dict[str, str] = field(default_factory=dict)
    allow_download: bool = True  # False: only local folders/cached files are used
    warn: Any = print  # callable(str): reaches the client as a "warning" event
    note: Any = print  # callable(str): progress text, e.g. "fetching <id>"

    def sources(self, model: str) -> tuple[str, ...]:
        return model_sources(self.profile, model, self.model_overrides)
