"""Generate many scenes on a Dask cluster, one job folder per case, resumable case by case.

    python -m engine batch MANIFEST --out DIR [--layout worldscore|jobs] [--workers N | --scheduler ADDRESS]

MANIFEST is WorldScore's static.json (its cases as its dataloader reads them), a folder of
images (``NAME_depth.png/.npy/.exr`` beside ``NAME.png`` is its depth), or a CSV/JSON list of cases (image, optional depth, camera, prompt, trajectory, name,
settings).  Each case is an ordinary job folder (DIR/<name>, or DIR/jobs/<WorldScore path>
with ``--layout worldscore``, which also writes WorldScore's own folder under
DIR/worldscore_output/).  A re-run skips finished cases and resumes the others from their
finished stages; a failed case is reported and the rest go on; DIR/summary.json lists every
case with its status and seconds.

Distribution is Dask's: without ``--scheduler`` a local cluster with one worker per GPU
(``--gpus``, default every visible GPU with a CUDA device; each worker pinned to its GPU through
CUDA_VISIBLE_DEVICES, dask-cuda's LocalCUDACluster where installed), each worker a resident
engine whose models stay loaded across its cases.  A worker that dies mid-case has its case
rescheduled by the Dask scheduler; the retry resumes from the job's finished stages.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from . import protocol, worldscore
from .errors import BadInputError
from .profiles import PROFILES

log = logging.getLogger("engine")

# Every worker's environment: NVLink multicast stays off (it can take a shared host's GPUs down).
MULTICAST_OFF = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
CASE_RECORD = "batch_case.json"  # written in the job folder when the case has finished
LOG_NAME = "batch_log.jsonl"  # one line per case start / finish, from every worker


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", type=Path, help="WorldScore static.json, a folder of images, or a CSV/JSON list of cases")
    parser.add_argument("--out", required=True, type=Path, help="output folder (shared storage across hosts); a re-run resumes it")
    parser.add_argument(
        "--layout", choices=("jobs", "worldscore"), help="jobs: DIR/<case>/; worldscore: also WorldScore's folders "
        "(default: worldscore for a static.json, else jobs)",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, help="local Dask workers (default: one per GPU, else 1)")
    where.add_argument("--scheduler", help="address of a running Dask scheduler to join (tcp://host:8786)")
    parser.add_argument("--gpus", help="comma-separated GPU ids, one local worker each (default: all visible with CUDA)")
    parser.add_argument("--profile", default="offline", choices=sorted(PROFILES))
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--seed", type=int)
    parser.add_argument("--steps", type=int, help="N expansion views")
    parser.add_argument("--resolution", type=int, help="working resolution, long side (px)")
    parser.add_argument("--iterations", type=int, help="3DGS optimisation steps")
    parser.add_argument("--fov", type=float, help="horizontal FOV (deg) when no camera or model gives one")
    parser.add_argument("--preset", help="camera path preset for cases without a trajectory (jobs layout)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="any engine.settings field")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=SOURCE", help="weights override: HF id or local path")
    parser.add_argument(
        "--camera-speed", type=float, default=worldscore.DEFAULT_SPEED,
        help=f"worldscore: WorldScore's camera_speed in metres (default {worldscore.DEFAULT_SPEED})",
    )
    parser.add_argument("--frame-size", type=int, default=worldscore.SIZE, help="worldscore: rendered frame side (WorldScore: 512)")


# ---------------------------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    job: str  # the job folder, relative to DIR
    image: str = ""
    depth: str = ""
    camera: str = ""
    trajectory: str = ""
    prompt: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    worldscore: dict[str, Any] | None = None  # the static.json entry (worldscore layout)
    output: str = ""  # the WorldScore folder, relative to DIR


def _resolve(value: Any, bases: list[Path]) -> str:
    """An absolute path for a manifest's relative path: the first base where it exists."""
    if not value:
        return ""
    path = Path(str(value)).expanduser()
    if path.is_absolute():
        return str(path)
    for base in bases:
        if (base / path).exists():
            return str((base / path).resolve())
    return str((bases[0] / path).resolve())  # missing: the case fails naming this path


