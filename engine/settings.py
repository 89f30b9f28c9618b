"""Run settings: every knob of a generate run, with its default and why.

A profile may override defaults (``Profile.settings``); the command line and job.json's
``settings`` override both.  Each stage hashes the fields it reads (``STAGE_FIELDS``) into its
cache key, so changing one field redoes exactly the stages that depend on it.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from .errors import BadInputError


@dataclass
class Settings:
    resolution: int = 384  # working resolution, long side in pixels
    fov: float = 60.0  # horizontal field of view (degrees) when neither a camera nor a model gives one
    steps: int = 4  # N: expansion views generated along the path
    preset: str = "orbit"  # camera path preset when no trajectory file is given
    preset_angle: float = 30.0  # total sweep of the preset (degrees; distance presets scale it)
    depth_edge_threshold: float = 0.1  # relative depth jump treated as an occlusion edge (no points across it)
    mask_iou_threshold: float = 0.85  # layers: keep masks with predicted IoU above this
    mask_min_area: float = 0.005  # layers: smallest kept mask, fraction of the image
    mask_max_area: float = 0.60  # layers: largest kept mask, fraction of the image
    foreground_percentile: float = 35.0  # layers: theta_d, percentile of depth below which a mask is foreground
    hidden_dilation_px: int = 3  # layers: how far the hidden region grows along depth edges
    sam_points_per_side: int = 32  # layers: SAM's automatic prompt grid
    inpaint_steps: int = 30  # diffusion steps per inpainting
    guidance: float = 7.5  # classifier-free guidance of the diffusion backends
    iterations: int = 0  # 3DGS optimisation steps; 0: the recipe's default (~3000 on CUDA, 300 on CPU)
    reprojections: int = 5  # M: jittered reprojections of the points per generated view
    jitter_deg: float = 5.0  # pose jitter of those reprojections
    sh_degree: int = -1  # spherical-harmonics degree of the Gaussians; -1: 3 on CUDA, 1 on CPU
    seed: int = 0

    def validate(self) -> "Settings":
        checks = [
            (16 <= self.resolution <= 4096, "resolution must be 16..4096"),
            (1.0 <= self.fov <= 170.0, "fov must be 1..170 degrees"),
            (0 <= self.steps <= 256, "steps must be 0..256"),
            (0.0 < self.depth_edge_threshold < 10.0, "depth_edge_threshold must be in (0, 10)"),
            (0.0 <= self.mask_min_area < self.mask_max_area <= 1.0, "need 0 <= mask_min_area < mask_max_area <= 1"),
            (0 <= self.hidden_dilation_px <= 64, "hidden_dilation_px must be 0..64"),
            (1 <= self.sam_points_per_side <= 128, "sam_points_per_side must be 1..128"),
            (0.0 < self.foreground_percentile < 100.0, "foreground_percentile must be in (0, 100)"),
            (1 <= self.inpaint_steps <= 1000, "inpaint_steps must be 1..1000"),
            (0 <= self.iterations <= 1_000_000, "iterations must be 0..1000000"),
            (0 <= self.reprojections <= 64, "reprojections must be 0..64"),
            (-1 <= self.sh_degree <= 3, "sh_degree must be 0..3 (or -1: automatic)"),
            (self.seed >= 0, "seed must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise BadInputError(f"bad setting: {message}")
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Settings":
        known = {field.name: field.type for field in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise BadInputError(f"unknown settings: {', '.join(unknown)}")
        defaults = cls()
        values = {}
        for name, value in data.items():
            expected = type(getattr(defaults, name))
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, expected) or isinstance(value, bool):
                raise BadInputError(f"setting {name!r} must be {expected.__name__}, got {value!r}")
            values[name] = value
        return cls(**values).validate()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def subset(self, names: tuple[str, ...]) -> dict[str, Any]:
        data = self.to_dict()
        return {name: data[name] for name in names}


# The fields engine.segment.LayerSettings shares with Settings.
LAYER_FIELDS = (
    "depth_edge_threshold",
    "mask_iou_threshold",
    "mask_min_area",
    "mask_max_area",
    "foreground_percentile",
    "hidden_dilation_px",
    "sam_points_per_side",
)

# What each stage reads (besides the profile's backends for its slots and the previous stage).
STAGE_FIELDS: dict[str, tuple[str, ...]] = {
    "inputs": ("resolution", "fov"),
    "depth": (),
    "segment": LAYER_FIELDS,
    "inpaint": ("inpaint_steps", "guidance", "seed", "depth_edge_threshold"),
    "expand": ("steps", "preset", "preset_angle", "inpaint_steps", "guidance", "seed", "depth_edge_threshold"),
    "splat": ("iterations", "reprojections", "jitter_deg", "sh_degree", "seed"),  # + the device
    "export": (),
}


def default_cache_dir() -> Path:
    """Models and tiny checkpoints: $GEN3D_CACHE, else the platform's user cache folder."""
    if os.environ.get("GEN3D_CACHE"):
        return Path(os.environ["GEN3D_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gen3d"
