"""Cycles against the engine with the pixel filter out of the way: compositing alone (CPU).

    .venv/bin/python bench/cycles_point_sampled.py JOB [--size 224] [--samples 4]

Imports JOB's world (its sky too) through the installed extension, applies the one-click splat
settings, then narrows Cycles' filter to a 0.01 px box (every sample at the pixel centre, so
nothing but the splats' compositing order and per-ray values is on trial; adaptive sampling off)
and renders the input camera.  The reference is the engine's own render of the same Gaussians,
point-sampled with no 2D blur (our torch rasterizer, classic mode, DC colour as Blender draws).
Prints the PSNR over the frame and over the upper middle of the frame (the example's brick wall).
"""

import argparse
import importlib
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import fidelity  # noqa: E402  (sets up Blender's user folder before bpy loads)

import bpy  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine import colour  # noqa: E402
from engine.sky import read_world  # noqa: E402
from engine.splat.rasterize import rasterize  # noqa: E402

NO_BLUR = 1e-4  # px^2: keeps the 2D covariance invertible, far below a pixel


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * math.log10(1 / max(float(((a - b) ** 2).mean()), 1e-20))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job", type=Path)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("/tmp/gen3d-cycles-point-sampled"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    world = read_world(args.job)
    camera = fidelity.engine_cameras(args.job, world, args.size)[0]
    with torch.no_grad():
        rgb, _, _ = rasterize(world.means, world.quats, world.scales.exp(), torch.sigmoid(world.opacities), world.sh0,
                              torch.tensor(camera.world_to_camera, dtype=torch.float32),
                              torch.tensor(camera.K, dtype=torch.float32), camera.width, camera.height,
                              sh_degree=0, backend="torch", eps2d=NO_BLUR, antialiased=False)
    reference = colour.linear_to_srgb(rgb.clamp(0, 1).numpy())

    fidelity.import_to_blend.install_extension()
    fidelity.import_to_blend.import_job(args.job)
    scene = bpy.context.scene
    if bpy.ops.gen3d.splat_render_settings() != {"FINISHED"}:
        sys.exit("gen3d.splat_render_settings failed")
    empty = next(o for o in scene.objects if o.type == "EMPTY" and o.get("gen3d_generated"))
    scene.camera = fidelity.blender_camera(scene, camera, np.array(empty.matrix_world))
    render_settings = importlib.import_module(f"{fidelity.EXTENSION}.gen3d_addon.render_settings")
    scene.camera.data.clip_end = max(scene.camera.data.clip_end, render_settings.sky_reach(scene))
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = args.samples
    scene.cycles.use_adaptive_sampling = False
    scene.cycles.pixel_filter_type = "BOX"
    scene.cycles.filter_width = 0.01
    image, _ = fidelity.render_engine(scene, args.out / "cycles_point_sampled.png")
    height, width = reference.shape[:2]
    wall = (slice(height // 8, height * 3 // 8), slice(width * 3 // 8, width * 7 // 8))
    print(f"point-sampled Cycles vs engine, {width}x{height}, {args.samples} samples: frame {psnr(image, reference):.2f} dB, "
          f"upper middle {psnr(image[wall], reference[wall]):.2f} dB")


if __name__ == "__main__":
    main()
