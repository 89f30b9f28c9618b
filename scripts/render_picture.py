"""Render the README picture of a job with Blender (Cycles on the CPU), through the extension.

    .venv/bin/python scripts/render_picture.py JOB OUT.png [--samples 16]

Left to right: the input image, the imported Gaussians rendered by Cycles from the input
camera, and from the last camera of the expansion path (a view the input never saw).  Render
settings: exactly what the Result panel's one click sets (gen3d.splat_render_settings: a
transparent film, no world), shown over black like the engine's own render.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import import_to_blend  # noqa: E402  (sets up Blender's user folder before bpy loads)

import bpy  # noqa: E402
from PIL import Image  # noqa: E402

from engine import colour  # noqa: E402
from engine.cameras import Camera  # noqa: E402


def render(scene, path: Path) -> np.ndarray:
    """The render over black: Blender's PNG holds straight alpha, composited in linear light."""
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    rgba = np.asarray(Image.open(path).convert("RGBA"), np.float64) / 255.0
    over_black = colour.linear_to_srgb(colour.srgb_to_linear(rgba[..., :3]) * rgba[..., 3:])
    return (np.clip(over_black, 0, 1) * 255 + 0.5).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--samples", type=int, default=16)
    args = parser.parse_args()
    import_to_blend.install_extension()
    import_to_blend.import_job(args.job)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = args.samples
    if bpy.ops.gen3d.splat_render_settings() != {"FINISHED"}:
        sys.exit("gen3d.splat_render_settings failed")
    tiles = [np.asarray(Image.open(args.job / "inputs" / "image.png").convert("RGB"))]
    tiles.append(render(scene, args.out.with_suffix(".input.png")))
    # The last expansion camera, from the engine world into Blender's (the imported world empty).
    world = next(o for o in scene.objects if o.type == "EMPTY" and o.get("gen3d_generated"))
    views = json.loads((args.job / "expand" / "views.json").read_text())["cameras"]
    novel = Camera.from_dict(views[-1])
    to_world = np.array(world.matrix_world)
    novel = novel.with_pose(np.linalg.inv(to_world @ novel.camera_to_world))
    import_to_blend.add_camera(scene, novel, "Gen3D novel view")
    tiles.append(render(scene, args.out.with_suffix(".novel.png")))
    height = min(tile.shape[0] for tile in tiles)
    tiles = [np.asarray(Image.fromarray(t).resize((round(t.shape[1] * height / t.shape[0]), height))) for t in tiles]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(tiles, axis=1)).save(args.out)
    for extra in (args.out.with_suffix(".input.png"), args.out.with_suffix(".novel.png")):
        extra.unlink()
    print(f"render_picture: wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
