"""Issue 7, item 2: faults.  The engine killed mid-stage, cancelled during every stage, out of
memory, a full disk, a missing or wrong engine interpreter: each is reported clearly, finished
stages stay on disk, nothing half-written is taken as finished, and a re-run resumes.

Killing uses the real CLI subprocess; cancel, out-of-memory and disk-full run
``engine.__main__.main`` in-process so a fault can be raised from inside a real stage.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import signal
import sys

import numpy as np
import pytest

from conftest import ADDON_MODULE, EXAMPLE, run_engine
from engine import pipeline, protocol
from engine.__main__ import main as engine_main
from reliability import FAST, assert_job_consistent, events_of, run_and_interrupt

STAGES = list(protocol.STAGES)
INPUTS = [str(EXAMPLE / "image.png"), "--depth", str(EXAMPLE / "depth.png")]


def cached_flags(events) -> dict[str, bool]:
    return {e["stage"]: e["cached"] for e in events if e["type"] == "stage_done"}


@pytest.fixture
def in_process(monkeypatch, tmp_path):
    """``run(argv) -> (exit code, events)``: the CLI's main() in this process, its events
    captured; the stdout, logging, signal handlers and environment it takes over are given back after."""
    import torch

    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):  # main() sets these defaults
        monkeypatch.setenv(name, str(tmp_path / "cache" / name))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    root = logging.getLogger()
    saved = list(root.handlers), root.level

    def run(*argv: str):
        stream = io.StringIO()
        monkeypatch.setattr(sys, "stdout", stream)  # main() sends its events here, then stdout to stderr
        code = engine_main(["generate", *argv])
        return code, events_of(stream.getvalue())

    yield run
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
    for handler in root.handlers:
        if handler not in saved[0]:
            handler.close()
    root.handlers[:], root.level = saved
    torch.set_num_threads(threads)


# -- killed mid-stage ---------------------------------------------------------------------------


def test_killed_mid_stage_keeps_finished_stages_and_a_rerun_resumes(tmp_path):
    job = tmp_path / "job"
    arguments = ["generate", *INPUTS, "--out", str(job), *FAST]
    # A long 3DGS schedule, killed (SIGKILL: no chance to clean up) as soon as it starts.
    killed = run_and_interrupt(
        arguments + ["--iterations", "100000"], tmp_path / "stderr.txt",
        when=lambda e: e["type"] == "stage_start" and e["stage"] == "splat", signal_number=signal.SIGKILL,
    )
    assert killed.returncode == -signal.SIGKILL
    assert assert_job_consistent(job) == STAGES[:5]
    resumed = run_engine(*arguments)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert cached_flags(events_of(resumed.stdout)) == {s: s in STAGES[:5] for s in STAGES}
    # A layer rule is read from the segment stage on: exactly the stages from there are redone.
    changed = run_engine(*arguments, "--set", "hidden_dilation_px=5")
    assert changed.returncode == 0
    assert cached_flags(events_of(changed.stdout)) == {s: s in ("inputs", "depth") for s in STAGES}
    assert assert_job_consistent(job) == STAGES


# -- cancel during every stage ----------------------------------------------------------------


def test_cancel_during_every_stage_keeps_what_finished(tmp_path, monkeypatch, in_process):
    """SIGINT arrives while each stage runs in turn (sent from inside the stage).  The engine
    stops at its next check: exit 130 and a "cancelled" event, earlier stages intact, no
    temporary file left, every done.json's outputs present; the next run resumes."""
    job = tmp_path / "job"
    arguments = [*INPUTS, "--out", str(job), *FAST]
    originals = dict(pipeline.STAGE_FUNCTIONS)
    for index, stage in enumerate(STAGES):

        def interrupted(run, out, stage=stage):
            os.kill(os.getpid(), signal.SIGINT)  # the user's Cancel, delivered mid-stage
            return originals[stage](run, out)

        before = assert_job_consistent(job)
        monkeypatch.setitem(pipeline.STAGE_FUNCTIONS, stage, interrupted)
        code, events = in_process(*arguments)
        monkeypatch.setitem(pipeline.STAGE_FUNCTIONS, stage, originals[stage])
        assert all(cached_flags(events)[s] for s in before if s in STAGES[:index]), (stage, events)  # resumed
        finished = assert_job_consistent(job)
        assert finished[:index] == STAGES[:index]
        if code == protocol.EXIT_OK:  # only the last stage may finish: no check is left after it
            assert stage == STAGES[-1] and events[-1]["type"] == "result"
        else:
            assert code == protocol.EXIT_CANCELLED and events[-1]["type"] == "cancelled", (stage, events[-3:])
            assert events[-1]["stage"] in STAGES[index:]  # a stage name, where the run stopped
        if stage == "splat":  # 3DGS checks between iterations: stopped inside the stage itself
            assert events[-1]["stage"] == "splat" and "splat" not in finished
    code, events = in_process(*arguments)
    assert code == protocol.EXIT_OK and assert_job_consistent(job) == STAGES


