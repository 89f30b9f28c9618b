"""How closely Blender shows the trained Gaussians: Cycles, the viewport splat draw and Eevee
against the engine's own render of the same Gaussians (JOB/gaussians.ply, and JOB/sky.ply where the
world has a sky).

    .venv/bin/python scripts/fidelity.py JOB --out DIR [--size PX] [--samples N] [--eevee-samples N] [--no-eevee]
        [--views N]

Cameras: the input camera and two held-out ones (the input camera orbited by -/+10 deg of yaw and
4 deg of pitch about the Gaussians' median depth), scaled to PX on the long side.  Blender gets
a fresh scene with the job imported through the installed extension and exactly the settings
of the Result panel's one click (gen3d.splat_render_settings); Cycles on the CPU.  Every image
is compared as displayed over black (the engine's background): PSNR and SSIM (the 3DGS
11x11 window) over all pixels.  Writes DIR/fidelity.json (``cycles``, ``viewport``, ``eevee`` ->
``psnr`` and ``ssim`` per view, or ``error`` saying why a renderer could not run), DIR/alpha.npz
(each renderer's coverage per view, for per-Gaussian checks) and DIR/view_N.png (engine | Cycles |
viewport | Eevee | 4x |Cycles - engine|).

The engine renders in the image formation the Gaussians were trained with (the PLY's comment:
gsplat's antialiased mode by default, or classic), and the one click sets the pixel filter that
reproduces it (render_settings: Cycles' Gaussian filter of the blur's variance, or <= 1 px).
"""

import argparse
import importlib
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import import_to_blend  # noqa: E402  (sets up Blender's user folder before bpy loads)

import bpy  # noqa: E402
import cv2  # noqa: E402
import gpu  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from engine import colour  # noqa: E402
from engine.cameras import Camera, rigid_inverse  # noqa: E402
from engine.evaluate import masked_psnr, masked_ssim  # noqa: E402
from engine.export import read_gaussians_ply  # noqa: E402
from engine.sky import read_world  # noqa: E402

EXTENSION = "bl_ext.user_default.gen3d"


def orbit(camera: Camera, pivot_depth: float, yaw_deg: float, pitch_deg: float, name: str) -> Camera:
    """``camera`` turned about the point ``pivot_depth`` ahead of it (engine world, OpenCV axes)."""
    yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
    ry = np.array([[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]])
    rx = np.array([[1, 0, 0], [0, math.cos(pitch), -math.sin(pitch)], [0, math.sin(pitch), math.cos(pitch)]])
    pivot, turn = np.eye(4), np.eye(4)
    pivot[2, 3] = pivot_depth
    turn[:3, :3] = ry @ rx
    return camera.with_pose(rigid_inverse(camera.camera_to_world @ pivot @ turn @ rigid_inverse(pivot)), name)


def engine_cameras(job: Path, gaussians, size: int) -> list[Camera]:
    source = job / "camera.json"  # the input camera as the client gave it, else job.json's
    data = json.loads(source.read_text(encoding="utf-8")) if source.is_file() else \
        json.loads((job / "job.json").read_text(encoding="utf-8"))["camera"]
    client = Camera.from_dict(data)
    scale = size / max(client.width, client.height)
    width, height = max(1, round(client.width * scale)), max(1, round(client.height * scale))
    camera = client.with_pose(np.eye(4), "input").resized(width, height)  # the engine world is its frame
    z = gaussians.means[:, 2].numpy()
    pivot = float(np.median(z[z > 0])) if np.any(z > 0) else 1.0
    return [camera, orbit(camera, pivot, -10, 4, "held-out left"), orbit(camera, pivot, 10, -4, "held-out right")]


def display_over_black(linear_premultiplied: np.ndarray) -> np.ndarray:
    return np.clip(colour.linear_to_srgb(np.clip(linear_premultiplied, 0, None)), 0, 1).astype(np.float32)


