"""Runs `python -m engine ...` as a subprocess and turns its JSON-lines events into state.

No bpy here: the Generate operator pumps an ``EngineRun`` from a timer (UI) or a loop
(scripts), and mirrors its state into the scene.  Reader threads never touch Blender data;
they only fill a queue, so Blender's main thread is never blocked by the engine.
"""

from __future__ import annotations

import collections
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..engine import protocol

STDERR_LINES_KEPT = 40
CANCEL_GRACE_SECONDS = 10.0


class EngineRun:
    """One engine process: start it, pump its events, cancel it."""

    def __init__(self, python: Path | str, arguments: list[str], *, cwd: Path | str, job_dir: Path | str):
        self.python = Path(python)
        self.arguments = list(arguments)
        self.cwd = Path(cwd)
        self.job_dir = Path(job_dir)
        self.state = "new"  # new -> running -> finished | failed | cancelled
        self.stage = ""
        self.fraction = 0.0
        self.message = ""
        self.preview_path = ""
        self.outputs: dict[str, Any] = {}
        self.warnings: list[str] = []
        self.error: str = ""
        self.events: list[dict[str, Any]] = []
        self._queue: queue.Queue = queue.Queue()
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_LINES_KEPT)
        self._process: subprocess.Popen | None = None
        self._cancel_requested_at: float | None = None
        self._stage_total = 1
        self._stage_index = 0
        self._readers_done = 0  # stdout and stderr readers that reached end of file
        self._readers_lock = threading.Lock()

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        if not self.python.is_file():
            self._fail(
                f"Engine Python not found at {self.python}. Press Set up engine in the Gen3D "
                "preferences, or set Engine Python to an interpreter that has the engine's packages."
            )
            return
        env = {key: value for key, value in os.environ.items() if key not in ("PYTHONHOME", "PYTHONPATH")}
        env.update(PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
        try:
            # A list of arguments, never a shell; a new session so the engine can be stopped
            # as a group without touching Blender.
            self._process = subprocess.Popen(
                [str(self.python), "-m", "engine", *self.arguments],
                cwd=self.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                errors="replace",
                bufsize=1,
                **_new_process_group(),
            )
        except OSError as exc:
            self._fail(f"Could not start the engine ({self.python}): {exc}")
            return
        self.state = "running"
        self.message = "Starting engine"
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    @property
    def done(self) -> bool:
        return self.state in ("finished", "failed", "cancelled")

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def cancel(self) -> None:
        """Ask the engine to stop after its current step (SIGINT); killed if it does not."""
        if self._process is None or self.done or self._cancel_requested_at is not None:
            return
        self._cancel_requested_at = time.monotonic()
        self.message = "Cancelling…"
        _interrupt(self._process)

    def pump(self) -> list[dict[str, Any]]:
        """Handle what arrived since the last call; returns the new events."""
        new_events = []
        while True:
            try:
                kind, payload = self._queue.get_nowait()
            except queue.Empty:
                break
            if kind == "event":
                self._handle(payload)
                new_events.append(payload)
            elif kind == "garbage":
                self.warnings.append(f"engine printed a line that is not an event: {payload[:200]}")
        if self._process is not None and not self.done:
            if (
                self._cancel_requested_at is not None
                and time.monotonic() - self._cancel_requested_at > CANCEL_GRACE_SECONDS
                and self._process.poll() is None
            ):
                self._process.kill()
            code = self._process.poll()
            # Readers first: once both reached end of file, everything they read is queued.
            if code is not None and self._readers_finished() and self._queue.empty():
                self._finish(code)
        return new_events

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> None:
        """Pump until the run ends (scripts, tests, batch)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.done:
            self.pump()
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                deadline = None
            time.sleep(interval)

    # -- internals ----------------------------------------------------------------------------

    def _readers_finished(self) -> bool:
        with self._readers_lock:
            return self._readers_done == 2

    def _reader_done(self) -> None:
        with self._readers_lock:
            self._readers_done += 1

    def _read_stdout(self) -> None:
        assert self._process and self._process.stdout
        for line in self._process.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                self._queue.put(("event", protocol.parse_event(line)))
            except protocol.ProtocolError:
                self._queue.put(("garbage", line))
        self._reader_done()

    def _read_stderr(self) -> None:
        assert self._process and self._process.stderr
        for line in self._process.stderr:
            self._stderr_tail.append(line.rstrip())
        self._reader_done()

    def _handle(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        kind = event["type"]
        if kind == "stage_start":
            self.stage = event["stage"]
            self._stage_index, self._stage_total = event["index"], max(1, event["total"])
            self.fraction = self._stage_index / self._stage_total
            self.message = event.get("message") or f"{self.stage}…"
        elif kind == "progress":
            within = min(1.0, max(0.0, float(event["fraction"] or 0.0)))
            self.fraction = (self._stage_index + within) / self._stage_total
            if event.get("message"):
                self.message = event["message"]
        elif kind == "preview":
            self.preview_path = str(self.job_dir / event["path"])
        elif kind == "stage_done":
            self.fraction = (self._stage_index + 1) / self._stage_total
        elif kind == "warning":
            self.warnings.append(event["message"])
        elif kind == "error":
            self.error = event["message"] + (f" ({event['hint']})" if event.get("hint") else "")
        elif kind == "result":
            self.outputs = event["outputs"]

    def _finish(self, code: int) -> None:
        if code == protocol.EXIT_OK and self.outputs:
            self.state, self.fraction, self.message = "finished", 1.0, "Done"
        elif self._cancel_requested_at is not None or code == protocol.EXIT_CANCELLED:
            self.state, self.message = "cancelled", "Cancelled; finished stages are kept and a re-run resumes"
        elif self.error:
            self._fail(self.error)
        elif missing := next((line for line in self._stderr_tail if line.startswith("ModuleNotFoundError")), ""):
            # The interpreter runs but is not the engine's environment (e.g. the system Python).
            self._fail(
                f"Engine Python {self.python} lacks the engine's packages ({missing.split(': ', 1)[-1]}). Press "
                "Set up engine in the Gen3D preferences, or set Engine Python to the environment that has them."
            )
        else:
            reason = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
            tail = " | ".join(line for line in list(self._stderr_tail)[-3:] if line)
            self._fail(
                f"The engine stopped unexpectedly ({reason}). Finished stages are kept in "
                f"{self.job_dir}; Generate again resumes. " + (f"Last output: {tail}" if tail else "")
            )

    def _fail(self, message: str) -> None:
        self.state, self.error, self.message = "failed", message, message


def _new_process_group() -> dict[str, Any]:
    if sys.platform == "win32":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def _interrupt(process: subprocess.Popen) -> None:
    try:
        if sys.platform == "win32":
            process.send_signal(signal.CTRL_BREAK_EVENT)
        else:
            process.send_signal(signal.SIGINT)
    except (ProcessLookupError, OSError):
        pass
