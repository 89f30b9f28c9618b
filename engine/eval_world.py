"""Score the expanded world against Blender's ground truth (eval-world): our alignment and merging vs baselines.

``python -m engine eval-world --scene NAME --level none|mild|typical|severe --out DIR
[--path PRESET] [--resolution PX] [--iterations N] [--steps N] [--device cpu|cuda]`` (``--list``
names the scenes).  The scene (scripts/make_eval_scenes.py, real Blender, cached by the script's
hash) has an input view, the views of a camera path and held-out views between and beside them.
Each method runs the real generate pipeline (offline profile, RGB-D input: render → inpaint →
depth → align → lift → merge → 3DGS) in ``DIR/jobs/METHOD`` with the oracle backends of
``engine.oracle``: holes are filled with Blender's render of that camera, the new view's depth is
the true depth with the level's errors.  So only geometry handling differs between the methods:

* ``raw`` — the erroneous depth as estimated (no alignment);
* ``global_scale`` — our robust global scale only;
* ``luciddreamer`` — LucidDreamer's recipe (Adam scale + linear corner-pinned border offsets);
* ``ours`` — global scale + ray-constrained seam correction (the default settings);
* ``true_depth`` — the true depth, unaligned: the upper bound.

Scores (totals over the held-out views; metres where a length), in ``DIR/eval_world.json``:

* ``psnr``/``ssim`` of the trained Gaussians over the *evaluated pixels*: held-out pixels whose
  true surface point some path view (the input included) sees (projects inside it, within 3 % of
  its true depth) — nothing can be asked of the rest; PSNR from the pooled squared error, SSIM
  the mean of the 11×11 SSIM map over the pooled pixels;
* ``psnr_new``: the same PSNR over the evaluated pixels the input view does not see (only the
  expansion can have put them there: the part of the PSNR that tells the methods apart);
* ``psnr_sky``: PSNR over the held-out pixels where Blender saw no surface (the scenes' sky; the
  world is rendered with its sky layer, ``--no-sky`` runs every method without it); ``sky_fraction``
  their share of the held-out pixels;
* ``coverage``: the share of the evaluated pixels the world's points cover when rendered;
* ``accuracy``: mean distance from each point the expansion added to the nearest true-surface
  sample (the input view's points are the same for every method);
* ``completeness``: mean distance from each true-surface sample that a path view sees to the
  nearest point of the world;
* ``seam_error``: at each expansion step, for every lifted hole pixel next to a pixel the existing
  points cover, the step between the new and the existing point along the true surface's normal,
  less the truth's own (``seam_errors``): 0 where the new surface continues the existing one.
  Pairs at an occlusion are no seam and are left out: within a pixel of a true depth edge, or where
  the existing render shows another surface than the truth (more than the edge threshold, 10 %,
  off it: an occluder not yet in the world, seen through).  ``seam_error_px`` divides each by the
  pixel footprint (true depth / focal length): below 1 the seam is invisible.  True depth scores
  ~0 (its new points lie on the true surface, so does the existing geometry they meet).

Renders side by side: ``DIR/renders/heldout_KK.png`` (Blender, then each method, then the
evaluated pixels), per method ``DIR/renders/METHOD/``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import cameras, images, protocol
from .cameras import Camera
from .depth_geometry import depth_edges, depth_jumps, surface_normals
from .errors import BadInputError
from .evaluate import View, covisible_mask
from .oracle import ERROR_LEVELS, OracleDepth, OracleInpainter, OracleView

ROOT = Path(__file__).resolve().parents[1]
SCENE_SCRIPT = ROOT / "scripts" / "make_eval_scenes.py"
SCENE_DEFAULT_PATHS = {"courtyard": "orbit", "room": "look-around", "street": "dolly"}
PATHS = ("orbit", "look-around", "dolly")

# method -> (depth error level: None = the run's, run settings)
METHODS: dict[str, tuple[str | None, dict[str, Any]]] = {
    "raw": (None, {"align_fit": "none", "align_correction": "none"}),
    "global_scale": (None, {"align_fit": "scale", "align_correction": "none"}),
    "luciddreamer": (None, {"align_fit": "adam", "align_correction": "linear-corners"}),
    "ours": (None, {}),
    "true_depth": ("none", {"align_fit": "none", "align_correction": "none"}),
}
COLUMNS = ("psnr", "psnr_new", "ssim", "coverage", "accuracy", "completeness", "seam_error", "seam_error_px")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scene", choices=sorted(SCENE_DEFAULT_PATHS), help="scene built by scripts/make_eval_scenes.py")
    parser.add_argument("--level", choices=list(ERROR_LEVELS), default="typical", help="depth error level (engine.oracle)")
    parser.add_argument("--out", type=Path, help="output folder: eval_world.json, jobs/, renders/")
    parser.add_argument("--path", choices=PATHS, help="camera path preset (default: the scene's own)")
    parser.add_argument("--resolution", type=int, default=128, help="working resolution, long side (px; 4:3)")
    parser.add_argument("--iterations", type=int, help="3DGS optimisation steps (default: the recipe's, 300 on a CPU)")
    parser.add_argument("--steps", type=int, default=4, help="expansion views along the path")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-sky", action="store_true", help="every method without the sky layer (--set sky=false)")
    parser.add_argument("--scene-cache", type=Path, help="folder of rendered scenes (default: GEN3D cache/eval-world)")
    parser.add_argument("--jobs", type=Path, help="folder of the methods' job folders (default: OUT/jobs); a shared one "
                        "lets a method whose inputs did not change (true_depth across levels) resume")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="an engine.settings field for the 'ours' method only (e.g. align_seam_smoothing=0.02): a variant to measure")
    parser.add_argument("--render-only", action="store_true", help="render the scene into the cache and stop")
    parser.add_argument("--list", action="store_true", help="list the scenes, paths and error levels")


# ---------------------------------------------------------------------------------------------
# scenes
# ---------------------------------------------------------------------------------------------


@dataclass
class Scene:
    name: str
    path_preset: str
    source: View  # the input view (Blender world)
    path: list[View]  # the expansion views
    heldout: list[View]
    surface: np.ndarray  # [N, 3] true-surface samples, Blender world
    folder: Path


def scene_hash() -> str:
    digest = hashlib.sha256()
    for script in (SCENE_SCRIPT, ROOT / "scripts" / "make_example.py"):
        digest.update(script.read_bytes())
    return digest.hexdigest()[:12]


def scene_folder(cache: Path, scene: str, path: str, resolution: int, steps: int) -> Path:
    return cache / f"{scene}-{path}-{resolution}px-{steps}v-{scene_hash()}"


def ensure_scene(cache: Path, scene: str, path: str, resolution: int, steps: int) -> Path:
    """The rendered scene's folder, rendering it with Blender first if the cache lacks it."""
    if not SCENE_SCRIPT.is_file():
        raise BadInputError(f"eval-world needs {SCENE_SCRIPT} (a source checkout) to render its scenes")
    folder = scene_folder(cache, scene, path, resolution, steps)
    if (folder / "scene.json").is_file():
        return folder
    partial = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    command = [sys.executable, str(SCENE_SCRIPT), "--scene", scene, "--path", path, "--out", str(partial),
               "--resolution", str(resolution), "--steps", str(steps)]
    print(f"eval-world: rendering scene {scene} ({path}, {resolution} px) with Blender ...", file=sys.stderr)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-8:])
        raise BadInputError(f"rendering scene {scene} failed (needs Blender as the bpy module):\n{tail}")
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder


