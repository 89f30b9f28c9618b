"""The engine on another machine over SSH: one module for the add-on and for `generate --remote`.

Standard library only (the add-on imports it inside Blender, as it does engine/protocol.py).  It
drives OpenSSH's own ``ssh``, ``sftp``, ``ssh-keyscan`` and ``ssh-keygen`` with argument lists,
never a local shell.  The one string a remote shell sees is built with ``shlex.quote`` from
validated parts.  Host keys are checked strictly against a known_hosts file the user controls:
a new key is shown with its fingerprint for the user to confirm, a changed key is refused.  No
password is asked for or stored: the user's key, agent or ~/.ssh/config authenticates
(BatchMode).

A remote run: the inputs go up with sftp into ``JOBS/<job>-<token>/upload/``; ``python -m engine
serve --jobs-root JOBS`` runs over one ssh connection (models stay loaded between runs) and
refuses any path outside JOBS; its events stream back; previews and results come down with sftp
into the local job folder, which then holds what a local run's importer reads.
"""

from __future__ import annotations

import json
import os
import queue
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from . import client, protocol

HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # a DNS name, IPv4 or ~/.ssh/config alias (IPv6: via an alias)
USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
# Job-relative paths that cross the wire (uploads, previews, results): plain names only.
JOB_PATH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*")
# Remote folders may hold spaces and quotes; these would be read by sftp's glob or are never sane.
REMOTE_PATH_REFUSED = re.compile(r"[\x00-\x1f\x7f\\*?\[\]]")
CONNECT_TIMEOUT_S = 10
CHECK_TIMEOUT_S = 60  # Test connection as a whole: a cold server's first engine start fits
TRANSFERRED = re.compile(r"Transferred: sent (\d+), received (\d+) bytes")


class RemoteError(Exception):
    """Something about the connection or the server the user must fix; ``code`` names the exit code."""

    def __init__(self, message: str, code: int = protocol.EXIT_FAILED):
        super().__init__(message)
        self.code = code


def remote_path(text: str, what: str) -> str:
    """A path on the server: absolute, or relative to the remote home ("~/" allowed)."""
    text = text.strip()
    if text == "~" or text.startswith("~/"):
        text = text[2:]
    if not text or REMOTE_PATH_REFUSED.search(text) or ".." in PurePosixPath(text).parts or text.startswith("-"):
        raise RemoteError(f"{what} {text!r}: give a folder on the server without '..', backslashes, wildcards or control characters", protocol.EXIT_BAD_INPUT)
    return text.rstrip("/") or "/"


def _ssh_config_value(text: str) -> str:
    """A value for `ssh -o NAME=VALUE`: quoted for ssh's own splitting, %-tokens made literal."""
    return '"' + text.replace("%", "%%").replace("\\", "\\\\").replace('"', '\\"') + '"'


