"""Runs `python -m engine ...` as a subprocess and turns its JSON-lines events into state.

No bpy here: the Generate operator pumps an ``EngineRun`` from a timer (UI) or a loop
(scripts), and mirrors its state into the scene.  Reader threads never touch Blender data;
they only fill a queue, so Blender's main thread is never blocked by the engine.

A run has its own engine process (one-shot: models loaded for this run only), or is a request
to an ``EngineServer`` (`python -m engine serve`) that keeps models loaded between runs.
"""

from __future__ import annotations

import collections
import json
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


class EngineProcess:
    """A `python -m engine ...` child whose stdout events land in a queue, read by threads."""

    def __init__(self, python: Path, arguments: list[str], *, cwd: Path, interactive: bool = False):
        self.python, self.arguments, self.cwd, self.interactive = python, arguments, cwd, interactive
        self.queue: queue.Queue = queue.Queue()  # ("event", dict) | ("garbage", str)
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_LINES_KEPT)
        self.process: subprocess.Popen | None = None
        self._readers_done = 0  # stdout and stderr readers that reached end of file
        self._lock = threading.Lock()

    def start(self) -> None:
        """Raises OSError when the interpreter cannot be started."""
        env = {key: value for key, value in os.environ.items() if key not in ("PYTHONHOME", "PYTHONPATH")}
        env.update(PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
        # A list of arguments, never a shell; a new session so the engine can be stopped as a
        # group without touching Blender.
        self.process = subprocess.Popen(
            [str(self.python), "-m", "engine", *self.arguments],
            cwd=self.cwd,
            env=env,
            stdin=subprocess.PIPE if self.interactive else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            **_new_process_group(),
        )
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def exit_code(self) -> int | None:
        """The exit code once the process ended and everything it printed is queued."""
        if self.process is None:
            return None
        code = self.process.poll()
        with self._lock:
            return code if code is not None and self._readers_done == 2 else None

    def send(self, message: dict[str, Any]) -> bool:
        try:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
            return True
        except (OSError, ValueError, AttributeError):  # the engine is gone
            return False

    def interrupt(self) -> None:
        _interrupt(self.process)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()

    def _read_stdout(self) -> None:
        for line in self.process.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                self.queue.put(("event", protocol.parse_event(line)))
            except protocol.ProtocolError:
                self.queue.put(("garbage", line))
        with self._lock:
            self._readers_done += 1

    def _read_stderr(self) -> None:
        for line in self.process.stderr:
            self.stderr_tail.append(line.rstrip())
        with self._lock:
            self._readers_done += 1


class EngineServer:
    """A long-lived `python -m engine serve`: runs are requests, models stay loaded between them."""

    def __init__(self, python: Path | str, *, cwd: Path | str, device: str = "auto"):
        self.python, self.cwd, self.device = Path(python), Path(cwd), device
        self.engine: EngineProcess | None = None

    @property
    def alive(self) -> bool:
        return self.engine is not None and self.engine.process.poll() is None

    def ensure_started(self) -> None:
        if not self.alive:
            self.engine = EngineProcess(self.python, ["serve", "--device", self.device], cwd=self.cwd, interactive=True)
            self.engine.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Shut the engine down (frees its memory); killed if it does not leave in time."""
        if not self.alive:
            return
        self.engine.send({"type": "shutdown"})
        try:
            self.engine.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.engine.kill()
            self.engine.process.wait()


class EngineRun:
    """One generate run: its own engine process, or a request to an ``EngineServer``."""

    def __init__(
        self,
        python: Path | str,
        arguments: list[str],
        *,
        cwd: Path | str,
        job_dir: Path | str,
        server: EngineServer | None = None,
    ):
        self.python = Path(python)
        self.arguments = list(arguments)
        self.cwd = Path(cwd)
        self.job_dir = Path(job_dir)
        self.server = server
        self.state = "new"  # new -> running -> finished | failed | cancelled
        self.stage = ""
        self.fraction = 0.0
        self.message = ""
        self.preview_path = ""
        self.outputs: dict[str, Any] = {}
        self.warnings: list[str] = []
        self.error: str = ""
        self.events: list[dict[str, Any]] = []
        self._engine: EngineProcess | None = None
        self._cancel_requested_at: float | None = None
        self._stage_total = 1
        self._stage_index = 0

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        if not self.python.is_file():
            self._fail(
                f"Engine Python not found at {self.python}. Press Set up engine in the Gen3D "
                "preferences, or set Engine Python to an interpreter that has the engine's packages."
            )
            return
        try:
            if self.server is not None:
                self.server.ensure_started()
                self._engine = self.server.engine
                # The server is ours alone and runs one request at a time: what it prints next is this run's.
                if not self._engine.send({"type": "generate", "args": self.arguments[1:]}):
                    raise OSError("the engine closed its input")
            else:
                self._engine = EngineProcess(self.python, self.arguments, cwd=self.cwd)
                self._engine.start()
        except OSError as exc:
            self._fail(f"Could not start the engine ({self.python}): {exc}")
            return
        self.state = "running"
        self.message = "Starting engine"

    @property
    def done(self) -> bool:
        return self.state in ("finished", "failed", "cancelled")

    @property
    def pid(self) -> int | None:
        return self._engine.process.pid if self._engine and self._engine.process else None

    @property
    def _stderr_tail(self) -> collections.deque[str]:
        return self._engine.stderr_tail if self._engine else collections.deque()

    def cancel(self) -> None:
        """Ask the engine to stop after its current step; a one-shot engine is killed if it does not."""
        if self._engine is None or self.done or self._cancel_requested_at is not None:
            return
        self._cancel_requested_at = time.monotonic()
        self.message = "Cancelling…"
        if self.server is not None:
            self._engine.send({"type": "cancel"})
        else:
            self._engine.interrupt()

    def pump(self) -> list[dict[str, Any]]:
        """Handle what arrived since the last call; returns the new events."""
        new_events = []
        while self._engine is not None and not self.done:
            try:
                kind, payload = self._engine.queue.get_nowait()
            except queue.Empty:
                break
            if kind == "garbage":
                self.warnings.append(f"engine printed a line that is not an event: {payload[:200]}")
                continue
            if payload["type"] == "hello" and self.server is not None:
                continue  # the server's greeting, not this run's
            self._handle(payload)
            new_events.append(payload)
            if self.server is not None and payload["type"] in ("result", "error", "cancelled"):
                code = {"result": protocol.EXIT_OK, "cancelled": protocol.EXIT_CANCELLED}.get(payload["type"], 1)
                self._finish(code)
        if self._engine is not None and not self.done:
            if (
                self.server is None
                and self._cancel_requested_at is not None
                and time.monotonic() - self._cancel_requested_at > CANCEL_GRACE_SECONDS
            ):
                self._engine.kill()
            code = self._engine.exit_code()
            if code is not None and self._engine.queue.empty():
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
