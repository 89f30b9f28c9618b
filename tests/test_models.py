"""engine.models: local paths, tiny builds, Hugging Face ids, the weights files chosen from the
published listings, checked resumable downloads, clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine import depth, inpaint, models, prompting, tiny_diffusion
from engine.errors import MissingModelError
from engine.profiles import BackendContext, Profile, get_profile


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


def test_tiny_built_by_older_code_is_rebuilt(tmp_path):
    calls = []
    models.register_tiny("test-stale", lambda folder: calls.append((folder / "model.bin").write_bytes(b"new")))
    ctx = _ctx(tmp_path, {"m": ("tiny:test-stale",)})
    folder = models.resolve_source(ctx, "m")
    # What an older layout left in a shared cache (~/.cache/gen3d): its marker, other files.
    (folder / ".complete").write_text("built in code with random weights\n")
    (folder / "model.bin").write_bytes(b"old")
    assert (models.resolve_source(ctx, "m") / "model.bin").read_bytes() == b"new" and len(calls) == 2


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


# ---------------------------------------------------------------------------------------------
# Weights chosen from the published listings (tests/data/model_listings/, read 2026-12-01)

LISTINGS = Path(__file__).parent / "data" / "model_listings"


def _listing(repo: str) -> dict:
    return json.loads((LISTINGS / (repo.replace("/", "__") + ".json")).read_text())


def _files(repo: str, *, with_pr: bool = False) -> list[str]:
    return [f["path"] for f in _listing(repo)["files"] if with_pr or not f.get("pr_only")]


def test_every_published_source_has_a_dated_listing():
    for model, sources in get_profile("full").models.items():
        for source in sources:
            if source.startswith("https://"):
                record = _listing("facebookresearch/segment-anything")
                assert source in [f["path"] for f in record["files"]], source
            else:
                record = _listing(source)
                assert record["repo"] == source
            assert record["read_on"] == "2026-12-01"
            assert record["files"] or "no file listing" in record["notes"], source  # said so, never invented


def test_sd_inpainting_reads_its_only_safetensors_the_fp16_variant():
    chosen = models.select_weights(_files("stable-diffusion-v1-5/stable-diffusion-inpainting"), inpaint.SD_LAYOUT)
    assert {k: (w.path, w.variant, w.safetensors) for k, w in chosen.items()} == {
        "unet": ("unet/diffusion_pytorch_model.fp16.safetensors", "fp16", True),
        "vae": ("vae/diffusion_pytorch_model.fp16.safetensors", "fp16", True),
        "text_encoder": ("text_encoder/model.fp16.safetensors", "fp16", True),
    }
    assert chosen["unet"].kwargs() == {"subfolder": "unet", "variant": "fp16", "use_safetensors": True}


def test_full_precision_safetensors_first_and_never_a_pickle_beside_a_safetensors():
    sd15 = _files("stable-diffusion-v1-5/stable-diffusion-v1-5")  # unet/ has every variant
    assert models.choose_weights(sd15, "unet", models.DIFFUSERS).path == "unet/diffusion_pytorch_model.safetensors"
    controlnet = models.choose_weights(_files("lllyasviel/control_v11f1p_sd15_depth"), "", models.DIFFUSERS)
    assert (controlnet.path, controlnet.variant) == ("diffusion_pytorch_model.fp16.safetensors", "fp16")
    metric = models.choose_weights(_files("depth-anything/Depth-Anything-V2-Metric-Indoor-Large-hf"), "", models.TRANSFORMERS)
    assert (metric.path, metric.safetensors) == ("model.safetensors", True)
    # CLIP: main publishes the pickle only (read by torch.load(weights_only=True)); with the
    # pull request's model.safetensors that is taken instead.
    main = models.choose_weights(_files("openai/clip-vit-base-patch32"), "", models.TRANSFORMERS)
    assert (main.path, main.safetensors) == ("pytorch_model.bin", False)
    assert models.choose_weights(_files("openai/clip-vit-base-patch32", with_pr=True), "", models.TRANSFORMERS).path == "model.safetensors"
    assert models.select_weights(_files("Ruicheng/moge-2-vitl-normal"), depth.MOGE_LAYOUT) == {}


def test_a_missing_file_is_named_with_its_repository():
    files = [f for f in _files("stable-diffusion-v1-5/stable-diffusion-inpainting") if not f.startswith("vae/diffusion")]
    with pytest.raises(models.MissingFiles, match=r"stable-diffusion-inpainting has no vae/diffusion_pytorch_model\.safetensors"):
        models.select_weights(files, inpaint.SD_LAYOUT, "stable-diffusion-inpainting")


def _weights_files(folder: Path) -> set[str]:
    return {f for f in models.folder_files(folder) if f.endswith((".safetensors", ".bin", ".pt", ".pth"))}


@pytest.mark.parametrize(
    "model, repo, layout",
    [
        ("sd-inpaint", "stable-diffusion-v1-5/stable-diffusion-inpainting", inpaint.SD_LAYOUT),
        ("controlnet-depth", "lllyasviel/control_v11f1p_sd15_depth", inpaint.CONTROLNET_LAYOUT),
        ("clip", "openai/clip-vit-base-patch32", prompting.CLIP_LAYOUT),
    ],
    ids=["sd-inpaint", "controlnet-depth", "clip"],
)
def test_tiny_models_are_saved_under_the_published_names(tmp_path, model, repo, layout):
    ctx = _ctx(tmp_path, {model: (f"tiny:{model}",)})
    tiny = models.resolve_weights(ctx, model, layout)
    published = models.select_weights(_files(repo), layout)
    assert tiny.weights == published  # same files, same variant, same reader
    assert _weights_files(tiny.path) == {w.path for w in published.values()}
    assert set(models.folder_files(tiny.path)) - {".complete"} <= set(_files(repo)) | {"tokenizer/tokenizer_config.json"}


def _hub_snapshot(cache: Path, repo: str, content: Path) -> Path:
    """``content`` laid out as huggingface_hub caches ``repo`` (refs/main -> snapshots/<sha>)."""
    folder = cache / "huggingface" / ("models--" + repo.replace("/", "--"))
    snapshot = folder / "snapshots" / ("b" * 40)
    shutil.copytree(content, snapshot, ignore=shutil.ignore_patterns(".complete"))
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("b" * 40)
    return snapshot


def test_published_inpainting_layout_loads_from_the_hub_cache_offline(tmp_path):
    repo = "stable-diffusion-v1-5/stable-diffusion-inpainting"
    tiny = models.build_tiny(_ctx(tmp_path, {}), "sd-inpaint")
    _hub_snapshot(tmp_path / "cache", repo, tiny)
    ctx = _ctx(tmp_path, {"sd-inpaint": (repo,)}, allow_download=False)
    pipe = inpaint.sd_inpaint_pipeline(ctx)
    assert pipe.unet.config.in_channels == 9 and str(pipe.unet.dtype) == "torch.float32"  # fp16 file, fp32 on the CPU


def test_cached_snapshot_without_a_weights_file_is_a_missing_model_naming_it(tmp_path):
    repo = "stable-diffusion-v1-5/stable-diffusion-inpainting"
    tiny = models.build_tiny(_ctx(tmp_path, {}), "sd-inpaint")
    snapshot = _hub_snapshot(tmp_path / "cache", repo, tiny)
    (snapshot / "unet" / "diffusion_pytorch_model.fp16.safetensors").unlink()
    ctx = _ctx(tmp_path, {"sd-inpaint": (repo,)}, allow_download=False)
    with pytest.raises(MissingModelError) as info:  # not the OSError diffusers raises deep inside
        inpaint.create("sd-inpaint", ctx, steps=1)
    message = str(info.value)
    assert repo in message and "unet/diffusion_pytorch_model.fp16.safetensors" in message


def test_clip_pickle_is_read_without_running_pickled_code(tmp_path):
    import torch

    marker = tmp_path / "pickled-code-ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    folder = shutil.copytree(models.build_tiny(_ctx(tmp_path, {}), "clip"), tmp_path / "clip")
    good = prompting.create("clip", _ctx(tmp_path, {"clip": (str(folder),)}), categories=("kitchen", "forest"))
    assert set(good.scores(np.zeros((32, 32, 3), np.float32))) == {"kitchen", "forest"}  # the .bin path loads
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    torch.save({**state, "payload": Payload()}, folder / "pytorch_model.bin")
    with pytest.raises(Exception, match="(?i)weights.only|unpickl|global"):
        prompting.create("clip", _ctx(tmp_path, {"clip": (str(folder),)}))
    assert not marker.exists()


def test_every_prompt_the_engine_writes_fits_clips_77_tokens(tmp_path):
    from transformers import CLIPTokenizer

    folder = tmp_path / "tokenizer"
    tiny_diffusion.save_tokenizer(folder)
    tokenizer = CLIPTokenizer.from_pretrained(str(folder))  # CLIP's own tokenizer class, tiny vocabulary
    longest = sorted(prompting.COLOUR_NAMES, key=len)[-3:]
    for category in prompting.SCENE_CATEGORIES:
        prompt = prompting.background_prompt(category, longest)
        ids = tokenizer(prompt).input_ids
        assert len(ids) <= tiny_diffusion.MAX_TOKENS, (prompt, len(ids))
        assert tokenizer.convert_ids_to_tokens(ids)[-3:-1] == ["8</w>", "k</w>"]  # "8K" and the end token kept
    for word in tiny_diffusion.prompt_words():
        assert len(tokenizer.tokenize(word)) == 1, word  # one token per word, as in CLIP's vocabulary


# ---------------------------------------------------------------------------------------------
# Single-file downloads: resumable, checked, atomic (a local HTTP server)


def _tiny_sam_bytes() -> bytes:
    import io

    import torch

    from engine import segment

    buffer = io.BytesIO()
    torch.manual_seed(0)
    torch.save(segment.build_sam(segment.TINY_SAM_ARCH).state_dict(), buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def sam_server():
    """Serves one file at /sam_test.pth with Range support; ``cut_after`` ends a response early,
    ``honour_range=False`` answers every request with the whole file."""
    import http.server
    import threading

    body = _tiny_sam_bytes()
    state = {"cut_after": None, "honour_range": True, "ranges": []}

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            start = 0
            header = self.headers.get("Range")
            state["ranges"].append(header)
            if header and state["honour_range"]:
                start = int(header.split("=")[1].split("-")[0])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            chunk = body[start:]
            if state["cut_after"] is not None:
                chunk = chunk[: state["cut_after"]]
            self.wfile.write(chunk)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/sam_test.pth", body, state
    server.shutdown()


def _reset(state, **changes):
    state.update({"cut_after": None, "honour_range": True, "ranges": [], **changes})


def test_interrupted_download_resumes_with_a_range_request(tmp_path, sam_server):
    import hashlib

    from engine import segment

    url, body, state = sam_server
    target = tmp_path / "sam_test.pth"
    sha = hashlib.sha256(body).hexdigest()
    _reset(state, cut_after=len(body) // 3)
    with pytest.raises(Exception):
        models.download(url, target, size=len(body), sha256=sha)
    partial = target.with_name("sam_test.pth.part")
    assert not target.exists() and 0 < partial.stat().st_size < len(body)  # kept for the next run
    kept = partial.stat().st_size
    _reset(state)
    seen = []
    assert models.download(url, target, size=len(body), sha256=sha, progress=lambda d, t: seen.append((d, t))) == target
    assert state["ranges"] == [f"bytes={kept}-"]
    assert target.read_bytes() == body and not partial.exists()
    assert seen[0][0] > kept and seen[-1] == (len(body), len(body)) and seen == sorted(seen)
    assert segment.load_sam(target).image_encoder.img_size == segment.TINY_SAM_ARCH["img_size"]


def test_download_restarts_when_the_server_ignores_range(tmp_path, sam_server):
    url, body, state = sam_server
    target = tmp_path / "sam_test.pth"
    target.with_name("sam_test.pth.part").write_bytes(b"stale bytes from another file")
    _reset(state, honour_range=False)
    models.download(url, target, size=len(body))
    assert target.read_bytes() == body


@pytest.mark.parametrize("wrong", ["size", "sha256"])
def test_download_with_the_wrong_size_or_hash_is_refused_and_discarded(tmp_path, sam_server, wrong):
    import hashlib

    url, body, state = sam_server
    _reset(state)
    target = tmp_path / "sam_test.pth"
    size, sha = len(body), hashlib.sha256(body).hexdigest()
    kwargs = {"size": size - 1, "sha256": sha} if wrong == "size" else {"size": size, "sha256": "0" * 64}
    with pytest.raises(models.DownloadError, match="discarded"):
        models.download(url, target, **kwargs)
    assert not target.exists() and not target.with_name("sam_test.pth.part").exists()


def test_sam_url_source_checks_the_published_size_and_reports_progress(tmp_path, sam_server, monkeypatch):
    import hashlib

    url, body, state = sam_server
    _reset(state)
    monkeypatch.setitem(models.KNOWN_FILES, "sam_test.pth", (len(body), hashlib.sha256(body).hexdigest()))
    notes: list[str] = []
    ctx = _ctx(tmp_path, {"sam": (url,)})
    ctx.note = notes.append
    path = models.resolve_source(ctx, "sam")
    assert path.read_bytes() == body and any(n.endswith("(100%)") for n in notes)
    # A corrupt copy on the server is refused with a clear missing-model error, nothing kept.
    monkeypatch.setitem(models.KNOWN_FILES, "sam_test.pth", (len(body), "f" * 64))
    path.unlink()
    with pytest.raises(MissingModelError, match="SHA-256"):
        models.resolve_source(ctx, "sam")
    assert not path.exists()


def test_hub_download_fetches_only_the_chosen_weights_of_the_published_listing(tmp_path, monkeypatch):
    import fnmatch

    import huggingface_hub

    repo = "stable-diffusion-v1-5/stable-diffusion-inpainting"
    listing = _files(repo)
    asked: list[list[str]] = []

    def snapshot_download(repo_id, *, cache_dir=None, allow_patterns=None, local_files_only=False, **_):
        if local_files_only:
            raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")
        asked.append(list(allow_patterns))
        folder = tmp_path / "snapshot"
        for name in listing:  # what the Hub would send for these patterns (empty stand-ins)
            if any(fnmatch.fnmatch(name, pattern) for pattern in allow_patterns):
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                (folder / name).touch()
        return str(folder)

    # The Hub client answers from the recorded listing; everything after it is the engine's own code.
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", lambda self, repo_id, **_: listing)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    resolved = models.resolve_weights(_ctx(tmp_path, {"sd-inpaint": (repo,)}), "sd-inpaint", inpaint.SD_LAYOUT)
    fetched = {name for name in models.folder_files(resolved.path)}
    weights = {name for name in fetched if name.endswith((".bin", ".ckpt", ".safetensors"))}
    assert weights == {
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "vae/diffusion_pytorch_model.fp16.safetensors",
        "text_encoder/model.fp16.safetensors",
    }  # 2.1 GB, not the 15.2 GB repository; no pickle, no .ckpt, no safety checker
    assert len(asked) == 1 and resolved.weights["unet"].variant == "fp16"
