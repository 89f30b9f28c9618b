"""build.py's extension zip: what it ships, and that the engine inside it runs on its own."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run([sys.executable, str(ROOT / "build.py"), "--out", str(out)], capture_output=True, text=True, check=True)
    return Path(result.stdout.strip())


def test_zip_leaves_out_the_benchmark_and_tiny_test_models(built):
    names = set(zipfile.ZipFile(built).namelist())
    assert "engine/random_models.py" not in names and "engine/tiny_diffusion.py" not in names
    assert not any(name.startswith(("tests/", "bench/", "examples/")) or name.endswith(".pyc") for name in names)
    for needed in ("blender_manifest.toml", "__init__.py", "engine/__main__.py", "engine/models.py", "engine/inpaint.py",
                   "requirements/engine.txt", "gen3d_addon/preferences.py"):
        assert needed in names, needed


def test_engine_in_the_zip_runs_the_users_profiles(built, tmp_path):
    zipfile.ZipFile(built).extractall(tmp_path)
    script = """
import engine.pipeline, engine.inpaint, engine.segment, engine.depth, engine.prompting, engine.text2image
from engine import inpaint, models
from engine.errors import MissingModelError
from engine.profiles import BackendContext, get_profile
ctx = BackendContext(profile=get_profile("full"), cache_dir=%r, allow_download=False, note=print, warn=print)
try:
    inpaint.create("sd-inpaint", ctx)
except MissingModelError as exc:
    assert "stable-diffusion-v1-5/stable-diffusion-inpainting" in str(exc), exc
print("full profile: missing_model as expected offline")
bench = BackendContext(profile=get_profile("bench"), cache_dir=%r, allow_download=False)
try:
    models.resolve_source(bench, "sd")
except MissingModelError as exc:
    assert "not part of this install" in str(exc), exc
print("bench profile: says its models are not shipped")
""" % (str(tmp_path / "cache"), str(tmp_path / "cache"))
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "missing_model as expected" in result.stdout and "not shipped" in result.stdout
    help_run = subprocess.run([sys.executable, "-m", "engine", "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert help_run.returncode == 0 and "generate" in help_run.stdout + help_run.stderr


def test_requirement_files_name_only_files_that_exist():
    for requirements in (ROOT / "requirements").glob("*.txt"):
        for line in requirements.read_text().splitlines():
            if line.lstrip().startswith("#"):
                for name in re.findall(r"[\w.-]+/[\w./-]+\.(?:md|sh|py|txt|toml)", line):
                    assert (ROOT / name).exists(), f"{requirements.name} names {name}, which does not exist"
