"""`python -m engine` as a real subprocess: the main RGB-D job, events, resume, errors."""

import json

import pytest

from conftest import EXAMPLE, run_engine
from engine import protocol

FAST = ["--resolution", "96", "--steps", "1", "--iterations", "20", "--set", "reprojections=1"]


def events_of(result):
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    return [protocol.parse_event(line) for line in lines]  # every line must be an event


@pytest.fixture(scope="module")
def finished_job(tmp_path_factory):
    job = tmp_path_factory.mktemp("job") / "courtyard job ü"  # spaces and unicode in the path
    args = [str(EXAMPLE / "image.png"), "--depth", str(EXAMPLE / "depth.png"), "--camera", str(EXAMPLE / "camera.json")]
    result = run_engine("generate", *args, "--out", str(job), "--profile", "offline", "--device", "cpu", *FAST)
    assert result.returncode == 0, result.stdout + result.stderr
    return job, args, result


def test_generate_writes_the_job_and_results(finished_job):
    job, _, result = finished_job
    events = events_of(result)
    assert events[0]["type"] == "hello" and events[-1]["type"] == "result"
    started = [e["stage"] for e in events if e["type"] == "stage_start"]
    assert started == list(protocol.STAGES)
    request = protocol.read_job((job / "job.json").read_text())
    assert request["profile"] == "offline" and request["depth"].startswith("inputs/")
    for name in ("points.ply", "gaussians.ply", "camera.json", "engine.log"):
        assert (job / name).is_file(), name
    assert (job / "points.ply").read_bytes().startswith(b"ply")
    assert "Traceback" not in result.stderr


def test_rerun_resumes_and_a_changed_setting_redoes_the_stages_that_read_it(finished_job):
    job, args, _ = finished_job
    same = run_engine("generate", *args, "--out", str(job), "--device", "cpu", *FAST)
    assert same.returncode == 0
    cached = {e["stage"]: e["cached"] for e in events_of(same) if e["type"] == "stage_done"}
    assert all(cached.values()), cached
    changed = run_engine("generate", *args, "--out", str(job), "--device", "cpu", *FAST[:-2], "--set", "reprojections=0")
    assert changed.returncode == 0
    cached = {e["stage"]: e["cached"] for e in events_of(changed) if e["type"] == "stage_done"}
    assert cached == {"inputs": True, "depth": True, "segment": True, "inpaint": True, "sky": True, "expand": True, "splat": False, "export": False}


@pytest.mark.parametrize(
    "arguments, code, words",
    [
        (["missing.png", "--out", "{tmp}/j"], protocol.EXIT_BAD_INPUT, "not found"),
        (["{example}/image.png", "--out", "{tmp}/j", "--profile", "offline"], protocol.EXIT_BAD_INPUT, "depth"),
        (["{example}/image.png", "--depth", "{example}/image.png", "--out", "{tmp}/j"], protocol.EXIT_BAD_INPUT, "16-bit"),
        (["{example}/image.png", "--out", "{tmp}/j", "--iterations", "-5"], protocol.EXIT_BAD_INPUT, "iterations"),
        (["{example}/image.png", "--out", "{tmp}/j", "--profile", "nope"], protocol.EXIT_BAD_INPUT, "invalid choice"),
        (["--out", "{tmp}/j"], protocol.EXIT_BAD_INPUT, "prompt"),
    ],
)
def test_bad_input_exits_with_an_error_event_and_no_traceback(tmp_path, arguments, code, words):
    arguments = [a.format(tmp=tmp_path, example=EXAMPLE) for a in arguments]
    result = run_engine("generate", *arguments, "--device", "cpu")
    assert result.returncode == code, result.stdout + result.stderr
    events = events_of(result)
    assert events[-1]["type"] == "error" and words in events[-1]["message"]
    assert "Traceback" not in result.stderr


def test_version_and_status(finished_job):
    job, _, _ = finished_job
    version = events_of(run_engine("version"))
    assert version[0]["protocol"] == protocol.PROTOCOL_VERSION
    assert version[0]["rasterizer"] == "torch" and version[0]["reason"] == "no CUDA device"  # this CPU machine
    status = events_of(run_engine("status", str(job)))[-1]
    assert status["type"] == "result" and all(status["outputs"].values())
    assert status["rasterizer"] == "torch"


def test_warmup_on_a_cpu_checks_the_torch_rasterizer():
    result = events_of(run_engine("warmup", "--device", "cpu"))[-1]
    assert result["type"] == "result" and result["rasterizer"] == "torch" and result["check_alpha_sum"] > 1


def test_tiny_profile_runs_every_model_stage_and_imports_into_blender(tmp_path, addon):
    """Every model stage (tiny MoGe-2, SAM, SD/ControlNet inpainting, CLIP) end to end on the CPU.

    Random weights: this proves the model code and the loading path, not image quality.
    """
    import bpy

    job = tmp_path / "tiny"
    # Random SAM weights predict arbitrary IoUs and areas: open the layer rules so some mask
    # becomes foreground and the depth ControlNet and the CLIP prompt really run.
    layer_rules = ["mask_iou_threshold=-100", "mask_min_area=0.0", "mask_max_area=1.0", "foreground_percentile=99"]
    result = run_engine(
        "generate", str(EXAMPLE / "image.png"), "--out", str(job), "--profile", "tiny", "--device", "cpu",
        "--resolution", "64", "--steps", "1", "--iterations", "5", "--set", "reprojections=0",
        "--set", "inpaint_steps=2", *[arg for rule in layer_rules for arg in ("--set", rule)],
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    done = {e["stage"] for e in events_of(result) if e["type"] == "stage_done" and not e["cached"]}
    assert done == set(protocol.STAGES)
    summary = json.loads((job / "inpaint" / "prompt.json").read_text())
    assert summary["prompt"].startswith("high-resolution ") and summary["points"] > summary["visible_points"]
    bpy.ops.wm.read_homefile(use_empty=True)
    assert bpy.ops.gen3d.import_job(directory=str(job)) == {"FINISHED"}
    imported = [o for o in bpy.data.objects if o.type == "MESH" and len(o.data.vertices) > 0]
    assert len(imported) >= 2  # points and Gaussians


def test_text_input_needs_a_profile_with_a_text_to_image_model(tmp_path):
    result = run_engine("generate", "--prompt", "a quiet harbour", "--out", str(tmp_path / "j"), "--profile", "offline")
    assert result.returncode == protocol.EXIT_BAD_INPUT
    assert "no text-to-image model" in events_of(result)[-1]["message"]
