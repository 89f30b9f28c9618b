"""The protocol module: events, job.json validation, and its written schema (docs/protocol.md)."""

import io
import json
import re
from pathlib import Path

import pytest

from engine import protocol

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"


def test_event_round_trip_and_one_line_each():
    stream = io.StringIO()
    writer = protocol.EventWriter(stream)
    writer.emit("stage_start", stage="depth", index=1, total=7)
    writer.emit("progress", stage="depth", fraction=float("nan"), message="naïve ünïcode")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (protocol.parse_event(line) for line in lines)
    assert first["type"] == "stage_start" and first["index"] == 1 and first["v"] == protocol.PROTOCOL_VERSION
    assert second["fraction"] is None  # NaN is not JSON: it travels as null
    assert second["message"] == "naïve ünïcode"


@pytest.mark.parametrize(
    "line, problem",
    [
        ("hello there", "not JSON"),
        ("[1, 2]", "not an event"),
        ('{"type": "progress", "v": 1, "stage": "x"}', "lacks fraction"),
        ('{"type": "teleport", "v": 1}', "unknown event type"),
        ('{"type": "warning", "v": 99, "message": "m"}', "protocol 99"),
    ],
)
def test_parse_rejects_what_is_not_an_event(line, problem):
    with pytest.raises(protocol.ProtocolError, match=problem):
        protocol.parse_event(line)


def test_make_event_requires_fields():
    with pytest.raises(protocol.ProtocolError, match="lacks message"):
        protocol.make_event("error", code="failed")


def test_doc_lists_exactly_the_event_types_and_fields():
    text = DOC.read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(\w+)` \| ([^|]*) \|", text, flags=re.MULTILINE)
    events = {name: tuple(re.findall(r"`(\w+)`", fields)) for name, fields in rows if name in protocol.EVENT_FIELDS}
    assert events == protocol.EVENT_FIELDS
    for code, name in protocol.EXIT_CODES.items():
        assert f"| {code} | `{name}` |" in text
    for stage in protocol.STAGES:
        assert f"`{stage}`" in text


def test_job_validation_accepts_a_good_job():
    job = {"schema": 1, "profile": "offline", "image": "inputs/a b ü.png", "settings": {"steps": 2}}
    assert protocol.validate_job(job) is job
    assert protocol.read_job(json.dumps(job)) == job


@pytest.mark.parametrize(
    "job, problem",
    [
        ({"schema": 1}, "lacks 'profile'"),
        ({"schema": 1, "profile": "offline", "colour": 1}, "unknown keys: colour"),
        ({"schema": 1, "profile": "offline", "image": "../../etc/passwd"}, "inside the job folder"),
        ({"schema": 1, "profile": "offline", "image": "/etc/passwd"}, "inside the job folder"),
        ({"schema": 1, "profile": "offline", "depth": "C:\\x.npy"}, "inside the job folder"),
        ({"schema": 1, "profile": "offline", "prompt": 7}, "wrong type"),
        ({"schema": 1, "profile": "offline", "negative_prompt": True}, "wrong type"),
        ({"schema": 1, "profile": "offline", "seed": 7}, "'seed' is not read: put the seed in settings.seed"),
        ({"schema": 1, "profile": "offline", "device": "cuda"}, "'device' is not read: the device is the engine's --device"),
        ({"schema": 2, "profile": "offline"}, "schema 2"),
        ([], "JSON object"),
    ],
)
def test_job_validation_rejects_bad_jobs(job, problem):
    with pytest.raises(protocol.ProtocolError, match=problem):
        protocol.validate_job(job)
