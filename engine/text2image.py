"""Text input: the first image from a prompt, with a diffusers text-to-image pipeline.

``create(name, ctx, **options) -> TextToImage``; ``generate(prompt, *, width, height,
negative_prompt, seed, progress, should_stop) -> float32 [height, width, 3]`` in 0..1;
``progress(fraction)`` after each step, ``should_stop()`` polled there (raises Cancelled).

Backend ``sd``: ``StableDiffusionPipeline`` with model ``sd`` (a Hugging Face id, a local
folder in the diffusers layout, or ``tiny:sd``).  The camera of the generated image is set
by the pipeline "by convention from the image size" (METHOD.md §1), not here.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import BadInputError, Cancelled
from .inpaint import (SD_LAYOUT, Progress, ShouldStop, generator, load_sd_pipeline, prompt_embeddings, size_multiple,
                      solver_scheduler, step_callback)


class SDTextToImage:
    name = "sd"
    model = "sd"

    def __init__(self, ctx, *, steps: int = 20, guidance: float = 7.5, solver: str = "dpm++", cuda_graphs: bool = True):
        from diffusers import StableDiffusionPipeline

        from .cuda_graphs import use_cuda_graphs
        from .models import resolve_weights

        self.steps, self.guidance = int(steps), float(guidance)
        self.pipe = load_sd_pipeline(StableDiffusionPipeline, resolve_weights(ctx, self.model, SD_LAYOUT), ctx.device)
        self.pipe.scheduler = solver_scheduler(self.pipe.scheduler, solver)  # its own pipeline: set once
        use_cuda_graphs(self.pipe.unet, bool(cuda_graphs) and str(ctx.device).startswith("cuda"))

    def generate(
        self,
        prompt: str,
        *,
        width: int = 512,
        height: int = 512,
        negative_prompt: str = "",
        seed: int = 0,
        progress: Progress = None,
        should_stop: ShouldStop = None,
    ) -> np.ndarray:
        if not prompt.strip():
            raise BadInputError("text-to-image needs a prompt")
        if width <= 0 or height <= 0:
            raise BadInputError(f"text-to-image: bad size {width}x{height}")
        if should_stop and should_stop():
            raise Cancelled("text-to-image cancelled before it started")
        # Generate at the next size the UNet accepts, then centre-crop to the size asked for.
        multiple = size_multiple(self.pipe)
        gen_w, gen_h = math.ceil(width / multiple) * multiple, math.ceil(height / multiple) * multiple
        positive, negative = prompt_embeddings(self.pipe, prompt, negative_prompt, self.guidance > 1)
        image = self.pipe(
            prompt_embeds=positive,
            negative_prompt_embeds=negative,
            width=gen_w,
            height=gen_h,
            num_inference_steps=self.steps,
            guidance_scale=self.guidance,
            generator=generator(seed),
            output_type="np",
            callback_on_step_end=step_callback(progress, should_stop, "text-to-image"),
        ).images[0]
        y0, x0 = (gen_h - height) // 2, (gen_w - width) // 2
        return np.clip(np.asarray(image[y0 : y0 + height, x0 : x0 + width], np.float32), 0.0, 1.0)

    def release(self) -> None:
        import torch

        self.pipe = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


BACKENDS = {"sd": SDTextToImage}


def create(name: str, ctx, **options) -> SDTextToImage:
    try:
        backend = BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown text-to-image backend {name!r}; choose one of: {', '.join(BACKENDS)}") from None
    return backend(ctx, **options)
