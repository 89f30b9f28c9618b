"""Score the RGB-D path against Blender ground truth (eval-rgbd): covisible PSNR/SSIM, 3D point error.

The example (scripts/make_example.py) holds an input view with its true depth and camera, a few
held-out views near it, and points sampled on the true surfaces, all in Blender's world.  This
runs the engine's RGB-D path (offline profile: no models) from the input view, trains the
Gaussians, renders them at the held-out cameras and compares with Blender's renders only where
the input view sees the same surface (covisible pixels: a method cannot know the rest).  The
baseline row reprojects the input's own points (no 3DGS) into the held-out views.  The point
error is the distance from each generated point, placed back in Blender's world through the
input camera, to the nearest true-surface sample; ``point_error_floor_*`` is the same metric
for the true depth itself, i.e. what surface sampling and pixel footprint alone cost.
The world is rendered with its sky layer (engine.sky); ``psnr_sky`` scores the held-out pixels
where Blender saw no surface (its sky), ``psnr_nonsky`` all the others.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import cameras, images, protocol
from .cameras import Camera
from .depth_geometry import depth_jumps
from .errors import BadInputError

DEFAULT_EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "courtyard"
COVISIBLE_TOLERANCE = 0.03  # relative depth agreement that makes a held-out pixel "seen by the input"


@dataclass
class View:
    image: np.ndarray  # [H, W, 3] float32 at the working resolution
    depth: np.ndarray  # [H, W] float32 metres (z-depth), 0 = none
    camera: Camera  # Blender world, at the working resolution


@dataclass
class Example:
    source: View
    heldout: list[View]
    surface: np.ndarray  # [N, 3] true-surface samples, Blender world


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output folder: eval.json, job/, renders/")
    parser.add_argument("--example", type=Path, default=DEFAULT_EXAMPLE, help="example folder (make_example.py layout)")
    parser.add_argument("--resolution", type=int, default=320, help="working resolution, long side (px)")
    parser.add_argument("--iterations", type=int, help="3DGS optimisation steps (default: the recipe's, 300 on a CPU)")
    parser.add_argument("--steps", type=int, default=0, help="expansion views before 3DGS (offline inpainting)")
    parser.add_argument("--splat-schedule", default="auto", choices=("auto", "fast", "lucid", "cpu"),
                        help="3DGS schedule (engine.settings.splat_schedule)")
    parser.add_argument("--classic", action="store_true",
                        help="3DGS in gsplat's classic image formation (default: antialiased, engine.settings.antialiased)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--seed", type=int, default=0)


def _read_cameras(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInputError(f"example camera file {path} is unreadable ({exc})") from None


def load_view(image_path: Path, depth_path: Path, camera: Camera, long_side: int) -> View:
    image = images.load_image(image_path, long_side)
    height, width = image.shape[:2]
    return View(image, images.load_depth(depth_path, (width, height)), camera.resized(width, height))


def load_example(folder: Path, long_side: int) -> Example:
    folder = Path(folder)
    if not (folder / "camera.json").is_file():
        raise BadInputError(f"{folder} is not an example folder (no camera.json); see scripts/make_example.py")
    source = load_view(
        folder / "image.png", folder / "depth.png", Camera.from_dict(_read_cameras(folder / "camera.json")), long_side
    )
    heldout = [
        load_view(folder / "heldout" / f"{i:02d}_image.png", folder / "heldout" / f"{i:02d}_depth.png", Camera.from_dict(c), long_side)
        for i, c in enumerate(_read_cameras(folder / "heldout" / "cameras.json"))
    ]
    with np.load(folder / "surface.npz") as data:
        surface = data["points"].astype(np.float64)
    return Example(source, heldout, surface)


def unproject_depth(camera: Camera, depth: np.ndarray) -> np.ndarray:
    """World points [H, W, 3] of every pixel centre at its z-depth (garbage where depth is 0)."""
    points = cameras.pixel_rays(camera) * depth[..., None]
    return cameras.transform_points(camera.camera_to_world, points.reshape(-1, 3)).reshape(points.shape)


def covisible_mask(target: View, source: View, tolerance: float = COVISIBLE_TOLERANCE) -> np.ndarray:
    """Pixels of ``target`` whose true surface point ``source`` also sees: bool [H, W].

    The point must project inside the source image, in front of it, and land within
    ``tolerance`` (relative) of the source's own true depth there (else something occludes it).
    """
    valid = target.depth > 0
    pixels, z = cameras.project(source.camera, unproject_depth(target.camera, target.depth).reshape(-1, 3))
    with np.errstate(invalid="ignore"):
        cols, rows = np.floor(pixels[:, 0]), np.floor(pixels[:, 1])
        inside = (z > 0) & (cols >= 0) & (cols < source.camera.width) & (rows >= 0) & (rows < source.camera.height)
    seen = np.zeros(len(z), dtype=bool)
    index = np.flatnonzero(inside)
    source_depth = source.depth[rows[index].astype(int), cols[index].astype(int)]
    seen[index] = (source_depth > 0) & ~depth_jumps(z[index], source_depth, tolerance)
    return valid & seen.reshape(valid.shape)


def masked_psnr(image: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> float:
    if not mask.any():
        return float("nan")
    mse = float(np.mean((image[mask].astype(np.float64) - reference[mask]) ** 2))
    return 10.0 * math.log10(1.0 / max(mse, 1e-12))


def masked_ssim(image: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> float:
    """Mean of the 3DGS SSIM map (11x11 Gaussian window) over the masked pixels."""
    import torch

    from .splat.ssim import ssim_map

    if not mask.any():
        return float("nan")
    values = ssim_map(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)), torch.from_numpy(reference.astype(np.float32)))
    return float(values.numpy()[mask].mean())


def distance_stats(points: np.ndarray, surface: np.ndarray) -> dict[str, float]:
    from scipy.spatial import cKDTree

    distances, _ = cKDTree(surface).query(points, workers=-1)
    return {
        "mean": float(distances.mean()),
        "median": float(np.median(distances)),
        "p90": float(np.percentile(distances, 90)),
    }


def read_points_xyz(path: Path) -> np.ndarray:
    from plyfile import PlyData

    vertex = PlyData.read(str(path))["vertex"]
    return np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1).astype(np.float64)


def write_job(job_dir: Path, example_dir: Path, args: argparse.Namespace) -> None:
    """A generate job (job.json + inputs) for the example's input view, RGB-D, offline profile."""
    from .job import JobFolder

    job = JobFolder(job_dir)
    camera = Camera.from_dict(_read_cameras(example_dir / "camera.json"))
    job.write(
        {
            "profile": "offline",
            "image": job.import_file(example_dir / "image.png", "source_image.png"),
            "depth": job.import_file(example_dir / "depth.png", "source_depth.png"),
            "camera": camera.to_dict(),
            "settings": {
                "resolution": args.resolution,
                "steps": args.steps,
                "seed": args.seed,
                **({"iterations": args.iterations} if args.iterations else {}),
                **({"splat_schedule": args.splat_schedule} if getattr(args, "splat_schedule", "auto") != "auto" else {}),
                **({"antialiased": False} if getattr(args, "classic", False) else {}),
            },
        }
    )