def _sftp_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Target:
    """Where the remote engine lives.  ``host`` may be an alias from ~/.ssh/config."""

    host: str
    user: str = ""
    port: int = 0  # 0: ssh's default or the config's
    identity_file: str = ""  # empty: the agent / ~/.ssh/config / default keys
    known_hosts: str = ""  # empty: ~/.ssh/known_hosts (the user's own)
    python: str = "~/gen3d/.venv/bin/python"
    engine_dir: str = "~/gen3d"  # the folder holding engine/ (empty: the engine is installed)
    jobs_folder: str = "~/gen3d-jobs"

    def __post_init__(self):
        if not HOST.fullmatch(self.host or ""):
            raise RemoteError(f"host {self.host!r}: give a host name, an IPv4 address or a ~/.ssh/config alias", protocol.EXIT_BAD_INPUT)
        if self.user and not USER.fullmatch(self.user):
            raise RemoteError(f"user {self.user!r} is not a valid user name", protocol.EXIT_BAD_INPUT)
        if not 0 <= int(self.port) <= 65535:
            raise RemoteError(f"port {self.port} is not 1-65535 (0: ssh's default)", protocol.EXIT_BAD_INPUT)
        if self.identity_file and not Path(self.identity_file).expanduser().is_file():
            raise RemoteError(f"identity file not found: {self.identity_file}", protocol.EXIT_BAD_INPUT)
        object.__setattr__(self, "python", remote_path(self.python, "remote engine Python"))
        object.__setattr__(self, "jobs_folder", remote_path(self.jobs_folder, "remote jobs folder"))
        if self.engine_dir.strip():
            object.__setattr__(self, "engine_dir", remote_path(self.engine_dir, "remote engine folder"))

    @property
    def label(self) -> str:
        return (f"{self.user}@" if self.user else "") + self.host + (f":{self.port}" if self.port else "")

    def options(self) -> list[str]:
        """Options every ssh/sftp call gets: strict host keys, no prompts, no forwarding."""
        options = [
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}",
            "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3", "-o", "PasswordAuthentication=no",
            "-o", "KbdInteractiveAuthentication=no", "-o", "ForwardAgent=no", "-o", "ForwardX11=no",
            "-o", "ClearAllForwardings=yes", "-o", "LogLevel=VERBOSE",  # VERBOSE: ssh reports the bytes it moved
        ]
        if self.known_hosts:
            options += ["-o", "UserKnownHostsFile=" + _ssh_config_value(str(Path(self.known_hosts).expanduser()))]
        if self.identity_file:
            options += ["-o", "IdentityFile=" + _ssh_config_value(str(Path(self.identity_file).expanduser())), "-o", "IdentitiesOnly=yes"]
        if self.port:
            options += ["-o", f"Port={int(self.port)}"]
        if self.user:
            options += ["-o", f"User={self.user}"]
        return options

    def ssh(self, remote_argv: list[str]) -> list[str]:
        """`ssh ... host 'command'`: the command is the remote argv, each word shell-quoted."""
        return ["ssh", "-T", *self.options(), "--", self.host, " ".join(shlex.quote(word) for word in remote_argv)]

    def sftp(self) -> list[str]:
        return ["sftp", "-b", "-", *self.options(), "--", self.host]

    def engine_argv(self, *arguments: str) -> list[str]:
        """`python -m engine ...` on the server, run from the remote home (relative jobs paths agree with sftp's)."""
        env = ["env", "PYTHONUNBUFFERED=1", "PYTHONIOENCODING=utf-8"]
        if self.engine_dir:
            env.append(f"PYTHONPATH={self.engine_dir}")
        return [*env, self.python, "-P", "-m", "engine", *arguments]  # -P: the home folder never shadows the engine


# ---------------------------------------------------------------------------------------------
# Test connection and host keys
# ---------------------------------------------------------------------------------------------


@dataclass
class Check:
    """Test connection's answer: one line per item, and any new host key awaiting the user's yes.

    Filled as the check goes (a client may run it in a thread and show ``lines`` and ``step``
    meanwhile); ``done`` once it returned.
    """

    lines: list[tuple[bool, str]] = field(default_factory=list)
    new_host_keys: list[str] = field(default_factory=list)  # ssh-keyscan lines, shown by fingerprint
    engine: dict[str, Any] = field(default_factory=dict)
    step: str = ""  # what it is doing now
    done: bool = False
    timeout: float = CHECK_TIMEOUT_S
    started: float = field(default_factory=time.monotonic)

    @property
    def ok(self) -> bool:
        return bool(self.lines) and all(ok for ok, _ in self.lines)

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def add(self, ok: bool, text: str) -> None:
        self.lines.append((ok, text))

    def begin(self, step: str, seconds: float) -> float:
        """Start a step; its time limit: its own ``seconds``, or what is left of the whole check's."""
        left = self.timeout - self.seconds
        if left <= 0:
            raise RemoteError(f"no answer within {self.timeout:.0f} s (the test's time limit)")
        self.step = step
        return min(seconds, left)


def _run(argv: list[str], *, timeout: float = 60, input: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input, cwd=cwd,
                              encoding="utf-8", errors="replace", stdin=None if input is not None else subprocess.DEVNULL)
    except FileNotFoundError:
        raise RemoteError(f"{argv[0]} not found: install OpenSSH's client (it ships with Windows 10+, macOS and Linux)") from None
    except subprocess.TimeoutExpired:
        raise RemoteError(f"{argv[0]} did not answer within {timeout:.0f} s") from None