def _unique(name: str, taken: set[str]) -> str:
    candidate, k = name, 2
    while candidate in taken:
        candidate, k = f"{name}_{k}", k + 1
    taken.add(candidate)
    return candidate


def _settings_field(value: Any, where: str) -> dict[str, Any]:
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise BadInputError(f"{where}: settings must be a JSON object, not {value!r}") from None
    if not isinstance(value, dict):
        raise BadInputError(f"{where}: settings must be a JSON object")
    return value


def load_manifest(manifest: Path, layout: str | None) -> tuple[list[Case], str]:
    """The cases of a manifest and the layout to write them in."""
    manifest = manifest.expanduser()
    if manifest.is_dir():
        files = sorted(p for p in manifest.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES + (".npy", ".exr"))
        depths = {p.stem[: -len("_depth")]: str(p) for p in files if p.stem.endswith("_depth")}
        rows = [{"image": str(p), "depth": depths.get(p.stem, "")} for p in files
                if p.suffix.lower() in IMAGE_SUFFIXES and not p.stem.endswith("_depth")]
        if not rows:
            raise BadInputError(f"{manifest} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        bases = [manifest]
    elif not manifest.is_file():
        raise BadInputError(f"manifest not found: {manifest}")
    elif manifest.suffix.lower() == ".csv":
        with open(manifest, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        bases = [manifest.parent]
    else:
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadInputError(f"manifest {manifest} is neither a folder, CSV nor valid JSON ({exc})") from None
        rows = data.get("cases") if isinstance(data, dict) else data
        if not isinstance(rows, list):
            raise BadInputError(f"manifest {manifest} must be a JSON list of cases (or {{\"cases\": [...]}})")
        # WorldScore's images are relative to DATA_PATH/WorldScore-Dataset, two folders above
        # static/static.json; a hand-made list is relative to its own folder.
        bases = [manifest.parent, manifest.parent.parent, manifest.parent.parent.parent]
    if not rows:
        raise BadInputError(f"manifest {manifest} lists no cases")
    is_worldscore = all(isinstance(row, dict) and "visual_movement" in row for row in rows)
    layout = layout or ("worldscore" if is_worldscore else "jobs")
    cases, taken = [], set()
    for index, row in enumerate(rows):
        where = f"{manifest.name} case {index}"
        if not isinstance(row, dict) or not row.get("image"):
            raise BadInputError(f"{where} has no image")
        entry = None
        if layout == "worldscore":
            if is_worldscore:
                entry = worldscore.check_entry(dict(row), where)
            else:  # a plain list in WorldScore's layout: its fields where given, else defaults
                entry = worldscore.check_entry({
                    "image": f"{row.get('category') or Path(manifest).stem}/{Path(row['image']).name}",
                    "visual_movement": "static",
                    "visual_style": row.get("visual_style") or "custom",
                    "scene_type": row.get("scene_type") or "custom",
                    "camera_path": row.get("camera_path") or ["orbit_left"],
                    "prompt_list": [row["prompt"]] if row.get("prompt") else [],
                    "style": "",
                }, where)
                if isinstance(entry["camera_path"], str):
                    entry["camera_path"] = entry["camera_path"].split()
        if entry is not None:
            relative = worldscore.case_folder(entry)
            name = _unique("/".join(relative.parts[1:]), taken)
            job, output = str(Path("jobs", *Path(name).parts)), str(Path("worldscore_output", relative.parts[0], *Path(name).parts))
            prompt = row.get("prompt") or worldscore.inpainting_prompt(entry)
        else:
            name = _unique(str(row.get("name") or Path(str(row["image"])).stem), taken)
            job, output, prompt = name, "", row.get("prompt") or ""
        cases.append(Case(
            name=name, job=job, output=output, prompt=prompt, worldscore=entry,
            image=_resolve(row["image"], bases), depth=_resolve(row.get("depth"), bases),
            camera=_resolve(row.get("camera"), bases), trajectory=_resolve(row.get("trajectory"), bases),
            settings=_settings_field(row.get("settings"), where),
        ))
    return cases, layout


def fingerprint(case: Case, options: dict[str, Any]) -> str:
    """What a finished case was made from: a changed case or setting runs it again."""
    relevant = {k: options[k] for k in ("profile", "settings", "models", "camera_speed", "frame_size")}
    return hashlib.sha256(json.dumps([asdict(case), relevant], sort_keys=True).encode()).hexdigest()[:16]


def is_finished(case: Case, options: dict[str, Any]) -> bool:
    out = Path(options["out"])
    try:
        record = json.loads((out / case.job / CASE_RECORD).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    if record.get("fingerprint") != fingerprint(case, options) or not (out / case.job / "gaussians.ply").is_file():
        return False
    return case.worldscore is None or worldscore.data_exists(out / case.output, case.worldscore["camera_path"])


# ---------------------------------------------------------------------------------------------
# on a worker
# ---------------------------------------------------------------------------------------------

_ENGINE: dict[str, Any] = {}  # per worker process: its device and BackendPool (models stay loaded)


def _engine(device: str):
    from . import pipeline
    from .__main__ import resolve_device

    if not _ENGINE:
        for name, value in MULTICAST_OFF.items():  # also on workers started by hand (`dask worker`)
            os.environ.setdefault(name, value)
        logging.getLogger("engine").setLevel(logging.INFO)
        _ENGINE["device"] = resolve_device(device)
        _ENGINE["pool"] = pipeline.BackendPool()
    return _ENGINE["device"], _ENGINE["pool"]


class _Events(protocol.EventWriter):
    """The case's events file, remembering the error event a failure produced."""

    error: dict[str, Any] | None = None

    def emit(self, type_: str, **fields: Any) -> dict[str, Any]:
        event = super().emit(type_, **fields)
        if type_ == "error":
            self.error = event
        return event


def _append_log(out: Path, **fields: Any) -> None:
    line = json.dumps({"t": round(time.time(), 3), **fields}) + "\n"
    with open(out / LOG_NAME, "a", encoding="utf-8") as handle:  # one short O_APPEND write per line
        handle.write(line)


@contextlib.contextmanager
def _case_lock(job_dir: Path) -> Iterator[None]:
    """One writer per case, even if a worker presumed dead still runs (released when it dies)."""
    import fcntl

    with open(job_dir / ".batch.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_partial(job_dir: Path) -> list[str]:
    """Temporary files a killed run left (engine.job.atomic_path names them .<stem>.*.tmp*)."""
    removed = []
    for path in job_dir.rglob(".*.tmp*"):
        if path.is_file():
            path.unlink()
            removed.append(str(path.relative_to(job_dir)))
    return removed


def _worldscore_inputs(case: Case, options: dict[str, Any], folder: Path) -> list[str]:
    """input_image.png (centre crop, 512²), the depth cropped alike, WorldScore's first camera
    and the expansion path (steps + 1 of its interpolated cameras) as generate arguments."""
    import numpy as np
    from PIL import Image

    from . import images, trajectory
    from .job import atomic_path, write_json
    from .settings import Settings

    folder.mkdir(parents=True, exist_ok=True)
    images.check_image(case.image)
    with Image.open(case.image) as opened:
        source = opened.convert("RGB")
    box = worldscore.centre_crop_box(*source.size)
    with atomic_path(folder / "input_image.png") as tmp:
        source.crop(box).resize((worldscore.SIZE, worldscore.SIZE), Image.Resampling.BICUBIC).save(tmp)
    argv = [str(folder / "input_image.png")]
    if case.depth:
        depth = images.load_depth(case.depth, source.size)[box[1]:box[3], box[0]:box[2]]
        with atomic_path(folder / "depth.npy") as tmp:
            np.save(tmp, images.resize_depth(depth, worldscore.SIZE, worldscore.SIZE))
        argv += ["--depth", str(folder / "depth.npy")]
    data = worldscore.camera_data(case.worldscore["camera_path"], options["camera_speed"])
    path = worldscore.engine_cameras(data["cameras_interp"])
    settings = Settings.from_dict({**PROFILES[options["profile"]].settings, **options["settings"], **case.settings})
    picks = sorted({round(float(k)) for k in np.linspace(0, len(path) - 1, settings.steps + 1)})
    write_json(folder / "camera.json", path[0].to_dict())
    trajectory.save_trajectory(folder / "trajectory.json", [path[k] for k in picks], source=f"worldscore:{'+'.join(case.worldscore['camera_path'])}")
    return argv + ["--camera", str(folder / "camera.json"), "--trajectory", str(folder / "trajectory.json")]


def _write_worldscore(case: Case, options: dict[str, Any], job_dir: Path, events, device: str, started: float) -> None:
    """WorldScore's case folder, built beside its final place and renamed there when complete."""
    from . import cameras
    from .job import write_json
    from .render_path import render_frames
    from .sky import read_world

    final = Path(options["out"]) / case.output
    partial = final.parent / f".{final.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    entry = case.worldscore
    data = worldscore.camera_data(entry["camera_path"], options["camera_speed"])
    path = worldscore.engine_cameras(data["cameras_interp"], size=options["frame_size"])
    path = cameras.relative_to(path, path[0])  # the engine world is the first camera's frame
    gaussians = read_world(job_dir, device=device)  # with its sky
    render_frames(gaussians, path, partial / "frames", partial / "videos" / "output.mp4", device, worldscore.FPS, events, digits=3)
    seconds = round(time.perf_counter() - started, 3)  # as WorldScore's Helper: up to the frames' saving
    write_json(partial / "camera_data.json", data)
    write_json(partial / "image_data.json", worldscore.image_data(entry))
    shutil.copyfile(job_dir / "batch" / "input_image.png", partial / "input_image.png")
    (partial / "time.txt").write_text(f"generate_time: {seconds}\n", encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)


def run_case(case_data: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """Generate one case on this worker (its resident engine); never raises for the case's own failure."""
    from .__main__ import _run_job, build_parser, prepare_job, report_failure
    from .job import write_json

    case = Case(**case_data)
    out = Path(options["out"])
    job_dir = out / case.job
    job_dir.mkdir(parents=True, exist_ok=True)
    worker = _worker_name()
    record = {"name": case.name, "status": "done", "seconds": 0.0, "job": case.job, "output": case.output, "worker": worker, "error": ""}
    with _case_lock(job_dir):
        started = time.perf_counter()
        device, pool = _engine(options["device"])
        pinned = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", *MULTICAST_OFF)}
        _append_log(out, case=case.name, event="start", pid=os.getpid(), worker=worker, device=device, env=pinned,
                    stale=_remove_partial(job_dir))
        handler = logging.FileHandler(job_dir / "engine.log", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
        try:
            with open(job_dir / "events.jsonl", "a", encoding="utf-8") as stream:
                events = _Events(stream)
                try:
                    argv = ["generate", "--out", str(job_dir), "--profile", options["profile"], "--prompt", case.prompt]
                    if case.worldscore is not None:
                        argv += _worldscore_inputs(case, options, job_dir / "batch")
                    else:
                        argv += [case.image] + [f"--{k}={v}" for k in ("depth", "camera", "trajectory") if (v := getattr(case, k))]
                    for name, value in {**options["settings"], **case.settings}.items():
                        argv.append(f"--set={name}={json.dumps(value)}")
                    argv += [f"--model={name}={source}" for name, source in options["models"].items()]
                    prepare_job(build_parser().parse_args(argv))
                    _run_job(job_dir, events, device=device, memory="resident", pool=pool)
                    if case.worldscore is not None:
                        _write_worldscore(case, options, job_dir, events, device, started)
                except Exception as exc:  # noqa: BLE001 - one failed case must not stop the batch
                    code = report_failure(events, exc, job_dir)
                    record.update(status="failed", code=protocol.EXIT_CODES[code], error=(events.error or {}).get("message", str(exc)))
            record["seconds"] = round(time.perf_counter() - started, 3)
            if record["status"] == "done":
                write_json(job_dir / CASE_RECORD, {"fingerprint": fingerprint(case, options), "seconds": record["seconds"], "worker": worker})
        finally:
            logging.getLogger().removeHandler(handler)
            handler.close()
        _append_log(out, case=case.name, event=record["status"], pid=os.getpid(), worker=worker, seconds=record["seconds"])
    return record


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except (ImportError, ValueError):
        return "local"


# ---------------------------------------------------------------------------------------------
# the cluster
# ---------------------------------------------------------------------------------------------


def visible_gpus(device: str) -> list[str]:
    if device == "cpu":
        return []
    import torch

    if not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [item.strip() for item in listed.split(",") if item.strip()] if listed else []
    return ids[: torch.cuda.device_count()] or [str(k) for k in range(torch.cuda.device_count())]


def worker_specs(count: int, gpus: list[str]) -> dict[str, dict[str, Any]]:
    """Dask Nanny specs: worker i pinned to gpus[i % len(gpus)] (if any), one thread each,
    NVLink multicast off; CPU workers share the cores between them."""
    from distributed import Nanny

    threads = str(max(1, (os.cpu_count() or 1) // count))
    specs = {}
    for index in range(count):
        env = dict(MULTICAST_OFF)
        options: dict[str, Any] = {"nthreads": 1, "memory_limit": 0, "name": f"gen3d-{index}"}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
            options["resources"] = {"GPU": 1}
        else:
            env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        options["env"] = env
        specs[f"gen3d-{index}"] = {"cls": Nanny, "options": options}
    return specs


def local_cluster(count: int, gpus: list[str], device: str):
    """dask-cuda's LocalCUDACluster for CUDA work where it is installed, else our own specs."""
    from distributed import Scheduler, SpecCluster

    try:
        import bokeh  # noqa: F401 - the dashboard needs it

        dashboard = True
    except ImportError:
        dashboard = False
    if gpus and device != "cpu":
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            pass
        else:
            return LocalCUDACluster(
                CUDA_VISIBLE_DEVICES=",".join(gpus), n_workers=count, threads_per_worker=1, memory_limit=0,
                env=dict(MULTICAST_OFF), resources={"GPU": 1}, dashboard_address=":8787" if dashboard else None,
            )
    scheduler = {"cls": Scheduler, "options": {"dashboard": dashboard, "dashboard_address": ":8787" if dashboard else ":0"}}
    return SpecCluster(scheduler=scheduler, workers=worker_specs(count, gpus), silence_logs=logging.WARNING, name="gen3d-batch")


@contextlib.contextmanager
def connect(args: argparse.Namespace, device: str) -> Iterator[Any]:
    from distributed import Client

    if args.scheduler:
        with Client(args.scheduler) as client:
            yield client
        return
    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else visible_gpus(device)
    count = args.workers or len(gpus) or 1
    if count < 1:
        raise BadInputError("--workers must be at least 1")
    with local_cluster(count, gpus, device) as cluster, Client(cluster) as client:
        client.wait_for_workers(count)
        yield client


# ---------------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------------


def _options(args: argparse.Namespace) -> dict[str, Any]:
    from .__main__ import _parse_pairs, _settings_from_args
    from .settings import Settings

    settings = _settings_from_args(args)
    Settings.from_dict({**PROFILES[args.profile].settings, **settings})  # refused before any cluster starts
    if args.frame_size < 16 or args.camera_speed <= 0:
        raise BadInputError("--frame-size must be at least 16 and --camera-speed positive")
    return {
        "out": str(args.out.expanduser().resolve()), "profile": args.profile, "device": args.device,
        "settings": settings, "models": _parse_pairs(args.model, "--model"),
        "camera_speed": args.camera_speed, "frame_size": args.frame_size,
    }


def summarise(cases: list[Case], records: dict[str, dict[str, Any]], wall: float, workers: int) -> dict[str, Any]:
    rows = [records[case.name] for case in cases]
    counts = {status: sum(r["status"] == status for r in rows) for status in ("done", "failed", "skipped")}
    busy = sum(r["seconds"] for r in rows if r["status"] != "skipped")
    return {
        "cases": rows, "counts": counts, "wall_seconds": round(wall, 3), "workers": workers,
        "worker_hours": round(busy / 3600, 4),  # GPU-hours with one GPU per worker
        "cases_per_hour": round(counts["done"] / wall * 3600, 2) if wall > 0 and counts["done"] else 0.0,
    }


def _table(summary: dict[str, Any]) -> str:
    lines = [f"{'case':<48} {'status':<8} {'seconds':>8}  error"]
    for row in summary["cases"]:
        lines.append(f"{row['name'][:48]:<48} {row['status']:<8} {row['seconds']:>8.1f}  {row.get('error', '')[:80]}")
    c = summary["counts"]
    lines.append(
        f"done {c['done']}, failed {c['failed']}, skipped {c['skipped']}; wall {summary['wall_seconds']:.1f} s, "
        f"{summary['worker_hours']:.3f} worker-hours, {summary['cases_per_hour']:.1f} cases/hour on {summary['workers']} worker(s)"
    )
    return "\n".join(lines)


def main(args: argparse.Namespace, events: protocol.EventWriter) -> int:
    from tqdm import tqdm

    from .__main__ import resolve_device
    from .job import write_json

    for name, value in MULTICAST_OFF.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # its INFO lines would drown the progress bar
    options = _options(args)
    cases, layout = load_manifest(args.manifest, args.layout)
    out = Path(options["out"])
    out.mkdir(parents=True, exist_ok=True)
    records = {case.name: {"name": case.name, "status": "skipped", "seconds": 0.0, "job": case.job, "output": case.output}
               for case in cases if is_finished(case, options)}
    todo = [case for case in cases if case.name not in records]
    events.emit("hello", engine_version=__import__("engine").__version__, protocol=protocol.PROTOCOL_VERSION, job=str(out), batch=True)
    log.info("batch: %d cases (%s layout), %d finished before, %d to run", len(cases), layout, len(records), len(todo))
    started = time.perf_counter()
    workers = 0
    if todo:
        from distributed import as_completed

        device = "cpu" if args.device == "cpu" else resolve_device(args.device)
        with connect(args, device) as client:
            workers = len(_workers(client))
            link = client.dashboard_link if args.scheduler or _has_bokeh() else ""
            log.info("batch: %d Dask worker(s) at %s%s", workers, client.scheduler.address,
                     f"; dashboard {link}" if link else "; dashboard: pip install bokeh")
            futures = {
                client.submit(run_case, asdict(case), options, key=f"gen3d-case-{index}", pure=False, resources={"GPU": 1} if _gpu_workers(client) else None): case
                for index, case in enumerate(todo)
            }
            with tqdm(total=len(todo), unit="case", file=sys.stderr, desc="batch") as bar:
                for future in as_completed(futures):
                    case = futures[future]
                    try:
                        record = future.result()
                    except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker: the case killed every worker it ran on
                        error = f"{type(exc).__name__}: {exc}"
                        if "deserializ" in error:  # the scheduler unpickles the task: it needs engine/ too
                            error += "; start `dask scheduler` and `dask worker` with the Gen3D checkout on PYTHONPATH"
                        record = {"name": case.name, "status": "failed", "seconds": 0.0, "job": case.job, "output": case.output,
                                  "error": error}
                    records[case.name] = record
                    bar.update(1)
                    done = sum(r["status"] == "done" for r in records.values())
                    failed = sum(r["status"] == "failed" for r in records.values())
                    bar.set_postfix(done=done, failed=failed)
                    events.emit("progress", stage="batch", fraction=round(bar.n / len(todo), 4), message=f"{case.name}: {record['status']}")
    summary = summarise(cases, records, time.perf_counter() - started, workers)
    summary["layout"] = layout
    write_json(out / "summary.json", summary)
    print(_table(summary), file=sys.stderr)
    events.emit("result", outputs={"summary": str(out / "summary.json")}, counts=summary["counts"], job=str(out))
    return protocol.EXIT_FAILED if summary["counts"]["failed"] else protocol.EXIT_OK


def _has_bokeh() -> bool:
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return False
    return True


def _workers(client) -> dict[str, Any]:
    try:  # newer distributed lists only 5 workers unless asked for all
        return client.scheduler_info(n_workers=-1)["workers"]
    except TypeError:
        return client.scheduler_info()["workers"]


def _gpu_workers(client) -> bool:
    return any(w.get("resources", {}).get("GPU") for w in _workers(client).values())
