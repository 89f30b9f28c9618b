"""The job folder: atomic outputs, stage records, resume keys."""

import json

import numpy as np
import pytest

from engine.job import JobFolder, atomic_path, read_npz, settings_key, write_json, write_npz
from engine.settings import Settings, STAGE_FIELDS
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


def test_keys_chain_so_a_change_invalidates_later_stages():
    settings = Settings()
    changed = Settings(iterations=10)
    keys_a, keys_b, previous_a, previous_b = [], [], "", ""
    for stage, names in STAGE_FIELDS.items():
        previous_a = settings_key(settings.subset(names), previous_a)
        previous_b = settings_key(changed.subset(names), previous_b)
        keys_a.append(previous_a)
        keys_b.append(previous_b)
    first_changed = [a != b for a, b in zip(keys_a, keys_b)].index(True)
    assert list(STAGE_FIELDS)[first_changed] == "splat"
    assert all(a != b for a, b in zip(keys_a[first_changed:], keys_b[first_changed:]))


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
