"""Import a finished job into a new .blend through the installed extension (as a user would).

    .venv/bin/python scripts/import_to_blend.py JOB OUT.blend

Builds the extension with build.py, installs and enables it in a temporary Blender user
folder, adds a camera matching the input camera (JOB/camera.json) and imports the job with
bpy.ops.gen3d.import_job, then saves OUT.blend.
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ["BLENDER_USER_RESOURCES"] = tempfile.mkdtemp(prefix="gen3d-user-")

import bpy  # noqa: E402  (BLENDER_USER_RESOURCES must be set first)


def main(job: Path, blend: Path) -> None:
    archive = subprocess.run(
        [sys.executable, str(ROOT / "build.py"), "--out", tempfile.mkdtemp()], check=True, capture_output=True, text=True
    ).stdout.strip()
    bpy.ops.extensions.package_install_files(filepath=archive, repo="user_default", enable_on_install=True)
    bpy.ops.wm.read_homefile(use_empty=True)
    result = bpy.ops.gen3d.import_job(directory=str(job.resolve()), add_camera=True)
    if result != {"FINISHED"}:
        sys.exit(f"import_to_blend: importing {job} failed")
    blend.parent.mkdir(parents=True, exist_ok=True)
    bpy.ops.wm.save_as_mainfile(filepath=str(blend.resolve()))
    print(f"import_to_blend: saved {blend}", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
