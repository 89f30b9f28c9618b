"""The engine over SSH (engine/remote.py) against a real OpenSSH server on 127.0.0.1.

Commands are argument lists with every remote word shell-quoted; host keys are strict (a new
one is shown by fingerprint and added only when confirmed, a changed one refused); the served
engine writes only inside its jobs folder; `generate --remote` runs a job end to end.
"""

import getpass
import json
import shlex
import subprocess
from pathlib import Path

import pytest

from conftest import EXAMPLE, ROOT, engine_command
from engine import protocol, remote

ODD = "it's a \"quoted\" $(touch pwned) folder"


def test_remote_words_are_quoted_and_bad_names_refused(tmp_path):
    target = remote.Target(host="gpu-box.example", user="artist", port=2222, python="/opt/gen3d env/bin/python",
                           engine_dir="~/gen3d", jobs_folder=f"/srv/{ODD}")
    argv = target.engine_argv("serve", "--jobs-root", target.jobs_folder)
    command = target.ssh(argv)
    assert command[:2] == ["ssh", "-T"] and command[-3:-1] == ["--", "gpu-box.example"]
    assert shlex.split(command[-1]) == argv  # the remote shell gets back exactly these words
    assert f"/srv/{ODD}" in argv and "PYTHONPATH=gen3d" in argv  # "~/" is the remote home: ssh starts there
    assert ["-o", "StrictHostKeyChecking=yes"] == command[command.index("StrictHostKeyChecking=yes") - 1:][:2]
    for bad in ("-oProxyCommand=touch x", "host;rm", "a b", ""):
        with pytest.raises(remote.RemoteError, match="host"):
            remote.Target(host=bad)
    with pytest.raises(remote.RemoteError, match="user"):
        remote.Target(host="h", user="-x")
    for folder in ("/srv/../etc", "/srv/*", "jobs\nrm", "~"):
        with pytest.raises(remote.RemoteError, match="jobs folder"):
            remote.Target(host="h", jobs_folder=folder)


def test_a_job_goes_up_under_plain_names_and_keeps_its_remote_folder(tmp_path):
    image = tmp_path / ODD / "My Photo.PNG"
    image.parent.mkdir()
    image.write_bytes(b"x")
    local = tmp_path / "jobs" / "Scene-photo"
    local.mkdir(parents=True)
    name = remote.remote_job_name(local, remote.Target(host="h"))
    args, uploads = remote.plan_job([str(image), "--out", str(local), "--prompt", "--a sunny day", "--camera=" + str(image)], local, name)
    assert args == [f"{name}/upload/image.png", "--out", name, "--prompt", "--a sunny day", "--camera", f"{name}/upload/camera.png"]
    assert uploads == [(image, "upload/image.png"), (image, "upload/camera.png")]
    # Resume finds the same remote folder; a same-named job elsewhere (another session) gets its own.
    assert remote.remote_job_name(local, remote.Target(host="h")) == name
    other = tmp_path / "other session" / "Scene-photo"
    other.mkdir(parents=True)
    assert remote.remote_job_name(other, remote.Target(host="h")) != name
    with pytest.raises(remote.RemoteError, match="not found"):
        remote.plan_job([str(tmp_path / "missing.png"), "--out", "x"], local, name)


def test_served_requests_stay_inside_the_jobs_root(tmp_path):
    process = subprocess.run(
        engine_command("serve", "--device", "cpu", "--jobs-root", str(tmp_path / "jobs")), cwd=ROOT, text=True,
        capture_output=True, timeout=120,
        input="".join(json.dumps({"type": "generate", "args": args}) + "\n" for args in (
            [str(EXAMPLE / "image.png"), "--out", "../escaped"],
            ["a/../../image.png", "--out", "inside"],
        )),
    )
    errors = [protocol.parse_event(line) for line in process.stdout.splitlines()]
    errors = [event for event in errors if event["type"] == "error"]
    assert len(errors) == 2 and all("outside the jobs folder" in event["message"] for event in errors)
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "jobs" / "inside").exists()


