"""Issue 7, item 2: faults.  The engine killed mid-stage, cancelled during every stage, out of
memory, a full disk, a missing or wrong engine interpreter: each is reported clearly, finished
stages stay on disk, nothing half-written is taken as finished, and a re-run resumes.

Killing uses the real CLI subprocess; cancel, out-of-memory and disk-full run
``engine.__main__.main`` in-process so a fault can be raised from inside a real stage.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import signal
import sys
import time

import numpy as np
import pytest

from conftest import ADDON_MODULE, EXAMPLE, run_engine


def _generate():
    """The Generate operator's module: the run in flight and the last run live there, at runtime."""
    import importlib

    return importlib.import_module(f"{ADDON_MODULE}.operators.generate")
from engine import pipeline, protocol
from engine.__main__ import main as engine_main
from reliability import FAST, assert_job_consistent, events_of, finished_stages, losses, record_fault, run_and_interrupt

STAGES = list(protocol.STAGES)
SPLAT = STAGES.index("splat")  # the stages before the 3DGS training
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

    def run(*argv: str, stream: io.StringIO | None = None):
        stream = stream or io.StringIO()
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
    finished = [e["stage"] for e in killed.events if e["type"] == "stage_done"]
    lost = losses(job, finished)
    kept = finished_stages(job)
    resumed = run_engine(*arguments)
    reused = [s for s, cached in cached_flags(events_of(resumed.stdout)).items() if cached]
    lost += [f"stage {s} redone after the kill" for s in finished if s not in reused]
    record_fault("engine killed (SIGKILL) in the splat stage, then re-run", simulated=False, lost=lost,
                 stage="splat", exit=killed.returncode, resumed_exit=resumed.returncode)
    assert killed.returncode == -signal.SIGKILL and lost == []
    assert kept == STAGES[:SPLAT]
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert cached_flags(events_of(resumed.stdout)) == {s: s in STAGES[:SPLAT] for s in STAGES}
    # The edge threshold is read from the segment stage on: the stages before it are reused.
    changed = run_engine(*arguments, "--set", "depth_edge_threshold=0.3")
    assert changed.returncode == 0
    cached = cached_flags(events_of(changed.stdout))
    assert [s for s in STAGES if cached[s]][:2] == ["inputs", "depth"] and not any(cached[s] for s in STAGES[2:SPLAT])
    assert assert_job_consistent(job) == STAGES


# -- cancel inside every stage ------------------------------------------------------------------

TINY = ["--profile", "tiny", "--device", "cpu", "--resolution", "48", "--steps", "0", "--iterations", "5",
        "--set", "reprojections=0", "--set", "inpaint_steps=1", "--set", "sam_points_per_side=2"]
OPEN_LAYERS = [arg for rule in ("mask_iou_threshold=-100", "mask_min_area=0.0", "mask_max_area=1.0",
                                "foreground_percentile=99") for arg in ("--set", rule)]  # random SAM: some mask is foreground

# stage -> (arguments that make that stage long and those before it short, the event to cancel at).
# Progress inside the stage means its loop runs; stage_start where the stage reports none.
CANCEL_CASES = {
    "inputs": (["", "--prompt", "a quiet harbour", *TINY, "--set", "inpaint_steps=500"], "progress"),  # text to image
    "depth": ([str(EXAMPLE / "image.png"), *TINY], "progress"),  # one MoGe-2 call: checked before each module
    # At stage_start: SAM's load (its import alone ~2.4 s) then 256 batches (~8 s).
    "segment": ([str(EXAMPLE / "image.png"), *TINY, "--set", "sam_points_per_side=128"], "stage_start"),
    "inpaint": ([str(EXAMPLE / "image.png"), *TINY, *OPEN_LAYERS, "--set", "inpaint_steps=500"], "progress"),
    # The example's depth has sky: its panorama is inpainted by the tiny SD (the layers stay closed).
    "sky": ([*INPUTS, *TINY, "--set", "inpaint_steps=500"], "progress"),
    "expand": ([*INPUTS, *FAST, "--steps", "256"], "progress"),  # 256 views
    "splat": ([*INPUTS, *FAST, "--iterations", "100000"], "progress"),
    "export": ([*INPUTS, *FAST], "stage_start"),  # two file writes: never left half done
}
CANCEL_LATENCY_LIMIT_S = 2.0


