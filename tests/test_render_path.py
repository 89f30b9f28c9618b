"""render-path through the real CLI subprocess: a short path of a small job to PNG frames + MP4."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engine import trajectory
from engine.cameras import Camera, intrinsics_from_fov
from engine.export import write_gaussians_ply
from engine.job import write_json, write_npz
from engine.render_path import add_arguments, path_cameras
from engine.splat import Gaussians

ROOT = Path(__file__).resolve().parents[1]


def make_job(folder: Path) -> Camera:
    """A job folder as generate leaves it: a few hundred coloured Gaussians on a wall 3 m away."""
    camera = Camera(intrinsics_from_fov(64, 64, 60.0), np.eye(4), 64, 64, "input")
    generator = torch.Generator().manual_seed(0)
    n = 400
    means = torch.cat([torch.rand(n, 2, generator=generator) * 3.0 - 1.5, 3.0 + 0.5 * torch.rand(n, 1, generator=generator)], 1)
    gaussians = Gaussians(
        means=means,
        quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1),
        scales=torch.full((n, 3), float(np.log(0.08))),
        opacities=torch.full((n,), 3.0),
        sh0=(torch.rand(n, 1, 3, generator=generator) - 0.5) / 0.2820948,
        shN=torch.zeros(n, 0, 3),
    )
    write_gaussians_ply(folder / "gaussians.ply", gaussians)
    write_json(folder / "job.json", {"schema": 1, "profile": "offline"})
    (folder / "inputs").mkdir(parents=True)
    write_json(folder / "inputs" / "camera.json", camera.to_dict())
    (folder / "depth").mkdir()
    write_npz(folder / "depth" / "depth.npz", depth=np.full((64, 64), 3.0, np.float32), K=camera.K)
    return camera


def test_render_path_cli(tmp_path):
    job = tmp_path / "job"
    camera = make_job(job)
    path_file = tmp_path / "path.json"
    trajectory.save_trajectory(path_file, trajectory.preset("orbit", camera, 5, scene_depth=3.0, angle=20.0))
    out = tmp_path / "render"
    command = [sys.executable, "-m", "engine", "render-path", str(job), "--trajectory", str(path_file), "--out", str(out),
               "--device", "cpu"]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert all("type" in event for event in events) and events[-1]["type"] == "result"

    frames = sorted((out / "frames").glob("*.png"))
    assert [f.name for f in frames] == [f"{i:04d}.png" for i in range(5)]
    pixels = [np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255.0 for f in frames]
    assert all(p.shape == (64, 64, 3) for p in pixels)
    assert all((p.sum(axis=2) > 0.05).mean() > 0.5 for p in pixels)  # the wall fills most of each frame
    for a, b in zip(pixels, pixels[1:]):
        assert np.abs(a - b).mean() > 0.01  # the camera moves, so the frames change
    video = out / "path.mp4"
    assert video.is_file() and video.stat().st_size > 1000
    import imageio.v2 as imageio

    with imageio.get_reader(video) as reader:
        assert sum(1 for _ in reader) == 5
    assert len(json.loads((out / "cameras.json").read_text())["cameras"]) == 5


def test_worldscore_preset_cameras(tmp_path):
    job = tmp_path / "job"
    make_job(job)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    path = path_cameras(job, parser.parse_args([str(job), "--out", str(tmp_path / "o"), "--preset", "worldscore"]))
    assert len(path) == 50
    for camera in path:
        assert (camera.width, camera.height) == (512, 512)
        np.testing.assert_allclose(camera.K, [[500, 0, 256], [0, 500, 256], [0, 0, 1]])
    np.testing.assert_allclose(path[0].world_to_camera, np.eye(4), atol=1e-9)  # starts at the input view
    assert np.linalg.norm(path[-1].center) > 0.1


def test_video_without_imageio_ffmpeg_goes_through_opencv(tmp_path, monkeypatch):
    """The GPU machine has no imageio-ffmpeg: the MP4 then comes from OpenCV, frame for frame."""
    import sys

    import cv2

    from engine.render_path import _video_writer

    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import fails as if not installed
    with _video_writer(tmp_path / "v.mp4", 10, 32, 24) as append:
        for k in range(6):
            append(np.full((24, 32, 3), (40 * k, 0, 200), np.uint8))
    capture = cv2.VideoCapture(str(tmp_path / "v.mp4"))
    frames = []
    while (frame := capture.read())[0]:
        frames.append(frame[1])
    assert len(frames) == 6 and frames[0].shape == (24, 32, 3)
    blue, red = int(frames[0][12, 16, 0]), int(frames[0][12, 16, 2])  # read back as BGR
    assert abs(blue - 200) < 12 and red < 12  # the written RGB (0, 0, 200) stays blue