def resolved(target: Target, timeout: float = 15) -> dict[str, str]:
    """What ssh will really use (aliases and ~/.ssh/config applied): `ssh -G`."""
    result = _run(["ssh", "-G", *target.options(), "--", target.host], timeout=timeout)
    if result.returncode != 0:
        raise RemoteError(f"ssh cannot use host {target.host!r}: {_last_line(result.stderr)}", protocol.EXIT_BAD_INPUT)
    config: dict[str, str] = {}
    for line in result.stdout.splitlines():
        name, _, value = line.partition(" ")
        config.setdefault(name.lower(), value)
    return config


def known_hosts_file(target: Target, config: dict[str, str]) -> Path:
    if target.known_hosts:
        return Path(target.known_hosts).expanduser()
    first = shlex.split(config.get("userknownhostsfile", "~/.ssh/known_hosts"))[0]
    return Path(first).expanduser()


def _host_key_name(config: dict[str, str]) -> str:
    host, port = config.get("hostkeyalias") or config["hostname"], config.get("port", "22")
    return host if port == "22" else f"[{host}]:{port}"


def known_host_keys(target: Target, config: dict[str, str], timeout: float = 15) -> list[str]:
    """The known_hosts lines ssh will check this host against (hashed entries included)."""
    path = known_hosts_file(target, config)
    if not path.is_file():
        return []
    result = _run(["ssh-keygen", "-F", _host_key_name(config), "-f", str(path)], timeout=timeout)
    return [line for line in result.stdout.splitlines() if line and not line.startswith("#")]


def fingerprints(key_lines: list[str]) -> list[str]:
    """'ED25519 SHA256:...' for each key line (ssh-keygen -lf)."""
    if not key_lines:
        return []
    result = _run(["ssh-keygen", "-lf", "-"], input="\n".join(key_lines) + "\n", timeout=15)
    found = []
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            found.append(f"{parts[-1].strip('()')} {parts[1]}")
    return found


def scan_host_keys(target: Target, config: dict[str, str], timeout: float = 30) -> list[str]:
    """The server's host keys as known_hosts lines, for the user to confirm by fingerprint."""
    wait = str(max(1, min(CONNECT_TIMEOUT_S, int(timeout))))
    result = _run(["ssh-keyscan", "-T", wait, "-p", config.get("port", "22"), "--", config["hostname"]], timeout=timeout)
    lines = [line for line in result.stdout.splitlines() if line and not line.startswith("#")]
    if config.get("hostkeyalias"):  # keyscan names the address; ssh will look the alias up
        lines = [_host_key_name(config) + " " + line.split(" ", 1)[1] for line in lines]
    return lines


def trust_host_keys(target: Target, key_lines: list[str]) -> Path:
    """Add the keys the user confirmed; never replaces a key already known for the host."""
    config = resolved(target)
    if known_host_keys(target, config):
        raise RemoteError(
            f"{known_hosts_file(target, config)} already holds a key for {_host_key_name(config)}; a changed key is "
            f"never replaced here. If the server was really reinstalled, remove the old key with "
            f"ssh-keygen -R '{_host_key_name(config)}' and test the connection again"
        )
    name = _host_key_name(config)
    if not key_lines or any(line.split(" ", 1)[0] != name for line in key_lines):
        raise RemoteError(f"the keys to trust are not for {name}; test the connection again")
    path = known_hosts_file(target, config)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        os.chmod(path, 0o600)
        handle.write("".join(line + "\n" for line in key_lines))
    return path


def _banner(host: str, port: int, timeout: float = CONNECT_TIMEOUT_S) -> str:
    with socket.create_connection((host, port), timeout=timeout) as connection:
        connection.settimeout(timeout)
        return connection.recv(256).decode("ascii", "replace").splitlines()[0].strip()


