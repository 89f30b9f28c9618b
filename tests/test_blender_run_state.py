"""Run state in real Blender: progress lives at runtime, not in the .blend; loading a file (or
reopening one saved mid-run) stops the engine and leaves Generate available; quitting stops
the kept engine too."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from conftest import ADDON_MODULE, EXAMPLE, ROOT, generate_module, pump_until, use_example_inputs


def _gone(pid: int, timeout: float = 15.0) -> bool:
    import os

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            waited, _ = os.waitpid(pid, os.WNOHANG)  # our child: reap it so it does not linger as a zombie
        except ChildProcessError:
            waited = pid
        if waited == pid:
            return True
        time.sleep(0.1)
    return False


def test_loading_a_file_mid_run_stops_the_engine_and_the_file_opens_idle(clean_scene, addon, tmp_path):
    import bpy

    engine_client, preferences = addon.gen3d_addon.engine_client, addon.gen3d_addon.preferences
    use_example_inputs(clean_scene, tmp_path / "jobs", resolution=64, splat_iterations=100000).keep_engine_loaded = False
    generate = generate_module()
    arguments, job_dir = generate.build_arguments(bpy.context)
    run = engine_client.EngineRun(sys.executable, arguments, cwd=preferences.EXTENSION_ROOT, job_dir=job_dir)
    run.start()
    generate._active = run  # in flight, as the modal Generate leaves it between timer ticks
    assert not bpy.ops.gen3d.generate.poll() and bpy.ops.gen3d.cancel.poll()
    pump_until(run, lambda: run.stage == "splat")  # well into the run
    assert not run.done, run.error
    saved = tmp_path / "mid-run.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(saved))

    bpy.ops.wm.open_mainfile(filepath=str(saved))
    assert _gone(run.pid), "the engine outlived the file it ran for"
    assert generate.active_run() is None and generate.last_run() is None
    assert bpy.ops.gen3d.generate.poll() and not bpy.ops.gen3d.cancel.poll()
    assert set(bpy.context.scene.gen3d.keys()) & {"running", "stage", "progress", "message"} == set()


def test_the_kept_engine_stops_when_the_file_changes(clean_scene, addon):
    import bpy

    prefs = addon.gen3d_addon.preferences.get_preferences()
    prefs.keep_engine_loaded, prefs.device = True, "cpu"
    try:
        server = generate_module().engine_server(bpy.context)
        server.ensure_started()
        pid = server.engine.process.pid
        bpy.ops.wm.read_homefile(use_empty=True)
        assert not server.alive and _gone(pid)
    finally:
        prefs.keep_engine_loaded = False


def test_quitting_blender_mid_run_stops_the_engine(extension_zip, tmp_path):
    """A separate Blender (bpy) process with the extension installed starts a one-shot run (its
    engine reads no stdin, so nothing else would stop it) and quits without disabling anything."""
    script = textwrap.dedent(f"""
        import os, sys, time
        os.environ["BLENDER_USER_RESOURCES"] = {str(tmp_path / "user")!r}
        import bpy, importlib
        bpy.ops.extensions.package_install_files(filepath={str(extension_zip)!r}, repo="user_default", enable_on_install=True)
        prefs = bpy.context.preferences.addons["{ADDON_MODULE}"].preferences
        prefs.engine_python, prefs.device, prefs.jobs_folder = sys.executable, "cpu", {str(tmp_path / "jobs")!r}
        settings = bpy.context.scene.gen3d
        settings.image_path, settings.depth_path = {str(EXAMPLE / "image.png")!r}, {str(EXAMPLE / "depth.png")!r}
        settings.use_scene_camera, settings.resolution, settings.splat_iterations = False, 64, 100000
        generate = importlib.import_module("{ADDON_MODULE}.operators.generate")
        client = importlib.import_module("{ADDON_MODULE}.gen3d_addon.engine_client")
        arguments, job_dir = generate.build_arguments(bpy.context)
        run = client.EngineRun(sys.executable, arguments, cwd={str(ROOT)!r}, job_dir=job_dir)
        run.start()
        generate._active = run
        while run.stage in ("", "inputs") and not run.done:  # the engine is well into the job
            run.pump()
            time.sleep(0.05)
        print(run.pid, job_dir, flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    pid, job_dir = done.stdout.strip().splitlines()[-1].split(" ", 1)
    import os

    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        pass
    else:
        os.kill(int(pid), 9)
        raise AssertionError("the engine outlived Blender")
    # Stopped by Gen3D (cancelled cleanly, finished stages kept), not by a broken pipe.
    log = (tmp_path / "jobs" / os.path.basename(job_dir) / "engine.log").read_text()
    assert "cancelled" in log, log[-2000:]
