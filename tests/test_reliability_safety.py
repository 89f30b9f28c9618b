"""Issue 7, item 3: safety.  No pickle, no shell, job.json treated as data, and nothing
written outside the job folder and the configured cache."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import EXAMPLE, ROOT, run_engine
from engine import protocol
from engine.errors import BadInputError
from reliability import FAST, assert_job_consistent

# Everything that ships: the extension's packages (the engine included).
SHIPPED = [ROOT / "__init__.py", *sorted(p for d in ("engine", "gen3d_addon", "operators", "panels") for p in (ROOT / d).rglob("*.py"))]


def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func), {k.arg: ast.unparse(k.value) for k in node.keywords if k.arg}


def test_no_pickle_no_shell_in_shipped_code():
    problems = []
    for path in SHIPPED:
        where = path.relative_to(ROOT)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(name.split(".")[0] in ("pickle", "cPickle", "dill", "joblib", "shelve") for name in names):
                problems.append(f"{where}: imports {names}")
        for node, func, keywords in _calls(path):
            line = f"{where}:{node.lineno}: {func}"
            if func.endswith("torch.load") and keywords.get("weights_only") != "True":
                problems.append(f"{line} without weights_only=True")
            if func.endswith("np.load") and keywords.get("allow_pickle", "False") != "False":
                problems.append(f"{line} with allow_pickle")
            if keywords.get("shell", "False") != "False" or func in ("os.system", "os.popen", "subprocess.getoutput"):
                problems.append(f"{line} runs a shell")
    assert not problems, problems
    assert len(SHIPPED) > 20  # the scan saw the code base


def test_the_engine_subprocess_is_started_without_a_shell(addon, monkeypatch, tmp_path):
    import importlib

    client = importlib.import_module(f"{addon.__name__}.gen3d_addon.engine_client")
    seen = {}

    class Recorder:
        def __init__(self, args, **kwargs):
            seen.update(args=args, **kwargs)
            raise OSError("recorded, not started")

    monkeypatch.setattr(client.subprocess, "Popen", Recorder)
    python = tmp_path / "python"
    python.write_text("")
    run = client.EngineRun(python, ["generate", "a b; rm -rf ~", "--out", str(tmp_path)], cwd=tmp_path, job_dir=tmp_path)
    run.start()
    assert isinstance(seen["args"], list) and seen["args"][:3] == [str(python), "-m", "engine"]
    assert "a b; rm -rf ~" in seen["args"]  # one argument, never parsed by a shell
    assert not seen.get("shell") and run.state == "failed"


def _prepared_job(tmp_path) -> Path:
    job = tmp_path / "job"
    (job / "inputs").mkdir(parents=True)
    return job


@pytest.mark.parametrize(
    "tamper, problem",
    [
        ({"settings": {"resolution": "64; rm -rf /"}}, "must be int"),
        ({"settings": {"__class__": 1}}, "unknown settings"),
        ({"image": "inputs/../../secret.png"}, "inside the job folder"),
        ({"depth": "/etc/passwd"}, "inside the job folder"),
        ({"run": "import os"}, "unknown keys"),
        ({"camera": {"K": "eval()"}}, "camera"),
    ],
)
def test_a_tampered_job_json_is_refused_as_data(tmp_path, tamper, problem):
    """The engine re-reads job.json when it runs: whatever is in it is checked, never executed."""
    from engine import pipeline
    from engine.cameras import CameraError

    job = _prepared_job(tmp_path)
    (job / "inputs" / "photo.png").write_bytes((EXAMPLE / "image.png").read_bytes())
    (job / "job.json").write_text(json.dumps({"schema": 1, "profile": "offline", "image": "inputs/photo.png", **tamper}))
    with pytest.raises((protocol.ProtocolError, BadInputError, CameraError)) as caught:
        run = pipeline.make_run(job, protocol.EventWriter(open(os.devnull, "w")), device="cpu")
        pipeline.run_job(run)
    assert problem in str(caught.value).lower() or problem in str(caught.value)


def test_nothing_is_written_outside_the_job_and_the_cache(tmp_path):
    """HOME, the XDG folders and TMPDIR point into a sandbox: after a full run, new files exist
    only in the job folder and GEN3D_CACHE, and the inputs are untouched."""
    sandbox = tmp_path / "sandbox"
    dirs = {name: sandbox / name for name in ("home", "xdg-cache", "xdg-config", "xdg-data", "tmp", "cache", "inputs")}
    for folder in dirs.values():
        folder.mkdir(parents=True)
    image, depth = dirs["inputs"] / "photo.png", dirs["inputs"] / "depth.npy"
    image.write_bytes((EXAMPLE / "image.png").read_bytes())
    from PIL import Image

    np.save(depth, np.asarray(Image.open(EXAMPLE / "depth.png"), dtype=np.float32) / 1000.0)
    before = {p: p.stat().st_mtime_ns for p in sandbox.rglob("*")}
    env = {**os.environ, "HOME": str(dirs["home"]), "XDG_CACHE_HOME": str(dirs["xdg-cache"]),
           "XDG_CONFIG_HOME": str(dirs["xdg-config"]), "XDG_DATA_HOME": str(dirs["xdg-data"]),
           "TMPDIR": str(dirs["tmp"]), "GEN3D_CACHE": str(dirs["cache"])}
    job = sandbox / "jobs" / "job"
    result = run_engine("generate", str(image), "--depth", str(depth), "--out", str(job), *FAST, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert assert_job_consistent(job) == list(protocol.STAGES)
    after = {p: p.stat().st_mtime_ns for p in sandbox.rglob("*")}
    allowed = (job, dirs["cache"], job.parent)
    strays = [p for p in after if p not in before and not any(p == a or a in p.parents for a in allowed)]
    assert not strays, strays
    assert all(after[p] == before[p] for p in before if p.is_file())  # inputs untouched
