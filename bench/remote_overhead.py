"""What running the engine over SSH costs against a local run of the same job (seconds, bytes up/down).

The "server" is this machine: a real sshd on 127.0.0.1 (tests/sshd.py) in front of this checkout's
engine, so the difference is the remote path's own cost (connection, a cold `serve` start,
sftp of inputs/previews/results, events over ssh), not the network's.  Three runs of the
bundled example at scripts/example.sh's settings:

* local:        `python -m engine generate ...` (one-shot, as the README's example)
* remote cold:  the same with `--remote` (new connection, the served engine starts)
* remote warm:  a second job through the add-on's kept connection (RemoteServer), models loaded

    .venv/bin/python bench/remote_overhead.py [--resolution 224 --steps 4 --iterations 200]
"""

from __future__ import annotations

import argparse
import getpass
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from engine import remote  # noqa: E402
from sshd import SSHServer  # noqa: E402

EXAMPLE = ROOT / "examples" / "courtyard"
BYTES = re.compile(r"files up (\d+) B, down (\d+) B; ssh wire up (\d+) B, down (\d+) B")


def job_arguments(out: Path, options: argparse.Namespace, seed: int = 0) -> list[str]:
    return [str(EXAMPLE / "image.png"), "--depth", str(EXAMPLE / "depth.png"), "--camera", str(EXAMPLE / "camera.json"),
            "--profile", "offline", "--out", str(out), "--device", "cpu", "--seed", str(seed),
            "--resolution", str(options.resolution), "--steps", str(options.steps), "--iterations", str(options.iterations),
            "--set", "reprojections=2"]


def timed(argv: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"failed: {argv}\n{result.stdout[-1500:]}\n{result.stderr[-1500:]}")
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=200)
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gen3d-remote-bench-"))
    server = SSHServer(work / "ssh").start()
    try:
        target = server.target(work / "remote jobs")
        server.trust(target)
        engine = [sys.executable, "-m", "engine", "generate"]
        local_s, _ = timed(engine + job_arguments(work / "local", options))
        remote_options = ["--remote", f"{getpass.getuser()}@127.0.0.1", "--remote-port", str(server.port),
                          "--identity", target.identity_file, "--known-hosts", target.known_hosts,
                          "--remote-python", target.python, "--remote-engine-dir", target.engine_dir,
                          "--remote-jobs", target.jobs_folder]
        cold_s, cold = timed(engine + job_arguments(work / "cold", options) + remote_options)
        up, down, wire_up, wire_down = map(int, BYTES.search(cold.stderr).groups())

        kept = remote.RemoteServer(target, device="cpu")
        kept.ensure_started()
        warm_s = []
        for seed in (1, 2):  # the first loads the engine; the second is the warm one
            started = time.perf_counter()
            kept.submit(job_arguments(work / f"warm{seed}", options, seed), work / f"warm{seed}")
            while True:
                kind, event = kept.engine.queue.get(timeout=600)
                if kind == "event" and event["type"] in ("result", "error", "cancelled"):
                    assert event["type"] == "result", event
                    break
            warm_s.append(time.perf_counter() - started)
        kept.stop()
    finally:
        server.stop()
    print(f"{time.strftime('%Y-%m-%d')}, {platform.node()} ({platform.machine()}, CPU), sshd on 127.0.0.1, offline profile, "
          f"{options.resolution} px, {options.steps} views, {options.iterations} 3DGS steps, reprojections=2")
    print("| run | seconds | overhead vs local | files up | files down | ssh wire up | ssh wire down |")
    print("|---|---|---|---|---|---|---|")
    print(f"| local (one-shot CLI) | {local_s:.1f} | | | | | |")
    print(f"| remote, cold (`generate --remote`) | {cold_s:.1f} | {cold_s - local_s:+.1f} s | {up / 1e3:.0f} kB | "
          f"{down / 1e3:.0f} kB | {wire_up / 1e3:.0f} kB | {wire_down / 1e3:.0f} kB |")
    print(f"| remote, warm (kept connection, 2nd job) | {warm_s[1]:.1f} | {warm_s[1] - local_s:+.1f} s | | | | |")


if __name__ == "__main__":
    main()