def _ssh_failure(target: Target, stderr: str) -> str:
    """ssh's own words, turned into what the user can do."""
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr:
        return (f"host key of {target.label} CHANGED: refused (someone may be intercepting the connection, or the "
                "server was reinstalled; ask its admin, then remove the old key with ssh-keygen -R)")
    if "Host key verification failed" in stderr or "No ED25519 host key is known" in stderr:
        return f"host key of {target.label} is not known: press Test connection and confirm its fingerprint"
    if "Permission denied" in stderr:
        return (f"{target.label} refused the login: use an identity file, your SSH agent or a ~/.ssh/config entry "
                "(passwords are never asked for or stored)")
    return f"could not reach {target.label}: {_last_line(stderr)}"


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip() and not _ssh_chatter(line)]
    return lines[-1].strip() if lines else "no message"


def _ssh_chatter(line: str) -> bool:
    return line.startswith(("Authenticated to", "Transferred:", "Bytes per second:", "Connection to ")) or "Connection closed" in line


def check_connection(target: Target, *, check: Check | None = None, timeout: float = CHECK_TIMEOUT_S) -> Check:
    """Test connection: reachable, host key known, engine and protocol, device, rasterizer.

    Every step is bounded by what is left of ``timeout`` (a step still waiting then is killed),
    so a client running this in a thread hears back in time; ``check``: the one to fill.
    """
    check = check if check is not None else Check()
    check.timeout, check.started = timeout, time.monotonic()
    try:
        config = resolved(target, timeout=check.begin("reading the ssh settings", 15))
        address, port = config["hostname"], int(config.get("port", "22"))
        if config.get("proxyjump", "none") != "none" or config.get("proxycommand", "none") != "none":
            check.add(True, f"reachable: {target.host} through the proxy in your ssh config")
        else:
            try:
                check.add(True, f"reachable: {address}:{port} ({_banner(address, port, check.begin('reaching the server', CONNECT_TIMEOUT_S))})")
            except OSError as exc:
                check.add(False, f"not reachable: {address}:{port} ({exc})")
                return check
        known = known_host_keys(target, config, timeout=check.begin("looking up its host key", 15))
        if not known:
            check.new_host_keys = scan_host_keys(target, config, timeout=check.begin("reading its host keys", 30))
            prints = ", ".join(fingerprints(check.new_host_keys)) or "none offered"
            check.add(False, f"host key NEW: {prints}. Compare with the server's (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub there), then press Trust host key")
            return check
        check.add(True, f"host key known: {', '.join(fingerprints(known))} in {known_hosts_file(target, config)}")
        result = _run(target.ssh(target.engine_argv("version")), timeout=check.begin("starting the remote engine", 120))
        hello = next((event for event in _events(result.stdout) if event["type"] == "hello"), None)
        if result.returncode == 255 or (hello is None and "Authenticated to" not in result.stderr):
            check.add(False, _ssh_failure(target, result.stderr))
            return check
        if hello is None:
            check.add(False, f"remote engine did not start ({target.python}): {_last_line(result.stderr)}")
            return check
        check.engine = hello
        same = hello["protocol"] == protocol.PROTOCOL_VERSION
        check.add(same, f"engine {hello['engine_version']}, protocol {hello['protocol']}"
                  + ("" if same else f" (this side speaks {protocol.PROTOCOL_VERSION}: update both together)"))
        check.add(True, "device: " + describe_device(hello))
        reason = f" ({hello['reason']})" if hello.get("reason") else ""
        check.add(True, f"rasterizer: {hello.get('rasterizer', 'unknown')}{reason}")
    except RemoteError as exc:
        check.add(False, f"{check.step}: {exc}" if check.step else str(exc))
    finally:
        check.step, check.done = "", True
    return check


def describe_device(hello: dict[str, Any]) -> str:
    if hello.get("gpu"):
        return f"{hello.get('device')} — {hello['gpu']}, {hello.get('gpu_free_mb', 0) / 1024:.1f} GB free of {hello.get('gpu_total_mb', 0) / 1024:.1f} GB"
    return f"{hello.get('device', 'unknown')} (no CUDA GPU)"