# -- out of memory ------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["inpaint", "splat"])
def test_out_of_memory_names_the_peak_and_the_setting_to_lower(tmp_path, monkeypatch, in_process, stage):
    import torch

    def exhausted(run, out):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setitem(pipeline.STAGE_FUNCTIONS, stage, exhausted)
    job = tmp_path / "job"
    code, events = in_process(*INPUTS, "--out", str(job), *FAST)
    assert code == protocol.EXIT_OUT_OF_MEMORY
    error = events[-1]
    assert error["type"] == "error" and error["code"] == "out_of_memory"
    message = error["message"]
    assert "\n" not in message and f"out of memory in the {stage} stage" in message
    assert "peak" in message and " MB" in message and "--resolution (now 64)" in message
    assert "lower" in error["hint"]
    if stage == "splat":
        assert "reprojections" in message
    assert assert_job_consistent(job) == STAGES[: STAGES.index(stage)]


# -- disk full ----------------------------------------------------------------------------------


def test_disk_full_mid_file_leaves_nothing_taken_as_finished(tmp_path, monkeypatch, in_process):
    real_savez = np.savez

    def full_disk(file, *args, **kwargs):
        if "layers" in getattr(file, "name", ""):  # the segment stage's layers.npz, half written
            file.write(b"PK\x03\x04" + b"\0" * 4096)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_savez(file, *args, **kwargs)

    monkeypatch.setattr(np, "savez", full_disk)
    job = tmp_path / "job"
    arguments = [*INPUTS, "--out", str(job), *FAST]
    code, events = in_process(*arguments)
    assert code == protocol.EXIT_FAILED
    message = events[-1]["message"]
    assert "disk full" in message and "free space" in message and str(job) in message and "\n" not in message
    assert assert_job_consistent(job) == ["inputs", "depth"]
    assert not (job / "segment" / "layers.npz").exists()
    monkeypatch.setattr(np, "savez", real_savez)  # space freed: the re-run resumes
    code, events = in_process(*arguments)
    assert code == protocol.EXIT_OK
    assert cached_flags(events) == {s: s in ("inputs", "depth") for s in STAGES}
    assert np.load(job / "segment" / "layers.npz")["hidden"].dtype == bool


# -- the engine interpreter ---------------------------------------------------------------------


@pytest.fixture
def generate_scene(clean_scene, tmp_path):
    import bpy

    prefs = bpy.context.preferences.addons[ADDON_MODULE].preferences
    prefs.jobs_folder, prefs.profile, prefs.device = str(tmp_path / "jobs"), "offline", "cpu"
    settings = clean_scene.gen3d
    settings.image_path, settings.depth_path = str(EXAMPLE / "image.png"), str(EXAMPLE / "depth.png")
    settings.use_scene_camera = False
    settings.resolution, settings.steps, settings.splat_iterations = 64, 0, 5
    yield clean_scene
    prefs.engine_python = sys.executable


def test_missing_engine_interpreter_is_reported_clearly(generate_scene, tmp_path):
    import bpy

    bpy.context.preferences.addons[ADDON_MODULE].preferences.engine_python = str(tmp_path / "venv" / "bin" / "python")
    with pytest.raises(RuntimeError, match="Engine Python not found.*Set up engine"):  # the operator's error report
        bpy.ops.gen3d.generate()
    assert bpy.ops.gen3d.generate.poll() and not generate_scene.gen3d.running


SYSTEM_PYTHON = "/usr/bin/python3"


def _lacks_numpy(python: str) -> bool:
    import subprocess

    return os.path.isfile(python) and subprocess.run([python, "-c", "import numpy"], capture_output=True).returncode != 0


@pytest.mark.skipif(not _lacks_numpy(SYSTEM_PYTHON), reason="needs a system Python without numpy (the wrong Python)")
def test_a_python_without_the_engine_packages_is_reported_clearly(generate_scene):
    import bpy

    bpy.context.preferences.addons[ADDON_MODULE].preferences.engine_python = SYSTEM_PYTHON
    with pytest.raises(RuntimeError, match="lacks the engine's packages .*numpy.*Set up engine"):
        bpy.ops.gen3d.generate(timeout=60)
    assert "lacks the engine's packages" in generate_scene.gen3d.message
    assert bpy.ops.gen3d.generate.poll() and not generate_scene.gen3d.running
