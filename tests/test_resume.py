"""Resume never returns a stale world: a stage is redone exactly when something it declares it
reads changed (input bytes, presence of inputs, settings, request, earlier artifacts)."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import EXAMPLE
from engine import pipeline, protocol
from engine.__main__ import build_parser, prepare_job

STAGES = list(protocol.STAGES)
FAST = ["--device", "cpu", "--resolution", "48", "--steps", "1", "--iterations", "3", "--set", "reprojections=0"]
TINY = ["--profile", "tiny", "--set", "inpaint_steps=1", "--set", "sam_points_per_side=2"]


def generate(job, *arguments) -> dict[str, bool]:
    """One in-process generate (as the CLI runs it); stage -> whether it was reused."""
    prepare_job(build_parser().parse_args(["generate", *arguments, "--out", str(job), *FAST]))
    stream = io.StringIO()
    pipeline.run_job(pipeline.make_run(job, protocol.EventWriter(stream), device="cpu"))
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    return {e["stage"]: e["cached"] for e in events if e["type"] == "stage_done"}


@pytest.fixture
def inputs(tmp_path):
    """Copies of the example's image and depth the test may retouch, under fixed names."""
    for name in ("image.png", "depth.png"):
        shutil.copyfile(EXAMPLE / name, tmp_path / name)
    return tmp_path / "image.png", tmp_path / "depth.png"


def redone(cached: dict[str, bool]) -> list[str]:
    return [stage for stage in STAGES if not cached[stage]]


def test_unchanged_inputs_resume_with_nothing_redone(tmp_path, inputs, one_torch_thread):
    image, depth = inputs
    assert redone(generate(tmp_path / "job", str(image), "--depth", str(depth))) == STAGES
    assert redone(generate(tmp_path / "job", str(image), "--depth", str(depth))) == []


def test_changed_depth_content_reruns_from_the_depth(tmp_path, inputs, one_torch_thread):
    image, depth = inputs
    job = tmp_path / "job"
    generate(job, str(image), "--depth", str(depth))
    before = np.load(job / "depth" / "depth.npz")["depth"]
    millimetres = np.asarray(Image.open(depth)).astype(np.uint32)
    Image.fromarray(np.minimum(millimetres * 3, 65535).astype(np.uint16)).save(depth)  # same name, 3x the values
    assert redone(generate(job, str(image), "--depth", str(depth))) == STAGES
    after = np.load(job / "depth" / "depth.npz")["depth"]
    near = (before > 0) & (before < 20.0)  # far from the 16-bit clip
    np.testing.assert_allclose(after[near], 3 * before[near], rtol=0.02)


def test_a_retouched_image_with_the_same_name_reruns(tmp_path, inputs, one_torch_thread):
    image, depth = inputs
    job = tmp_path / "job"
    generate(job, str(image), "--depth", str(depth))
    old = np.asarray(Image.open(job / "inputs" / "image.png"))
    retouched = 255 - np.asarray(Image.open(image).convert("RGB"))
    Image.fromarray(retouched).save(image)
    assert redone(generate(job, str(image), "--depth", str(depth))) == STAGES
    new = np.asarray(Image.open(job / "inputs" / "image.png")).astype(int)
    assert np.abs(new - (255 - old.astype(int))).max() <= 1  # the negative, up to resampling's rounding


def test_a_changed_prompt_redoes_only_the_stages_that_read_it(tmp_path, inputs, one_torch_thread):
    image, depth = inputs
    job = tmp_path / "job"
    generate(job, str(image), "--depth", str(depth), "--prompt", "a courtyard")
    # inputs reads the prompt (text input); its image is the same bytes, so depth and segment are reused.
    cached = generate(job, str(image), "--depth", str(depth), "--prompt", "a garden")
    assert redone(cached)[:5] == ["inputs", "inpaint", "sky", "expand", "splat"]  # export: only if the Gaussians differ
    assert json.loads((job / "expand" / "views.json").read_text())["prompt"] == "a garden"


