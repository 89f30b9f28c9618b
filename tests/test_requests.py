"""What the engine does is what was asked: the scene prompt reaches the expansion, --fov reaches
RGB-D input, every setting and job.json key is checked before any work."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import re

import numpy as np
import pytest

from conftest import EXAMPLE
from engine import pipeline, protocol
from engine.__main__ import build_parser, prepare_job
from engine.errors import BadInputError
from engine.settings import Settings

FAST = ["--device", "cpu", "--resolution", "48", "--steps", "1", "--iterations", "3", "--set", "reprojections=0"]
RGBD = [str(EXAMPLE / "image.png"), "--depth", str(EXAMPLE / "depth.png")]


def generate(job, *arguments) -> list[dict]:
    prepare_job(build_parser().parse_args(["generate", *arguments, "--out", str(job), *FAST]))
    stream = io.StringIO()
    pipeline.run_job(pipeline.make_run(job, protocol.EventWriter(stream), device="cpu"))
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_the_expansion_inpaints_with_the_scene_prompt_built_from_the_image(tmp_path, one_torch_thread):
    job = tmp_path / "job"
    generate(job, *RGBD)  # no --prompt: the inpaint stage builds one from the image (colour statistics)
    scene_prompt = json.loads((job / "inpaint" / "prompt.json").read_text())["prompt"]
    assert scene_prompt  # built even where no background was hidden: the expansion needs it
    views = json.loads((job / "expand" / "views.json").read_text())
    assert views["steps"][0]["hole_fraction"] > 0  # the view was inpainted
    assert views["prompt"] == scene_prompt


@pytest.mark.parametrize("fov", [90.0, 40.0])
def test_fov_is_honoured_for_rgbd_input_without_a_camera(tmp_path, fov, one_torch_thread):
    job = tmp_path / "job"
    events = generate(job, *RGBD, "--fov", str(fov))
    data = np.load(job / "depth" / "depth.npz")
    width = np.load(job / "inputs" / "depth.npz")["depth"].shape[1]
    used = 2 * math.degrees(math.atan(width / (2 * data["K"][0, 0])))
    assert used == pytest.approx(fov, abs=1e-6)
    warnings = [e["message"] for e in events if e["type"] == "warning"]
    assert any(f"{fov:g}° horizontal field of view" in message for message in warnings), warnings


# One value each field refuses; the test below fails when a field is added without a check.
BAD_VALUES = {
    "resolution": 8,
    "fov": 0.0,
    "steps": 1000,
    "preset": "zigzag",
    "preset_angle": 0.0,
    "depth_edge_threshold": 0.0,
    "align_fit": "median",
    "align_correction": "warp",
    "align_seam_tolerance": 0.0,
    "align_falloff": 20.0,
    "align_seam_smoothing": 2.0,
    "align_seam_spread": -1.0,
    "align_seam_adaptive": -1.0,
    "align_seam_edge_radius": 0.2,
    "depth_ramp_radius": 0.5,
    "mask_iou_threshold": 1.5,
    "mask_min_area": 0.7,  # above mask_max_area
    "mask_max_area": 1.5,
    "foreground_percentile": 100.0,
    "hidden_dilation_px": 100,
    "sam_points_per_side": 0,
    "inpaint_steps": 0,
    "diffusion_solver": "euler",
    "cuda_graphs": "maybe",
    "guidance": -1.0,
    "splat_schedule": "slow",
    "iterations": -1,
    "reprojections": 100,
    "jitter_deg": 180.0,
    "sh_degree": 4,
    "antialiased": "maybe",
    "sky": "yes",
    "sky_far_limit": -1.0,
    "seed": -1,
}


def test_every_setting_has_a_refused_value():
    assert set(BAD_VALUES) == {field.name for field in dataclasses.fields(Settings)}


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_each_bad_setting_is_refused_before_any_work(tmp_path, name):
    value = BAD_VALUES[name]
    arguments = ["--set", f"{name}={json.dumps(value)}"] if name != "preset" else ["--preset", value]
    job = tmp_path / "job"
    with pytest.raises(BadInputError, match=name if name != "mask_min_area" else "mask_min_area <"):
        prepare_job(build_parser().parse_args(["generate", *RGBD, "--out", str(job), *arguments]))
    assert not job.exists()  # refused before anything was written


@pytest.mark.parametrize("solver, most", [("dpm++", 998), ("unipc", 998), ("pndm", 999)])
def test_more_diffusion_steps_than_the_solver_takes_are_refused_before_any_work(tmp_path, solver, most):
    """SD's schedule has 1000 training timesteps: 999 multistep steps (or 1000 PNDM steps) would
    step past it; refused with the solver's limit, before anything is written."""
    job = tmp_path / "job"
    arguments = ["--set", f"diffusion_solver={json.dumps(solver)}", "--set", f"inpaint_steps={most + 1}"]
    with pytest.raises(BadInputError, match=rf"inpaint_steps must be 1\.\.{most} with the {re.escape(solver)} solver"):
        prepare_job(build_parser().parse_args(["generate", *RGBD, "--out", str(job), *arguments]))
    assert not job.exists()
    assert Settings.from_dict({"diffusion_solver": solver, "inpaint_steps": most}).inpaint_steps == most


def test_a_nan_setting_is_refused():
    with pytest.raises(BadInputError, match="mask_iou_threshold"):
        Settings.from_dict({"mask_iou_threshold": float("nan")})


def test_an_unknown_model_name_is_refused_before_any_work(tmp_path):
    with pytest.raises(BadInputError, match="no model is called 'stable-diffusion'"):
        prepare_job(build_parser().parse_args(["generate", *RGBD, "--out", str(tmp_path / "j"), "--model", "stable-diffusion=x"]))
    assert not (tmp_path / "j").exists()


def test_fresh_forgets_nothing_when_the_request_is_refused(tmp_path, one_torch_thread):
    job = tmp_path / "job"
    generate(job, *RGBD)
    with pytest.raises(BadInputError, match="preset"):
        prepare_job(build_parser().parse_args(["generate", *RGBD, "--out", str(job), "--fresh", "--preset", "zigzag"]))
    assert (job / "splat" / "done.json").is_file() and (job / "gaussians.ply").is_file()


def test_an_earlier_runs_camera_does_not_place_a_run_without_one(tmp_path, one_torch_thread):
    job = tmp_path / "job"
    prepare_job(build_parser().parse_args(["generate", *RGBD, "--out", str(job), "--camera", str(EXAMPLE / "camera.json")]))
    assert (job / "camera.json").is_file()
    prepare_job(build_parser().parse_args(["generate", *RGBD, "--out", str(job)]))
    assert not (job / "camera.json").exists()


@pytest.mark.parametrize("key, value", [("seed", 7), ("device", "cuda")])
def test_job_json_seed_and_device_are_refused_not_ignored(tmp_path, key, value):
    from engine.job import JobFolder, write_json

    job = JobFolder(tmp_path / "job")
    request = {"schema": 1, "profile": "offline", "image": job.import_file(EXAMPLE / "image.png", "source_image.png"),
               "depth": job.import_file(EXAMPLE / "depth.png", "source_depth.png"), key: value}
    write_json(job.job_file, request)
    with pytest.raises(protocol.ProtocolError, match=f"'{key}' is not read"):
        pipeline.make_run(job.root, protocol.EventWriter(io.StringIO()), device="cpu")
