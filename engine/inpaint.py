"""Inpainting backends (colour) and background depth completion.

``create(name, ctx, **options) -> Inpainter``; every backend has::

    inpaint(image, mask, *, depth=None, prompt="", negative_prompt="", seed=0,
            progress=None, should_stop=None) -> image

``image`` float32 [H, W, 3] in 0..1, ``mask`` bool [H, W] (True = fill).  The result keeps
every known pixel bit-exact and changes only the mask.  ``progress(fraction)`` (0..1) is called
after each step; ``should_stop()`` is polled at the same points and, when it returns True,
the call raises ``engine.errors.Cancelled``.

Backends:

* ``opencv``              cv2.inpaint (Telea or Navier-Stokes), plus a coarse-to-fine fill so
                          large holes get a smooth fill instead of long smeared streaks.
* ``sd-inpaint``          diffusers ``StableDiffusionInpaintPipeline`` (expansion holes).
* ``sd-controlnet-depth`` diffusers ``StableDiffusionControlNetInpaintPipeline`` with a depth
                          ControlNet fed the normalised depth D~ = (D - Dmin) / (Dmax - Dmin)
                          (the paper's depth-conditioned background inpainting).

The background layer's depth inside a hole comes from ``engine.depth_geometry.complete_far_side``.
"""

from __future__ import annotations

import math
import weakref
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from .depth_geometry import harmonic_fill
from .errors import BadInputError, Cancelled
from .models import DIFFUSERS, TRANSFORMERS, Layout, Resolved
from .settings import MAX_DIFFUSION_STEPS

Progress = Callable[[float], None] | None  # fraction of the call done, 0..1
ShouldStop = Callable[[], bool] | None

# What a Stable Diffusion folder must hold: the weights of the three components we load (chosen
# from the listing by engine.models.select_weights: stable-diffusion-v1-5/stable-diffusion-inpainting
# has only fp16 safetensors) and the configs, tokenizer and scheduler; not the .ckpt, the other
# weight variants nor the safety checker, which we do not load.
SD_LAYOUT = Layout(
    components=(("unet", DIFFUSERS), ("vae", DIFFUSERS), ("text_encoder", TRANSFORMERS)),
    required=(
        "model_index.json",
        "unet/config.json",
        "vae/config.json",
        "text_encoder/config.json",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "scheduler/scheduler_config.json",
    ),
)
CONTROLNET_LAYOUT = Layout(components=(("", DIFFUSERS),), required=("config.json",), small_files=("config.json",))


class Inpainter(Protocol):
    name: str

    def inpaint(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        *,
        depth: np.ndarray | None = None,
        prompt: str = "",
        negative_prompt: str = "",
        seed: int = 0,
        progress: Progress = None,
        should_stop: ShouldStop = None,
    ) -> np.ndarray: ...