def _last(arguments: list[str], flag: str) -> str:
    """The value of ``flag`` as argparse reads it (the last one given wins)."""
    return arguments[len(arguments) - arguments[::-1].index(flag)]


def _matches(event: dict, stage: str, event_type: str) -> bool:
    # Progress past 0 (or the depth stage's "estimating depth"): the stage's work has begun, its
    # models are loaded (a cancel during a load is tested with segment's, at stage_start).
    return event["type"] == event_type and event.get("stage") == stage and (
        event_type != "progress" or (event["fraction"] or 0) > 0 or event.get("message") == "estimating depth")


class CancelAt(io.StringIO):
    """The engine's stdout: sends SIGINT (the client's Cancel) at the first event matching, and notes when."""

    def __init__(self, stage: str, event_type: str):
        super().__init__()
        self.stage, self.event_type, self.sent = stage, event_type, None

    def write(self, text: str) -> int:
        written = super().write(text)
        for line in text.splitlines():
            event = json.loads(line)
            if self.sent is None and _matches(event, self.stage, self.event_type):
                self.sent = time.perf_counter()
                os.kill(os.getpid(), signal.SIGINT)
        return written


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("stage", STAGES)
def test_cancel_inside_each_stage_stops_within_two_seconds_and_keeps_what_finished(tmp_path, in_process, stage, device):
    """SIGINT while ``stage`` runs (its loop running where it has one): the engine stops at its
    next check inside the stage (exit 130, a "cancelled" event naming it), earlier stages stay
    finished, nothing half written is left; the latency from the signal to the exit is measured."""
    arguments, event_type = CANCEL_CASES[stage]
    job = tmp_path / "job"
    stream = CancelAt(stage, event_type)
    code, events = in_process(*arguments, "--out", str(job), "--device", device, stream=stream)
    assert stream.sent is not None, events[-3:]
    latency = time.perf_counter() - stream.sent
    signalled = next(i for i, e in enumerate(events) if _matches(e, stage, event_type))
    before = [e["stage"] for e in events[:signalled] if e["type"] == "stage_done"]  # finished when the signal went out
    stopped = events[-1]["stage"] if events[-1]["type"] == "cancelled" else "finished"
    lost = losses(job, before)
    record_fault(f"cancel (SIGINT) in the {stage} stage on {device}", simulated=False, lost=lost, stage=stage, device=device,
                 latency_s=round(latency, 3), stopped=stopped, exit=code,
                 settings=f"{_last(arguments, '--profile')} profile, {_last(arguments, '--resolution')} px, in-process main()")
    assert lost == []
    assert latency < CANCEL_LATENCY_LIMIT_S, (stage, latency)
    if stage == "export":  # its writes finish: the results are never half replaced
        assert code == protocol.EXIT_OK and events[-1]["type"] == "result"
        return
    assert code == protocol.EXIT_CANCELLED and events[-1]["type"] == "cancelled", events[-3:]
    assert stopped == stage and stage not in finished_stages(job)


# -- out of memory ------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["inpaint", "splat"])
def test_simulated_out_of_memory_names_the_peak_and_the_setting_to_lower(tmp_path, monkeypatch, in_process, stage):
    """Simulated: torch.cuda.OutOfMemoryError raised on the CPU in place of the stage, so the
    report's CPU branch runs; tests/test_reliability_faults.py::test_real_cuda_out_of_memory
    (bench/gpu_faults.sh) runs a real one."""
    import torch

    def exhausted(run, out):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setitem(pipeline.STAGE_FUNCTIONS, stage, exhausted)
    job = tmp_path / "job"
    code, events = in_process(*INPUTS, "--out", str(job), *FAST)
    record_fault(f"out of memory in the {stage} stage (torch.cuda.OutOfMemoryError raised on the CPU)", simulated=True,
                 lost=losses(job, STAGES[: STAGES.index(stage)]), stage=stage, exit=code)
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
    record_fault("disk full mid-file in the segment stage (ENOSPC raised by np.savez after 4 KB)", simulated=True,
                 lost=losses(job, ["inputs", "depth"]), stage="segment", exit=code)
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


