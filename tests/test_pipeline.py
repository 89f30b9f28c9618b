"""The pipeline's backend pool: one copy of each model, shared across slots and runs."""

import io
import time

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


def test_prefetch_starts_every_later_stage_model_on_threads_once(tmp_path, monkeypatch):
    """A resident run's models load side by side from its first stage: each slot's backend is
    created once, on a loader thread, and the stage that asks for it gets that same object."""
    import threading

    from engine import depth, inpaint, prompting, segment

    created = []

    def recording(module):
        original = module.create

        def create(name, ctx, **options):
            created.append((module.__name__, name, threading.current_thread().name))
            return original(name, ctx, **options)

        monkeypatch.setattr(module, "create", create)

    for module in (depth, inpaint, prompting, segment):
        recording(module)
    run = make_run(tmp_path, "offline")
    entries = run.prefetch_backends(protocol.STAGES)
    # The image job has no prompt: its caption loads, text to image does not; the RGB-D geometry is
    # this run's own depth (never pooled); the sky's inpainter is the expansion's.
    assert entries == ["segment:depth-edges", "prompting:colour-stats", "inpaint:opencv", "depth:completion"]
    run.stage = "inpaint"
    caption = run.backend("caption")
    run.stage = "expand"
    assert run.backend("expansion_inpaint") is run.backend("expansion_inpaint")
    assert run.prefetch_backends(protocol.STAGES) == entries  # already there: nothing loads again
    run.stage = "inpaint"
    assert run.backend("caption") is caption
    for entry in entries:  # the loads run on their threads: the record is complete once each is done
        run._wait_for(entry)
    assert sorted(c[:2] for c in created) == sorted([("engine.prompting", "colour-stats"), ("engine.segment", "depth-edges"),
                                                     ("engine.inpaint", "opencv"), ("engine.depth", "completion")])
    assert all(thread.startswith("backend-load-") for _, _, thread in created)


def test_a_prompt_job_prefetches_no_caption(tmp_path):
    job = JobFolder(tmp_path / "prompt")
    job.write({"profile": "offline", "image": job.import_file(EXAMPLE / "image.png", "source_image.png"), "prompt": "a courtyard"})
    run = pipeline.make_run(job.root, protocol.EventWriter(io.StringIO()), device="cpu", memory="resident")
    assert "prompting:colour-stats" not in run.prefetch_backends(protocol.STAGES)


def test_a_failed_prefetch_fails_the_stage_that_needs_it_and_is_tried_again(tmp_path, monkeypatch):
    from engine import segment
    from engine.errors import MissingModelError

    attempts = []

    def missing(name, ctx, **options):
        attempts.append(name)
        raise MissingModelError("sam", ["tiny:nothing"], hint="put it there")

    monkeypatch.setattr(segment, "create", missing)
    run = make_run(tmp_path, "offline")
    run.prefetch_backends(["segment"])
    run.stage = "segment"
    with pytest.raises(MissingModelError, match="sam"):  # raised where the model is used, not at the start
        run.backend("layers")
    assert run.pool.backends == {}
    with pytest.raises(MissingModelError):
        run.backend("layers")
    assert len(attempts) == 2


def test_prefetch_is_on_for_resident_cuda_runs_only(tmp_path):
    job = JobFolder(tmp_path / "job")
    job.write({"profile": "offline", "image": job.import_file(EXAMPLE / "image.png", "source_image.png")})
    writer = protocol.EventWriter(io.StringIO())
    assert pipeline.make_run(job.root, writer, device="cuda", memory="resident").prefetch
    assert not pipeline.make_run(job.root, writer, device="cuda", memory="low-vram").prefetch
    assert not pipeline.make_run(job.root, writer, device="cpu", memory="resident").prefetch


def test_a_prefetched_resident_run_makes_the_same_world_as_a_low_vram_one(tmp_path, one_torch_thread):
    """The tiny profile's real model classes, loaded side by side while the first stages run."""
    from engine.__main__ import build_parser, prepare_job

    worlds = {}
    for label, memory, prefetch in (("low-vram", "low-vram", False), ("prefetched", "resident", True)):
        job = tmp_path / label
        prepare_job(build_parser().parse_args(
            ["generate", str(EXAMPLE / "image.png"), "--out", str(job), "--profile", "tiny", "--device", "cpu",
             "--resolution", "48", "--steps", "1", "--iterations", "3", "--set", "reprojections=0",
             "--set", "inpaint_steps=1", "--set", "sam_points_per_side=2"]))
        run = pipeline.make_run(job, protocol.EventWriter(io.StringIO()), device="cpu", memory=memory, prefetch=prefetch)
        pipeline.run_job(run)
        worlds[label] = [(job / name).read_bytes() for name in ("points.ply", "gaussians.ply")]
    assert worlds["prefetched"] == worlds["low-vram"]


def test_backend_loads_started_together_run_one_after_another():
    """Models built at once on two threads corrupt each other (accelerate's meta patch is process-wide):
    a second load waits until the first has finished."""
    import threading

    from engine.pipeline import _load_on_thread

    release, events = threading.Event(), []

    def slow():
        events.append("first started")
        release.wait(10)
        events.append("first done")
        return "first"

    def quick():
        events.append("second started")
        return "second"

    first = _load_on_thread(slow, "geometry", "slow")
    while not events:
        time.sleep(0.01)
    second = _load_on_thread(quick, "layers", "quick")
    time.sleep(0.3)
    assert events == ["first started"] and not second.done()
    release.set()
    assert (first.result(10), second.result(10)) == ("first", "second")
    assert events == ["first started", "first done", "second started"]
