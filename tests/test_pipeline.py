"""The pipeline's backend pool: one copy of each model, shared across slots and runs."""

import io

import pytest

from conftest import EXAMPLE
from engine import pipeline, protocol
from engine.job import JobFolder


def make_run(tmp_path, profile, pool=None, **settings):
    job = JobFolder(tmp_path / profile)
    job.write({"profile": profile, "image": job.import_file(EXAMPLE / "image.png", "source_image.png"), "settings": settings})
    return pipeline.make_run(job.root, protocol.EventWriter(io.StringIO()), device="cpu", memory="resident", pool=pool)


def test_slots_with_the_same_backend_share_one_instance(tmp_path):
    run = make_run(tmp_path, "offline")
    assert run.backend("background_inpaint") is run.backend("expansion_inpaint")
    assert list(run.pool.backends) == ["inpaint:opencv"]


def test_a_pool_outlives_runs_and_changed_options_replace_the_model(tmp_path):
    pool = pipeline.BackendPool()
    first = make_run(tmp_path, "tiny", pool, inpaint_steps=2)
    inpainter = first.backend("expansion_inpaint")
    second = make_run(tmp_path / "again", "tiny", pool, inpaint_steps=2)
    assert second.backend("expansion_inpaint") is inpainter  # no second load for the next request
    assert pool.run is second  # the backends' warnings now reach the second run's client
    third = make_run(tmp_path / "other", "tiny", pool, inpaint_steps=3)
    replacement = third.backend("expansion_inpaint")
    assert replacement is not inpainter and inpainter.pipe is None  # the old copy was released
    assert list(pool.backends) == ["inpaint:sd-inpaint"]


def test_low_vram_releases_between_stages(tmp_path):
    run = make_run(tmp_path, "offline")
    run.backend("caption")
    run.release_backends()
    assert run.pool.backends == {}


def test_a_profile_without_a_backend_says_so(tmp_path):
    from engine.errors import BadInputError

    with pytest.raises(BadInputError, match="no text to image backend"):
        make_run(tmp_path, "offline").backend("text_to_image")


def test_a_cancel_during_a_model_load_stops_at_once_and_the_late_model_is_released(tmp_path, monkeypatch):
    """A load is one long call (an import, the weights): Run.backend waits for it on a worker
    thread and a cancel takes effect while it still runs; the model it ends with is released."""
    import threading

    from engine import inpaint
    from engine.errors import Cancelled

    entered, go, returned, released = (threading.Event() for _ in range(4))

    class Model:
        def release(self):
            released.set()

    def slow_create(name, ctx, **options):
        entered.set()
        go.wait(10)  # before the fix the load held the stage this long
        returned.set()
        return Model()

    monkeypatch.setattr(inpaint, "create", slow_create)
    run = make_run(tmp_path, "offline")
    run.stage = "inpaint"
    run.should_stop = entered.is_set  # the cancel arrives once the load has begun
    with pytest.raises(Cancelled, match="inpaint"):
        run.backend("background_inpaint")
    assert not returned.is_set()  # stopped while the load still ran
    assert run.pool.backends == {}
    go.set()
    assert released.wait(5)  # the late model is freed, not kept
