"""Helpers shared by the reliability tests (tests/test_reliability_*.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from conftest import ROOT, engine_command
from engine import protocol

# Tiny settings: each generate is a few seconds on a shared CPU; the point is survival, not quality.
FAST = ["--profile", "offline", "--device", "cpu", "--resolution", "64", "--steps", "0", "--iterations", "5",
        "--set", "reprojections=0"]


def events_of(stdout: str) -> list[dict]:
    return [protocol.parse_event(line) for line in stdout.splitlines() if line.strip()]  # every line must be an event


def assert_refused(result: subprocess.CompletedProcess, code: int, *words: str) -> str:
    """A clean refusal: the exit code, one error event whose one-line message holds ``words``, no traceback."""
    assert result.returncode == code, result.stdout + result.stderr
    events = events_of(result.stdout)
    assert events[-1]["type"] == "error" and events[-1]["code"] == protocol.EXIT_CODES[code], events[-1]
    message = events[-1]["message"]
    assert "\n" not in message, message
    for word in words:
        assert word.lower() in message.lower(), (word, message)
    assert "Traceback" not in result.stderr, result.stderr
    return message


class Interrupted(subprocess.CompletedProcess):
    events: list[dict]


def run_and_interrupt(
    arguments: list[str], stderr_file: Path, *, when, signal_number: int = signal.SIGINT, timeout: float = 300
) -> Interrupted:
    """Run the engine CLI and send ``signal_number`` (SIGINT: what a client's Cancel does) at the
    first event for which ``when(event)`` is true; the completed process with its parsed events."""
    process = subprocess.Popen(
        engine_command(*arguments), cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr_file.open("w"), text=True
    )
    events, sent = [], False
    try:
        for line in process.stdout:
            events.append(protocol.parse_event(line))
            if not sent and when(events[-1]):
                process.send_signal(signal_number)
                sent = True
        process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    result = Interrupted(process.args, process.returncode, "", stderr_file.read_text())
    result.events = events
    return result


def job_files(job: Path) -> list[Path]:
    return sorted(p for p in job.rglob("*") if p.is_file())


def losses(job: Path, finished_before: list[str]) -> list[str]:
    """What a fault cost, as the tests check it: each stage finished before the fault that is no
    longer finished (record or an output gone), each done.json naming a missing output, each
    temporary file left behind.  Empty: nothing lost."""
    lost = [f"left {p.relative_to(job)}" for p in job_files(job) if ".tmp" in p.name] if job.exists() else []
    for stage in protocol.STAGES:
        done = job / stage / "done.json"
        if not done.is_file():
            if stage in finished_before:
                lost.append(f"stage {stage} no longer finished")
            continue
        for name in json.loads(done.read_text())["outputs"]:
            if not (job / stage / name).is_file():
                lost.append(f"{stage}/{name} named in done.json but missing")
    return lost


def finished_stages(job: Path) -> list[str]:
    return [stage for stage in protocol.STAGES if (job / stage / "done.json").is_file()]


def record_fault(fault: str, *, simulated: bool, lost: list[str] | None, **measured) -> None:
    """One fault a test injected, for scripts/reliability_report.py (GEN3D_FAULT_REPORT, JSON lines):
    what it was, whether it was simulated, what was lost (None: no job involved) and what was measured.
    Written before the test's assertions, so a failed check is reported too."""
    if not os.environ.get("GEN3D_FAULT_REPORT"):
        return
    test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]
    record = {"test": test, "fault": fault, "simulated": simulated, "lost": lost, **measured}
    with open(os.environ["GEN3D_FAULT_REPORT"], "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def assert_job_consistent(job: Path) -> list[str]:
    """No temporary file left behind and every finished stage's outputs exist; the finished stages."""
    leftovers = [p for p in job_files(job) if ".tmp" in p.name]
    assert not leftovers, leftovers
    finished = []
    for stage in protocol.STAGES:
        done = job / stage / "done.json"
        if done.is_file():
            record = json.loads(done.read_text())
            for name in record["outputs"]:
                assert (job / stage / name).is_file(), (stage, name)
            finished.append(stage)
    return finished
