"""The client's side of the engine protocol, one copy for the add-on and for engine/remote.py.

Standard library only (the add-on imports it inside Blender, as it does engine/protocol.py):

* ``EventStream``: a child process (the local engine, or ssh running the remote one) whose
  JSON-lines stdout lands in a queue, read by threads that never touch Blender data;
* ``ServeClient``: a client's handle on one kept `python -m engine serve`.
"""

from __future__ import annotations

import collections
import json
import queue
import subprocess
import sys
import threading
from typing import Any

from . import protocol

STDERR_LINES_KEPT = 40


class EventStream:
    """A child whose stdout events land in ``queue`` as ("event", dict) | ("garbage", str).

    Subclasses start it with ``_spawn`` and may look at what arrives: ``_arrived`` (an event,
    returns what to queue or None), ``_stdout_ended`` and ``_stderr_line``.
    """

    def __init__(self) -> None:
        self.queue: queue.Queue = queue.Queue()
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_LINES_KEPT)
        self.process: subprocess.Popen | None = None
        self._readers: list[threading.Thread] = []

    def _spawn(self, argv: list[str], *, interactive: bool, **popen: Any) -> None:
        """Raises OSError when the program cannot be started."""
        # A list of arguments, never a shell; a new session, so the child can be stopped as a
        # group without touching Blender, and Ctrl+C in a terminal reaches the client (which
        # cancels cleanly) instead of killing the child mid-run.
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if interactive else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            **new_process_group(),
            **popen,
        )
        self._readers = [threading.Thread(target=self._read_stdout, daemon=True), threading.Thread(target=self._read_stderr, daemon=True)]
        for reader in self._readers:
            reader.start()

    def exit_code(self) -> int | None:
        """The exit code once the process ended and everything it printed is queued."""
        code = self.process.poll() if self.process else None
        return code if code is not None and not any(reader.is_alive() for reader in self._readers) else None

    def send(self, message: dict[str, Any]) -> bool:
        try:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
            return True
        except (OSError, ValueError, AttributeError):  # the engine (or the connection) is gone
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()

    def join_readers(self, timeout: float) -> None:
        for reader in self._readers:
            reader.join(timeout)

    def _arrived(self, event: dict[str, Any]) -> dict[str, Any] | None:
        return event

    def _stdout_ended(self) -> None:
        pass

    def _stderr_line(self, line: str) -> None:
        self.stderr_tail.append(line)

    def _read_stdout(self) -> None:
        for line in self.process.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                event = protocol.parse_event(line)
            except protocol.ProtocolError:
                self.queue.put(("garbage", line))
                continue
            event = self._arrived(event)
            if event is not None:
                self.queue.put(("event", event))
        self._stdout_ended()

    def _read_stderr(self) -> None:
        for line in self.process.stderr:
            self._stderr_line(line.rstrip())


class ServeClient:
    """What every client of `python -m engine serve` does alike; ``engine`` is its EventStream,
    None until started."""

    engine: EventStream | None = None

    @property
    def alive(self) -> bool:
        return self.engine is not None and self.engine.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Shut the engine down (frees its memory); killed if it does not leave in time.  Its
        readers are joined, so everything it printed has been handled when this returns."""
        if not self.alive:
            return
        self.engine.send({"type": "shutdown"})
        try:
            self.engine.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.engine.kill()
            self.engine.process.wait()
        self.engine.join_readers(timeout)


def new_process_group() -> dict[str, Any]:
    if sys.platform == "win32":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}
