"""Where a model's weights come from: one helper for every model slot.

``resolve_source(ctx, model)`` walks the candidate sources of ``model`` (``ctx.sources(model)``:
the user's override, else the profile's list) and returns the first one usable as a local path:

* a local file or folder  -> used as is;
* ``tiny:<name>``          -> a small model of the real class, built in code by the builder
  registered under ``<name>`` into ``<cache>/tiny/<name>`` on first use, then loaded back by
  the caller exactly as the real weights are (same ``from_pretrained`` / checkpoint path);
* ``random:<name>``        -> benchmarks only: the published full-size architecture with random
  weights, built by ``engine.random_models.BUILDERS[<name>]`` into ``<cache>/random/<name>``
  (GBs: for a GPU machine) and loaded back like ``tiny:`` models;
* ``https://...``          -> a single checkpoint file, kept in ``<cache>/url/``; downloaded
  only when ``ctx.allow_download``;
* anything else            -> a Hugging Face repo id: ``snapshot_download`` into
  ``<cache>/huggingface`` when downloads are allowed (reported as "fetching <id>" through
  ``ctx.note``), else only what is already in that cache or the user's own HF cache.

When nothing works it raises ``MissingModelError`` naming the model, every source tried (with
why it failed) and where to put a local copy.

Tiny builders live next to the code that loads them: each provider module listed in
``TINY_PROVIDERS`` has a ``BUILDERS`` dict ``{name: builder(folder: Path) -> None}`` whose
builder writes the real on-disk layout into an empty folder.  ``register_tiny`` adds one more.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Sequence

from .errors import MissingModelError

TinyBuilder = Callable[[Path], None]

# Modules whose ``BUILDERS`` dicts provide "tiny:<name>" models (imported on first need).
TINY_PROVIDERS = ("engine.depth", "engine.segment", "engine.tiny_diffusion")

_TINY: dict[str, TinyBuilder] = {}
_COMPLETE = ".complete"  # written last: a folder without it is a build that did not finish


def register_tiny(name: str, builder: TinyBuilder) -> None:
    """Make ``tiny:<name>`` buildable by ``builder(folder)``."""
    _TINY[name] = builder


def tiny_builder(name: str) -> TinyBuilder | None:
    if name not in _TINY:
        for module_name in TINY_PROVIDERS:
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue  # a provider whose own dependencies are absent cannot build anything
            for key, builder in getattr(module, "BUILDERS", {}).items():
                _TINY.setdefault(key, builder)
    return _TINY.get(name)


def cache_root(ctx) -> Path:
    if ctx.cache_dir:
        return Path(ctx.cache_dir)
    return Path(os.environ.get("GEN3D_CACHE", Path.home() / ".cache" / "gen3d"))


def _local_file(path: Path) -> Path:
    return path.expanduser().resolve()


def build_tiny(ctx, name: str) -> Path:
    """The folder of ``tiny:<name>``, built into the cache the first time."""
    return _build_once(ctx, "tiny", name, tiny_builder)


def random_builder(name: str) -> TinyBuilder | None:
    from .random_models import BUILDERS

    return BUILDERS.get(name)


def build_random(ctx, name: str) -> Path:
    """The folder of ``random:<name>``, built into the cache the first time."""
    return _build_once(ctx, "random", name, random_builder)


def _build_once(ctx, kind: str, name: str, find_builder: Callable[[str], TinyBuilder | None]) -> Path:
    folder = cache_root(ctx) / kind / name
    if (folder / _COMPLETE).exists():
        return folder
    builder = find_builder(name)
    if builder is None:
        raise KeyError(f"no {kind} model called {name!r}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the final folder and rename, so a crash never leaves a half-written model
    # that a later run would load.
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder.parent))
    try:
        builder(staging)
        (staging / _COMPLETE).write_text("built in code with random weights\n")
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if not (folder / _COMPLETE).exists():
            raise
    return folder


def _from_url(ctx, url: str) -> Path:
    name = Path(urllib.parse.urlparse(url).path).name or "checkpoint"
    target = cache_root(ctx) / "url" / name
    if target.exists():
        return target
    if not ctx.allow_download:
        raise FileNotFoundError(f"not in {target.parent} and downloads are off")
    ctx.note(f"fetching {url}")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
        shutil.copyfileobj(response, out, length=1 << 20)
    partial.rename(target)
    return target


def _from_hub(ctx, repo_id: str, allow_patterns: Sequence[str] | None) -> Path:
    from huggingface_hub import snapshot_download

    ours = cache_root(ctx) / "huggingface"
    patterns = list(allow_patterns) if allow_patterns else None
    # Already on disk (our cache, then the user's own HF cache): no network at all.
    for cache_dir in (ours, None):
        try:
            return Path(snapshot_download(repo_id, cache_dir=cache_dir, allow_patterns=patterns, local_files_only=True))
        except Exception:  # noqa: BLE001 - "not cached" comes as several exception types
            pass
    if not ctx.allow_download:
        raise FileNotFoundError("not in the Hugging Face cache and downloads are off")
    ctx.note(f"fetching {repo_id}")
    return Path(snapshot_download(repo_id, cache_dir=ours, allow_patterns=patterns))


def _is_local(source: str) -> bool:
    return source.startswith(("/", "./", "../", "~")) or os.path.isabs(source) or Path(source).expanduser().exists()


def resolve_source(ctx, model: str, *, allow_patterns: Sequence[str] | None = None) -> Path:
    """Local path (file or folder) of the first usable source of ``model``.

    ``allow_patterns`` limits what is fetched from a Hugging Face repo (e.g. ``["model.pt"]``).
    Raises ``MissingModelError`` when no source works.
    """
    sources = ctx.sources(model)
    tried: list[str] = []
    reasons: list[str] = []
    for source in sources:
        tried.append(source)
        try:
            if source.startswith("tiny:"):
                return build_tiny(ctx, source[len("tiny:"):])
            if source.startswith("random:"):
                return build_random(ctx, source[len("random:"):])
            if source.startswith(("http://", "https://")):
                return _from_url(ctx, source)
            if _is_local(source):
                path = _local_file(Path(source))
                if path.exists():
                    return path
                raise FileNotFoundError("no such file or folder")
            return _from_hub(ctx, source, allow_patterns)
        except KeyError as exc:
            reasons.append(str(exc.args[0]) if exc.args else "unknown")
        except Exception as exc:  # noqa: BLE001 - every failure is reported with its source
            reasons.append(f"{type(exc).__name__}: {exc}".splitlines()[0][:200])
    raise MissingModelError(
        model,
        tried,
        reasons=reasons,
        hint=(
            f"Download the weights on a machine with internet access and point Gen3D at them with "
            f"--model {model}=/path/to/folder-or-file (or the add-on preferences), or copy them into "
            f"{cache_root(ctx) / 'huggingface'} as a Hugging Face cache."
        ),
    )
