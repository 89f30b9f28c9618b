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
  only when ``ctx.allow_download``, resumably (HTTP Range on the ``.part`` file), with progress
  notes, checked against the published size and SHA-256 where ``KNOWN_FILES`` has them, and
  renamed into place only when whole;
* anything else            -> a Hugging Face repo id: ``snapshot_download`` into
  ``<cache>/huggingface`` when downloads are allowed (reported as "fetching <id>" through
  ``ctx.note``), else only what is already in that cache or the user's own HF cache.

Which weights files a folder or repository must hold is a ``Layout``; ``select_weights`` picks
them from a file listing (a Hub repository's, or a folder's): per component the full-precision
safetensors, else the fp16 safetensors variant, and a pickle (``.bin``) only where the listing has
no safetensors at all.  ``resolve_weights`` returns the folder with that choice, which the
loaders pass on as ``variant=`` / ``use_safetensors=``.  docs/MODELS.md lists the files per id.

When nothing works it raises ``MissingModelError`` naming the model, every source tried (with
why it failed) and where to put a local copy.

Tiny builders live next to the code that loads them: each provider module listed in
``TINY_PROVIDERS`` has a ``BUILDERS`` dict ``{name: builder(folder: Path) -> None}`` whose
builder writes the real on-disk layout into an empty folder.  ``register_tiny`` adds one more.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import shutil
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

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
    try:
        from .random_models import BUILDERS
    except ImportError:  # the extension zip ships without the benchmark's models
        raise KeyError(f"random:{name}: the benchmark models are not part of this install (run from the source tree)") from None
    return BUILDERS.get(name)


def build_random(ctx, name: str) -> Path:
    """The folder of ``random:<name>``, built into the cache the first time."""
    return _build_once(ctx, "random", name, random_builder)


def _builder_fingerprint(builder: TinyBuilder) -> str:
    """Changes whenever the module defining ``builder`` changes (and with it, maybe, the layout
    it writes), so a model built by older code is rebuilt rather than loaded."""
    try:
        source = Path(inspect.getsourcefile(builder)).read_bytes()
    except (TypeError, OSError):
        source = builder.__qualname__.encode()
    return hashlib.sha256(source).hexdigest()


def _build_once(ctx, kind: str, name: str, find_builder: Callable[[str], TinyBuilder | None]) -> Path:
    folder = cache_root(ctx) / kind / name
    builder = find_builder(name)
    if builder is None:
        raise KeyError(f"no {kind} model called {name!r}")
    stamp = f"built in code with random weights by {_builder_fingerprint(builder)}\n"
    done = folder / _COMPLETE
    if done.exists() and done.read_text() == stamp:
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the final folder and rename, so a crash never leaves a half-written model
    # that a later run would load.
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder.parent))
    try:
        with LOADING:
            builder(staging)
        (staging / _COMPLETE).write_text(stamp)
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if not (done.exists() and done.read_text() == stamp):
            raise
    return folder


# --------------------------------------------------------------------------------------------
# Which weights files to read (chosen from a repository's or folder's file listing)

DIFFUSERS = "diffusers"  # <folder>/diffusion_pytorch_model[.fp16].safetensors | .bin
TRANSFORMERS = "transformers"  # <folder>/model[.fp16].safetensors | pytorch_model[.fp16].bin
_STEMS = {DIFFUSERS: ("diffusion_pytorch_model", "diffusion_pytorch_model"), TRANSFORMERS: ("model", "pytorch_model")}


@dataclass(frozen=True)
class Layout:
    """What a model folder must hold.

    ``components``: (subfolder, library) of each set of weights ("" = the folder itself);
    ``required``: other files that must be there (configs, a single checkpoint file);
    ``small_files``: patterns fetched whole from the Hub (configs, tokenizer, scheduler).
    """

    components: tuple[tuple[str, str], ...] = ()
    required: tuple[str, ...] = ()
    small_files: tuple[str, ...] = ("*.json", "*.txt")