def _check(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(image, dtype=np.float32)
    mask = np.asarray(mask, dtype=bool)
    if image.ndim != 3 or image.shape[2] != 3:
        raise BadInputError(f"inpaint: image must be [H, W, 3], got {image.shape}")
    if mask.shape != image.shape[:2]:
        raise BadInputError(f"inpaint: mask {mask.shape} does not match image {image.shape[:2]}")
    return image, mask


def _keep_known(image: np.ndarray, mask: np.ndarray, filled: np.ndarray) -> np.ndarray:
    return np.where(mask[..., None], np.clip(filled, 0.0, 1.0), image).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Classical: OpenCV


def _cv_fill(values: np.ndarray, hole: np.ndarray, radius: float, flags: int) -> np.ndarray:
    """cv2.inpaint of a float32 [H, W, C] array (OpenCV takes float only one channel at a time)."""
    import cv2

    mask8 = hole.astype(np.uint8)
    channels = []
    for c in range(values.shape[2]):
        known = values[..., c][~hole]
        lo, span = float(known.min()), max(float(np.ptp(known)), 1e-6)
        # OpenCV's float Telea is tuned for 0..255 values (on 0..1 it overshoots wildly).
        scaled = np.ascontiguousarray((values[..., c] - lo) * (255.0 / span), dtype=np.float32)
        channels.append(cv2.inpaint(scaled, mask8, radius, flags) * (span / 255.0) + lo)
    return np.stack(channels, axis=-1)


def _downsample_known(values: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Half-size average of the known pixels only; a coarse pixel is known if any fine one was."""
    import cv2

    h, w = known.shape
    size = ((w + 1) // 2, (h + 1) // 2)
    weight = known.astype(np.float32)
    num = cv2.resize(values * weight[..., None], size, interpolation=cv2.INTER_AREA)
    den = cv2.resize(weight, size, interpolation=cv2.INTER_AREA)
    if num.ndim == 2:
        num = num[..., None]
    coarse_known = den > 0
    coarse = np.where(coarse_known[..., None], num / np.maximum(den, 1e-12)[..., None], 0.0).astype(np.float32)
    return coarse, coarse_known


def membrane_fill(values: np.ndarray, hole: np.ndarray, *, max_unknowns: int = 100_000) -> np.ndarray:
    """Harmonic fill of ``hole`` from all known pixels; holes with more than ``max_unknowns``
    pixels are solved on a half-size copy (recursively, a pyramid) and upsampled, so the sparse
    solve stays small."""
    import cv2

    if hole.sum() <= max_unknowns:
        return harmonic_fill(values, hole, ~hole)
    coarse, coarse_known = _downsample_known(values, ~hole)
    coarse = membrane_fill(coarse, ~coarse_known, max_unknowns=max_unknowns).astype(np.float32)
    h, w = hole.shape
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR).reshape(values.shape)


def fill_holes(
    values: np.ndarray,
    hole: np.ndarray,
    *,
    radius: float = 3.0,
    method: str = "telea",
    band: float = 8.0,
    max_unknowns: int = 100_000,
) -> np.ndarray:
    """Fill ``hole`` of a float32 [H, W, C] array from its surroundings.

    cv2.inpaint propagates boundary values inwards along the distance map, which turns a large
    hole into long streaks and smears.  So it is kept for a ``band`` of pixels along the hole's
    edge (where it continues local structure), and deeper inside it is blended into the
    membrane (harmonic) fill, which is smooth and exact for gradients.
    """
    import cv2

    flags = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS, "navier-stokes": cv2.INPAINT_NS}.get(method)
    if flags is None:
        raise ValueError(f"unknown OpenCV inpainting method {method!r}: use 'telea' or 'ns'")
    if not hole.any():
        return values.copy()
    if hole.all():
        raise BadInputError("inpaint: the mask covers the whole image; there is nothing to fill from")
    fine = _cv_fill(values, hole, radius, flags)
    depth_in_hole = cv2.distanceTransform(hole.astype(np.uint8), cv2.DIST_L2, 5)
    if depth_in_hole.max() <= band:
        return fine
    smooth = membrane_fill(values, hole, max_unknowns=max_unknowns)
    alpha = np.clip(depth_in_hole / band - 1.0, 0.0, 1.0)[..., None]  # cv2 up to `band` px in, membrane from 2*band
    return ((1.0 - alpha) * fine + alpha * smooth).astype(np.float32)


class OpenCVInpainter:
    """Classical inpainting, no weights.  ``method``: "telea" or "ns" (Navier-Stokes)."""

    name = "opencv"

    def __init__(self, ctx=None, *, method: str = "telea", radius: float = 3.0, band: float = 8.0):
        self.method, self.radius, self.band = method, float(radius), float(band)
        fill_holes(np.zeros((4, 4, 1), np.float32), np.eye(4, dtype=bool), method=method)  # reject a bad method now

    def inpaint(self, image, mask, *, depth=None, prompt="", negative_prompt="", seed=0, progress=None, should_stop=None):
        image, mask = _check(image, mask)
        if should_stop and should_stop():
            raise Cancelled("inpainting cancelled")
        filled = fill_holes(image, mask, radius=self.radius, method=self.method, band=self.band)
        if progress:
            progress(1.0)
        return _keep_known(image, mask, filled)


# --------------------------------------------------------------------------------------------
# Diffusion (shared with engine.text2image)


def torch_dtype(device: str):
    """fp16 on CUDA (half the memory, tensor cores), fp32 on the CPU (fp16 is slow or missing there)."""
    import torch

    return torch.float16 if str(device).startswith("cuda") else torch.float32


def step_callback(progress: Progress, should_stop: ShouldStop, what: str):
    """A diffusers ``callback_on_step_end`` reporting each step and cancelling cooperatively.

    The total is the pipeline's own count of denoising steps (it differs from
    ``num_inference_steps`` with ``strength`` < 1 and with PNDM's extra warm-up step).
    Raising inside the callback ends the pipeline call at once (no wasted VAE decode); the
    pipeline object stays usable for the next call.
    """

    def callback(pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        total = pipe.num_timesteps
        if progress:
            progress((step + 1) / total)
        if should_stop and should_stop():
            raise Cancelled(f"{what} cancelled after step {step + 1} of {total}")
        return callback_kwargs

    return callback


def quiet_loading() -> None:
    """No tqdm bars while loading: the engine's stderr goes to its log, progress goes out as events."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


SOLVERS = tuple(MAX_DIFFUSION_STEPS)


def solver_scheduler(scheduler, solver: str):
    """A scheduler of kind ``solver`` with the model's noise schedule (``scheduler.config``).

    SD 1.5 ships PNDM, which needs ~50 steps; DPM-Solver++ (2nd order multistep) and UniPC reach
    the same quality in ~20 (diffusers' scheduler docs), i.e. 2.5x fewer UNet evaluations.
    """
    from diffusers import DPMSolverMultistepScheduler, PNDMScheduler, UniPCMultistepScheduler

    kinds = {"dpm++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
             "unipc": (UniPCMultistepScheduler, {}), "pndm": (PNDMScheduler, {})}
    if solver not in kinds:
        raise ValueError(f"unknown diffusion solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    kind, options = kinds[solver]
    return kind.from_config(scheduler.config, **options)


def generator(seed: int):
    """A CPU generator: the same seed gives the same noise on the CPU and on CUDA."""
    import torch

    return torch.Generator(device="cpu").manual_seed(int(seed))


def load_sd_pipeline(pipeline_cls, resolved: Resolved, device: str, **components):
    """``pipeline_cls.from_pretrained`` of a Stable Diffusion folder, on ``device``, quiet.

    The UNet, VAE and text encoder are loaded one by one from the files ``resolved`` chose
    (``variant=`` / ``use_safetensors=``), so a folder holding several variants gives the chosen
    one.  The safety checker is not loaded: it is a second CLIP model in memory, and on scene
    backgrounds its false positives would black out views of the world.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    quiet_loading()
    dtype = torch_dtype(device)
    path = str(resolved.path)
    for name, cls in (("unet", UNet2DConditionModel), ("vae", AutoencoderKL), ("text_encoder", CLIPTextModel)):
        if name not in components:
            components[name] = cls.from_pretrained(path, dtype=dtype, **resolved.weights[name].kwargs())
    pipe = pipeline_cls.from_pretrained(path, dtype=dtype, safety_checker=None, requires_safety_checker=False, **components)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def prompt_embeddings(pipe, prompt: str, negative_prompt: str, guided: bool) -> tuple:
    """(prompt, negative prompt or None) embeddings for a prompt of any length.

    CLIP reads 77 tokens: 75 between its start and end tokens.  diffusers cuts a longer prompt
    there (warning on every call), so the end of a long prompt would silently do nothing.  Here a
    prompt is encoded in windows of 75 tokens, each framed by the start and end tokens as CLIP was
    trained, and the windows' embeddings are concatenated (what AUTOMATIC1111 and ComfyUI do): the
    UNet's cross-attention reads any number of tokens.  A prompt of up to 75 tokens gives exactly
    ``pipe.encode_prompt``'s embeddings.  The shorter of the pair gets empty windows, so both have
    the length classifier-free guidance needs.
    """
    import torch

    tokenizer, encoder = pipe.tokenizer, pipe.text_encoder
    window = tokenizer.model_max_length - 2

    def windows(text: str) -> list[list[int]]:
        ids = tokenizer(text, add_special_tokens=False, verbose=False).input_ids
        return [ids[start:start + window] for start in range(0, len(ids), window)] or [[]]

    def encode(chunks: list[list[int]], count: int):
        chunks = chunks + [[]] * (count - len(chunks))
        rows = [[tokenizer.bos_token_id, *chunk, tokenizer.eos_token_id] + [tokenizer.pad_token_id] * (window - len(chunk))
                for chunk in chunks]
        with torch.no_grad():
            hidden = encoder(torch.tensor(rows, device=encoder.device))[0]  # [windows, 77, width]
        return hidden.reshape(1, -1, hidden.shape[-1]).to(encoder.dtype)

    positive = windows(prompt)
    negative = windows(negative_prompt) if guided else []
    count = max(len(positive), len(negative))
    return encode(positive, count), (encode(negative, count) if guided else None)


# Both diffusion inpainting backends run on the same sd-inpaint weights: one loaded copy of its
# components (UNet, VAE, text encoder, tokenizer) per weights folder and device, ~2 GB of VRAM
# saved.  Weak values: the components are freed once no backend holds them.
_SD_INPAINT = weakref.WeakValueDictionary()


def sd_inpaint_pipeline(ctx):
    """The shared ``StableDiffusionInpaintPipeline`` of the profile's ``sd-inpaint`` weights on ``ctx.device``."""
    from diffusers import StableDiffusionInpaintPipeline

    from .models import LOADING, resolve_weights

    resolved = resolve_weights(ctx, "sd-inpaint", SD_LAYOUT)
    key = (str(Path(resolved.path).resolve()), str(ctx.device))
    with LOADING:
        pipe = _SD_INPAINT.get(key)
        if pipe is None:
            pipe = load_sd_pipeline(StableDiffusionInpaintPipeline, resolved, ctx.device)
            _SD_INPAINT[key] = pipe
    return pipe


def size_multiple(pipe) -> int:
    """Image sides must divide by this: the VAE's factor times the UNet's downsamplings (and by 8,
    which the pipelines check)."""
    return math.lcm(8, int(pipe.vae_scale_factor) * 2 ** (len(pipe.unet.config.block_out_channels) - 1))


def _pad_to(array: np.ndarray, multiple: int) -> np.ndarray:
    """Mirror-pad bottom/right so both sides divide by ``multiple`` (the known context stays unresampled)."""
    h, w = array.shape[:2]
    ph, pw = -h % multiple, -w % multiple
    if not (ph or pw):
        return array
    pad = [(0, ph), (0, pw)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, pad, mode="symmetric")


class _DiffusionInpainter:
    """Shared call path of the two Stable Diffusion inpainting backends."""

    name = ""
    model = "sd-inpaint"
    base = None  # the shared sd-inpaint pipeline (sd_inpaint_pipeline) whose components self.pipe uses

    def __init__(self, ctx, *, steps: int = 20, guidance: float = 7.5, strength: float = 1.0, solver: str = "dpm++",
                 cuda_graphs: bool = True):
        self.steps, self.guidance, self.strength = int(steps), float(guidance), float(strength)
        self.pipe = self._load(ctx)
        self.scheduler = solver_scheduler(self.pipe.scheduler, solver)  # set on the pipe at each call: the base is shared
        self.cuda_graphs = bool(cuda_graphs) and str(ctx.device).startswith("cuda")
        self._prompts: dict[tuple[str, str], tuple] = {}  # (prompt, negative) -> text embeddings

    def _load(self, ctx):
        raise NotImplementedError

    def _extra(self, depth: np.ndarray | None, mask: np.ndarray, shape: tuple[int, int]) -> dict:
        return {}

    def inpaint(self, image, mask, *, depth=None, prompt="", negative_prompt="", seed=0, progress=None, should_stop=None):
        from .cuda_graphs import use_cuda_graphs

        image, mask = _check(image, mask)
        if not mask.any():
            return image.copy()
        if should_stop and should_stop():
            raise Cancelled(f"{self.name} cancelled before it started")
        h, w = mask.shape
        multiple = size_multiple(self.pipe)
        padded = _pad_to(image, multiple)
        padded_mask = np.zeros(padded.shape[:2], np.float32)
        padded_mask[:h, :w] = mask  # the padding is known context, never filled
        self.pipe.scheduler = self.scheduler
        for name in ("unet", "controlnet"):
            use_cuda_graphs(getattr(self.pipe, name, None), self.cuda_graphs)
        positive, negative = self._embeddings(prompt, negative_prompt)
        result = self.pipe(
            prompt_embeds=positive,
            negative_prompt_embeds=negative,
            image=padded[None],
            mask_image=padded_mask[None, ..., None],
            height=padded.shape[0],
            width=padded.shape[1],
            num_inference_steps=self.steps,
            strength=self.strength,
            guidance_scale=self.guidance,
            generator=generator(seed),
            output_type="np",
            callback_on_step_end=step_callback(progress, should_stop, self.name),
            **self._extra(depth, mask, padded.shape[:2]),
        ).images[0]
        return _keep_known(image, mask, np.asarray(result, np.float32)[:h, :w])

    def _embeddings(self, prompt: str, negative_prompt: str) -> tuple:
        """The text encoder's output for a prompt pair, computed once: every view of a world has the same prompt."""
        key = (prompt, negative_prompt)
        if key not in self._prompts:
            self._prompts[key] = prompt_embeddings(self.pipe, prompt, negative_prompt, self.guidance > 1)
            while len(self._prompts) > 8:
                self._prompts.pop(next(iter(self._prompts)))
        return self._prompts[key]

    def release(self) -> None:
        """Drop the weights (the low-VRAM policy frees each model after its stage)."""
        import torch

        self.pipe = self.base = None  # the shared components go once the other backend lets go too
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class SDInpainter(_DiffusionInpainter):
    """Stable Diffusion inpainting (model ``sd-inpaint``) for the holes of expansion views."""

    name = "sd-inpaint"

    def _load(self, ctx):
        self.base = sd_inpaint_pipeline(ctx)
        return self.base


def control_depth(depth: np.ndarray) -> np.ndarray:
    """The ControlNet's depth image, float32 [H, W, 3] in 0..1, near = bright.

    The paper conditions on D~ = (D - Dmin) / (Dmax - Dmin) over the valid pixels.  Depth
    ControlNets were trained on MiDaS-style maps where near is white and far is black, so the
    image is 1 - D~; pixels with no depth are black (as far as possible).
    """
    depth = np.asarray(depth, np.float32)
    valid = np.isfinite(depth) & (depth > 0)
    if not valid.any():
        raise BadInputError("sd-controlnet-depth: the depth map has no valid value")
    lo, hi = float(depth[valid].min()), float(depth[valid].max())
    normalised = (depth - lo) / max(hi - lo, 1e-6)
    near_bright = np.where(valid, 1.0 - normalised, 0.0).astype(np.float32)
    return np.repeat(near_bright[..., None], 3, axis=-1)


class ControlNetDepthInpainter(_DiffusionInpainter):
    """SD inpainting guided by a depth ControlNet (models ``sd-inpaint`` + ``controlnet-depth``).

    ``depth`` must describe the surface to paint: inside the mask, the background that continues
    behind the removed foreground (the pipeline passes ``depth_geometry.complete_far_side(depth, mask)``, which it
    needs for the points anyway), or the ControlNet would paint the foreground back.
    """

    name = "sd-controlnet-depth"

    def __init__(self, ctx, *, conditioning_scale: float = 1.0, **options):
        self.conditioning_scale = float(conditioning_scale)
        super().__init__(ctx, **options)

    def _load(self, ctx):
        from diffusers import ControlNetModel, StableDiffusionControlNetInpaintPipeline

        from .models import resolve_weights

        resolved = resolve_weights(ctx, "controlnet-depth", CONTROLNET_LAYOUT)
        dtype = torch_dtype(ctx.device)
        controlnet = ControlNetModel.from_pretrained(str(resolved.path), dtype=dtype, **resolved.weights[""].kwargs()).to(ctx.device)
        self.base = sd_inpaint_pipeline(ctx)
        # The base's modules, not copies; a scheduler of its own (schedulers keep per-call state).
        components = {**self.base.components, "scheduler": type(self.base.scheduler).from_config(self.base.scheduler.config)}
        pipe = StableDiffusionControlNetInpaintPipeline(**components, controlnet=controlnet, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _extra(self, depth, mask, shape):
        if depth is None:
            raise BadInputError("sd-controlnet-depth needs the depth of the image it fills")
        control = _pad_to(control_depth(depth), size_multiple(self.pipe))
        return {"control_image": control[None], "controlnet_conditioning_scale": self.conditioning_scale}


BACKENDS = {
    "opencv": OpenCVInpainter,
    "sd-inpaint": SDInpainter,
    "sd-controlnet-depth": ControlNetDepthInpainter,
}


def create(name: str, ctx, **options) -> Inpainter:
    """The inpainting backend ``name``; ``options`` are its settings (steps, guidance, method...)."""
    try:
        backend = BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown inpainting backend {name!r}; choose one of: {', '.join(BACKENDS)}") from None
    return backend(ctx, **options)