def _view(folder: Path, data: dict) -> View:
    camera = Camera.from_dict(data)
    image = images.load_image(folder / "views" / f"{camera.name}_image.png", max(camera.width, camera.height))
    depth = np.load(folder / "views" / f"{camera.name}_depth.npy").astype(np.float32)
    if image.shape[:2] != depth.shape or depth.shape != (camera.height, camera.width):
        raise BadInputError(f"scene {folder}: view {camera.name} has mismatched sizes")
    return View(image, depth, camera)


def load_scene(folder: Path) -> Scene:
    data = json.loads((folder / "scene.json").read_text())
    with np.load(folder / "surface.npz") as surface:
        points = surface["points"].astype(np.float64)
    return Scene(
        data["scene"], data["path_preset"], _view(folder, data["input"]),
        [_view(folder, c) for c in data["path"]], [_view(folder, c) for c in data["heldout"]], points, folder,
    )


# ---------------------------------------------------------------------------------------------
# running one method
# ---------------------------------------------------------------------------------------------


def write_job(job_dir: Path, scene: Scene, settings: dict[str, Any]) -> None:
    from .job import JobFolder

    job = JobFolder(job_dir)
    job.root.mkdir(parents=True, exist_ok=True)
    inputs = job.root / "eval_inputs"
    inputs.mkdir(exist_ok=True)
    images.save_png(inputs / "image.png", scene.source.image)
    np.save(inputs / "depth.npy", scene.source.depth)
    job.write(
        {
            "profile": "offline",
            "image": job.import_file(inputs / "image.png", "source_image.png"),
            "depth": job.import_file(inputs / "depth.npy", "source_depth.npy"),
            "camera": scene.source.camera.to_dict(),
            "trajectory": {"version": 1, "source": f"eval-world:{scene.name}:{scene.path_preset}",
                           "cameras": [view.camera.to_dict() for view in scene.path]},
            "settings": settings,
        }
    )