def _events(text: str) -> list[dict[str, Any]]:
    events = []
    for line in text.splitlines():
        try:
            events.append(protocol.parse_event(line))
        except protocol.ProtocolError:
            continue
    return events


# ---------------------------------------------------------------------------------------------
# A run
# ---------------------------------------------------------------------------------------------

FILE_OPTIONS = {"--depth": "depth", "--camera": "camera", "--trajectory": "trajectory"}


def remote_job_name(local_job: Path, target: Target) -> str:
    """The job's folder under the remote jobs folder: stable for resume, unique per local job.

    A random token kept in the local job folder (remote.json) keeps two Blender sessions, or two
    laptops, with same-named jobs apart on one server.
    """
    record_file = local_job / "remote.json"
    where = f"{target.label}:{target.jobs_folder}"
    try:
        record = json.loads(record_file.read_text(encoding="utf-8"))
        if record.get("target") == where and JOB_PATH.fullmatch(record.get("job", "")) and "/" not in record["job"]:
            return record["job"]
    except (OSError, ValueError, AttributeError):
        pass
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", local_job.name).strip("._-")[:48] or "job"
    name = f"{stem}-{secrets.token_hex(6)}"
    record_file.write_text(json.dumps({"target": where, "job": name}, indent=1), encoding="utf-8")
    return name


def plan_job(arguments: list[str], local_job: Path, remote_job: str) -> tuple[list[str], list[tuple[Path, str]]]:
    """The generate arguments as the server sees them, and the local files to send up.

    Every generate option takes a value; input files are renamed to plain names under upload/,
    paths are relative to the remote jobs folder (serve --jobs-root resolves and confines them).
    """
    remote_args: list[str] = []
    uploads: list[tuple[Path, str]] = []

    def upload(local: str, name: str) -> str:
        path = Path(local).expanduser()
        if not path.is_file():
            raise RemoteError(f"{name} file not found: {path}", protocol.EXIT_BAD_INPUT)
        suffix = path.suffix.lower() if re.fullmatch(r"\.[a-z0-9]{1,8}", path.suffix.lower()) else ""
        relative = f"upload/{name}{suffix}"
        uploads.append((path, relative))
        return f"{remote_job}/{relative}"

    items = list(arguments)
    index = 0
    while index < len(items):
        item = items[index]
        if item.startswith("--"):
            option, sep, value = item.partition("=")
            if not sep:
                index += 1
                if index == len(items):
                    raise RemoteError(f"{option} needs a value", protocol.EXIT_BAD_INPUT)
                value = items[index]
            if option == "--out":
                value = remote_job
            elif option in FILE_OPTIONS:
                value = upload(value, FILE_OPTIONS[option])
            remote_args += [option, value]
        elif item:
            remote_args.append(upload(item, "image"))
        else:
            remote_args.append("")  # text input
        index += 1
    if "--out" not in remote_args:
        raise RemoteError("the request has no --out job folder", protocol.EXIT_BAD_INPUT)
    return remote_args, uploads


@dataclass
class Traffic:
    """Bytes moved for the runs of one server: file payloads and ssh's own count of the wire."""

    file_bytes_up: int = 0
    file_bytes_down: int = 0
    wire_bytes_up: int = 0
    wire_bytes_down: int = 0

    def count_wire(self, stderr_line: str) -> None:
        match = TRANSFERRED.search(stderr_line)
        if match:
            self.wire_bytes_up += int(match.group(1))
            self.wire_bytes_down += int(match.group(2))


class RemoteServer(client.ServeClient):
    """One `python -m engine serve` on the server for this client, reached over one ssh connection.

    A ServeClient as the add-on's EngineServer is (ensure_started, alive, engine, submit, stop),
    so a Generate drives it as it drives a local kept engine.
    """

    remote = True

    def __init__(self, target: Target, *, device: str = "auto"):
        self.target, self.device = target, device
        self.engine: Connection | None = None
        self.traffic = Traffic()

    def ensure_started(self) -> None:
        if not self.alive:
            self.engine = Connection(self)
            self.engine.start()

    def submit(self, arguments: list[str], local_job: Path | str) -> bool:
        return self.engine.submit(arguments, Path(local_job))


