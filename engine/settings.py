"""Run settings: every knob of a generate run, with its default and why.

A profile may override defaults (``Profile.settings``); the command line and job.json's
``settings`` override both.  Each stage declares the fields it reads (engine.pipeline.STAGE_SPECS)
and hashes them into its cache key, so changing one field redoes exactly the stages that read it.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from .errors import BadInputError


# The most diffusion steps each solver can take on Stable Diffusion 1.5's schedule (1000 training
# timesteps, "leading" spacing, steps_offset 1), as diffusers 0.42 spaces them: the multistep solvers
# step by 1000 // (n + 1), so from n = 999 their first timestep is 1000, one past the schedule (NaN,
# and an IndexError at 1000); PNDM steps by 1000 // n and fails at n = 1000.  tests/test_inpaint.py
# runs each scheduler at its limit and one past it.
MAX_DIFFUSION_STEPS = {"dpm++": 998, "unipc": 998, "pndm": 999}


@dataclass
class Settings:
    resolution: int = 384  # working resolution, long side in pixels
    fov: float = 60.0  # horizontal field of view (degrees) when neither a camera nor a model gives one
    steps: int = 4  # N: expansion views generated along the path
    preset: str = "orbit"  # camera path preset when no trajectory file is given
    preset_angle: float = 30.0  # total sweep of the preset (degrees; distance presets scale it)
    depth_edge_threshold: float = 0.1  # relative depth jump treated as an occlusion edge (no points across it)
    align_fit: str = "scale"  # expansion depth -> existing geometry: "scale", "scale_shift", "adam" (LucidDreamer), "none"
    align_correction: str = "ray"  # then at the seam: "ray" (ours), "linear-corners" (LucidDreamer), "none"
    align_seam_tolerance: float = 0.1  # relative depth gap beyond which a hole-border pixel is an occlusion (eval-world, 512 px: docs/EVAL.md)
    align_falloff: float = 0.25  # how far the seam correction reaches into the hole, fraction of the image
    align_seam_smoothing: float = 0.0  # 0: the correction is pinned to each seam pixel; > 0: fitted over this length (fraction of the image)
    align_seam_spread: float = 0.0  # > 0: a hole-border pixel this many robust deviations off the seam's median gap is an occlusion too
    align_seam_adaptive: float = 0.0  # > 0: the occlusion tolerance widens to this many times the hole border's median gap
    align_seam_edge_radius: float = 0.006  # a hole-border pixel this close (fraction of the long side) to a depth edge of the new view's estimate is an occlusion (0: off; eval-world, docs/EVAL.md)
    depth_ramp_radius: float = 0.006  # the new view's estimate: flying pixels this far (fraction of the long side) either side of a depth edge go back on a surface (0: off; docs/EVAL.md)
    mask_iou_threshold: float = 0.85  # layers: keep masks with predicted IoU above this
    mask_min_area: float = 0.005  # layers: smallest kept mask, fraction of the image
    mask_max_area: float = 0.60  # layers: largest kept mask, fraction of the image
    foreground_percentile: float = 35.0  # layers: theta_d, percentile of depth below which a mask is foreground
    hidden_dilation_px: int = 3  # layers: how far the hidden region grows along depth edges
    sam_points_per_side: int = 32  # layers: SAM's automatic prompt grid
    inpaint_steps: int = 20  # diffusion steps per inpainting (20 multistep = PNDM's 50 in diffusers' docs)
    diffusion_solver: str = "dpm++"  # "dpm++" (DPM-Solver++ multistep), "unipc", "pndm" (SD 1.5's own)
    cuda_graphs: bool = True  # diffusion UNet/ControlNet steps replayed as CUDA graphs (launch-bound otherwise)
    guidance: float = 7.5  # classifier-free guidance of the diffusion backends
    splat_schedule: str = "auto"  # 3DGS: "fast" (GPU default), "lucid" (LucidDreamer's 2990 steps), "cpu"; auto by device
    iterations: int = 0  # 3DGS optimisation steps; 0: the schedule's own
    reprojections: int = 5  # M: jittered reprojections of the points per generated view
    jitter_deg: float = 5.0  # pose jitter of those reprojections
    sh_degree: int = -1  # spherical-harmonics degree of the Gaussians; -1: 3 on CUDA, 1 on CPU
    # 3DGS image formation: gsplat's "antialiased" (Cycles with a Gaussian pixel filter reproduces it,
    # docs/BLENDER-FIDELITY.md) or, false, "classic" (as 3DGS's own viewers render a PLY)
    antialiased: bool = True
    sky: bool = True  # pixels without depth (or beyond sky_far_limit) become a far sky layer (engine.sky)
    sky_far_limit: float = 0.0  # metres: depth beyond this is sky too (0: only pixels without depth)
    seed: int = 0

    def validate(self) -> "Settings":
        """Every field checked here, before any work (tests/test_requests.py covers each one)."""
        from .trajectory import PRESETS

        most_steps = MAX_DIFFUSION_STEPS.get(self.diffusion_solver, 0)  # an unknown solver is refused first
        checks = [
            (16 <= self.resolution <= 4096, "resolution must be 16..4096"),
            (1.0 <= self.fov <= 170.0, "fov must be 1..170 degrees"),
            (0 <= self.steps <= 256, "steps must be 0..256"),
            (self.preset in PRESETS, f"preset {self.preset!r} is not one of {', '.join(PRESETS)}"),
            (0.0 < self.preset_angle <= 360.0, "preset_angle must be in (0, 360] degrees"),
            (0.0 < self.depth_edge_threshold < 10.0, "depth_edge_threshold must be in (0, 10)"),
            (-math.inf < self.mask_iou_threshold <= 1.0, "mask_iou_threshold must be a number <= 1"),
            (self.align_fit in ("scale", "scale_shift", "adam", "none"), "align_fit must be scale, scale_shift, adam or none"),
            (self.align_correction in ("ray", "linear-corners", "none"), "align_correction must be ray, linear-corners or none"),
            (0.0 < self.align_seam_tolerance <= 10.0, "align_seam_tolerance must be in (0, 10]"),
            (0.0 < self.align_falloff <= 10.0, "align_falloff must be in (0, 10]"),
            (0.0 <= self.align_seam_smoothing <= 1.0, "align_seam_smoothing must be in [0, 1]"),
            (0.0 <= self.align_seam_spread <= 100.0, "align_seam_spread must be in [0, 100]"),
            (0.0 <= self.align_seam_adaptive <= 100.0, "align_seam_adaptive must be in [0, 100]"),
            (0.0 <= self.align_seam_edge_radius <= 0.1, "align_seam_edge_radius must be in [0, 0.1]"),
            (0.0 <= self.depth_ramp_radius <= 0.05, "depth_ramp_radius must be in [0, 0.05]"),
            (0.0 <= self.mask_min_area < self.mask_max_area <= 1.0, "need 0 <= mask_min_area < mask_max_area <= 1"),
            (0 <= self.hidden_dilation_px <= 64, "hidden_dilation_px must be 0..64"),
            (1 <= self.sam_points_per_side <= 128, "sam_points_per_side must be 1..128"),
            (0.0 < self.foreground_percentile < 100.0, "foreground_percentile must be in (0, 100)"),
            (self.diffusion_solver in MAX_DIFFUSION_STEPS, "diffusion_solver must be dpm++, unipc or pndm"),
            (1 <= self.inpaint_steps <= most_steps, f"inpaint_steps must be 1..{most_steps} with the {self.diffusion_solver} solver"),
            (self.splat_schedule in ("auto", "fast", "lucid", "cpu"), "splat_schedule must be auto, fast, lucid or cpu"),
            (0.0 <= self.guidance <= 50.0, "guidance must be 0..50"),
            (0 <= self.iterations <= 1_000_000, "iterations must be 0..1000000"),
            (0 <= self.reprojections <= 64, "reprojections must be 0..64"),
            (0.0 <= self.jitter_deg <= 90.0, "jitter_deg must be 0..90 degrees"),
            (-1 <= self.sh_degree <= 3, "sh_degree must be 0..3 (or -1: automatic)"),
            (0.0 <= self.sky_far_limit < math.inf, "sky_far_limit must be a distance >= 0 metres (0: off)"),
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
            if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
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

def default_cache_dir() -> Path:
    """Models and tiny checkpoints: $GEN3D_CACHE, else the platform's user cache folder."""
    if os.environ.get("GEN3D_CACHE"):
        return Path(os.environ["GEN3D_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gen3d"
