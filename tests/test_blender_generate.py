"""Generate from real Blender through the real engine subprocess: result, cancel, crash, garbage."""

import importlib
import json
import os
import signal
import stat
import sys
import time

import pytest

from conftest import ADDON_MODULE, EXAMPLE, generate_module, pump_until, use_example_inputs

# Small and quick: the point here is the bridge, not quality.
FAST = dict(resolution=96, steps=1, splat_iterations=20)


@pytest.fixture
def example_scene(clean_scene, tmp_path, addon):
    prefs = use_example_inputs(clean_scene, tmp_path / "jobs", **FAST)
    prefs.engine_python = sys.executable
    yield clean_scene
    prefs.engine_python = sys.executable


def _started_run(context):
    from_client = importlib.import_module(f"{ADDON_MODULE}.gen3d_addon.engine_client")
    prefs_module = importlib.import_module(f"{ADDON_MODULE}.gen3d_addon.preferences")
    arguments, job_dir = generate_module().build_arguments(context)
    run = from_client.EngineRun(sys.executable, arguments + ["--set", "reprojections=0"], cwd=prefs_module.EXTENSION_ROOT, job_dir=job_dir)
    run.start()
    return run


def test_extension_registers_operators_and_panel(addon):
    import bpy

    for name in ("generate", "cancel", "setup_engine"):
        assert hasattr(bpy.ops.gen3d, name)
    assert hasattr(bpy.types, "GEN3D_PT_main")
    assert hasattr(bpy.types.Scene, "gen3d")


def test_generate_imports_the_result(example_scene):
    import bpy

    user_object = bpy.data.objects.new("My asset", None)
    example_scene.collection.objects.link(user_object)
    result = bpy.ops.gen3d.generate(timeout=300)
    assert result == {"FINISHED"}, generate_module().last_run().message
    job_dir = example_scene.gen3d.job_dir
    assert os.path.isfile(os.path.join(job_dir, "points.ply"))
    assert os.path.isfile(os.path.join(job_dir, "gaussians.ply"))
    ours = [c for c in bpy.data.collections if c.get("gen3d_job") == job_dir]
    assert len(ours) == 1
    meshes = [o for o in ours[0].all_objects if o.type in ("MESH", "POINTCLOUD")]
    assert meshes and max(len(o.data.vertices) if o.type == "MESH" else len(o.data.points) for o in meshes) > 1000
    assert "My asset" in bpy.data.objects and user_object.users_collection[0] == example_scene.collection
    assert generate_module().last_run().fraction == pytest.approx(1.0)


def test_cancel_keeps_finished_stages_and_the_rerun_resumes(example_scene):
    import bpy

    example_scene.gen3d.splat_iterations = 100000  # long enough to be cancelled inside "splat"
    run = _started_run(bpy.context)
    pump_until(run, lambda: run.stage == "splat")
    time.sleep(1.0)
    run.cancel()
    run.wait(timeout=60)
    assert run.state == "cancelled", run.error
    assert any(e["type"] == "cancelled" for e in run.events)
    done = [s for s in ("inputs", "depth", "segment", "inpaint", "expand") if os.path.isfile(os.path.join(run.job_dir, s, "done.json"))]
    assert len(done) == 5
    assert not os.path.exists(os.path.join(run.job_dir, "splat", "done.json"))
    # A re-run with a short schedule reuses the five finished stages.
    example_scene.gen3d.splat_iterations = 10
    again = _started_run(bpy.context)
    again.wait(timeout=240)
    assert again.state == "finished", again.error
    cached = {e["stage"] for e in again.events if e["type"] == "stage_done" and e["cached"]}
    assert set(done) <= cached


def test_engine_killed_mid_run_is_reported_and_blender_keeps_working(example_scene):
    import bpy

    example_scene.gen3d.splat_iterations = 100000
    run = _started_run(bpy.context)
    pump_until(run, lambda: run.stage == "splat")
    os.kill(run.pid, signal.SIGKILL)
    run.wait(timeout=30)
    assert run.state == "failed"
    assert "stopped unexpectedly" in run.error and "signal 9" in run.error
    assert os.path.isfile(os.path.join(run.job_dir, "expand", "done.json"))
    assert bpy.ops.gen3d.generate.poll()  # Blender is free to start again


def test_missing_engine_gives_a_clear_message(example_scene, tmp_path):
    import bpy

    prefs = bpy.context.preferences.addons[ADDON_MODULE].preferences
    prefs.engine_python = str(tmp_path / "no" / "python")
    # An operator that reports an error raises it to a Python caller, message included.
    with pytest.raises(RuntimeError, match="Engine Python not found .*Set up engine"):
        bpy.ops.gen3d.generate()
    assert generate_module().active_run() is None and generate_module().last_run().state == "failed"


