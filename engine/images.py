"""Reading the user's image and depth map: every format quirk handled here, with clear errors.

Images: any Pillow format; EXIF orientation applied; CMYK/paletted/grey/16-bit/alpha converted
to RGB; huge images are decoded reduced where the format allows (JPEG draft) and refused
above ``MAX_PIXELS`` otherwise, so memory is never exhausted.  Depth: ``.npy`` (metres),
16-bit PNG (millimetres), OpenEXR (a Blender Z pass, metres).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import BadInputError

MAX_PIXELS = 80_000_000  # decoded pixels we accept (80 MP = 240 MB as 8-bit RGB)
MIN_SIDE = 16
FAR_DEPTH = 1.0e5  # metres; Blender writes ~1e10 where a Z pass sees the world background
FORMATS_HINT = "save it as PNG or JPEG"
DEPTH_FORMATS = "save depth as .npy (metres), 16-bit .png (millimetres) or .exr (Z pass)"

# Pillow refuses images above ~179 MP at open(), before a JPEG could be decoded reduced; our own
# MAX_PIXELS check (after the reduction) replaces its guard.
Image.MAX_IMAGE_PIXELS = None


def _open_image(path: Path, long_side: int) -> Image.Image:
    """The decoded, EXIF-oriented image; JPEGs decoded reduced, but never below ``long_side``."""
    if not path.is_file():
        raise BadInputError(f"image not found: {path}; check the path")
    try:
        image = Image.open(path)
        width, height = image.size
        if image.format == "JPEG":
            image.draft(None, (long_side, long_side))  # DCT scaling: 1/2..1/8 of the decode work and memory
        if image.size[0] * image.size[1] > MAX_PIXELS:
            raise BadInputError(
                f"image {path.name} is {width}x{height} ({width * height / 1e6:.0f} MP); "
                f"the limit is {MAX_PIXELS / 1e6:.0f} MP: downscale it first"
            )
        image.load()
    except UnidentifiedImageError:
        raise BadInputError(f"{path.name} is not an image Gen3D can read; {FORMATS_HINT}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # truncated or corrupt data
        raise BadInputError(f"image {path.name} is corrupt or truncated ({exc}); re-export it or {FORMATS_HINT}") from None
    image = ImageOps.exif_transpose(image)
    if min(image.size) < MIN_SIDE:
        raise BadInputError(
            f"image {path.name} is {image.size[0]}x{image.size[1]}; each side needs at least {MIN_SIDE} px: use a larger image"
        )
    return image


def check_image(path: Path | str) -> tuple[int, int]:
    """Decode ``path`` once, reduced where possible, to refuse it before any work: the oriented
    (W, H) of that decode, which has the image's aspect."""
    return _open_image(Path(path), MIN_SIDE).size


