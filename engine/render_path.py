"""Render a job's trained Gaussians along a camera path to PNG frames and an MP4 (render-path).

    python -m engine render-path JOB --trajectory FILE --out DIR [--preset worldscore --layout orbit_left]

The path comes from a trajectory file (engine.trajectory format, in the client's world: it is
placed relative to the job's input camera, as generate places it) or, without one, from an orbit
preset around the job's input camera.  ``--preset worldscore`` renders what the WorldScore
benchmark's static track takes (engine.worldscore): 512x512, f = 500 px, principal point at the
centre, its camera layout (``--layout``) with its 50-frame interpolation, into WorldScore's names
(``frames/000.png``, ``videos/output.mp4`` at 10 fps, ``camera_data.json``).  Otherwise DIR gets
``frames/NNNN.png`` and ``path.mp4``; both write ``cameras.json`` (the rendered cameras, engine world).
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import numpy as np

from . import cameras, images, protocol, worldscore
from .cameras import Camera
from .errors import BadInputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", type=Path, help="job folder with gaussians.ply (from generate)")
    parser.add_argument("--out", required=True, type=Path, help="output folder: frames/, path.mp4, cameras.json")
    parser.add_argument("--trajectory", type=Path, help="trajectory JSON (engine.trajectory); default: an orbit")
    parser.add_argument("--preset", choices=("worldscore",), help="worldscore: 512x512, f=500 px, WorldScore's layout and names")
    parser.add_argument("--layout", default="orbit_left", choices=sorted(worldscore.LAYOUT_TYPE), help="WorldScore camera layout")
    parser.add_argument(
        "--camera-speed", type=float, default=worldscore.DEFAULT_SPEED,
        help=f"WorldScore's camera_speed in metres (default {worldscore.DEFAULT_SPEED})",
    )
    parser.add_argument("--frames", type=int, help="frames of the path (default: 50 with worldscore, else 60)")
    parser.add_argument("--width", type=int, help="frame width (default: the job's working size)")
    parser.add_argument("--height", type=int, help="frame height")
    parser.add_argument("--focal", type=float, help="focal length in pixels (default: the job camera's, scaled)")
    parser.add_argument("--angle", type=float, default=30.0, help="sweep of the default orbit (degrees)")
    parser.add_argument("--fps", type=int, help="default: 10 with worldscore (its Helper), else 25")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))


def _job_camera(job: Path) -> Camera:
    """The job's input camera in the engine world (identity pose, working resolution)."""
    path = job / "inputs" / "camera.json"
    if not path.is_file():
        raise BadInputError(f"{job} has no inputs/camera.json; is it a finished generate job?")
    return Camera.from_dict(json.loads(path.read_text(encoding="utf-8")))


def path_cameras(job: Path, args: argparse.Namespace) -> list[Camera]:
    """The cameras to render, in the engine world, with the requested intrinsics."""
    from . import trajectory

    input_camera = _job_camera(job)
    if args.trajectory:
        path = trajectory.load_trajectory(args.trajectory)
        request = json.loads((job / "job.json").read_text(encoding="utf-8"))
        reference = Camera.from_dict(request["camera"]) if request.get("camera") else path[0]
        path = cameras.relative_to(path, reference)
    elif args.preset == "worldscore":
        data = worldscore.camera_data([args.layout], args.camera_speed, args.frames or worldscore.FRAMES)
        path = worldscore.engine_cameras(data["cameras_interp"])
        path = cameras.relative_to(path, path[0])  # its first camera is the job's input view
    else:
        path = trajectory.preset("orbit", input_camera, args.frames or 60, scene_depth=_scene_depth(job), angle=args.angle)
    if not path:
        raise BadInputError("the camera path is empty")

    width, height, focal = args.width, args.height, args.focal
    if args.preset == "worldscore":
        size = width or worldscore.SIZE
        width, height, focal = size, size, worldscore.FOCAL * size / worldscore.SIZE
    result = []
    for camera in path:
        w, h = width or camera.width, height or camera.height
        if focal is None and (width or height):
            camera = camera.resized(w, h)  # same field of view at the new size
            K = camera.K
        elif focal is None:
            K = camera.K
        else:
            K = np.array([[focal, 0.0, w / 2.0], [0.0, focal, h / 2.0], [0.0, 0.0, 1.0]])
        result.append(Camera(K, camera.world_to_camera, w, h, camera.name, dict(camera.extra)))
    return result


