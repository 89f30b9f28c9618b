"""A real OpenSSH server on 127.0.0.1 for the remote-engine tests (and bench/remote_overhead.py).

It runs as the current user with its own config, host key and client key in a temporary folder,
on an unprivileged port; the "remote" engine is this project's interpreter and checkout.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "gen3d-test", "-f", str(path)], check=True)


class SSHServer:
    def __init__(self, folder: Path):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        # The client's files sit in a folder with a space and quotes: ssh must get them verbatim.
        self.client = folder / "client dir 'q\""
        self.client.mkdir(exist_ok=True)
        self.host_key = folder / "host_key"
        self.client_key = self.client / "id_ed25519"
        self.known_hosts = self.client / "known_hosts"
        self.port = _free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> "SSHServer":
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        if not os.path.exists(sshd):
            raise RuntimeError("sshd not found: install openssh-server (apt-get install openssh-server openssh-client)")
        _keygen(self.host_key)
        _keygen(self.client_key)
        (self.folder / "authorized_keys").write_text(self.client_key.with_suffix(".pub").read_text())
        if os.geteuid() == 0:  # sshd run by root insists on its privilege-separation folder
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        config = self.folder / "sshd_config"
        config.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {self.host_key}",
            f"PidFile {self.folder / 'sshd.pid'}", f"AuthorizedKeysFile {self.folder / 'authorized_keys'}",
            "UsePAM no", "StrictModes no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "Subsystem sftp internal-sftp", "LogLevel VERBOSE", "",
        ]))
        self.process = subprocess.Popen([sshd, "-D", "-e", "-f", str(config), "-E", str(self.folder / "sshd.log")])
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"sshd did not start: {(self.folder / 'sshd.log').read_text()[-2000:]}")
                time.sleep(0.1)

    def target(self, jobs_folder: Path, **changes):
        from engine.remote import Target

        return Target(
            host="127.0.0.1", port=self.port, identity_file=str(self.client_key), known_hosts=str(self.known_hosts),
            python=sys.executable, engine_dir=str(ROOT), jobs_folder=str(jobs_folder), **changes,
        )

    def trust(self, target) -> None:
        """What a user does once: Test connection, compare the fingerprint, Trust host key."""
        from engine import remote

        check = remote.check_connection(target)
        assert check.new_host_keys, check.lines
        remote.trust_host_keys(target, check.new_host_keys)

    def session_pids(self) -> list[int]:
        """sshd's per-connection processes (children of the daemon)."""
        children = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == self.process.pid:
                    children.append(int(entry.name))
        return children

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
