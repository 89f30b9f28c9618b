"""The versioned protocol between the engine and its clients (the Blender add-on, scripts, CI).

Two things cross the process boundary, and nothing else:

* a **job folder** whose ``job.json`` describes the work (schema below, validated as data);
* **JSON-lines events** on the engine's stdout, one object per line, each with a ``"type"``.

This module is shared by both sides, so it imports only the standard library: the add-on
runs it inside Blender, where torch is absent.  The full schema is written down in
``docs/protocol.md``; a test keeps the two in step.
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from pathlib import PurePosixPath
from typing import IO, Any

PROTOCOL_VERSION = 1
JOB_SCHEMA_VERSION = 1

# Stage names in pipeline order; a stage's outputs live in JOB/<stage>/.
STAGES = ("inputs", "depth", "segment", "inpaint", "sky", "expand", "splat", "export")

# type -> required fields (besides "type", "v" and "t", which every event carries).
EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    "hello": ("engine_version", "protocol", "job"),
    "stage_start": ("stage", "index", "total"),
    "progress": ("stage", "fraction"),
    "preview": ("stage", "path"),
    "stage_done": ("stage", "seconds", "cached"),
    "warning": ("message",),
    "error": ("message", "code"),
    "cancelled": ("stage",),
    "result": ("outputs",),
}

# Exit codes of `python -m engine`.
EXIT_OK = 0
EXIT_FAILED = 1  # an unexpected error inside a stage (see the job's engine.log)
EXIT_BAD_INPUT = 2  # bad arguments, unreadable image/depth/camera, invalid job.json
EXIT_MISSING_MODEL = 3  # weights not found locally and not downloadable
EXIT_OUT_OF_MEMORY = 4  # the device ran out of memory; the message names the setting to lower
EXIT_CANCELLED = 130  # SIGINT/SIGTERM: stopped cleanly after the running step

EXIT_CODES = {
    EXIT_OK: "ok",
    EXIT_FAILED: "failed",
    EXIT_BAD_INPUT: "bad_input",
    EXIT_MISSING_MODEL: "missing_model",
    EXIT_OUT_OF_MEMORY: "out_of_memory",
    EXIT_CANCELLED: "cancelled",
}


class ProtocolError(ValueError):
    """A line or a job description that does not follow this protocol."""


def make_event(type_: str, **fields: Any) -> dict[str, Any]:
    if type_ not in EVENT_FIELDS:
        raise ProtocolError(f"unknown event type {type_!r}")
    missing = [name for name in EVENT_FIELDS[type_] if name not in fields]
    if missing:
        raise ProtocolError(f"event {type_!r} lacks {', '.join(missing)}")
    return {"type": type_, "v": PROTOCOL_VERSION, "t": round(time.time(), 3), **fields}


def encode_event(event: dict[str, Any]) -> str:
    """One event as one line; NaN/inf are not JSON, so they become null."""
    return json.dumps(_finite(event), ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def parse_event(line: str) -> dict[str, Any]:
    """Decode one stdout line; raises ProtocolError for anything that is not a valid event."""
    try:
        event = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"not JSON: {line[:120]!r}") from exc
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise ProtocolError(f"not an event object: {line[:120]!r}")
    if event.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(
            f"engine speaks protocol {event.get('v')!r}, this client speaks {PROTOCOL_VERSION}; "
            "update the add-on and the engine together"
        )
    fields = EVENT_FIELDS.get(event["type"])
    if fields is None:
        raise ProtocolError(f"unknown event type {event['type']!r}")
    missing = [name for name in fields if name not in event]
    if missing:
        raise ProtocolError(f"event {event['type']!r} lacks {', '.join(missing)}")
    return event


class EventWriter:
    """Writes events to a stream (the engine's real stdout), one flushed line each, thread-safe."""

    def __init__(self, stream: IO[str] | None = None):
        self._stream = stream if stream is not None else sys.stdout
        self._lock = threading.Lock()

    def emit(self, type_: str, **fields: Any) -> dict[str, Any]:
        event = make_event(type_, **fields)
        line = encode_event(event)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()
        return event


# ---------------------------------------------------------------------------------------------
# job.json
# ---------------------------------------------------------------------------------------------

# Top-level keys and their JSON types; anything else is rejected so typos never pass silently.
JOB_KEYS: dict[str, type | tuple[type, ...]] = {
    "schema": int,
    "image": str,  # path inside the job folder, or null for text input
    "depth": str,  # optional: path inside the job folder (RGB-D input)
    "prompt": str,
    "negative_prompt": str,
    "profile": str,
    "camera": dict,  # optional: the input camera (engine.cameras.Camera.to_dict())
    "trajectory": dict,  # optional: trajectory file contents (engine.trajectory)
    "settings": dict,  # stage settings overriding the profile's defaults
    "models": dict,  # per-model overrides: name -> HF id or local path
}
# Keys a job description might be expected to hold that the engine does not read: refused, not ignored.
JOB_REFUSED = {
    "seed": "put the seed in settings.seed",
    "device": "the device is the engine's --device (a job folder resumes on any machine)",
}
JOB_REQUIRED = ("schema", "profile")
JOB_PATH_KEYS = ("image", "depth")


def validate_job(job: Any) -> dict[str, Any]:
    """Check a job description as untrusted data; returns it unchanged or raises ProtocolError."""
    if not isinstance(job, dict):
        raise ProtocolError("job.json must hold a JSON object")
    for key, instead in JOB_REFUSED.items():
        if key in job:
            raise ProtocolError(f"job.json {key!r} is not read: {instead}")
    unknown = sorted(set(job) - set(JOB_KEYS))
    if unknown:
        raise ProtocolError(f"job.json has unknown keys: {', '.join(unknown)}")
    for key in JOB_REQUIRED:
        if key not in job:
            raise ProtocolError(f"job.json lacks {key!r}")
    for key, value in job.items():
        expected = JOB_KEYS[key]
        if value is None and key not in JOB_REQUIRED:
            continue
        if isinstance(value, bool) or not isinstance(value, expected):
            raise ProtocolError(f"job.json {key!r} has the wrong type ({type(value).__name__})")
    if job["schema"] != JOB_SCHEMA_VERSION:
        raise ProtocolError(f"job.json schema {job['schema']} is not {JOB_SCHEMA_VERSION}")
    for key in JOB_PATH_KEYS:
        if job.get(key) is not None:
            check_inside_job(job[key])
    return job


def check_inside_job(relative: str) -> str:
    """Paths in job.json are relative and stay inside the job folder."""
    path = PurePosixPath(relative.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or not path.parts or ":" in path.parts[0]:
        raise ProtocolError(f"path {relative!r} in job.json must be relative and inside the job folder")
    return relative


def read_job(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"job.json is not valid JSON: {exc}") from exc
    return validate_job(data)
