"""Generate from real Blender on a remote engine through a real OpenSSH server on 127.0.0.1.

Preferences › Engine location: Remote (SSH); Test connection; a Generate imported exactly as a
local one; the connection killed mid-run, reported, and the next Generate resuming; Cancel.
"""

import importlib
import json
import os
import re
import shlex
import signal
import time
from pathlib import Path

import pytest

from conftest import ADDON_MODULE, generate_module, pump_until, use_example_inputs

ODD = "it's \"remote\" jobs"


@pytest.fixture
def remote_scene(clean_scene, tmp_path, sshd_server):
    prefs = use_example_inputs(clean_scene, tmp_path / "local jobs 'x'", resolution=64, steps=1, splat_iterations=4)
    target = sshd_server.target(tmp_path / ODD)
    prefs.engine_location = "REMOTE"
    prefs.remote_host, prefs.remote_port = target.host, target.port
    prefs.remote_identity_file, prefs.remote_known_hosts = target.identity_file, target.known_hosts
    prefs.remote_python, prefs.remote_engine_dir, prefs.remote_jobs_folder = target.python, target.engine_dir, target.jobs_folder
    yield clean_scene, target
    prefs.engine_location = "LOCAL"
    generate = generate_module()
    if generate._server is not None:
        generate._server.stop()
        generate._server = None


def _started_run(context):
    generate = generate_module()
    client = importlib.import_module(f"{ADDON_MODULE}.gen3d_addon.engine_client")
    arguments, job_dir = generate.build_arguments(context)
    server = generate.engine_server(context)
    run = client.EngineRun(server.target.python, arguments + ["--set", "reprojections=0"], cwd=job_dir, job_dir=job_dir, server=server)
    run.start()
    return run


def _tick_connection_test(until=lambda: False, timeout: float = 120):
    """Run Test connection's timer as Blender's event loop would (this bpy has none) until it
    stops or ``until()`` holds; the check it watches."""
    import bpy

    remote_ops = importlib.import_module(f"{ADDON_MODULE}.operators.remote")
    check_of = lambda: importlib.import_module(f"{ADDON_MODULE}.gen3d_addon.preferences").CONNECTION_TEST["check"]  # noqa: E731
    assert bpy.app.timers.is_registered(remote_ops.watch_connection_test)
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, f"Test connection still at {check_of().step!r}"
        interval = remote_ops.watch_connection_test()
        if interval is None:
            bpy.app.timers.unregister(remote_ops.watch_connection_test)
            break
        time.sleep(interval)
    return check_of()


def _answer():
    check = _tick_connection_test()
    assert check.done
    return check


def _remote_job(server_target, job_dir) -> Path:
    return Path(server_target.jobs_folder) / json.loads((Path(job_dir) / "remote.json").read_text())["job"]


def test_test_connection_then_generate_imports_like_a_local_run(remote_scene, sshd_server):
    import bpy

    scene, target = remote_scene
    prefs_module = importlib.import_module(f"{ADDON_MODULE}.gen3d_addon.preferences")
    assert bpy.ops.gen3d.test_connection() == {"FINISHED"}
    report = _answer().lines
    assert not report[1][0] and "host key NEW" in report[1][1]  # first contact: shown, not accepted
    assert bpy.ops.gen3d.trust_host_key.poll()
    assert bpy.ops.gen3d.trust_host_key("EXEC_DEFAULT") == {"FINISHED"}  # and tests again
    report = _answer().lines
    assert all(ok for ok, _ in report) and any("engine 0.1.0, protocol 1" in text for _, text in report), report

    assert bpy.ops.gen3d.generate(timeout=300) == {"FINISHED"}, generate_module().last_run().message
    settings = scene.gen3d
    job_dir = Path(settings.job_dir)
    assert job_dir.is_relative_to(Path(prefs_module.get_preferences().jobs_folder))  # the local job folder
    for name in ("points.ply", "gaussians.ply", "job.json"):
        assert (job_dir / name).read_bytes() == (_remote_job(target, job_dir) / name).read_bytes()
    preview = Path(generate_module().last_run().preview_path)
    assert preview.is_file() and preview.is_relative_to(job_dir)  # fetched as it appeared
    ours = [c for c in bpy.data.collections if c.get("gen3d_job") == str(job_dir.resolve())]
    assert len(ours) == 1
    clouds = [o for o in ours[0].all_objects if o.type in ("MESH", "POINTCLOUD")]
    assert clouds and max(len(o.data.vertices) if o.type == "MESH" else len(o.data.points) for o in clouds) > 1000
    # The connection stays up (models loaded) for the next Generate; Release engine closes it.
    server_object = generate_module()._server
    assert server_object.alive and bpy.ops.gen3d.release_engine() == {"FINISHED"} and not server_object.alive


