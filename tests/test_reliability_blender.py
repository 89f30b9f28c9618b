"""Issue 7, item 1 in Blender: scene cameras Gen3D cannot use give a clear operator error before
any engine starts, and Blender keeps working (the next Generate runs)."""

from __future__ import annotations

import os
import sys

import pytest

from conftest import generate_module, use_example_inputs


@pytest.fixture
def camera_scene(clean_scene, tmp_path):
    import bpy

    use_example_inputs(clean_scene, tmp_path / "jobs", resolution=64, steps=0, splat_iterations=5).engine_python = sys.executable
    clean_scene.render.resolution_x, clean_scene.render.resolution_y = 320, 240  # the image's aspect
    camera = bpy.data.objects.new("Shot", bpy.data.cameras.new("Shot"))
    clean_scene.collection.objects.link(camera)
    clean_scene.camera = camera
    clean_scene.gen3d.use_scene_camera = True
    return clean_scene


def _refused(scene, *words):
    """The Generate operator's error report (bpy raises it as RuntimeError) holds ``words``;
    no engine runs and Generate is available again."""
    import bpy

    with pytest.raises(RuntimeError) as caught:
        bpy.ops.gen3d.generate()
    for word in words:
        assert word in str(caught.value), str(caught.value)
    assert generate_module().active_run() is None and bpy.ops.gen3d.generate.poll()
    return str(caught.value)


@pytest.mark.parametrize("kind, word", [("ORTHO", "orthographic"), ("PANO", "panoramic")])
def test_orthographic_and_panoramic_cameras_are_refused_clearly(camera_scene, kind, word):
    camera_scene.camera.data.type = kind
    _refused(camera_scene, f"'Shot' is {word}", "needs a perspective camera", "Lens > Type: Perspective")


def test_camera_path_without_keyframes_is_refused_clearly(camera_scene):
    camera_scene.gen3d.trajectory_source = "CAMERA"
    _refused(camera_scene, "'Shot' has no keyframes", "add a path preset", "keyframe it")


def test_camera_path_without_a_scene_camera_is_refused_clearly(camera_scene):
    camera_scene.gen3d.trajectory_source = "CAMERA"
    camera_scene.camera = None
    _refused(camera_scene, "needs a scene camera")


def test_blender_keeps_working_after_the_refusals(camera_scene):
    """Each refusal in turn, then the fixed camera: the same session generates and imports."""
    import bpy

    camera = camera_scene.camera
    camera.data.type = "PANO"
    _refused(camera_scene, "panoramic")
    camera_scene.gen3d.trajectory_source = "CAMERA"
    camera.data.type = "PERSP"
    _refused(camera_scene, "no keyframes")
    camera_scene.gen3d.trajectory_source = "PRESET"
    assert bpy.ops.gen3d.generate(timeout=300) == {"FINISHED"}, generate_module().last_run().message
    assert os.path.isfile(os.path.join(camera_scene.gen3d.job_dir, "gaussians.ply"))
    assert any(c.get("gen3d_job") == camera_scene.gen3d.job_dir for c in bpy.data.collections)
