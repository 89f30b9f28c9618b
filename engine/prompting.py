"""The background-inpainting prompt when the user gives none (METHOD.md §1).

The paper's template: "high-resolution [scene category] background with [dominant colours]
colours, photorealistic, 8K".  The colours come from the image's colour statistics (k-means
in CIELAB, each cluster named by the nearest of a small set of basic colour names); the
category from CLIP zero-shot classification over a list of scene categories.

``create(name, ctx, **options)`` -> an object with ``.prompt(image) -> str``:

* ``clip``          CLIP zero-shot category (transformers ``CLIPModel`` + ``CLIPProcessor``,
                    model ``clip``) and colour statistics.
* ``colour-stats``  no weights: colour statistics, and the neutral word "scene" as category.
"""

from __future__ import annotations

import numpy as np

from .errors import BadInputError
from .models import TRANSFORMERS, Layout

TEMPLATE = "high-resolution {category} background with {colours} colours, photorealistic, 8K"
NEUTRAL_CATEGORY = "scene"

# Scene categories for zero-shot labelling: common indoor and outdoor scene types.
SCENE_CATEGORIES = (
    "living room", "bedroom", "kitchen", "bathroom", "office", "classroom", "library", "restaurant",
    "shop", "museum", "church interior", "warehouse", "corridor", "city street", "alley",
    "town square", "park", "garden", "forest", "jungle", "meadow", "field", "mountain", "canyon",
    "desert", "beach", "lake", "river", "waterfall", "ocean", "snowy landscape", "cave",
    "village", "castle", "ruins", "harbour", "bridge", "night sky", "underwater scene",
    "fantasy landscape", "sci-fi interior",
)  # fmt: skip

# Basic colour names (sRGB 0..1); clusters are named by the nearest one in CIELAB.
COLOUR_NAMES = {
    "black": (0.05, 0.05, 0.05),
    "grey": (0.5, 0.5, 0.5),
    "white": (0.95, 0.95, 0.95),
    "red": (0.8, 0.1, 0.1),
    "orange": (0.95, 0.55, 0.1),
    "yellow": (0.95, 0.9, 0.15),
    "green": (0.2, 0.6, 0.2),
    "olive": (0.45, 0.45, 0.1),
    "teal": (0.0, 0.5, 0.5),
    "sky blue": (0.5, 0.75, 0.95),
    "blue": (0.15, 0.3, 0.8),
    "navy": (0.05, 0.1, 0.4),
    "purple": (0.5, 0.2, 0.6),
    "pink": (0.95, 0.6, 0.75),
    "brown": (0.45, 0.28, 0.12),
    "beige": (0.88, 0.82, 0.66),
}


def background_prompt(category: str, colours: list[str]) -> str:
    """The paper's template with its brackets filled."""
    if not colours:
        raise ValueError("background_prompt needs at least one colour")
    joined = colours[0] if len(colours) == 1 else ", ".join(colours[:-1]) + " and " + colours[-1]
    return TEMPLATE.format(category=category, colours=joined)


def _to_lab(rgb: np.ndarray) -> np.ndarray:
    import cv2

    rgb = np.clip(np.asarray(rgb, np.float32), 0.0, 1.0).reshape(-1, 1, 3)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab).reshape(-1, 3)


