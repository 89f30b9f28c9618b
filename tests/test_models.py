"""engine.models.resolve_source: local paths, tiny builds, Hugging Face ids, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import models
from engine.errors import MissingModelError
from engine.profiles import BackendContext, Profile


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _ctx(tmp_path: Path, sources: dict[str, tuple[str, ...]], **kwargs) -> BackendContext:
    profile = Profile(name="test", description="", backends={}, models=sources)
    notes: list[str] = []
    return BackendContext(profile=profile, cache_dir=str(tmp_path / "cache"), note=notes.append, warn=notes.append, **kwargs)


def test_local_path_is_used(tmp_path):
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"x")
    ctx = _ctx(tmp_path, {"m": ("no-such-org/no-such-model", str(weights))}, allow_download=False)
    assert models.resolve_source(ctx, "m") == weights.resolve()


def test_tiny_is_built_once_and_reused(tmp_path):
    calls = []

    def builder(folder: Path) -> None:
        calls.append(folder)
        (folder / "model.bin").write_bytes(b"tiny")

    models.register_tiny("test-tiny", builder)
    ctx = _ctx(tmp_path, {"m": ("tiny:test-tiny",)})
    first = models.resolve_source(ctx, "m")
    second = models.resolve_source(ctx, "m")
    assert first == second == tmp_path / "cache" / "tiny" / "test-tiny"
    assert (first / "model.bin").read_bytes() == b"tiny"
    assert len(calls) == 1


def test_failed_tiny_build_leaves_nothing(tmp_path):
    def broken(folder: Path) -> None:
        (folder / "half.bin").write_bytes(b"x")
        raise RuntimeError("boom")

    models.register_tiny("test-broken", broken)
    ctx = _ctx(tmp_path, {"m": ("tiny:test-broken",)})
    with pytest.raises(MissingModelError, match="boom"):
        models.resolve_source(ctx, "m")
    assert not (tmp_path / "cache" / "tiny" / "test-broken").exists()


def test_override_replaces_profile_sources(tmp_path):
    weights = tmp_path / "mine"
    weights.mkdir()
    ctx = _ctx(tmp_path, {"m": ("tiny:nothing",)}, model_overrides={"m": str(weights)})
    assert models.resolve_source(ctx, "m") == weights.resolve()


def test_missing_model_names_everything_tried(tmp_path):
    ctx = _ctx(tmp_path, {"moge": ("Ruicheng/moge-2-vitl-normal", "/nowhere/model.pt", "tiny:not-a-model")}, allow_download=False)
    with pytest.raises(MissingModelError) as info:
        models.resolve_source(ctx, "moge")
    message = str(info.value)
    assert "'moge'" in message
    for source in ("Ruicheng/moge-2-vitl-normal", "/nowhere/model.pt", "tiny:not-a-model"):
        assert source in message
    assert "--model moge=" in message and "downloads are off" in message
    assert info.value.tried == ("Ruicheng/moge-2-vitl-normal", "/nowhere/model.pt", "tiny:not-a-model")


def test_no_sources_is_a_missing_model(tmp_path):
    with pytest.raises(MissingModelError, match="names no source"):
        models.resolve_source(_ctx(tmp_path, {}), "sam")


def test_hub_cache_is_used_offline(tmp_path):
    # A snapshot laid out exactly as huggingface_hub stores it: found with downloads off.
    repo = tmp_path / "cache" / "huggingface" / "models--someone--tiny-thing"
    snapshot = repo / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    ctx = _ctx(tmp_path, {"m": ("someone/tiny-thing",)}, allow_download=False)
    assert models.resolve_source(ctx, "m") == snapshot