def read_png_rgba(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A 16-bit straight-alpha RGBA PNG as Blender saves it -> (display over black, alpha)."""
    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[..., [2, 1, 0, 3]].astype(np.float64) / 65535.0
    alpha = pixels[..., 3]
    return display_over_black(colour.srgb_to_linear(pixels[..., :3]) * alpha[..., None]), alpha.astype(np.float32)


def blender_camera(scene, camera: Camera, to_world: np.ndarray):
    """The Blender camera for an engine-world camera (``to_world``: the imported world empty)."""
    return import_to_blend.add_camera(scene, camera.with_pose(camera.world_to_camera @ rigid_inverse(to_world)), f"Gen3D {camera.name}")


def render_engine(scene, path: Path) -> tuple[np.ndarray, np.ndarray]:
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.image_settings.color_depth = "16"
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    return read_png_rgba(path)


def draw_viewport(batches, scene, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The viewport's splat draw of ``batches`` in order at the scene camera, offscreen (linear half floats)."""
    camera = scene.camera
    view = np.array(camera.matrix_world.inverted())
    projection = np.array(camera.calc_matrix_camera(bpy.context.evaluated_depsgraph_get(), x=width, y=height))
    offscreen = gpu.types.GPUOffScreen(width, height, format="RGBA16F")
    with offscreen.bind():
        framebuffer = gpu.state.active_framebuffer_get()
        framebuffer.clear(color=(0.0, 0.0, 0.0, 0.0))
        for splats in batches:
            splats.draw(view, projection, width, height)
        pixels = np.array(framebuffer.read_color(0, 0, width, height, 4, 0, "FLOAT").to_list(), np.float64)
    offscreen.free()
    pixels = pixels.reshape(height, width, 4)[::-1]  # OpenGL rows go bottom up
    return display_over_black(pixels[..., :3]), pixels[..., 3].astype(np.float32)


def scores(image: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    everywhere = np.ones(reference.shape[:2], bool)
    return masked_psnr(image, reference, everywhere), masked_ssim(image, reference, everywhere)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", type=int, default=224, help="long side of the renders in pixels")
    parser.add_argument("--samples", type=int, default=64, help="Cycles samples")
    parser.add_argument("--eevee-samples", type=int, default=64)
    parser.add_argument("--no-eevee", action="store_true", help="skip Eevee (slow on software OpenGL)")
    parser.add_argument("--views", type=int, default=3, help="the first N of: input, held-out left, held-out right")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    gaussians = read_gaussians_ply(args.job / "gaussians.ply")
    cams = engine_cameras(args.job, gaussians, args.size)[: args.views]
    shown = read_world(args.job)  # with its sky (sky.ply), which Blender imports beside the world
    reference = [shown.render(c, "cpu", backend="torch") for c in cams]  # in the world's own image formation

    import_to_blend.install_extension()
    import_to_blend.import_job(args.job)
    scene = bpy.context.scene
    if bpy.ops.gen3d.splat_render_settings() != {"FINISHED"}:
        sys.exit("gen3d.splat_render_settings failed")
    world = next(o for o in scene.objects if o.type == "EMPTY" and o.get("gen3d_generated"))
    # The world's splat objects, its sky first (it lies behind everything; each object is sorted in itself).
    splat_objects = sorted((o for o in scene.objects if o.type == "MESH" and "rot" in o.data.attributes),
                           key=lambda o: not o.get("gen3d_sky"))
    to_world = np.array(world.matrix_world)
    views = [blender_camera(scene, c, to_world) for c in cams]
    render_settings = importlib.import_module(f"{EXTENSION}.gen3d_addon.render_settings")
    for view in views:  # each camera reaches the far side of the sky dome, as the one click makes the scene camera
        scene.camera = view
        view.data.clip_end = max(view.data.clip_end, render_settings.sky_reach(scene))
    report: dict = {"job": str(args.job), "size": args.size, "gaussians": len(shown),
                    "cameras": [c.name for c in cams], "cycles_samples": args.samples,
                    "eevee_samples": args.eevee_samples, "antialiased": shown.antialiased,
                    "pixel_filter": [scene.cycles.pixel_filter_type, scene.cycles.filter_width]}
    images: dict[str, list] = {}
    alphas: dict[str, np.ndarray] = {f"engine_{i}": r.alpha for i, r in enumerate(reference)}

    def run(name: str, render_one) -> None:
        start = time.perf_counter()
        try:
            out = [render_one(i) for i in range(len(cams))]
        except Exception as exc:  # a renderer that cannot run here says why
            report[name] = {"error": f"{type(exc).__name__}: {exc}"}
            return
        images[name] = [image for image, _ in out]
        alphas.update({f"{name}_{i}": alpha for i, (_, alpha) in enumerate(out)})
        pairs = [scores(image, ref.image) for (image, _), ref in zip(out, reference)]
        report[name] = {"psnr": [p for p, _ in pairs], "ssim": [s for _, s in pairs],
                        "seconds": time.perf_counter() - start}

    def offline(engine_name: str):
        def render_one(i):
            scene.render.engine = engine_name
            scene.camera = views[i]
            return render_engine(scene, args.out / f"{engine_name.lower()}_{i}.png")
        return render_one

    scene.cycles.device = "CPU"
    scene.cycles.samples = args.samples
    run("cycles", offline("CYCLES"))
    if args.no_eevee:
        report["eevee"] = {"error": "skipped (--no-eevee)"}
    else:
        scene.eevee.taa_render_samples = args.eevee_samples
        run("eevee", offline("BLENDER_EEVEE"))
    splat_draw = importlib.import_module(f"{EXTENSION}.gen3d_addon.splat_draw")
    importers = importlib.import_module(f"{EXTENSION}.gen3d_addon.importers")

    def viewport_one(i):
        if i == 0 and "eevee" not in images:  # headless, a GPU context exists once an Eevee render made one
            scene.render.engine = "BLENDER_EEVEE"
            scene.eevee.taa_render_samples = 1
            scene.camera = views[0]
            render_engine(scene, args.out / "gpu_init.png")
        batches = [splat_draw.SplatBatch(splat_draw.splat_arrays(importers.gaussians_from_object(o), np.array(o.matrix_world)))
                   for o in splat_objects]
        scene.camera = views[i]
        return draw_viewport(batches, scene, cams[i].width, cams[i].height)

    run("viewport", viewport_one)
    report["gpu"] = gpu.platform.renderer_get() if "viewport" in images else None
    for i, ref in enumerate(reference):
        tiles = [ref.image] + [images[name][i] if name in images else np.zeros_like(ref.image)
                               for name in ("cycles", "viewport", "eevee")]
        tiles.append(np.clip(4 * np.abs(tiles[1] - ref.image), 0, 1))
        Image.fromarray((np.concatenate(tiles, 1) * 255 + 0.5).astype(np.uint8)).save(args.out / f"view_{i}.png")
    np.savez(args.out / "alpha.npz", **alphas)
    (args.out / "fidelity.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(json.dumps({k: v for k, v in report.items() if k in ("cycles", "viewport", "eevee")}), file=sys.stderr)


if __name__ == "__main__":
    main()