def _kmeans(points: np.ndarray, k: int, iterations: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Plain k-means with k-means++ seeding (deterministic for a seed): (centres [k, 3], labels)."""
    rng = np.random.default_rng(seed)
    k = min(k, len(np.unique(points, axis=0)))
    centres = [points[rng.integers(len(points))]]
    for _ in range(1, k):
        d2 = np.min(((points[:, None] - np.array(centres)[None]) ** 2).sum(-1), axis=1)
        centres.append(points[rng.choice(len(points), p=d2 / d2.sum())])
    centres = np.array(centres)
    for _ in range(iterations):
        labels = np.argmin(((points[:, None] - centres[None]) ** 2).sum(-1), axis=1)
        moved = np.array([points[labels == j].mean(0) if (labels == j).any() else centres[j] for j in range(k)])
        if np.allclose(moved, centres):
            break
        centres = moved
    labels = np.argmin(((points[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    return centres, labels


def dominant_colours(image: np.ndarray, *, max_colours: int = 3, min_share: float = 0.1, clusters: int = 6) -> list[str]:
    """Names of the image's dominant colours, most frequent first.

    k-means of the pixels in CIELAB (perceptual distances), each cluster named by the nearest
    basic colour; names sharing clusters add up, and those covering at least ``min_share`` of
    the image are kept (always at least one).
    """
    import cv2

    image = np.asarray(image, np.float32)
    if image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
        raise BadInputError(f"colour statistics need an [H, W, 3] image, got {image.shape}")
    h, w = image.shape[:2]
    scale = min(1.0, 64.0 / max(h, w))  # 64 px is plenty for colour statistics
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    lab = _to_lab(small)
    centres, labels = _kmeans(lab.astype(np.float64), clusters)
    palette_names = list(COLOUR_NAMES)
    palette = _to_lab(np.array(list(COLOUR_NAMES.values()), np.float32)).astype(np.float64)
    share: dict[str, float] = {}
    for j, centre in enumerate(centres):
        name = palette_names[int(np.argmin(((palette - centre) ** 2).sum(-1)))]
        share[name] = share.get(name, 0.0) + float((labels == j).mean())
    ranked = sorted(share.items(), key=lambda item: -item[1])
    kept = [name for name, s in ranked if s >= min_share][:max_colours]
    return kept or [ranked[0][0]]


class ColourStatsPrompter:
    """No weights: the category is the neutral word "scene"."""

    name = "colour-stats"

    def __init__(self, ctx=None, *, max_colours: int = 3):
        self.max_colours = max_colours

    def category(self, image: np.ndarray) -> str:
        return NEUTRAL_CATEGORY

    def prompt(self, image: np.ndarray) -> str:
        return background_prompt(self.category(image), dominant_colours(image, max_colours=self.max_colours))


# What a CLIP folder must hold.  openai/clip-vit-base-patch32's main branch publishes only the
# pickle pytorch_model.bin (a model.safetensors waits in an open pull request): it is chosen only
# where no safetensors exists, and transformers reads it with torch.load(weights_only=True), which
# refuses any pickled object that is not a tensor or a plain container.
CLIP_LAYOUT = Layout(
    components=(("", TRANSFORMERS),),
    required=("config.json", "preprocessor_config.json"),
)


class ClipPrompter(ColourStatsPrompter):
    """CLIP zero-shot scene category ("a photo of a {category}") plus colour statistics."""

    name = "clip"

    def __init__(self, ctx, *, categories: tuple[str, ...] = SCENE_CATEGORIES, max_colours: int = 3):
        import torch
        from transformers import CLIPModel, CLIPProcessor

        from .inpaint import quiet_loading, torch_dtype
        from .models import resolve_weights

        super().__init__(ctx, max_colours=max_colours)
        if not categories:
            raise ValueError("clip prompter needs at least one category")
        self.categories = tuple(categories)
        self.device = ctx.device
        quiet_loading()
        resolved = resolve_weights(ctx, "clip", CLIP_LAYOUT)
        path = str(resolved.path)
        self.processor = CLIPProcessor.from_pretrained(path)
        self.model = CLIPModel.from_pretrained(path, dtype=torch_dtype(ctx.device), **resolved.weights[""].kwargs())
        self.model = self.model.to(ctx.device).eval()
        texts = self.processor(text=[f"a photo of a {c}" for c in self.categories], return_tensors="pt", padding=True)
        with torch.no_grad():
            features = self.model.get_text_features(**{k: v.to(ctx.device) for k, v in texts.items()})
        self.text_features = torch.nn.functional.normalize(_tensor(features).float(), dim=-1)

    def scores(self, image: np.ndarray) -> dict[str, float]:
        """Zero-shot probability of each category (softmax of CLIP's scaled cosine similarities)."""
        import torch

        image = np.asarray(image, np.float32)
        if image.ndim != 3 or image.shape[2] != 3:
            raise BadInputError(f"CLIP needs an [H, W, 3] image, got {image.shape}")
        pixels = self.processor(images=(np.clip(image, 0, 1) * 255).round().astype(np.uint8), return_tensors="pt")
        with torch.no_grad():
            features = self.model.get_image_features(pixel_values=pixels["pixel_values"].to(self.device, self.model.dtype))
            features = torch.nn.functional.normalize(_tensor(features).float(), dim=-1)
            logits = self.model.logit_scale.exp().float() * features @ self.text_features.T
        probabilities = logits.softmax(dim=-1)[0].cpu().numpy()
        return dict(zip(self.categories, probabilities.tolist()))

    def category(self, image: np.ndarray) -> str:
        scores = self.scores(image)
        return max(scores, key=scores.get)


def _tensor(features):
    """``get_*_features`` returns a tensor, or (newer transformers) an output object holding it."""
    return features if hasattr(features, "float") else features.pooler_output


BACKENDS = {"colour-stats": ColourStatsPrompter, "clip": ClipPrompter}


def create(name: str, ctx, **options):
    try:
        backend = BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown caption backend {name!r}; choose one of: {', '.join(BACKENDS)}") from None
    return backend(ctx, **options)
