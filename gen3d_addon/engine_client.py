"""Runs `python -m engine ...` as a subprocess and turns its JSON-lines events into state.

No bpy here: the Generate operator pumps an ``EngineRun`` from a timer (UI) or a loop
(scripts), and mirrors its state into the scene.  Reader threads never touch Blender data;
they only fill a queue, so Blender's main thread is never blocked by the engine.

A run has its own engine process (one-shot: models loaded for this run only), or is a request
to an ``EngineServer`` (`python -m engine serve`) that keeps models loaded between runs.
"""

from __future__ import annotations

import collections
import os
import queue
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..engine import client, protocol
from ..engine.remote import RemoteServer

CANCEL_GRACE_SECONDS = 10.0


class EngineProcess(client.EventStream):
    """A `python -m engine ...` child whose stdout events land in a queue, read by threads."""

    def __init__(self, python: Path, arguments: list[str], *, cwd: Path, interactive: bool = False):
        super().__init__()
        self.python, self.arguments, self.cwd, self.interactive = python, arguments, cwd, interactive

    def start(self) -> None:
        """Raises OSError when the interpreter cannot be started."""
        env = {key: value for key, value in os.environ.items() if key not in ("PYTHONHOME", "PYTHONPATH")}
        env.update(PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
        self._spawn([str(self.python), "-m", "engine", *self.arguments], interactive=self.interactive, cwd=self.cwd, env=env)

    def interrupt(self) -> None:
        _interrupt(self.process)


class EngineServer(client.ServeClient):
    """A long-lived `python -m engine serve`: runs are requests, models stay loaded between them."""

    def __init__(self, python: Path | str, *, cwd: Path | str, device: str = "auto"):
        self.python, self.cwd, self.device = Path(python), Path(cwd), device
        self.engine: EngineProcess | None = None

    def ensure_started(self) -> None:
        if not self.alive:
            self.engine = EngineProcess(self.python, ["serve", "--device", self.device], cwd=self.cwd, interactive=True)
            self.engine.start()

    def submit(self, arguments: list[str], job_dir: Path) -> bool:
        return self.engine.send({"type": "generate", "args": arguments})


class EngineRun:
    """One generate run: its own engine process, or a request to an ``EngineServer``."""

    def __init__(
        self,
        python: Path | str,
        arguments: list[str],
        *,
        cwd: Path | str,
        job_dir: Path | str,
        server: EngineServer | RemoteServer | None = None,
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
        if not getattr(self.server, "remote", False) and not self.python.is_file():
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
                if not self.server.submit(self.arguments[1:], self.job_dir):
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

    def stop(self, timeout: float = CANCEL_GRACE_SECONDS) -> None:
        """Cancel, then wait for a one-shot engine to leave (killed after ``timeout``): for a run
        nobody will pump again (its file was closed, Blender quits)."""
        self.cancel()
        process = self._engine.process if self._engine is not None and self.server is None else None
        if process is not None:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

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


def _interrupt(process: subprocess.Popen) -> None:
    try:
        if sys.platform == "win32":
            process.send_signal(signal.CTRL_BREAK_EVENT)
        else:
            process.send_signal(signal.SIGINT)
    except (ProcessLookupError, OSError):
        pass
