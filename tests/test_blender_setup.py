"""Set up engine: the commands it runs inside Blender, and its first step for real."""

import importlib
import subprocess
import sys
from pathlib import Path

from conftest import ADDON_MODULE


def test_setup_plan_installs_the_engine_requirements_shipped_in_the_extension(addon, tmp_path):
    setup = importlib.import_module(f"{ADDON_MODULE}.operators.setup_engine")
    venv_python = tmp_path / "engine-venv" / "bin" / "python"
    steps = setup.setup_steps(sys.executable, venv_python, "cpu")
    labels = [label for label, _ in steps]
    assert labels[0].startswith("Creating") and labels[-2] == "Checking the engine"
    commands = [argv for _, argv in steps]
    assert commands[1][-2:] == ["--index-url", setup.TORCH_INDEX["cpu"]]
    requirement_files = [Path(argv[argv.index("-r") + 1]) for argv in commands if "-r" in argv]
    assert [f.name for f in requirement_files] == ["engine.txt", "moge.txt"]
    assert all(f.is_file() for f in requirement_files)  # shipped inside the installed extension
    assert "--no-deps" in commands[3]  # MoGe-2's wheel would pull in its demo's gradio
    assert commands[-2] == [str(venv_python), "-m", "engine", "version"]
    assert commands[-1] == [str(venv_python), "-m", "engine", "warmup"]  # gsplat's CUDA built at set-up, not on Generate
    # The first step really creates the engine's environment (no network needed for that one).
    subprocess.run(commands[0], check=True, timeout=120)
    assert venv_python.exists()