def load_image(path: Path | str, long_side: int) -> np.ndarray:
    """An RGB float32 [H, W, 3] image in [0, 1], resized so its long side is ``long_side``."""
    path = Path(path)
    rgb = _to_rgb(_open_image(path, long_side))
    rgb = rgb.resize(working_size(*rgb.size, long_side), Image.Resampling.LANCZOS)  # resized as 8-bit: a quarter of the memory
    return np.asarray(rgb, dtype=np.float32) / 255.0


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # Pillow's own conversion clips 16-bit values at 255 instead of scaling them.
        array = np.asarray(image, dtype=np.float32)
        array = array / (65535.0 if array.max() > 255 else 255.0)
        return Image.fromarray(np.round(np.clip(array, 0, 1) * 255).astype(np.uint8)).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels carry arbitrary colour: composite over mid-grey, a neutral prior.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (128, 128, 128, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def working_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    if long_side < MIN_SIDE:
        raise BadInputError(f"resolution {long_side} is too small; use at least {MIN_SIDE}")
    scale = long_side / max(width, height)
    # Even sizes keep diffusion backends (multiples of 8 after their own padding) and video happy.
    return max(MIN_SIDE, 2 * round(width * scale / 2)), max(MIN_SIDE, 2 * round(height * scale / 2))


def resize_depth(depth: np.ndarray, width: int, height: int) -> np.ndarray:
    """Nearest-neighbour resize: averaging depth across an occlusion edge invents surfaces."""
    rows = np.minimum((np.arange(height) + 0.5) * depth.shape[0] / height, depth.shape[0] - 1).astype(int)
    cols = np.minimum((np.arange(width) + 0.5) * depth.shape[1] / width, depth.shape[1] - 1).astype(int)
    return depth[rows][:, cols]


def load_depth(path: Path | str, image_size: tuple[int, int]) -> np.ndarray:
    """Metric z-depth float32 [H, W] at ``image_size`` (W, H); 0 marks pixels without depth."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"depth file not found: {path}; check the path")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            depth = np.load(path, allow_pickle=False).astype(np.float32)
        elif suffix == ".png":
            depth = _png_millimetres(path)
        elif suffix == ".exr":
            depth = _exr_depth(path)
        else:
            raise BadInputError(f"depth {path.name} has an unknown format; {DEPTH_FORMATS}")
    except (OSError, ValueError, UnidentifiedImageError) as exc:
        raise BadInputError(f"depth {path.name} is unreadable ({exc}); {DEPTH_FORMATS}") from None
    if depth.ndim == 3 and depth.shape[2] >= 1:
        depth = depth[..., 0]
    if depth.ndim != 2:
        raise BadInputError(f"depth {path.name} has shape {depth.shape}; save a single-channel map")
    width, height = image_size
    source_aspect, target_aspect = depth.shape[1] / depth.shape[0], width / height
    if not math.isclose(source_aspect, target_aspect, rel_tol=0.02):
        raise BadInputError(
            f"depth {path.name} is {depth.shape[1]}x{depth.shape[0]} but the image's aspect is "
            f"{target_aspect:.3f}; export the depth at the image's size"
        )
    depth = np.where(np.isfinite(depth) & (depth > 0) & (depth < FAR_DEPTH), depth, 0.0).astype(np.float32)
    if not np.any(depth > 0):
        raise BadInputError(f"depth {path.name} has no valid (finite, positive) values; {DEPTH_FORMATS}")
    return resize_depth(depth, width, height)


def _png_millimetres(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        if image.mode not in ("I;16", "I;16B", "I;16L", "I"):
            raise BadInputError(f"depth {path.name} is an 8-bit/colour PNG; depth PNGs must be 16-bit millimetres")
        return np.asarray(image, dtype=np.float32) / 1000.0


def _exr_depth(path: Path) -> np.ndarray:
    try:
        import OpenEXR
    except ImportError as exc:
        raise BadInputError("reading .exr depth needs the 'openexr' package in the engine's environment") from exc
    with OpenEXR.File(str(path)) as exr:
        channels = exr.channels()
        # Blender names the Z pass "Depth.V" / "ViewLayer.Depth.Z" / "Z"; a lone channel is the depth.
        for name in channels:
            if name.split(".")[-1] in ("Z", "V") or name.lower().endswith("depth"):
                return np.asarray(channels[name].pixels, dtype=np.float32)
        if len(channels) == 1:
            return np.asarray(next(iter(channels.values())).pixels, dtype=np.float32)
        raise BadInputError(f"depth {path.name} has channels {sorted(channels)}; none is a Z/depth channel")


def save_png(path: Path | str, image: np.ndarray) -> None:
    """Save float [H, W, 3] (or bool/float [H, W]) as an 8-bit PNG, atomically."""
    from .job import atomic_path

    array = np.asarray(image)
    if array.dtype == bool:
        array = array.astype(np.float32)
    with atomic_path(path) as tmp:
        Image.fromarray(np.round(np.clip(array, 0, 1) * 255).astype(np.uint8)).save(tmp, format="PNG")