@dataclass
class _Request:
    local_job: Path
    remote_job: str


class Connection(client.EventStream):
    """The ssh process running `serve`; its events land in ``queue`` as ("event", dict) | ("garbage", str).

    Previews and results are copied down before their event is queued, so a client reading the
    queue finds the files in the local job folder, exactly as after a local run.
    """

    def __init__(self, server: RemoteServer):
        super().__init__()
        self.server, self.target = server, server.target
        self._request: _Request | None = None
        self._uploading = False
        self._cancel_while_uploading = False
        self._lock = threading.Lock()

    def start(self) -> None:
        argv = self.target.ssh(self.target.engine_argv("serve", "--device", self.server.device, "--jobs-root", self.target.jobs_folder))
        try:
            self._spawn(argv, interactive=True)
        except FileNotFoundError:
            raise OSError("ssh not found: install OpenSSH's client (it ships with Windows 10+, macOS and Linux)") from None

    # -- what EngineRun calls -------------------------------------------------------------------

    def send(self, message: dict[str, Any]) -> bool:
        with self._lock:
            if message.get("type") == "cancel" and self._uploading:
                self._cancel_while_uploading = True
                return True
        return super().send(message)

    def interrupt(self) -> None:
        self.send({"type": "cancel"})

    def submit(self, arguments: list[str], local_job: Path) -> bool:
        """Copy the inputs up and send the request, in a thread (Blender's UI stays live meanwhile)."""
        with self._lock:
            self._uploading, self._cancel_while_uploading = True, False
        threading.Thread(target=self._submit, args=(list(arguments), local_job), daemon=True).start()
        return True

    # -- internals ----------------------------------------------------------------------------

    def _submit(self, arguments: list[str], local_job: Path) -> None:
        try:
            local_job.mkdir(parents=True, exist_ok=True)
            remote_job = remote_job_name(local_job, self.target)
            remote_args, uploads = plan_job(arguments, local_job, remote_job)
            staging = local_job / "upload"
            staging.mkdir(exist_ok=True)
            commands = [f"-mkdir {_sftp_quote(prefix)}" for prefix in _prefixes(self.target.jobs_folder)]
            commands += [f"cd {_sftp_quote(self.target.jobs_folder)}", f"-mkdir {remote_job}", f"-mkdir {remote_job}/upload"]
            for source, relative in uploads:
                # Staged under plain names, so sftp never sees the user's local path.
                if source.resolve() != (local_job / relative).resolve():
                    shutil.copyfile(source, local_job / relative)
                commands.append(f"put {relative} {remote_job}/{relative}")
                self.server.traffic.file_bytes_up += source.stat().st_size
            self._sftp(local_job, commands)
            with self._lock:
                self._uploading = False
                if self._cancel_while_uploading:
                    self._queue_event("cancelled", stage="", message="cancelled while the inputs were copied up")
                    return
                self._request = _Request(local_job, remote_job)
            if not self.send({"type": "generate", "args": remote_args}):
                self._request = None
                self._queue_event("error", message=self._lost_message(), code="failed")
        except (RemoteError, OSError) as exc:
            with self._lock:
                self._uploading = False
            code = exc.code if isinstance(exc, RemoteError) else protocol.EXIT_FAILED
            self._queue_event("error", message=f"copying the inputs to {self.target.label} failed: {exc}", code=protocol.EXIT_CODES[code])

    def _sftp(self, cwd: Path, commands: list[str]) -> None:
        result = _run(self.target.sftp(), input="\n".join(commands) + "\n", cwd=cwd, timeout=3600)
        for line in result.stderr.splitlines():
            self.server.traffic.count_wire(line)
        if result.returncode != 0:
            raise RemoteError(_ssh_failure(self.target, result.stderr) if result.returncode == 255 else f"sftp: {_last_line(result.stderr)}")

    def _fetch(self, request: _Request, relatives: list[str], optional: tuple[str, ...] = ()) -> None:
        """Copy job files down, each to a temporary name renamed when complete."""
        commands = [f"cd {_sftp_quote(self.target.jobs_folder)}"]
        for relative in [*relatives, *optional]:
            if not JOB_PATH.fullmatch(relative) or ".." in relative.split("/"):
                raise RemoteError(f"the server named an unsafe job path {relative!r}")
            (request.local_job / relative).parent.mkdir(parents=True, exist_ok=True)
            prefix = "-" if relative in optional else ""
            commands.append(f"{prefix}get {request.remote_job}/{relative} {relative}.part")
        self._sftp(request.local_job, commands)
        for relative in [*relatives, *optional]:
            part = request.local_job / f"{relative}.part"
            if part.is_file():
                self.server.traffic.file_bytes_down += part.stat().st_size
                os.replace(part, request.local_job / relative)

    def _queue_event(self, type_: str, **fields: Any) -> None:
        self.queue.put(("event", protocol.make_event(type_, **fields)))

    def _lost_message(self) -> str:
        stderr = "\n".join(self.stderr_tail)
        reason = _ssh_failure(self.target, stderr)
        if not reason.startswith("could not reach"):  # refused (host key, login): nothing to resume yet
            return reason
        return (f"lost the connection to {self.target.label} ({_last_line(stderr)}). "
                "The remote job keeps its finished stages; Generate again resumes it")

    def _arrived(self, event: dict[str, Any]) -> dict[str, Any] | None:
        request = self._request
        return self._bring_down(request, event) if request is not None else event

    def _stdout_ended(self) -> None:
        if self._request is not None:
            self._request = None
            self._queue_event("error", message=self._lost_message(), code="failed")

    def _bring_down(self, request: _Request, event: dict[str, Any]) -> dict[str, Any] | None:
        """Fetch what the event names; the event as the local client should see it (None: dropped)."""
        kind = event["type"]
        if kind == "preview":
            try:
                self._fetch(request, [event["path"]])
            except RemoteError as exc:
                self.stderr_tail.append(f"preview {event['path']} not copied: {exc}")
                return None
        elif kind == "result":
            self._request = None
            try:
                self._fetch(request, sorted(set(event["outputs"].values())), optional=("camera.json",))
            except RemoteError as exc:
                return protocol.make_event("error", code="failed", message=(
                    f"the remote job finished but copying its results down failed ({exc}); Generate again fetches them"))
            return {**event, "job": str(request.local_job), "remote_job": f"{self.target.jobs_folder}/{request.remote_job}"}
        elif kind in ("error", "cancelled"):
            self._request = None
        return event

    def _stderr_line(self, line: str) -> None:
        self.server.traffic.count_wire(line)
        super()._stderr_line(line)


