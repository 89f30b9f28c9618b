"""`python -m engine`: the Gen3D engine's command line.

stdout carries JSON-lines events only (engine.protocol); logs go to stderr and, for a job, to
JOB/engine.log together with any traceback.  Exit codes: engine.protocol.EXIT_*.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, Callable

from . import __version__, protocol, remote
from .cameras import Camera, CameraError
from .errors import BadInputError, Cancelled, Gen3DError, MissingModelError, OutOfMemory, is_out_of_memory
from .profiles import PROFILES, ProfileError
from .settings import default_cache_dir
from .trajectory import TrajectoryError

log = logging.getLogger("engine")


class UsageError(BadInputError):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print usage and exit; we emit an error event
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> Parser:
    parser = Parser(prog="python -m engine", description="Gen3D engine: one image -> a navigable 3D scene.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    generate = commands.add_parser("generate", help="generate a scene into a job folder")
    generate.add_argument("image", nargs="?", default="", help="input image (omit or '' with --prompt for text input)")
    generate.add_argument("--out", required=True, type=Path, help="job folder (created; a re-run resumes it)")
    generate.add_argument("--prompt", default="", help="text prompt (inpainting guidance, or the scene itself)")
    generate.add_argument("--negative-prompt", default="")
    generate.add_argument("--depth", help="depth for RGB-D input: .npy (m), 16-bit .png (mm) or .exr (Z pass)")
    generate.add_argument("--camera", type=Path, help="input camera JSON (engine.cameras.Camera.to_dict)")
    generate.add_argument("--trajectory", type=Path, help="trajectory JSON (engine.trajectory format)")
    generate.add_argument("--preset", help="camera path preset when no trajectory: orbit, look-around, dolly, pan, spiral")
    generate.add_argument("--profile", default="offline", choices=sorted(PROFILES))
    generate.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    generate.add_argument(
        "--memory", default="low-vram", choices=("low-vram", "resident"),
        help="low-vram: free each stage's models after it (fits 12 GB at 512²); resident: keep them loaded",
    )
    generate.add_argument("--seed", type=int)
    generate.add_argument("--steps", type=int, help="N expansion views")
    generate.add_argument("--resolution", type=int, help="working resolution, long side (px)")
    generate.add_argument("--iterations", type=int, help="3DGS optimisation steps")
    generate.add_argument("--fov", type=float, help="horizontal FOV (deg) when no camera or model gives one")
    generate.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="any engine.settings field")
    generate.add_argument("--model", action="append", default=[], metavar="NAME=SOURCE", help="weights override: HF id or local path")
    generate.add_argument("--fresh", action="store_true", help="regenerate from scratch: forget the job folder's finished stages")
    remote.add_arguments(generate)

    serve = commands.add_parser("serve", help="answer generate requests from stdin, keeping models loaded")
    serve.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    serve.add_argument("--jobs-root", type=Path, help="request paths are relative to this folder and may not leave it (remote clients)")

    commands.add_parser("version", help="print the engine and protocol versions as an event")
    status = commands.add_parser("status", help="which stages of a job folder are finished")
    status.add_argument("job", type=Path)

    for name, module_name in EXTRA_COMMANDS.items():
        module = __import__(f"engine.{module_name}", fromlist=["add_arguments"])
        module.add_arguments(commands.add_parser(name, help=module.__doc__.strip().splitlines()[0]))
    return parser


# Subcommands that live in their own modules: name -> module with add_arguments(parser), main(args, events).
EXTRA_COMMANDS: dict[str, str] = {
    "eval-rgbd": "evaluate", "render-path": "render_path", "eval-world": "eval_world", "warmup": "warmup",
    "batch": "batch", "convert": "splat_formats",
}


def _parse_pairs(pairs: list[str], what: str) -> dict[str, str]:
    result = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"{what} {pair!r} is not NAME=VALUE")
        result[name.strip()] = value.strip()
    return result


def parse_settings(pairs: list[str]) -> dict[str, Any]:
    """``--set NAME=VALUE`` pairs as settings: each value read as JSON, else as text."""
    settings: dict[str, Any] = {}
    for name, text in _parse_pairs(pairs, "--set").items():
        try:
            settings[name] = json.loads(text)
        except json.JSONDecodeError:
            settings[name] = text
    return settings


def _settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for name in ("seed", "steps", "resolution", "iterations", "fov", "preset"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    settings.update(parse_settings(args.set))
    return settings


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInputError(f"{what} file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{what} file {path} is not valid JSON ({exc})") from None


def prepare_job(args: argparse.Namespace) -> Path:
    """Check every input and setting, then copy the inputs into the job folder and write job.json.

    Nothing is written (and ``--fresh`` forgets nothing) before the whole request is found good.
    """
    from . import images
    from .job import JobFolder, write_json
    from .settings import Settings

    settings = _settings_from_args(args)
    Settings.from_dict({**PROFILES[args.profile].settings, **settings})  # absurd settings: refused before any work
    models = _parse_pairs(args.model, "--model")
    known = sorted({name for profile in PROFILES.values() for name in profile.models})
    for name in models:
        if name not in known:
            raise UsageError(f"--model {name}=...: no model is called {name!r}; the models are {', '.join(known)}")
    image_size = None
    if args.image:
        image_size = images.check_image(Path(args.image))  # refused here, naming the user's file
    elif not args.prompt.strip():
        raise UsageError("give an input image, or --prompt for text input")
    elif PROFILES[args.profile].backends.get("text_to_image") is None:
        raise UsageError(
            f"the {args.profile} profile has no text-to-image model: give an image, or use --profile full (or tiny)"
        )
    if args.depth:
        if image_size:
            images.load_depth(Path(args.depth), image_size)
        elif not Path(args.depth).is_file():
            raise BadInputError(f"depth file not found: {args.depth}; check the path")
    elif PROFILES[args.profile].backends.get("geometry") == "given":
        raise UsageError(
            f"the {args.profile} profile estimates no depth: pass --depth (.npy metres, 16-bit .png mm or .exr), "
            "or use --profile tiny or full"
        )
    camera = Camera.from_dict(_read_json(args.camera, "camera")).to_dict() if args.camera else None
    path = None
    if args.trajectory:
        from . import trajectory

        path = _read_json(args.trajectory, "trajectory")
        trajectory.parse_trajectory(path, f"trajectory {args.trajectory}")  # validates

    job = JobFolder(args.out)
    job.root.mkdir(parents=True, exist_ok=True)
    if args.fresh:
        job.clear_stages()
    request: dict[str, Any] = {"profile": args.profile, "prompt": args.prompt, "negative_prompt": args.negative_prompt}
    if args.image:
        request["image"] = job.import_file(args.image, "source_image" + Path(args.image).suffix.lower())
    if args.depth:
        request["depth"] = job.import_file(args.depth, "source_depth" + Path(args.depth).suffix.lower())
    if camera:
        request["camera"] = camera
        write_json(job.root / "camera.json", camera)  # where clients place the result
    else:  # an earlier run's camera would place this run's result
        (job.root / "camera.json").unlink(missing_ok=True)
    if path:
        request["trajectory"] = path
    request["settings"] = settings
    request["models"] = models
    job.write(request)
    return job.root


def resolve_device(name: str) -> str:
    if name == "cpu":  # no torch import here: bad inputs are then reported before its seconds-long import
        return name
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise BadInputError("--device cuda: PyTorch sees no CUDA GPU here (use --device cpu or auto)")
    return name


def _setup_logging(log_file: Path | None) -> None:
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("engine: %(message)s"))
    console.setLevel(logging.INFO)
    root.addHandler(console)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)


def _install_stop_signals() -> Callable[[], bool]:
    """SIGINT/SIGTERM ask for a clean stop at the next check; a second one exits at once."""
    stop = threading.Event()

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGBREAK", None)):
        if signum is not None:
            signal.signal(signum, handler)
    return stop.is_set


def command_generate(args: argparse.Namespace, events: protocol.EventWriter) -> int:
    if args.remote:
        return remote.command_generate(args, events)
    job_dir = prepare_job(args)
    _setup_logging(job_dir / "engine.log")
    device = resolve_device(args.device)
    should_stop = _install_stop_signals()
    events.emit("hello", engine_version=__version__, protocol=protocol.PROTOCOL_VERSION, job=str(job_dir.resolve()), device=device)
    return _run_job(job_dir, events, device=device, should_stop=should_stop, memory=args.memory)


def _run_job(job_dir: Path, events: protocol.EventWriter, **run_options: Any) -> int:
    """Run a prepared job folder to its result event (generate and each serve request)."""
    from . import pipeline

    outputs = pipeline.run_job(pipeline.make_run(job_dir, events, **run_options))
    events.emit("result", outputs=outputs, job=str(job_dir.resolve()))
    return protocol.EXIT_OK


def command_serve(args: argparse.Namespace, events: protocol.EventWriter) -> int:
    """The resident policy: one process answers many requests, models stay loaded between them.

    stdin carries one JSON request per line: {"type": "generate", "args": [...]} with the
    arguments of `generate`, {"type": "cancel"} (stops the running request and any received
    before it; never one received after it) or {"type": "shutdown"}.  Shutdown and end of input
    let the requests received before them finish, then the engine exits 0; SIGINT cancels the
    running request.  Each request's events end with a "result", "error" or "cancelled" event.
    """
    import queue

    from . import pipeline

    device = resolve_device(args.device)
    requests: queue.Queue = queue.Queue()
    # Requests are numbered as they arrive; a cancel stops every request numbered below the
    # count at that moment, so one sent just before a request starts is never lost, and one
    # sent after a request finished never reaches the next.
    received = 0
    cancelled_below = 0

    def cancel() -> None:
        nonlocal cancelled_below
        cancelled_below = received

    def read_requests() -> None:
        nonlocal received
        for line in sys.stdin:
            try:
                request = json.loads(line)
            except json.JSONDecodeError:
                events.emit("warning", message=f"serve: ignored a line that is not JSON: {line[:80]!r}")
                continue
            kind = request.get("type") if isinstance(request, dict) else None
            if kind == "cancel":
                cancel()
            elif kind == "shutdown":
                break
            elif kind == "generate" and isinstance(request.get("args"), list):
                requests.put((received, [str(item) for item in request["args"]]))
                received += 1
            else:
                events.emit("warning", message=f"serve: unknown request {str(request)[:80]!r}")
        requests.put(None)

    signal.signal(signal.SIGINT, lambda signum, frame: cancel())
    threading.Thread(target=read_requests, daemon=True).start()
    events.emit("hello", engine_version=__version__, protocol=protocol.PROTOCOL_VERSION, job="", device=device, serve=True)
    pool = pipeline.BackendPool()
    parser = build_parser()
    while (item := requests.get()) is not None:
        number, arguments = item
        out = None
        try:
            request = parser.parse_args(["generate", *arguments])
            if args.jobs_root:
                remote.confine_request(request, args.jobs_root)
            out = request.out
            job_dir = prepare_job(request)
            _setup_logging(job_dir / "engine.log")
            stop = lambda number=number: number < cancelled_below  # noqa: E731
            _run_job(job_dir, events, device=device, should_stop=stop, memory="resident", pool=pool)
        except Exception as exc:  # noqa: BLE001 - one failed request must not end the engine
            report_failure(events, exc, out)
    return protocol.EXIT_OK


def command_status(args: argparse.Namespace, events: protocol.EventWriter) -> int:
    from .job import JobFolder

    job = JobFolder(args.job)
    if not job.job_file.is_file():
        raise BadInputError(f"{args.job} is not a job folder (no job.json)")
    from .splat.rasterize import rasterizer_report

    events.emit("result", outputs={stage: bool(record) for stage, record in job.status().items()}, job=str(job.root),
                **rasterizer_report())
    return protocol.EXIT_OK


def command_version(args: argparse.Namespace, events: protocol.EventWriter) -> int:
    events.emit("hello", engine_version=__version__, protocol=protocol.PROTOCOL_VERSION, job="", **_device_report())
    return protocol.EXIT_OK


def _device_report() -> dict[str, Any]:
    """What `auto` picks here, for Test connection: device, GPU and its free memory, rasterizer."""
    import torch

    from .splat.rasterize import rasterizer_report

    device = resolve_device("auto")
    report: dict[str, Any] = {"device": device, **rasterizer_report()}
    if device == "cuda":
        free, total = torch.cuda.mem_get_info()
        report.update(gpu=torch.cuda.get_device_name(), gpu_free_mb=round(free / 2**20), gpu_total_mb=round(total / 2**20))
    return report


COMMANDS = {"generate": command_generate, "serve": command_serve, "status": command_status, "version": command_version}


def use_compile_caches() -> None:
    """PyTorch's compile caches in Gen3D's cache, not in $TMPDIR or ~/.triton (nothing written outside
    the job folder and the configured cache), so gsplat's CUDA built by ``engine warmup`` is found by
    every later process; anything running the engine in-process (benchmarks) calls this first."""
    cache = default_cache_dir()
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache / "torchinductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", str(cache / "triton"))
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(cache / "torch_extensions"))  # gsplat's CUDA build


def main(argv: list[str] | None = None) -> int:
    # Events own the real stdout; anything else printing (libraries, progress bars) goes to stderr.
    events = protocol.EventWriter(sys.stdout)
    sys.stdout = sys.stderr
    _setup_logging(None)
    use_compile_caches()
    args = None
    try:
        args = build_parser().parse_args(argv)
        command = COMMANDS.get(args.command) or __import__(
            f"engine.{EXTRA_COMMANDS[args.command]}", fromlist=["main"]
        ).main
        return command(args, events)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - every failure becomes an event
        out = Path(args.out) if args is not None and getattr(args, "out", None) else None
        return report_failure(events, exc, out)


def report_failure(events: protocol.EventWriter, exc: BaseException, out: Path | None) -> int:
    """The event and exit code for a failure; the traceback goes to the job's log only."""
    if isinstance(exc, Cancelled):
        events.emit("cancelled", stage=exc.stage, message=str(exc))
        log.info("cancelled")
        return protocol.EXIT_CANCELLED
    if isinstance(exc, KeyboardInterrupt):
        events.emit("cancelled", stage="")
        return protocol.EXIT_CANCELLED
    if isinstance(exc, MissingModelError):
        return _fail(events, exc, protocol.EXIT_MISSING_MODEL)
    if isinstance(exc, OutOfMemory):
        return _fail(events, exc, protocol.EXIT_OUT_OF_MEMORY, hint=exc.hint)
    if isinstance(exc, remote.RemoteError):
        return _fail(events, exc, exc.code)
    if isinstance(exc, (Gen3DError, protocol.ProtocolError, CameraError, ProfileError, TrajectoryError)):
        return _fail(events, exc, protocol.EXIT_BAD_INPUT)
    if is_out_of_memory(exc):
        hint = "lower --resolution, --iterations or --steps, or use --device cpu"
        return _fail(events, exc, protocol.EXIT_OUT_OF_MEMORY, hint=hint, message=f"out of memory: {exc}")
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f"the disk holding {out}" if out else "the disk"
        message = f"disk full ({exc.strerror}): free space on {where} and run again; finished stages are kept"
        return _fail(events, exc, protocol.EXIT_FAILED, message=message)
    where = f"; details in {out / 'engine.log'}" if out else ""
    return _fail(events, exc, protocol.EXIT_FAILED, message=f"{type(exc).__name__}: {exc}{where}")


def _log_traceback(exc: BaseException) -> None:
    """The traceback goes to the job's log file only, never to the terminal."""
    text = "".join(traceback.format_exception(exc))
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.stream.write(text)
            handler.flush()


def _fail(events: protocol.EventWriter, exc: BaseException, code: int, *, hint: str = "", message: str = "") -> int:
    message = message or str(exc)
    log.error(message.splitlines()[0] if message else type(exc).__name__)
    _log_traceback(exc)
    fields: dict[str, Any] = {"message": message, "code": protocol.EXIT_CODES[code]}
    if hint:
        fields["hint"] = hint
    events.emit("error", **fields)
    return code


if __name__ == "__main__":
    sys.exit(main())