def test_adding_a_depth_to_an_rgb_only_job_uses_it(tmp_path, inputs, one_torch_thread):
    image, depth = inputs
    job = tmp_path / "job"
    generate(job, str(image), *TINY)  # MoGe-2 (tiny) estimates the depth
    assert redone(generate(job, str(image), *TINY, "--depth", str(depth))) == STAGES
    given = np.asarray(Image.open(EXAMPLE / "depth.png")).astype(np.float32) / 1000.0
    used = np.load(job / "depth" / "depth.npz")["depth"]
    assert used.shape == (36, 48)
    assert abs(float(np.median(used[used > 0])) - float(np.median(given[given > 0]))) < 0.1
    # And taking the depth away again: the old RGB-D depth is not read as if it were still given.
    assert redone(generate(job, str(image), *TINY))[:2] == ["inputs", "depth"]
    assert not (job / "inputs" / "depth.npz").exists() or "depth.npz" not in json.loads(
        (job / "inputs" / "done.json").read_text())["outputs"]


def test_fresh_redoes_every_stage(tmp_path, inputs, one_torch_thread):
    image, depth = inputs
    generate(tmp_path / "job", str(image), "--depth", str(depth))
    (tmp_path / "job" / "expand" / "view_09.png").write_bytes(b"left by an older run")
    assert redone(generate(tmp_path / "job", str(image), "--depth", str(depth), "--fresh")) == STAGES
    assert not (tmp_path / "job" / "expand" / "view_09.png").exists()


def test_a_stage_cannot_read_what_it_did_not_declare(tmp_path, inputs, monkeypatch):
    image, depth = inputs

    def peeking(run, out):
        run.read("layers")  # the segment stage's output: depth does not declare it

    monkeypatch.setitem(pipeline.STAGE_FUNCTIONS, "depth", peeking)
    with pytest.raises(pipeline.UndeclaredRead, match="'depth' read artifact 'layers'"):
        generate(tmp_path / "job", str(image), "--depth", str(depth))

    def unlisted_setting(run, out):
        return run.settings.iterations  # a 3DGS setting: not in depth's key

    monkeypatch.setitem(pipeline.STAGE_FUNCTIONS, "depth", unlisted_setting)
    with pytest.raises(pipeline.UndeclaredRead, match="setting 'iterations'"):
        generate(tmp_path / "job", str(image), "--depth", str(depth))


def test_every_declared_read_exists_and_comes_from_an_earlier_stage():
    order = {stage: index for index, stage in enumerate(STAGES)}
    for stage, spec in pipeline.STAGE_SPECS.items():
        for name in spec.reads:
            assert order[pipeline.ARTIFACTS[name].stage] < order[stage], (stage, name)
        for name in spec.produces:
            assert pipeline.ARTIFACTS[name].stage == stage, (stage, name)


def test_a_new_engine_version_redoes_every_stage_and_an_unchanged_one_resumes(tmp_path, inputs, monkeypatch, one_torch_thread):
    image, depth = inputs
    job = tmp_path / "job"
    generate(job, str(image), "--depth", str(depth))
    assert redone(generate(job, str(image), "--depth", str(depth))) == []
    monkeypatch.setattr(pipeline, "__version__", pipeline.__version__ + ".next")  # a new release
    assert redone(generate(job, str(image), "--depth", str(depth))) == STAGES


def test_a_stage_whose_code_version_changed_is_redone_and_the_stages_before_resume(tmp_path, inputs, monkeypatch, one_torch_thread):
    import dataclasses

    image, depth = inputs
    job = tmp_path / "job"
    generate(job, str(image), "--depth", str(depth))
    specs = dict(pipeline.STAGE_SPECS)
    specs["expand"] = dataclasses.replace(specs["expand"], version=specs["expand"].version + 1)
    monkeypatch.setattr(pipeline, "STAGE_SPECS", specs)
    cached = generate(job, str(image), "--depth", str(depth))
    assert all(cached[stage] for stage in STAGES[:STAGES.index("expand")])
    assert not cached["expand"]  # and what reads its output is redone only if that output changed