def evaluate_views(example: Example, gaussians, device: str, edge_threshold: float, out: Path) -> list[dict[str, Any]]:
    """Per held-out view: covisible fraction, PSNR/SSIM of the Gaussians and of reprojected points."""
    from .pointcloud import render_points, unproject

    source = example.source
    # Everything is rendered in the engine world (the input camera's OpenCV frame).
    input_points = unproject(
        source.camera.with_pose(np.eye(4)), source.image, source.depth, source.depth > 0, edge_threshold=edge_threshold
    )
    rows = []
    for index, view in enumerate(example.heldout):
        mask = covisible_mask(view, source)
        camera = cameras.relative_to([view.camera], source.camera)[0]
        splat = gaussians.render(camera, device).image
        point_render = render_points(input_points, camera, device=device)
        points = point_render.image
        images.save_png(out / f"{index:02d}_gaussians.png", splat)
        images.save_png(out / f"{index:02d}_points.png", points)
        images.save_png(out / f"{index:02d}_covisible.png", mask)
        rows.append(
            {
                "view": index,
                "covisible_fraction": float(mask.mean()),
                "psnr": masked_psnr(splat, view.image, mask),
                "ssim": masked_ssim(splat, view.image, mask),
                # Over Blender's sky (no depth) and over the rest of the frame, seen or not by the input.
                "psnr_sky": masked_psnr(splat, view.image, view.depth == 0),
                "psnr_nonsky": masked_psnr(splat, view.image, view.depth > 0),
                "psnr_points": masked_psnr(points, view.image, mask),
                "ssim_points": masked_ssim(points, view.image, mask),
                # Cracks and disocclusions left black by the points, inside covisible pixels.
                "points_hole_fraction": float(point_render.hole_mask[mask].mean()) if mask.any() else float("nan"),
            }
        )
    return rows