def _prefixes(folder: str) -> list[str]:
    """Each parent of the jobs folder, shortest first, so `-mkdir` creates the whole chain."""
    parts = PurePosixPath(folder).parts
    return [str(PurePosixPath(*parts[: count + 1])) for count in range(len(parts)) if parts[: count + 1] != ("/",)]


# ---------------------------------------------------------------------------------------------
# The engine's side: serve --jobs-root, and the command line's generate --remote
# ---------------------------------------------------------------------------------------------

REQUEST_PATHS = ("out", "image", "depth", "camera", "trajectory")


def confine_request(request: Any, jobs_root: Path) -> None:
    """serve --jobs-root: a request's paths are relative to the root, and none may leave it."""
    root = jobs_root.expanduser().resolve()
    for name in REQUEST_PATHS:
        value = getattr(request, name, None)
        if value:
            path = (root / value).resolve()
            if not path.is_relative_to(root):
                raise RemoteError(f"{name} {str(value)!r} leads outside the jobs folder {root}", protocol.EXIT_BAD_INPUT)
            setattr(request, name, type(value)(path))
    if getattr(request, "remote", None):
        raise RemoteError("a served request cannot itself be remote", protocol.EXIT_BAD_INPUT)


def add_arguments(parser) -> None:
    """generate's --remote options."""
    group = parser.add_argument_group("remote engine (over SSH)")
    group.add_argument("--remote", metavar="[USER@]HOST", help="run on this server's engine (host or ~/.ssh/config alias)")
    group.add_argument("--remote-port", type=int, default=0)
    group.add_argument("--remote-python", default=Target.python, help=f"the server's engine Python (default {Target.python})")
    group.add_argument("--remote-engine-dir", default=Target.engine_dir, help="the server's folder holding engine/ ('' if installed)")
    group.add_argument("--remote-jobs", default=Target.jobs_folder, help="the server's jobs folder; nothing is written outside it")
    group.add_argument("--identity", default="", help="private key file (default: agent, ~/.ssh/config, ssh's defaults)")
    group.add_argument("--known-hosts", default="", help="known_hosts file (default ~/.ssh/known_hosts)")
    parser.set_defaults(generate_parser=parser)


