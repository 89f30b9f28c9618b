"""Shared fixtures.

Blender tests use the real Blender 5.0 (the ``bpy`` module): the session builds the extension
zip with build.py and installs + enables it into a temporary Blender user folder, exactly as
a user's "Install from Disk" does.  BLENDER_USER_RESOURCES must be set before bpy is first
imported, hence at the top of this file.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "courtyard"
BLENDER_USER = Path(tempfile.mkdtemp(prefix="gen3d-blender-user-"))
os.environ["BLENDER_USER_RESOURCES"] = str(BLENDER_USER)
ADDON_MODULE = "bl_ext.user_default.gen3d"


def pytest_collection_modifyitems(config, items):
    """GPU tests are skipped with a reason where there is no CUDA, so a run shows what it did not
    do; the GPU machine runs them (bench/gpu_example.sh, bench/gpu_faults.sh)."""
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu:
        return  # torch is not imported for nothing: the older-Blender environments have none
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA: run on the GPU machine (bench/gpu_example.sh, bench/gpu_faults.sh)")
    for item in gpu:
        item.add_marker(skip)


def engine_command(*arguments: str) -> list[str]:
    """`python -m engine ...` with this interpreter (the project's .venv)."""
    return [sys.executable, "-m", "engine", *arguments]


def run_engine(*arguments: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        engine_command(*arguments), cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kwargs
    )


@pytest.fixture(scope="session")
def extension_zip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, str(ROOT / "build.py"), "--out", str(out)], capture_output=True, text=True, check=True
    )
    return Path(result.stdout.strip())


@pytest.fixture(scope="session")
def addon(extension_zip):
    """The installed, enabled extension's package (bl_ext.user_default.gen3d)."""
    import bpy

    if ADDON_MODULE not in bpy.context.preferences.addons:
        result = bpy.ops.extensions.package_install_files(
            filepath=str(extension_zip), repo="user_default", enable_on_install=True
        )
        assert result == {"FINISHED"}, result
    assert ADDON_MODULE in bpy.context.preferences.addons, "the extension did not enable"
    prefs = bpy.context.preferences.addons[ADDON_MODULE].preferences
    prefs.engine_python = sys.executable  # the engine runs from this project's environment
    return importlib.import_module(ADDON_MODULE)


@pytest.fixture
def clean_scene(addon):
    """An empty scene (factory home file, add-on still enabled); node groups removed after."""
    import bpy

    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    yield scene
    for group in list(bpy.data.node_groups):
        bpy.data.node_groups.remove(group)


def generate_module():
    """The installed add-on's Generate operator module: the run in flight, the last run and the
    kept engine live there, at runtime."""
    return importlib.import_module(f"{ADDON_MODULE}.operators.generate")


def use_example_inputs(scene, jobs_folder: Path, **settings):
    """The courtyard RGB-D example as ``scene``'s input, offline profile on the CPU, jobs under
    ``jobs_folder``; ``settings`` are further Scene.gen3d values.  Returns the preferences."""
    import bpy

    prefs = bpy.context.preferences.addons[ADDON_MODULE].preferences
    prefs.jobs_folder, prefs.profile, prefs.device = str(jobs_folder), "offline", "cpu"
    gen3d = scene.gen3d
    gen3d.image_path, gen3d.depth_path = str(EXAMPLE / "image.png"), str(EXAMPLE / "depth.png")
    gen3d.use_scene_camera = False
    for name, value in settings.items():
        setattr(gen3d, name, value)
    return prefs


def pump_until(run, condition, timeout: float = 240) -> None:
    """Pump an EngineRun until ``condition()`` holds or the run ends."""
    deadline = time.monotonic() + timeout
    while not condition() and not run.done:
        assert time.monotonic() < deadline, f"timed out in stage {run.stage!r}"
        run.pump()
        time.sleep(0.05)


@pytest.fixture(scope="module")
def sshd_server(tmp_path_factory):
    """A real OpenSSH server on 127.0.0.1 (tests/sshd.py), one per test module."""
    from sshd import SSHServer

    ssh = SSHServer(tmp_path_factory.mktemp("sshd")).start()
    yield ssh
    ssh.stop()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small tensors on a shared 2-core machine: intra-op threads only add contention (up to 10x)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def hf_offline(monkeypatch):
    """Nothing may reach for the model hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny_ctx(tmp_path_factory):
    """A backend context on the tiny profile with its own model cache and no downloads."""
    from engine.profiles import BackendContext, get_profile

    cache = tmp_path_factory.mktemp("gen3d-cache")
    return BackendContext(
        profile=get_profile("tiny"), cache_dir=str(cache), allow_download=False, warn=lambda s: None, note=lambda s: None
    )


_EXIT_STATUS = {}


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS["status"] = int(exitstatus)


def pytest_unconfigure(config):
    """bpy 4.2 as a Python module crashes in its own exit handlers after a session that
    installed an extension (segfault at interpreter shutdown, after every test has reported):
    leave with pytest's status, summary printed, before those run."""
    bpy = sys.modules.get("bpy")
    if bpy is not None and bpy.app.version < (4, 4, 0):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS.get("status", 1))
