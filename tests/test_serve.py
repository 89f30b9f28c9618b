"""`python -m engine serve`: one engine answers many requests and keeps its models loaded."""

import json
import subprocess
import sys

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