REMOTE_DESTS = {"remote", "remote_port", "remote_python", "remote_engine_dir", "remote_jobs", "identity", "known_hosts"}


def forwarded_arguments(args: Any) -> list[str]:
    """generate's arguments without the remote options, rebuilt from the parsed namespace."""
    forwarded: list[str] = [args.image]
    for action in args.generate_parser._actions:
        if not action.option_strings or action.dest in REMOTE_DESTS | {"help"}:
            continue
        value = getattr(args, action.dest, None)
        if value is None or value == action.default and action.dest != "out":
            continue
        for item in value if isinstance(value, list) else [value]:
            forwarded += [action.option_strings[0], str(item)]
    return forwarded


def target_from_args(args: Any) -> Target:
    user, _, host = args.remote.rpartition("@")
    return Target(host=host, user=user, port=args.remote_port, identity_file=args.identity, known_hosts=args.known_hosts,
                  python=args.remote_python, engine_dir=args.remote_engine_dir, jobs_folder=args.remote_jobs)


def command_generate(args: Any, events: protocol.EventWriter) -> int:
    """`generate --remote`: the same client as the add-on's; events re-emitted on stdout."""
    try:
        server = RemoteServer(target_from_args(args), device=args.device)
        server.ensure_started()
    except (RemoteError, OSError) as exc:
        events.emit("error", message=str(exc), code=protocol.EXIT_CODES[getattr(exc, "code", protocol.EXIT_FAILED)])
        return getattr(exc, "code", protocol.EXIT_FAILED)
    connection = server.engine
    cancels = []

    def on_signal(signum, frame):
        cancels.append(signum)
        if len(cancels) > 1:  # a second Ctrl+C: leave now (finished stages stay on the server)
            connection.kill()
        connection.send({"type": "cancel"})

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    started = time.monotonic()
    code = protocol.EXIT_FAILED
    connection.submit(forwarded_arguments(args), Path(args.out))
    while True:
        try:
            kind, payload = connection.queue.get(timeout=0.2)
        except queue.Empty:
            if connection.exit_code() is not None and connection.queue.empty():
                events.emit("error", message=connection._lost_message(), code="failed")
                break
            continue
        if kind == "garbage":
            print(f"engine: the server printed a line that is not an event: {payload[:200]}", file=sys.stderr)
            continue
        if payload["type"] == "hello":
            payload = {**payload, "job": str(Path(args.out).resolve()), "remote": server.target.label}
        events.emit(payload["type"], **{key: value for key, value in payload.items() if key not in ("type", "v", "t")})
        if payload["type"] in ("result", "error", "cancelled"):
            code = {"result": protocol.EXIT_OK, "cancelled": protocol.EXIT_CANCELLED}.get(payload["type"], protocol.EXIT_FAILED)
            if payload["type"] == "error":
                code = next((number for number, name in protocol.EXIT_CODES.items() if name == payload.get("code")), code)
            break
    server.stop()
    traffic = server.traffic
    print(f"engine: remote run on {server.target.label}: {time.monotonic() - started:.1f} s; files up {traffic.file_bytes_up} B, "
          f"down {traffic.file_bytes_down} B; ssh wire up {traffic.wire_bytes_up} B, down {traffic.wire_bytes_down} B",
          file=sys.stderr)
    return code