def oracle_run(base, oracles: dict[str, Any]):
    """``base`` (a pipeline Run) whose expansion backends are the oracles; every other slot is the profile's."""
    from dataclasses import dataclass as _dataclass
    from dataclasses import field, fields

    from .pipeline import Run

    @_dataclass
    class OracleRun(Run):
        oracles: dict[str, Any] = field(default_factory=dict)

        def backend_name(self, slot: str) -> str | None:
            return self.oracles[slot].name if slot in self.oracles else super().backend_name(slot)

        def backend(self, slot: str):
            return self.oracles[slot] if slot in self.oracles else super().backend(slot)

    return OracleRun(**{f.name: getattr(base, f.name) for f in fields(Run)}, oracles=oracles)


def engine_views(scene: Scene, views: list[View]) -> list[OracleView]:
    engine_cameras = cameras.relative_to([view.camera for view in views], scene.source.camera)
    return [OracleView(camera, view.image, view.depth) for camera, view in zip(engine_cameras, views)]


def ours_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--set NAME=VALUE`` settings of the 'ours' method."""
    from .__main__ import parse_settings

    return parse_settings(args.set)


def run_method(scene: Scene, method: str, args: argparse.Namespace, device: str, events) -> Path:
    from . import pipeline

    level, overrides = METHODS[method]
    level = level or args.level
    settings = {"resolution": max(scene.source.camera.width, scene.source.camera.height), "seed": args.seed, **overrides}
    if method == "ours":
        settings.update(ours_settings(args))
    if args.no_sky:
        settings["sky"] = False
    if args.iterations:
        settings["iterations"] = args.iterations
    job_dir = Path(args.jobs or Path(args.out) / "jobs") / method
    write_job(job_dir, scene, settings)
    views = engine_views(scene, scene.path)
    inpainter = OracleInpainter(views)
    depth = OracleDepth(views, level, args.seed, inpainter)
    base = pipeline.make_run(job_dir, events, device=device)
    run = oracle_run(base, {"expansion_inpaint": inpainter, "expansion_geometry": depth})
    pipeline.run_job(run)
    return job_dir


# ---------------------------------------------------------------------------------------------
# scoring
# ---------------------------------------------------------------------------------------------


def evaluated_masks(scene: Scene) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per held-out view: pixels whose true surface the input or a path view sees, and the part
    of those the input view does not see (only the expansion can have put them there)."""
    masks, new = [], []
    for view in scene.heldout:
        by_input = covisible_mask(view, scene.source)
        seen = by_input.copy()
        for source in scene.path:
            seen |= covisible_mask(view, source)
        masks.append(seen)
        new.append(seen & ~by_input)
    return masks, new


def seen_surface(scene: Scene, tolerance: float = 0.03) -> np.ndarray:
    """The true-surface samples some path view (the input included) sees: bool [N]."""
    seen = np.zeros(len(scene.surface), dtype=bool)
    for view in [scene.source, *scene.path]:
        pixels, z = cameras.project(view.camera, scene.surface)
        with np.errstate(invalid="ignore"):
            cols, rows = np.floor(pixels[:, 0]), np.floor(pixels[:, 1])
            inside = (z > 0) & (cols >= 0) & (cols < view.camera.width) & (rows >= 0) & (rows < view.camera.height)
        index = np.flatnonzero(inside)
        true = view.depth[rows[index].astype(int), cols[index].astype(int)]
        seen[index[(true > 0) & ~depth_jumps(z[index], true, tolerance)]] = True
    return seen