def test_dropped_connection_is_reported_then_generate_resumes_and_cancel_works(remote_scene, sshd_server):
    import bpy

    scene, target = remote_scene
    if not sshd_server.known_hosts.exists():
        sshd_server.trust(target)
    scene.gen3d.splat_iterations = 100000  # long enough to be interrupted inside "splat"
    run = _started_run(bpy.context)
    pump_until(run, lambda: run.stage == "splat")
    for pid in sshd_server.session_pids():  # the network drops: sshd's side of the connection dies
        os.kill(pid, signal.SIGKILL)
    run.wait(timeout=60)
    assert run.state == "failed" and "lost the connection to 127.0.0.1" in run.error and "resumes" in run.error, run.error
    remote_job = _remote_job(target, run.job_dir)
    finished = ("inputs", "depth", "segment", "inpaint", "expand")
    assert all((remote_job / stage / "done.json").is_file() for stage in finished)
    assert bpy.ops.gen3d.generate.poll()

    # Generate again: a new connection, the same remote job, the finished stages reused; then Cancel.
    again = _started_run(bpy.context)
    pump_until(again, lambda: again.stage == "splat")
    again.cancel()
    again.wait(timeout=60)
    assert again.state == "cancelled", again.error
    cached = {e["stage"] for e in again.events if e["type"] == "stage_done" and e["cached"]}
    assert set(finished) <= cached
    assert _remote_job(target, again.job_dir) == remote_job and not (remote_job / "splat" / "done.json").exists()

    scene.gen3d.splat_iterations = 3
    assert bpy.ops.gen3d.generate(timeout=300) == {"FINISHED"}, generate_module().last_run().message
    assert (Path(scene.gen3d.job_dir) / "gaussians.ply").read_bytes() == (remote_job / "gaussians.ply").read_bytes()


def test_test_connection_leaves_blender_free_while_ssh_waits_then_reports_or_gives_up(remote_scene, sshd_server, tmp_path):
    import bpy

    _, target = remote_scene
    prefs_module = importlib.import_module(f"{ADDON_MODULE}.gen3d_addon.preferences")
    if not sshd_server.known_hosts.exists():
        sshd_server.trust(target)
    # A server whose engine answers only once the gate opens (a cold start, a slow link).
    gate, slow = tmp_path / "gate", tmp_path / "slow-python"
    slow.write_text(f"#!/bin/sh\nwhile [ ! -e {shlex.quote(str(gate))} ]; do sleep 0.1; done\nexec {shlex.quote(target.python)} \"$@\"\n")
    slow.chmod(0o755)
    prefs_module.get_preferences().remote_python = str(slow)
    try:
        assert bpy.ops.gen3d.test_connection() == {"FINISHED"}  # back at once; ssh goes on in its thread
        check = _tick_connection_test(until=lambda: prefs_module.CONNECTION_TEST["check"].step == "starting the remote engine")
        assert not check.done and not bpy.ops.gen3d.test_connection.poll()  # one test at a time
        assert [ok for ok, _ in check.lines] == [True, True]  # reachable, host key known: shown as they came
        icon, progress = prefs_module.connection_lines()[-1]
        assert icon == "SORTTIME" and "starting the remote engine" in progress and "gives up at 60 s" in progress
        gate.touch()
        check = _answer()
        assert check.ok and any("engine 0.1.0, protocol 1" in text for _, text in check.lines), check.lines
        assert all(icon != "SORTTIME" for icon, _ in prefs_module.connection_lines())

        gate.unlink()  # the engine never answers: the test gives up at its time limit and says so
        assert bpy.ops.gen3d.test_connection(timeout=3) == {"FINISHED"}
        check = _answer()
        assert not check.ok and re.fullmatch(r"starting the remote engine: ssh did not answer within \d s", check.lines[-1][1]), check.lines
        assert bpy.ops.gen3d.test_connection.poll()
    finally:
        gate.touch()  # lets the server's waiting wrapper finish