@dataclass(frozen=True)
class Weights:
    """The file chosen for one component, and how a ``from_pretrained`` call reads it."""

    path: str  # relative to the model folder, e.g. "unet/diffusion_pytorch_model.fp16.safetensors"
    subfolder: str  # "" or e.g. "unet"
    variant: str | None  # "fp16" or None (full precision)
    safetensors: bool  # False: a pickle, read by torch.load(weights_only=True) in diffusers/transformers

    def kwargs(self) -> dict:
        """``from_pretrained`` arguments that load exactly this file."""
        extra = {"subfolder": self.subfolder} if self.subfolder else {}
        return {**extra, "variant": self.variant, "use_safetensors": self.safetensors}


class MissingFiles(FileNotFoundError):
    """A folder or repository lacks files its layout needs (the message names them)."""


def _candidates(subfolder: str, library: str) -> list[tuple[str, str | None, bool]]:
    safe, pickle = _STEMS[library]
    prefix = f"{subfolder}/" if subfolder else ""
    return [
        (f"{prefix}{safe}.safetensors", None, True),
        (f"{prefix}{safe}.fp16.safetensors", "fp16", True),
        (f"{prefix}{pickle}.bin", None, False),
        (f"{prefix}{pickle}.fp16.bin", "fp16", False),
    ]


def choose_weights(files, subfolder: str, library: str) -> Weights | None:
    """The weights file of one component from a file listing, or None when it has none.

    Full-precision safetensors first (the loaders cast to fp16 on CUDA themselves), then the
    fp16 safetensors variant (the only safetensors several published repositories hold), then a
    pickle, which is taken only when the listing holds no safetensors for the component.
    """
    present = set(files)
    for path, variant, safetensors in _candidates(subfolder, library):
        if path in present:
            return Weights(path, subfolder, variant, safetensors)
    return None


def select_weights(files, layout: Layout, where: str = "") -> dict[str, Weights]:
    """``{subfolder: Weights}`` for every component of ``layout``; ``MissingFiles`` naming each
    file that is not in ``files`` (``where``: the repository or folder, for the message)."""
    files = set(files)
    chosen: dict[str, Weights] = {}
    missing = [name for name in layout.required if name not in files]
    for subfolder, library in layout.components:
        weights = choose_weights(files, subfolder, library)
        if weights is None:
            missing.append(" or ".join(path for path, _, _ in _candidates(subfolder, library)[:3]))
        else:
            chosen[subfolder] = weights
    if missing:
        raise MissingFiles(f"{where or 'the model'} has no {'; no '.join(missing)}")
    return chosen


def folder_files(folder: Path) -> list[str]:
    """Every file under ``folder`` as a POSIX path relative to it (a local listing)."""
    return sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*") if p.is_file())


@dataclass(frozen=True)
class Resolved:
    path: Path  # the model folder (or checkpoint file)
    weights: dict[str, Weights] = field(default_factory=dict)  # subfolder -> chosen file


# --------------------------------------------------------------------------------------------
# Single-file downloads (SAM's checkpoints)

# Published sizes and SHA-256 of single-file checkpoints, by file name.  Meta's README lists only
# the URLs; these were read from public manifests (tests/data/model_listings/
# facebookresearch__segment-anything.json says which, and that the MD5s agree with the names).
KNOWN_FILES: dict[str, tuple[int, str]] = {
    "sam_vit_h_4b8939.pth": (2564550879, "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e"),
    "sam_vit_l_0b3195.pth": (1249524607, "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622"),
    "sam_vit_b_01ec64.pth": (375042383, "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912"),
}


class DownloadError(OSError):
    """A download that cannot be used: wrong size or hash (the partial file is removed)."""


def _sha256_of(path: Path, digest=None):
    digest = digest or hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest


