"""`python -m engine serve`: one engine answers many requests and keeps its models loaded."""

import json
import subprocess
import sys

import pytest

from conftest import EXAMPLE, ROOT
from engine import protocol

TINY = ["--profile", "tiny", "--resolution", "64", "--steps", "0", "--iterations", "3",
        "--set", "reprojections=0", "--set", "inpaint_steps=1"]


def request(process, **message):
    process.stdin.write(json.dumps(message) + "\n")
    process.stdin.flush()


def events_until(process, *types):
    """Events up to and including the first whose type is in ``types``."""
    seen = []
    for line in process.stdout:
        seen.append(protocol.parse_event(line))
        if seen[-1]["type"] in types:
            return seen
    raise AssertionError(f"the engine ended before {types}: {seen[-3:]}")


def test_serve_keeps_models_loaded_survives_bad_requests_and_cancels(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "engine", "serve", "--device", "cpu"], cwd=ROOT, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert events_until(process, "hello")[-1]["serve"] is True
        ends = ("result", "error", "cancelled")
        # Two tiny requests: the second reuses the models the first loaded.
        for name in ("first", "second"):
            request(process, type="generate", args=[str(EXAMPLE / "image.png"), "--out", str(tmp_path / name), *TINY])
            assert events_until(process, *ends)[-1]["type"] == "result"
        # A bad request gets its error; the engine goes on.
        request(process, type="generate", args=["nowhere.png", "--out", str(tmp_path / "bad")])
        error = events_until(process, *ends)[-1]
        assert error["type"] == "error" and "not found" in error["message"]
        # Cancel a long request inside the 3DGS stage; a re-run resumes the stages before it.
        long = [str(EXAMPLE / "image.png"), "--depth", str(EXAMPLE / "depth.png"), "--out", str(tmp_path / "long"),
                "--resolution", "64", "--steps", "1", "--iterations", "100000", "--set", "reprojections=0"]
        request(process, type="generate", args=long)
        events_until(process, "stage_start")
        while events_until(process, "stage_start")[-1]["stage"] != "splat":
            pass
        request(process, type="cancel")
        assert events_until(process, *ends)[-1]["type"] == "cancelled"
        request(process, type="generate", args=long[:-4] + ["--iterations", "3", "--set", "reprojections=0"])
        resumed = events_until(process, *ends)
        assert resumed[-1]["type"] == "result"
        cached = {e["stage"] for e in resumed if e["type"] == "stage_done" and e["cached"]}
        assert {"inputs", "depth", "segment", "inpaint", "expand"} <= cached
        request(process, type="shutdown")
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()
    log = process.stderr.read()
    assert log.count("loaded geometry backend 'moge'") == 1
    assert log.count("loaded layers backend 'sam'") == 1


OFFLINE = [str(EXAMPLE / "image.png"), "--depth", str(EXAMPLE / "depth.png"), "--profile", "offline",
           "--resolution", "48", "--steps", "0", "--set", "reprojections=0"]


def start_serve():
    process = subprocess.Popen(
        [sys.executable, "-m", "engine", "serve", "--device", "cpu"], cwd=ROOT, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    assert events_until(process, "hello")[-1]["serve"] is True
    return process


def until_stage(process, stage):
    while events_until(process, "stage_start")[-1]["stage"] != stage:
        pass


ENDS = ("result", "error", "cancelled")


def test_a_cancel_reaches_exactly_the_requests_received_before_it(tmp_path):
    process = start_serve()
    try:
        request(process, type="generate", args=[*OFFLINE, "--out", str(tmp_path / "a"), "--iterations", "100000"])
        until_stage(process, "splat")
        # A second request and a cancel in one write: the cancel stops the running request and
        # the one queued behind it (before, the second request's start cleared the cancel).
        process.stdin.write(json.dumps({"type": "generate", "args": [*OFFLINE, "--out", str(tmp_path / "b")]}) + "\n"
                            + json.dumps({"type": "cancel"}) + "\n")
        process.stdin.flush()
        assert events_until(process, *ENDS)[-1]["type"] == "cancelled"
        assert events_until(process, *ENDS)[-1]["type"] == "cancelled"
        # A cancel sent when nothing runs does not reach a request sent after it.
        request(process, type="cancel")
        request(process, type="generate", args=[*OFFLINE, "--out", str(tmp_path / "c"), "--iterations", "3"])
        assert events_until(process, *ENDS)[-1]["type"] == "result"
        request(process, type="shutdown")
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()


@pytest.mark.parametrize("ending", ["shutdown", "end of input"])
def test_shutdown_or_end_of_input_lets_the_running_request_finish(tmp_path, ending):
    process = start_serve()
    try:
        request(process, type="generate", args=[*OFFLINE, "--out", str(tmp_path / "job"), "--iterations", "150"])
        until_stage(process, "splat")
        if ending == "shutdown":
            request(process, type="shutdown")
        else:
            process.stdin.close()
        rest = [protocol.parse_event(line) for line in process.stdout]
        assert rest[-1]["type"] == "result", rest[-3:]
        assert not [e for e in rest if e["type"] == "stage_done" and e["stage"] == "splat" and e["cached"]]
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()