def _scene_depth(job: Path) -> float:
    """Median depth of the input view: the orbit's pivot distance."""
    from .job import read_npz

    depth = read_npz(job / "depth" / "depth.npz")["depth"]
    return float(np.median(depth[depth > 0]))


def render_frames(
    gaussians, path: list[Camera], frames_dir: Path, video: Path, device: str, fps: int,
    events: protocol.EventWriter, *, digits: int = 4,
) -> Path:
    """Render each camera to frames_dir/<index>.png (``digits`` wide) and all of them to ``video``."""
    frames_dir.mkdir(parents=True, exist_ok=True)
    video.parent.mkdir(parents=True, exist_ok=True)
    with _video_writer(video, fps, path[0].width, path[0].height) as append:
        for index, camera in enumerate(path):
            frame = gaussians.render(camera, device).image
            images.save_png(frames_dir / f"{index:0{digits}d}.png", frame)
            append(np.round(frame * 255.0).astype(np.uint8))
            events.emit("progress", stage="render-path", fraction=round((index + 1) / len(path), 4))
    return video


@contextlib.contextmanager
def _video_writer(video: Path, fps: int, width: int, height: int):
    """H.264 through imageio's ffmpeg; where imageio-ffmpeg is not installed (its 68 MB wheel
    does not travel to our GPU machine), MPEG-4 part 2 through OpenCV's own FFmpeg."""
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        import cv2

        writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
        if not writer.isOpened():
            raise RuntimeError(f"cannot write {video}: install imageio-ffmpeg")
        try:
            yield lambda frame: writer.write(np.ascontiguousarray(frame[..., ::-1]))  # OpenCV takes BGR
        finally:
            writer.release()
        return
    import imageio.v2 as imageio

    # macro_block_size=2: keep the exact size (libx264 needs even sides, not multiples of 16).
    with imageio.get_writer(video, fps=fps, codec="libx264", quality=8, macro_block_size=2) as writer:
        yield writer.append_data


def main(args: argparse.Namespace, events: protocol.EventWriter) -> int:
    from .__main__ import resolve_device
    from .job import write_json
    from .sky import read_world

    job = Path(args.job)
    if not (job / "gaussians.ply").is_file():
        raise BadInputError(f"{job} has no gaussians.ply; run generate first")
    if args.width is not None and args.height is None or args.height is not None and args.width is None:
        raise BadInputError("give --width and --height together")
    device = resolve_device(args.device)
    path = path_cameras(job, args)
    gaussians = read_world(job, device=device)  # with its sky
    out = Path(args.out)
    if args.preset == "worldscore":
        video = render_frames(gaussians, path, out / "frames", out / "videos" / "output.mp4", device, args.fps or worldscore.FPS, events, digits=3)
        data = worldscore.camera_data([args.layout], args.camera_speed, args.frames or worldscore.FRAMES)
        write_json(out / "camera_data.json", data)
    else:
        video = render_frames(gaussians, path, out / "frames", out / "path.mp4", device, args.fps or 25, events)
    write_json(out / "cameras.json", {"frame": "engine", "cameras": [camera.to_dict() for camera in path]})
    events.emit(
        "result",
        outputs={"frames": str((out / "frames").resolve()), "video": str(video.resolve()), "cameras": str((out / "cameras.json").resolve())},
        count=len(path),
    )
    return protocol.EXIT_OK