@pytest.mark.gpu
def test_real_cuda_out_of_memory_in_the_splat_stage(tmp_path, monkeypatch, in_process):
    """A real CUDA OOM: the card is filled (as another program on it would) when the 3DGS stage
    starts, so the stage's own allocations fail; the report names the peak of the card."""
    import torch

    original = pipeline.STAGE_FUNCTIONS["splat"]
    ballast = []

    def crowded(run, out):
        free, _ = torch.cuda.mem_get_info()
        ballast.append(torch.empty(max(0, free - 32 * 2**20), dtype=torch.uint8, device="cuda"))  # leave 32 MB
        try:
            return original(run, out)
        finally:
            ballast.clear()

    monkeypatch.setitem(pipeline.STAGE_FUNCTIONS, "splat", crowded)
    job = tmp_path / "job"
    arguments = [*INPUTS, "--out", str(job), *FAST, "--device", "cuda", "--resolution", "256", "--set", "reprojections=2"]
    code, events = in_process(*arguments)
    record_fault("out of memory in the splat stage (a real CUDA allocation on a full card)", simulated=False,
                 lost=losses(job, STAGES[:SPLAT]), stage="splat", exit=code, message=events[-1].get("message", ""))
    assert code == protocol.EXIT_OUT_OF_MEMORY, events[-3:]
    message = events[-1]["message"]
    assert "out of memory in the splat stage" in message and " MB of " in message and "on cuda" in message
    assert "--device cpu" in events[-1]["hint"]
    assert assert_job_consistent(job) == STAGES[:SPLAT]
    monkeypatch.setitem(pipeline.STAGE_FUNCTIONS, "splat", original)  # the card is free again: the re-run resumes
    held = {"allocated_mb": torch.cuda.memory_allocated() / 2**20, "reserved_mb": torch.cuda.memory_reserved() / 2**20,
            "free_mb": torch.cuda.mem_get_info()[0] / 2**20}  # what the failed run left behind
    code, events = in_process(*arguments)
    assert code == protocol.EXIT_OK, (events[-2:], held)
    assert cached_flags(events) == {s: s in STAGES[:SPLAT] for s in STAGES}


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
    record_fault("engine interpreter missing (Generate in Blender)", simulated=False, lost=None)
    with pytest.raises(RuntimeError, match="Engine Python not found.*Set up engine"):  # the operator's error report
        bpy.ops.gen3d.generate()
    assert bpy.ops.gen3d.generate.poll() and _generate().active_run() is None


SYSTEM_PYTHON = "/usr/bin/python3"


def _lacks_numpy(python: str) -> bool:
    import subprocess

    return os.path.isfile(python) and subprocess.run([python, "-c", "import numpy"], capture_output=True).returncode != 0


@pytest.mark.skipif(not _lacks_numpy(SYSTEM_PYTHON), reason="needs a system Python without numpy (the wrong Python)")
def test_a_python_without_the_engine_packages_is_reported_clearly(generate_scene):
    import bpy

    bpy.context.preferences.addons[ADDON_MODULE].preferences.engine_python = SYSTEM_PYTHON
    record_fault("engine interpreter without the engine's packages (Generate in Blender)", simulated=False, lost=None)
    with pytest.raises(RuntimeError, match="lacks the engine's packages .*numpy.*Set up engine"):
        bpy.ops.gen3d.generate(timeout=60)
    assert "lacks the engine's packages" in _generate().last_run().message
    assert bpy.ops.gen3d.generate.poll() and _generate().active_run() is None
