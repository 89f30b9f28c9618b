"""Import a finished job into a new .blend through the installed extension (as a user would).

    .venv/bin/python scripts/import_to_blend.py JOB OUT.blend

Builds the extension with build.py, installs and enables it in a temporary Blender user
folder, adds the input camera (JOB/camera.json) as the scene camera, imports the job with
bpy.ops.gen3d.import_job, then saves OUT.blend.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["BLENDER_USER_RESOURCES"] = tempfile.mkdtemp(prefix="gen3d-user-")

import bpy  # noqa: E402  (BLENDER_USER_RESOURCES must be set first)
from mathutils import Matrix  # noqa: E402

from engine.cameras import Camera, to_blender  # noqa: E402


def install_extension() -> None:
    archive = subprocess.run(
        [sys.executable, str(ROOT / "build.py"), "--out", tempfile.mkdtemp()], check=True, capture_output=True, text=True
    ).stdout.strip()
    bpy.ops.extensions.package_install_files(filepath=archive, repo="user_default", enable_on_install=True)


def add_camera(scene, camera: Camera, name: str):
    """A Blender camera reproducing ``camera`` (in Blender's world), made the scene camera."""
    settings = to_blender(camera)
    data = bpy.data.cameras.new(name)
    data.lens, data.sensor_width, data.sensor_fit = settings["lens"], settings["sensor_width"], settings["sensor_fit"]
    data.shift_x, data.shift_y = settings["shift_x"], settings["shift_y"]
    obj = bpy.data.objects.new(name, data)
    obj.matrix_world = Matrix(settings["matrix_world"])
    scene.collection.objects.link(obj)
    scene.camera = obj
    scene.render.resolution_x, scene.render.resolution_y = settings["resolution_x"], settings["resolution_y"]
    scene.render.resolution_percentage = 100
    return obj


def import_job(job: Path) -> None:
    """A fresh scene holding the job's result, seen through the input camera."""
    bpy.ops.wm.read_homefile(use_empty=True)
    camera_file = job / "camera.json"
    if camera_file.is_file():
        add_camera(bpy.context.scene, Camera.from_dict(json.loads(camera_file.read_text(encoding="utf-8"))), "Gen3D input camera")
    if bpy.ops.gen3d.import_job(directory=str(job.resolve())) != {"FINISHED"}:
        sys.exit(f"importing {job} failed")


def main(job: Path, blend: Path) -> None:
    install_extension()
    import_job(job)
    blend.parent.mkdir(parents=True, exist_ok=True)
    bpy.ops.wm.save_as_mainfile(filepath=str(blend.resolve()))
    print(f"import_to_blend: saved {blend}", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