def test_garbage_printing_engine_is_reported(example_scene, tmp_path):
    import bpy

    fake = tmp_path / "fake-python"
    fake.write_text("#!/bin/sh\necho 'this is not JSON'\necho 'boom' >&2\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    prefs = bpy.context.preferences.addons[ADDON_MODULE].preferences
    prefs.engine_python = str(fake)
    with pytest.raises(RuntimeError, match="stopped unexpectedly"):
        bpy.ops.gen3d.generate(timeout=30)
    assert "boom" in generate_module().last_run().message


def test_missing_input_image_is_refused_before_starting(example_scene):
    import bpy

    example_scene.gen3d.image_path = "/nowhere/photo.png"
    with pytest.raises(RuntimeError, match="Input image not found"):
        bpy.ops.gen3d.generate()


def test_kept_engine_serves_two_runs_then_is_released(example_scene):
    import bpy

    prefs = bpy.context.preferences.addons[ADDON_MODULE].preferences
    prefs.keep_engine_loaded = True
    generate = generate_module()
    try:
        assert bpy.ops.gen3d.generate(timeout=300) == {"FINISHED"}
        server = generate._server
        first_pid = server.engine.process.pid
        example_scene.gen3d.seed = 1  # a different request, same engine
        assert bpy.ops.gen3d.generate(timeout=300) == {"FINISHED"}
        assert generate._server.engine.process.pid == first_pid and server.alive
        assert bpy.ops.gen3d.release_engine() == {"FINISHED"}
        assert not server.alive and server.engine.process.returncode == 0
    finally:
        prefs.keep_engine_loaded = False
        if generate._server is not None:
            generate._server.stop()


def test_generate_follows_the_keyframed_camera_path(example_scene):
    """Keyframes -> sampled cameras -> the engine expands into exactly those views."""
    import bpy
    import numpy as np

    from engine.cameras import Camera, relative_to

    sys.path.insert(0, str(EXAMPLE.parent.parent / "scripts"))
    from import_to_blend import add_camera

    add_camera(example_scene, Camera.from_dict(json.loads((EXAMPLE / "camera.json").read_text())), "Input")
    example_scene.gen3d_camera.scene_depth = 6.0
    example_scene.gen3d_camera.angle = 20.0
    assert bpy.ops.gen3d.add_camera_path(preset="orbit", views=3) == {"FINISHED"}
    settings = example_scene.gen3d
    settings.use_scene_camera, settings.trajectory_source, settings.steps = True, "CAMERA", 2
    example_scene.frame_set(example_scene.frame_start)
    assert bpy.ops.gen3d.generate(timeout=300) == {"FINISHED"}, generate_module().last_run().message
    job = settings.job_dir
    sent = json.loads(open(os.path.join(job, "trajectory.json")).read())["cameras"]
    assert len(sent) == 3
    used = json.loads(open(os.path.join(job, "expand", "views.json")).read())["cameras"]
    # The input view, then the path without its first camera (which is the input view).
    input_camera = Camera.from_dict(json.loads(open(os.path.join(job, "camera.json")).read()))
    expected = relative_to([Camera.from_dict(c) for c in sent[1:]], input_camera)
    assert len(used) == 1 + len(expected)
    for camera, want in zip(used[1:], expected):
        np.testing.assert_allclose(np.array(camera["world_to_camera"]), want.world_to_camera, atol=1e-6)


def test_generate_resumes_and_regenerate_from_scratch_redoes_every_stage(example_scene):
    import bpy

    settings = example_scene.gen3d
    settings.resolution, settings.steps, settings.splat_iterations = 48, 0, 3  # three runs: keep each short
    assert bpy.ops.gen3d.generate(timeout=300) == {"FINISHED"}, generate_module().last_run().message
    job_dir = example_scene.gen3d.job_dir
    stages = ("inputs", "depth", "segment", "inpaint", "sky", "expand", "splat", "export")

    def records():
        return {stage: os.stat(os.path.join(job_dir, stage, "done.json")).st_mtime_ns for stage in stages}

    first = records()
    assert bpy.ops.gen3d.generate(timeout=300) == {"FINISHED"}
    assert records() == first  # resumed: nothing redone
    assert "--fresh" not in generate_module().build_arguments(bpy.context)[0]
    assert bpy.ops.gen3d.generate(timeout=300, fresh=True) == {"FINISHED"}, generate_module().last_run().message
    again = records()
    assert all(again[stage] != first[stage] for stage in stages), (first, again)