def test_new_host_key_shown_by_fingerprint_then_trusted_and_a_changed_key_refused(sshd_server, tmp_path):
    target = sshd_server.target(tmp_path / "jobs")
    first = remote.check_connection(target)
    expected = subprocess.run(["ssh-keygen", "-lf", str(sshd_server.host_key) + ".pub"], capture_output=True, text=True).stdout.split()[1]
    assert not first.ok and first.lines[0][0] and "reachable" in first.lines[0][1]
    assert "host key NEW" in first.lines[1][1] and expected in first.lines[1][1]
    assert not sshd_server.known_hosts.exists()  # nothing accepted silently
    remote.trust_host_keys(target, first.new_host_keys)
    check = remote.check_connection(target)
    assert check.ok, check.lines
    text = "\n".join(line for _, line in check.lines)
    assert f"host key known: ED25519 {expected}" in text
    assert f"protocol {protocol.PROTOCOL_VERSION}" in text and "device: cpu" in text and "rasterizer: torch" in text

    # The server's key changes (a reinstall, or someone in the middle): refused, never replaced.
    good = sshd_server.known_hosts.read_text()
    impostor = tmp_path / "impostor"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(impostor)], check=True)
    sshd_server.known_hosts.write_text(f"[127.0.0.1]:{sshd_server.port} " + " ".join(impostor.with_suffix(".pub").read_text().split()[:2]) + "\n")
    try:
        changed = remote.check_connection(target)
        assert not changed.ok and "CHANGED: refused" in changed.lines[-1][1]
        with pytest.raises(remote.RemoteError, match="never replaced"):
            remote.trust_host_keys(target, first.new_host_keys)
        run = _generate_remote(sshd_server, target, tmp_path / "refused job", "--iterations", "2")
        assert run.returncode == protocol.EXIT_FAILED and "CHANGED: refused" in run.stdout
    finally:
        sshd_server.known_hosts.write_text(good)


def _generate_remote(sshd_server, target, out, *extra):
    return subprocess.run(
        engine_command(
            "generate", str(EXAMPLE / "image.png"), "--depth", str(EXAMPLE / "depth.png"), "--out", str(out),
            "--device", "cpu", "--resolution", "64", "--steps", "1", "--set", "reprojections=0", *extra,
            "--remote", f"{getpass.getuser()}@127.0.0.1", "--remote-port", str(sshd_server.port),
            "--identity", target.identity_file, "--known-hosts", target.known_hosts, "--remote-python", target.python,
            "--remote-engine-dir", target.engine_dir, "--remote-jobs", target.jobs_folder,
        ),
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )


def test_generate_remote_on_the_command_line(sshd_server, tmp_path):
    target = sshd_server.target(tmp_path / "remote jobs" / ODD)
    if not sshd_server.known_hosts.exists():
        sshd_server.trust(target)
    local = tmp_path / "local jobs" / ODD
    run = _generate_remote(sshd_server, target, local, "--iterations", "2")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    events = [protocol.parse_event(line) for line in run.stdout.splitlines()]
    assert events[0]["type"] == "hello" and events[0]["remote"].endswith(f"127.0.0.1:{sshd_server.port}")
    result = events[-1]
    assert result["type"] == "result" and result["job"] == str(local.resolve())
    remote_job = Path(result["remote_job"])
    assert remote_job.parent == Path(target.jobs_folder)  # under the jobs folder, its own sub-folder
    for name in ("points.ply", "gaussians.ply", "job.json"):
        assert (local / name).read_bytes() == (remote_job / name).read_bytes()
    assert {e["stage"] for e in events if e["type"] == "stage_done"} == set(protocol.STAGES)
    assert "files up" in run.stderr
    assert not any((folder / "pwned").exists() for folder in (ROOT, Path.home(), tmp_path))  # no word ran as a command