def seam_errors(world, counts: list[int], views: list[OracleView], device: str) -> tuple[np.ndarray, np.ndarray]:
    """Per seam pair of every step (see the module docstring): error in metres and in pixel footprints.

    The world's points are in merge order: ``world[:counts[k]]`` existed before step k and
    ``world[counts[k]:counts[k + 1]]`` is what step k lifted, one point on the ray through the
    centre of each lifted pixel.  So rendering the first gives the existing surface the step
    aligned to (as the pipeline rendered it), and projecting the second puts each new point back
    on its own pixel.  A pair is a lifted hole pixel p and a 4-neighbour q the existing points
    cover, both off the true depth's edges (one dilation: a pair across or beside an occlusion
    boundary is no seam, and the existing render's splats may overhang there).  Its error is the
    step between the new and the existing point along the true surface's normal at q, less the
    truth's own: |n·((X_new − T_p) − (X_old − T_q))|, which is 0 for a new point on the surface
    however slanted, and per footprint (true depth / focal) the gap a viewer sees in pixels."""
    from scipy.ndimage import binary_dilation

    from .pointcloud import render_points

    metres, footprints = [], []
    for step, view in enumerate(views):
        start, stop = counts[step], counts[step + 1]
        if stop <= start:
            continue
        camera, truth = view.camera, view.depth.astype(np.float64)
        height, width = truth.shape
        focal = math.sqrt(camera.K[0, 0] * camera.K[1, 1])
        existing = render_points(world.subset(np.arange(start)), camera, device=device)

        def camera_points(index: np.ndarray) -> np.ndarray:
            return cameras.transform_points(camera.world_to_camera, world.xyz[index].astype(np.float64))

        pixels, z = cameras.project(camera, world.xyz[start:stop].astype(np.float64))
        cols, rows = np.floor(pixels[:, 0]).astype(int), np.floor(pixels[:, 1]).astype(int)
        inside = (z > 0) & (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
        new = np.full((height, width), -1)
        new[rows[inside], cols[inside]] = np.flatnonzero(inside) + start
        true_points = cameras.pixel_rays(camera) * truth[..., None]  # [H, W, 3] camera frame
        normals = surface_normals(camera, truth)
        on_surface = (truth > 0) & ~binary_dilation(depth_edges(truth) | (truth <= 0))
        for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            # pixel p (hole, new point) and its neighbour q = p + (dy, dx) (existing point)
            p = np.zeros((height, width), bool)
            p[max(0, -dy): height - max(0, dy), max(0, -dx): width - max(0, dx)] = True
            rows_p, cols_p = np.nonzero(p & existing.hole_mask & (new >= 0) & on_surface)
            rows_q, cols_q = rows_p + dy, cols_p + dx
            ok = (existing.index[rows_q, cols_q] >= 0) & on_surface[rows_q, cols_q]
            ok &= ~depth_jumps(existing.depth[rows_q, cols_q], truth[rows_q, cols_q])
            rows_p, cols_p, rows_q, cols_q = rows_p[ok], cols_p[ok], rows_q[ok], cols_q[ok]
            offset_new = camera_points(new[rows_p, cols_p]) - true_points[rows_p, cols_p]
            offset_old = camera_points(existing.index[rows_q, cols_q]) - true_points[rows_q, cols_q]
            error = np.abs(np.sum(normals[rows_q, cols_q] * (offset_new - offset_old), axis=-1))
            metres.append(error)
            footprints.append(error / (truth[rows_q, cols_q] / focal))
    if not metres:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(metres), np.concatenate(footprints)


def _psnr(squared: float, count: int) -> float:
    return 10 * math.log10(1 / max(squared / count, 1e-12)) if count else float("nan")


def score_method(
    scene: Scene, job_dir: Path, masks: list[np.ndarray], new_masks: list[np.ndarray], seen: np.ndarray, device: str
) -> tuple[dict, list]:
    from scipy.spatial import cKDTree

    from .evaluate import masked_ssim
    from .job import read_npz
    from .pointcloud import PointCloud, render_points
    from .sky import read_world

    gaussians = read_world(job_dir)  # with its sky
    to_blender = scene.source.camera.camera_to_world
    heldout = engine_views(scene, scene.heldout)
    cloud = read_npz(job_dir / "expand" / "points.npz")
    world = PointCloud(cloud["xyz"], cloud["rgb"], cloud["radius"])  # engine world, merge order
    points_xyz = world.xyz.astype(np.float64)
    rows, renders = [], []
    squared, pixels, ssim_sum, covered, squared_new, pixels_new = 0.0, 0, 0.0, 0, 0.0, 0
    squared_sky, pixels_sky = 0.0, 0
    for index, (view, mask, new) in enumerate(zip(heldout, masks, new_masks)):
        splat = gaussians.render(view.camera, device).image
        sky = view.depth == 0  # where Blender saw no surface: its sky
        squared_sky += float(((splat[sky].astype(np.float64) - view.image[sky]) ** 2).sum())
        pixels_sky += 3 * int(sky.sum())
        covers = ~render_points(world, view.camera, device=device).hole_mask
        n = int(mask.sum())
        error = float(((splat[mask].astype(np.float64) - view.image[mask]) ** 2).mean()) if n else float("nan")
        ssim = masked_ssim(splat, view.image, mask)
        rows.append({
            "view": index, "evaluated_fraction": float(mask.mean()),
            "psnr": _psnr(error, 1) if n else float("nan"), "ssim": ssim,
            "psnr_new": _psnr(float(((splat[new].astype(np.float64) - view.image[new]) ** 2).mean()), 1) if new.any() else float("nan"),
            "coverage": float(covers[mask].mean()) if n else float("nan"),
        })
        if n:
            squared += error * n * 3
            pixels += n
            ssim_sum += ssim * n
            covered += int(covers[mask].sum())
        squared_new += float(((splat[new].astype(np.float64) - view.image[new]) ** 2).sum())
        pixels_new += 3 * int(new.sum())
        renders.append(splat)

    steps = json.loads((job_dir / "expand" / "views.json").read_text())["steps"]
    base = len(read_npz(job_dir / "inpaint" / "points.npz")["xyz"])
    counts = [base] + [int(step["points"]) for step in steps]
    added = cameras.transform_points(to_blender, points_xyz[base:]) if len(points_xyz) > base else np.zeros((0, 3))
    accuracy = cKDTree(scene.surface).query(added, workers=-1)[0] if len(added) else np.zeros(0)
    completeness = cKDTree(cameras.transform_points(to_blender, points_xyz)).query(scene.surface[seen], workers=-1)[0]
    seam_m, seam_px = seam_errors(world, counts, engine_views(scene, scene.path), device)
    summary = {
        "psnr": _psnr(squared, 3 * pixels),
        "psnr_new": _psnr(squared_new, pixels_new),
        "psnr_sky": _psnr(squared_sky, pixels_sky),
        "sky_fraction": pixels_sky / (3 * sum(view.depth.size for view in heldout)),
        "ssim": ssim_sum / pixels if pixels else float("nan"),
        "coverage": covered / pixels if pixels else float("nan"),
        "accuracy": float(accuracy.mean()) if len(accuracy) else float("nan"),
        "accuracy_median": float(np.median(accuracy)) if len(accuracy) else float("nan"),
        "completeness": float(completeness.mean()),
        "completeness_median": float(np.median(completeness)),
        "seam_error": float(seam_m.mean()) if len(seam_m) else float("nan"),
        "seam_error_px": float(seam_px.mean()) if len(seam_px) else float("nan"),
        "seam_pairs": int(len(seam_m)),
        "points": int(len(points_xyz)),
        "points_added": int(len(added)),
        "gaussians": len(gaussians),
        "views": rows,
        "steps": [{k: step.get(k) for k in ("view", "hole_fraction", "scale", "fit_inlier_fraction",
                                              "seam_error_after", "seam_error_after_rel", "points")} for step in steps],
    }
    return summary, renders


# ---------------------------------------------------------------------------------------------


def print_table(report: dict) -> None:
    header = f"{'method':>13} | {'PSNR':>6} {'new':>6} {'sky':>6} {'SSIM':>6} {'cover':>6} | {'accur m':>8} {'compl m':>8} | {'seam m':>8} {'seam px':>7}"
    lines = ["", f"eval-world {report['scene']} / {report['path']} / depth errors {report['level']} "
             f"({report['resolution'][0]}x{report['resolution'][1]}, {report['device']}, {report['heldout_views']} held-out views)",
             header, "-" * len(header)]
    for name, row in report["methods"].items():
        lines.append(
            f"{name:>13} | {row['psnr']:>6.2f} {row['psnr_new']:>6.2f} {row['psnr_sky']:>6.2f} {row['ssim']:>6.3f} {row['coverage']:>6.3f} | {row['accuracy']:>8.4f} "
            f"{row['completeness']:>8.4f} | {row['seam_error']:>8.4f} {row['seam_error_px']:>7.2f}"
        )
    print("\n".join(lines), file=sys.stderr)


def side_by_side(out: Path, scene: Scene, masks: list[np.ndarray], renders: dict[str, list[np.ndarray]]) -> None:
    for index, (view, mask) in enumerate(zip(scene.heldout, masks)):
        columns = [view.image] + [renders[name][index] for name in renders] + [np.repeat(mask[..., None], 3, axis=2).astype(np.float32)]
        images.save_png(out / f"heldout_{index:02d}.png", np.concatenate(columns, axis=1))


def list_scenes(events: protocol.EventWriter) -> int:
    listing = {"scenes": SCENE_DEFAULT_PATHS, "paths": list(PATHS), "levels": {k: v.to_dict() for k, v in ERROR_LEVELS.items()},
               "methods": list(METHODS)}
    for name, path in SCENE_DEFAULT_PATHS.items():
        print(f"{name:>10}  default path {path}", file=sys.stderr)
    print("levels: " + ", ".join(ERROR_LEVELS) + "; methods: " + ", ".join(METHODS), file=sys.stderr)
    events.emit("result", outputs={}, metrics=listing)
    return protocol.EXIT_OK


def main(args: argparse.Namespace, events: protocol.EventWriter) -> int:
    from .__main__ import resolve_device
    from .job import write_json
    from .settings import default_cache_dir

    if args.list:
        return list_scenes(events)
    if not args.scene or not (args.out or args.render_only):
        raise BadInputError("eval-world: give --scene and --out (or --list)")
    started = time.perf_counter()
    path = args.path or SCENE_DEFAULT_PATHS[args.scene]
    cache = args.scene_cache or default_cache_dir() / "eval-world"
    folder = ensure_scene(Path(cache), args.scene, path, args.resolution, args.steps)
    if args.render_only:
        events.emit("result", outputs={"scene": str(folder.resolve())})
        return protocol.EXIT_OK
    device = resolve_device(args.device)
    scene = load_scene(folder)
    masks, new_masks = evaluated_masks(scene)
    seen = seen_surface(scene)
    out = Path(args.out)
    methods, renders = {}, {}
    for method in METHODS:
        method_started = time.perf_counter()
        job_dir = run_method(scene, method, args, device, events)
        methods[method], renders[method] = score_method(scene, job_dir, masks, new_masks, seen, device)
        methods[method]["seconds"] = round(time.perf_counter() - method_started, 2)
        method_renders = out / "renders" / method
        method_renders.mkdir(parents=True, exist_ok=True)
        for index, image in enumerate(renders[method]):
            images.save_png(method_renders / f"heldout_{index:02d}.png", image)
        print(f"eval-world: {method} done in {methods[method]['seconds']:.1f} s", file=sys.stderr)
    side_by_side(out / "renders", scene, masks, renders)
    report = {
        "scene": scene.name,
        "path": scene.path_preset,
        "level": args.level,
        "error_model": ERROR_LEVELS[args.level].to_dict(),
        "resolution": [scene.source.camera.width, scene.source.camera.height],
        "steps": len(scene.path),
        "heldout_views": len(scene.heldout),
        "evaluated_fraction": float(np.mean([mask.mean() for mask in masks])),
        "new_fraction": float(np.mean([mask.mean() for mask in new_masks])),
        "surface_seen": int(seen.sum()),
        "iterations": args.iterations,
        "ours_settings": ours_settings(args),
        "device": device,
        "seed": args.seed,
        "scene_folder": str(scene.folder),
        "methods": methods,
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_json(out / "eval_world.json", report)
    print_table(report)
    summary = {name: {key: row[key] for key in COLUMNS} for name, row in methods.items()}
    events.emit("result", outputs={"eval": str((out / "eval_world.json").resolve())}, metrics=summary)
    return protocol.EXIT_OK
