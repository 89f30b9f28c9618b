"""The job folder: atomic outputs, stage records, resume keys."""

import json

import numpy as np
import pytest

from engine.job import JobFolder, atomic_path, read_npz, settings_key, write_json, write_npz
from engine.settings import Settings
from engine.errors import BadInputError


def test_atomic_path_leaves_nothing_when_the_write_fails(tmp_path):
    target = tmp_path / "result.ply"
    with pytest.raises(OSError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half a file")
            raise OSError("No space left on device")  # a full disk mid-write
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "a.json"
    write_json(target, {"old": True})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("{broken")
            raise RuntimeError("crash")
    assert json.loads(target.read_text()) == {"old": True}


def test_npz_round_trip(tmp_path):
    write_npz(tmp_path / "x.npz", depth=np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(read_npz(tmp_path / "x.npz")["depth"], np.arange(6).reshape(2, 3))


def test_stage_records_and_resume(tmp_path):
    job = JobFolder(tmp_path)
    out = job.begin("depth")
    (out / "depth.npz").write_bytes(b"x")
    assert not job.is_done("depth", "k1")  # no record until finish()
    job.finish("depth", "k1", ["depth.npz"], seconds=1.0)
    assert job.is_done("depth", "k1")
    assert not job.is_done("depth", "k2")  # another setting: redo
    (out / "depth.npz").unlink()
    assert not job.is_done("depth", "k1")  # an output went missing: redo
    job.begin("depth")
    assert job.done_record("depth") is None  # restarting drops the old record first


def test_job_paths_stay_inside(tmp_path):
    from engine.protocol import ProtocolError

    job = JobFolder(tmp_path / "job")
    with pytest.raises(ProtocolError):
        job.path("../outside.png")
    # A symbolic link inside the job folder may not lead out of it either.
    (tmp_path / "job" / "inputs").mkdir(parents=True)
    (tmp_path / "secret.png").write_bytes(b"x")
    (tmp_path / "job" / "inputs" / "image.png").symlink_to(tmp_path / "secret.png")
    with pytest.raises(ProtocolError, match="outside the job folder"):
        job.path("inputs/image.png")
    (tmp_path / "job" / "inputs" / "ok.png").write_bytes(b"x")
    assert job.path("inputs/ok.png").read_bytes() == b"x"


@pytest.mark.parametrize(
    "settings, problem",
    [
        ({"iterations": -1}, "iterations"),
        ({"resolution": 0}, "resolution"),
        ({"steps": "4"}, "must be int"),
        ({"warp_speed": 9}, "unknown settings"),
    ],
)
def test_absurd_settings_are_refused(settings, problem):
    with pytest.raises(BadInputError, match=problem):
        Settings.from_dict(settings)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_files_get_the_users_umask(tmp_path, umask, mode):
    """Outputs are readable as the user's umask allows (tempfile.mkstemp alone made them 0600)."""
    import os

    before = os.umask(umask)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        write_npz(tmp_path / "b.npz", x=np.zeros(2))
    finally:
        os.umask(before)
    for name in ("a.json", "b.npz"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name


def test_content_digest_follows_what_a_file_holds(tmp_path):
    from engine.job import content_digest

    write_npz(tmp_path / "a.npz", depth=np.ones((2, 2), np.float32))
    first = content_digest(tmp_path / "a.npz")
    write_npz(tmp_path / "a.npz", depth=np.ones((2, 2), np.float32))  # rewritten: new zip timestamps
    assert content_digest(tmp_path / "a.npz") == first
    write_npz(tmp_path / "a.npz", depth=3 * np.ones((2, 2), np.float32))
    assert content_digest(tmp_path / "a.npz") != first
    assert content_digest(tmp_path / "missing.png") is None