def print_table(rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    lines = [
        "",
        f"{'view':>6} {'covis':>6} | {'3DGS PSNR':>9} {'SSIM':>6} | {'points PSNR':>11} {'SSIM':>6} {'holes':>6}",
    ]
    for row in rows:
        lines.append(
            f"{row['view']:>6} {row['covisible_fraction']:>6.2f} | {row['psnr']:>9.2f} {row['ssim']:>6.3f} | "
            f"{row['psnr_points']:>11.2f} {row['ssim_points']:>6.3f} {row['points_hole_fraction']:>6.3f}"
        )
    lines.append(
        f"{'mean':>6} {summary['covisible_fraction']:>6.2f} | {summary['psnr_covisible']:>9.2f} "
        f"{summary['ssim_covisible']:>6.3f} | {summary['psnr_points_covisible']:>11.2f} {summary['ssim_points_covisible']:>6.3f} "
        f"{summary['points_hole_fraction']:>6.3f}"
    )
    lines.append(f"3DGS PSNR over the sky {summary['psnr_sky']:.2f}, over the rest {summary['psnr_nonsky']:.2f}")
    lines.append(
        f"point error (m): mean {summary['point_error_mean']:.4f}  median {summary['point_error_median']:.4f}  "
        f"p90 {summary['point_error_p90']:.4f}  ({summary['points']} points; true depth alone: "
        f"median {summary['point_error_floor_median']:.4f})"
    )
    print("\n".join(lines), file=sys.stderr)


def main(args: argparse.Namespace, events: protocol.EventWriter) -> int:
    from . import pipeline
    from .__main__ import resolve_device
    from .job import write_json
    from .sky import read_world

    started = time.perf_counter()
    out = Path(args.out)
    example = load_example(args.example, args.resolution)
    device = resolve_device(args.device)
    job_dir = out / "job"
    write_job(job_dir, Path(args.example), args)
    run = pipeline.make_run(job_dir, events, device=device)
    pipeline.run_job(run)

    gaussians = read_world(job_dir)  # with its sky
    renders = out / "renders"
    renders.mkdir(parents=True, exist_ok=True)
    rows = evaluate_views(example, gaussians, device, run.settings.depth_edge_threshold, renders)

    to_world = example.source.camera.camera_to_world  # engine world -> Blender world
    generated = cameras.transform_points(to_world, read_points_xyz(job_dir / "points.ply"))
    errors = distance_stats(generated, example.surface)
    source = example.source
    floor = distance_stats(unproject_depth(source.camera, source.depth)[source.depth > 0], example.surface)

    def mean(key: str) -> float:
        return float(np.nanmean([row[key] for row in rows]))

    summary: dict[str, Any] = {
        "psnr_covisible": mean("psnr"),
        "ssim_covisible": mean("ssim"),
        "psnr_sky": mean("psnr_sky"),
        "psnr_nonsky": mean("psnr_nonsky"),
        "psnr_points_covisible": mean("psnr_points"),
        "ssim_points_covisible": mean("ssim_points"),
        "covisible_fraction": mean("covisible_fraction"),
        "points_hole_fraction": mean("points_hole_fraction"),
        "point_error_mean": errors["mean"],
        "point_error_median": errors["median"],
        "point_error_p90": errors["p90"],
        "point_error_floor_median": floor["median"],
        "points": int(len(generated)),
        "gaussians": len(gaussians),
    }
    report = {
        **summary,
        "views": rows,
        "example": str(Path(args.example).resolve()),
        "settings": run.settings.to_dict(),
        "device": device,
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_json(out / "eval.json", report)
    print_table(rows, summary)
    events.emit("result", outputs={"eval": str((out / "eval.json").resolve()), "job": str(job_dir.resolve())}, metrics=summary)
    return protocol.EXIT_OK