def download(
    url: str,
    target: Path,
    *,
    size: int | None = None,
    sha256: str | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    timeout: float = 60.0,
) -> Path:
    """Fetch ``url`` into ``target``: resumable, checked, atomic.

    Bytes go to ``<target>.part``; a ``.part`` left by an interrupted run is continued with an
    HTTP Range request (a server that ignores Range sends it all again, and the part restarts).
    ``progress(bytes_done, total)`` follows each block.  The whole file must have ``size`` bytes
    and the SHA-256 ``sha256`` when those are given; otherwise the part is deleted and
    ``DownloadError`` raised.  Only a checked file is renamed to ``target``.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    done = partial.stat().st_size if partial.exists() else 0
    if size is not None and done > size:
        partial.unlink()
        done = 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or size is None or done != size:  # 416: nothing left to send
            raise
        response = None
    digest = hashlib.sha256()
    if response is not None:
        with response:
            resumed = done and response.status == 206
            if resumed and not response.headers.get("Content-Range", "").startswith(f"bytes {done}-"):
                raise DownloadError(f"{url}: the server resumed at the wrong offset ({response.headers.get('Content-Range')})")
            if resumed:
                _sha256_of(partial, digest)
            else:
                done = 0
            length = response.headers.get("Content-Length")
            total = size if size is not None else (done + int(length) if length else None)
            with open(partial, "ab" if resumed else "wb") as out:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    digest.update(block)
                    done += len(block)
                    if progress:
                        progress(done, total)
                out.flush()
                os.fsync(out.fileno())
    else:
        _sha256_of(partial, digest)
    if size is not None and done != size:
        if done < size:  # the connection ended early: keep the part for the next run
            raise DownloadError(f"{url}: got {done} of {size} bytes; run again to resume")
        partial.unlink(missing_ok=True)
        raise DownloadError(f"{url}: {done} bytes where {size} were published; the download was discarded")
    if sha256 is not None and digest.hexdigest() != sha256.lower():
        partial.unlink(missing_ok=True)
        raise DownloadError(f"{url}: SHA-256 {digest.hexdigest()} is not the published {sha256}; the download was discarded")
    os.replace(partial, target)
    return target


def _progress_notes(ctx, name: str) -> Callable[[int, int | None], None]:
    """A download progress callback sending a note about every 5 % (or 50 MB with no total)."""
    step = {"next": 0}

    def report(done: int, total: int | None) -> None:
        if done < step["next"] and done != total:
            return
        if total:
            step["next"] = done + max(total // 20, 1)
            ctx.note(f"fetching {name}: {done / 1e6:.0f} of {total / 1e6:.0f} MB ({100 * done // total}%)")
        else:
            step["next"] = done + 50_000_000
            ctx.note(f"fetching {name}: {done / 1e6:.0f} MB")

    return report


def _from_url(ctx, url: str) -> Path:
    name = Path(urllib.parse.urlparse(url).path).name or "checkpoint"
    target = cache_root(ctx) / "url" / name
    if target.exists():
        return target
    if not ctx.allow_download:
        raise FileNotFoundError(f"not in {target.parent} and downloads are off")
    ctx.note(f"fetching {url}")
    size, sha256 = KNOWN_FILES.get(name, (None, None))
    return download(url, target, size=size, sha256=sha256, progress=_progress_notes(ctx, name))


# --------------------------------------------------------------------------------------------
# Hugging Face repositories


def _cached_snapshot(repo_id: str, cache_dirs) -> Path | None:
    from huggingface_hub import snapshot_download

    for cache_dir in cache_dirs:
        try:
            return Path(snapshot_download(repo_id, cache_dir=cache_dir, local_files_only=True))
        except Exception:  # noqa: BLE001 - "not cached" comes as several exception types
            continue
    return None


def _from_hub(ctx, repo_id: str, layout: Layout | None) -> Resolved:
    from huggingface_hub import HfApi, snapshot_download

    ours = cache_root(ctx) / "huggingface"
    # Already on disk (our cache, then the user's own HF cache) with every file the layout needs:
    # no network at all.
    cached = _cached_snapshot(repo_id, (ours, None))
    incomplete = None
    if cached is not None:
        if layout is None:
            return Resolved(cached)
        try:
            return Resolved(cached, select_weights(folder_files(cached), layout, f"the cached {repo_id}"))
        except MissingFiles as exc:
            incomplete = exc
    if not ctx.allow_download:
        raise incomplete or FileNotFoundError("not in the Hugging Face cache and downloads are off")
    patterns = None
    if layout is not None:
        # Choose from the repository's own listing, then fetch only those weights.
        chosen = select_weights(HfApi().list_repo_files(repo_id), layout, repo_id)
        patterns = [*layout.small_files, *layout.required, *(w.path for w in chosen.values())]
    ctx.note(f"fetching {repo_id}")
    folder = Path(snapshot_download(repo_id, cache_dir=ours, allow_patterns=patterns))
    return Resolved(folder, select_weights(folder_files(folder), layout, repo_id) if layout else {})


def _is_local(source: str) -> bool:
    return source.startswith(("/", "./", "../", "~")) or os.path.isabs(source) or Path(source).expanduser().exists()


def _checked_folder(path: Path, layout: Layout | None, where: str) -> Resolved:
    if layout is None or path.is_file():
        return Resolved(path)
    return Resolved(path, select_weights(folder_files(path), layout, where))


def resolve_weights(ctx, model: str, layout: Layout | None = None) -> Resolved:
    """The first usable source of ``model`` with the weights files ``layout`` needs, chosen.

    A source lacking a file (a local folder, a cached snapshot, a repository) is passed over
    with the missing file named; ``MissingModelError`` lists every source tried and why.
    """
    sources = ctx.sources(model)
    tried: list[str] = []
    reasons: list[str] = []
    for source in sources:
        tried.append(source)
        try:
            if source.startswith("tiny:"):
                return _checked_folder(build_tiny(ctx, source[len("tiny:"):]), layout, source)
            if source.startswith("random:"):
                return _checked_folder(build_random(ctx, source[len("random:"):]), layout, source)
            if source.startswith(("http://", "https://")):
                return Resolved(_from_url(ctx, source))
            if _is_local(source):
                path = _local_file(Path(source))
                if not path.exists():
                    raise FileNotFoundError("no such file or folder")
                return _checked_folder(path, layout, str(path))
            return _from_hub(ctx, source, layout)
        except KeyError as exc:
            reasons.append(str(exc.args[0]) if exc.args else "unknown")
        except Exception as exc:  # noqa: BLE001 - every failure is reported with its source
            reasons.append(f"{type(exc).__name__}: {exc}".splitlines()[0][:400])
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


def resolve_source(ctx, model: str, layout: Layout | None = None) -> Path:
    """Local path (file or folder) of the first usable source of ``model`` (see ``resolve_weights``)."""
    return resolve_weights(ctx, model, layout).path


# --------------------------------------------------------------------------------------------
# Loading without building twice

# Models are built one at a time in the process, whichever thread loads them: diffusers'
# ``from_pretrained`` builds inside accelerate's ``init_empty_weights``, which patches
# ``nn.Module.register_parameter`` for every thread, so a model built meanwhile got meta
# parameters, and two such loads unwinding out of order left the patch on for good.
LOADING = threading.RLock()


def meta_loaded(build: Callable[[], object], state: dict, buffers: dict | None = None):
    """``build()`` run on the meta device (no memory, no random initialisation, no use of the
    global random generator) with ``state``'s tensors taken as its own (``assign=True``): the model
    costs what reading its tensors costs, on whichever device they were read to.

    ``buffers``: the non-persistent buffers (made from constants, so no checkpoint holds them), by
    name.  Returns None when ``state`` does not match the model key for key, or leaves a
    tensor unset; the caller then builds the model the ordinary way.
    """
    import itertools

    import torch

    with torch.device("meta"):
        model = build()
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError:  # missing or unexpected keys, or other shapes
        return None
    for name, tensor in (buffers or {}).items():
        owner, _, attribute = name.rpartition(".")
        model.get_submodule(owner).register_buffer(attribute, tensor, persistent=False)
    if any(t.is_meta for t in itertools.chain(model.parameters(), model.buffers())):
        return None
    return model
