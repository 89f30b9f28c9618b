"""Model stages at full size (random weights) and the whole generate run, timed on a GPU.

Profile ``bench`` (engine.profiles): the ``full`` profile's backends and architectures with
random weights (engine.random_models), so every call costs what the trained models cost; the
images mean nothing.  Three commands, each run as its own process so the first generate run of
``e2e`` is a real cold start:

    python bench/bench_models.py build            # builds the random models into $GEN3D_CACHE
    python bench/bench_models.py e2e --runs 8 8 4   # resident models: N=8 cold, N=8 warm, N=4 warm
    python bench/bench_models.py e2e --runs 8 --memory low-vram
    python bench/bench_models.py e2e --runs 8,iterations=1000,inpaint_steps=20 8,iterations=1000,inpaint_steps=20
    python bench/bench_models.py models           # each model call alone: load, time, peak VRAM

Input: the bundled example (examples/courtyard), centre-cropped to a square so that
``--resolution 512`` gives 512x512 (the paper's image size).  Results go to stdout as tables
and to ``--out`` (default $OUT, else bench/out) as JSON, rewritten after every measurement so a
run cut short keeps what it measured.  ``--profile tiny --device cpu
--resolution 64`` runs every line of this script on a CPU in a minute (smoke test).
"""

from __future__ import annotations

import time

PROCESS_START = time.perf_counter()  # before torch: a cold run's imports count too

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
EXAMPLE = ROOT / "examples" / "courtyard"
PROMPT = "high-resolution courtyard background with grey, beige and green colours, photorealistic, 8K"


# --------------------------------------------------------------------------------------------
# measuring


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


class GpuSampler:
    """Peak memory the card reports (CUDA context and allocator cache included), sampled every 20 ms."""

    def __init__(self):
        self.peak_mb = 0.0
        self._stop = threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            self._read = lambda h=pynvml.nvmlDeviceGetHandleByIndex(0): pynvml.nvmlDeviceGetMemoryInfo(h).used / 2**20
        except Exception:  # noqa: BLE001 - no NVML (CPU run): report nothing
            self._read = None

    def __enter__(self):
        if self._read:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def _loop(self):
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self._read())
            time.sleep(0.02)

    def __exit__(self, *exc):
        self._stop.set()
        if self._read:
            self._thread.join()
            self.peak_mb = max(self.peak_mb, self._read())


def cuda_mb(what: str) -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return round(getattr(torch.cuda, what)() / 2**20, 1)


def reset_peak() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


class StepClock:
    """A diffusion backend's progress(fraction) callback: a synchronised timestamp per step."""

    def __init__(self, device: str):
        self.device, self.times = device, []

    def __call__(self, fraction: float) -> None:
        sync(self.device)
        self.times.append(time.perf_counter())

    def summary(self, start: float, end: float) -> dict:
        steps = len(self.times)
        per_step = (self.times[-1] - self.times[0]) / (steps - 1) if steps > 1 else float("nan")
        # What is not denoising: prompt encoding, VAE encode/decode, pre/post-processing.
        return {"steps": steps, "ms_per_step": round(1e3 * per_step, 2), "other_s": round(end - start - steps * per_step, 3)}


# --------------------------------------------------------------------------------------------
# inputs


def square_example(resolution: int) -> tuple[Path, np.ndarray, np.ndarray]:
    """(square input PNG, its image and metric depth at ``resolution``²): the example's centre crop."""
    import cv2
    from PIL import Image

    from engine import images

    rgb = Image.open(EXAMPLE / "image.png").convert("RGB")
    width, height = rgb.size
    side = min(width, height)
    box = ((width - side) // 2, (height - side) // 2)
    path = Path(tempfile.mkdtemp(prefix="bench-input-")) / "courtyard_square.png"
    rgb.crop((*box, box[0] + side, box[1] + side)).save(path)
    image = images.load_image(path, resolution)
    depth = images.load_depth(EXAMPLE / "depth.png", (width, height))[box[1] : box[1] + side, box[0] : box[0] + side]
    depth = cv2.resize(depth, image.shape[1::-1], interpolation=cv2.INTER_NEAREST)
    return path, image, depth


def context(args):
    from engine.profiles import BackendContext, get_profile
    from engine.settings import default_cache_dir

    return BackendContext(profile=get_profile(args.profile), device=args.device, cache_dir=str(default_cache_dir()), allow_download=False)


# --------------------------------------------------------------------------------------------
# build


def command_build(args, result: dict, save) -> None:
    from engine.models import resolve_source

    ctx = context(args)
    built = {}
    for model in ctx.profile.models:
        start = time.perf_counter()
        path = resolve_source(ctx, model)
        files = [p for p in Path(path).rglob("*") if p.is_file()] if Path(path).is_dir() else [Path(path)]
        built[model] = {
            "seconds": round(time.perf_counter() - start, 2),
            "gb": round(sum(p.stat().st_size for p in files) / 1e9, 3),
            "path": str(path),
        }
        print(f"{model:18s} {built[model]['seconds']:7.1f} s {built[model]['gb']:7.2f} GB  {path}", flush=True)
        result["built"] = built
        save(result)


# --------------------------------------------------------------------------------------------
# models: each call alone


def measure(device: str, create, call, repeats: int) -> dict:
    """Load, one first call (autotuning, lazy init), then ``repeats`` timed calls; peak VRAM of all."""
    reset_peak()
    base = cuda_mb("memory_allocated")
    start = time.perf_counter()
    backend = create()
    sync(device)
    record = {"load_s": round(time.perf_counter() - start, 2)}
    if base is not None:
        record["weights_mb"] = round(cuda_mb("memory_allocated") - base, 1)
    times, extra = [], {}
    for i in range(repeats + 1):
        start = time.perf_counter()
        extra = call(backend) or {}
        sync(device)
        times.append(time.perf_counter() - start)
    record.update(first_s=round(times[0], 3), median_s=round(float(np.median(times[1:])), 3), **extra)
    if base is not None:
        record["peak_allocated_mb"] = cuda_mb("max_memory_allocated")
        record["peak_reserved_mb"] = cuda_mb("max_memory_reserved")
    del backend
    reset_peak()
    return record


def command_models(args, result: dict, save) -> None:
    import torch

    from engine import depth as depth_mod
    from engine import inpaint, prompting, segment, text2image
    from engine.settings import LAYER_FIELDS, Settings

    ctx = context(args)
    settings = Settings.from_dict({**ctx.profile.settings, "resolution": args.resolution})
    layer_settings = segment.LayerSettings(**settings.subset(LAYER_FIELDS))
    _, image, depth = square_example(args.resolution)
    # A realistic hole: the example's foreground by its true depth (what SAM + the rules find on it).
    hidden = segment.DepthEdgeLayers(ctx, layer_settings).layers(image, depth).hidden
    if not hidden.any():
        hidden = np.zeros(depth.shape, bool)
        hidden[depth.shape[0] // 3 : 2 * depth.shape[0] // 3, depth.shape[1] // 3 : 2 * depth.shape[1] // 3] = True
    pixels = (image * 255 + 0.5).astype(np.uint8)
    steps, repeats, device = settings.inpaint_steps, args.repeats, args.device
    results: dict[str, dict] = {"input": {"shape": list(image.shape), "hole_fraction": round(float(hidden.mean()), 3)}}
    result.update(models=results, steps=steps)

    def run(name, create, call, repeats=repeats):
        try:
            results[name] = measure(device, create, call, repeats)
        except Exception as exc:  # noqa: BLE001 - one broken model must not lose the others' numbers
            results[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        print(f"{name:28s} {json.dumps(results[name])}", flush=True)
        save(result)

    def diffusion(call):
        def timed(backend):
            clock = StepClock(device)
            start = time.perf_counter()
            call(backend, clock)
            sync(device)
            return clock.summary(start, time.perf_counter())

        return timed

    run("moge", lambda: depth_mod.create("moge", ctx), lambda b: {"valid": round(float(b.estimate(image).valid.mean()), 3)})

    def sam_parts(b):
        autocast = b._autocast()
        with torch.inference_mode(), autocast:
            sync(device)
            start = time.perf_counter()
            b.predictor.set_image(pixels)
            sync(device)
            encoder = time.perf_counter() - start
            start = time.perf_counter()
            records = b.generator.generate(pixels)
            sync(device)
            amg = time.perf_counter() - start
        start = time.perf_counter()
        layers = b.layers(image, depth)
        sync(device)
        return {
            "encoder_s": round(encoder, 3),
            "automatic_masks_s": round(amg, 3),
            "automatic_masks": len(records),
            "layers_s": round(time.perf_counter() - start, 3),  # AMG + depth-prompted masks + the rules
            "depth_prompts": layers.info.get("prompted"),
        }

    run("sam (layers)", lambda: segment.create("sam", ctx, layer_settings), sam_parts)

    def sam_keep_all(b):
        # Random weights pass none of SAM's IoU/stability filters, so their automatic masks cost
        # no post-processing; real ones keep ~100s.  With every mask of an 8x8 grid kept (192),
        # this run gives the post-processing cost per kept mask.
        from segment_anything import SamAutomaticMaskGenerator

        generator = SamAutomaticMaskGenerator(b.model, points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
        with torch.inference_mode(), b._autocast():
            b.predictor.set_image(pixels)  # warm the encoder so the clock below sees the rest
            start = time.perf_counter()
            count = len(generator.generate(pixels))
            sync(device)
        return {"automatic_masks": count, "s_per_kept_mask": round((time.perf_counter() - start) / max(count, 1), 4)}

    run("sam automatic 8x8, keep all", lambda: segment.create("sam", ctx, layer_settings), sam_keep_all, repeats=1)

    start = time.perf_counter()
    completed, _ = depth_geometry.complete_far_side(depth, hidden)
    results["complete_far_side (CPU)"] = {"median_s": round(time.perf_counter() - start, 3), "valid": bool(np.all(completed[hidden] > 0))}
    print(f"{'complete_far_side (CPU)':28s} {json.dumps(results['complete_far_side (CPU)'])}", flush=True)
    run(
        "controlnet-depth inpaint",
        lambda: inpaint.create("sd-controlnet-depth", ctx, steps=steps, guidance=settings.guidance),
        diffusion(lambda b, clock: b.inpaint(image, hidden, depth=depth, prompt=PROMPT, seed=0, progress=clock)),
    )
    run(
        "sd inpaint",
        lambda: inpaint.create("sd-inpaint", ctx, steps=steps, guidance=settings.guidance),
        diffusion(lambda b, clock: b.inpaint(image, hidden, prompt="", seed=1, progress=clock)),
    )
    run("clip prompt", lambda: prompting.create("clip", ctx), lambda b: {"prompt": b.prompt(image)})
    run(
        "text-to-image",
        lambda: text2image.create("sd", ctx, steps=steps, guidance=settings.guidance),
        diffusion(lambda b, clock: b.generate(PROMPT, width=args.resolution, height=args.resolution, progress=clock)),
    )
    run("depth-anything (not in the profile's path)", lambda: depth_mod.create("depth-anything", ctx), lambda b: b.estimate(image) and None)


# --------------------------------------------------------------------------------------------
# e2e: the whole generate run in this process, backends kept between runs


class Recorder:
    """A stream for protocol.EventWriter that keeps the events."""

    def __init__(self):
        self.events: list[dict] = []

    def write(self, text: str) -> None:
        self.events.extend(json.loads(line) for line in text.splitlines() if line.strip())

    def flush(self) -> None:
        pass


class Instrument:
    """Times every backend call and the stages' GPU/CPU helpers without changing the pipeline.

    ``Run.backend`` is wrapped: a backend's creation is its load, each call of its public
    method is timed (synchronised).  Backends whose random outputs could stop or shortcut the
    run are wrapped in ``Guarded`` (see there).
    """

    METHODS = ("estimate", "layers", "inpaint", "prompt", "generate")
    HELPERS = {
        "engine.pointcloud": ("render_points", "unproject"),
        "engine.align": ("align_depth",),
        "engine.depth_geometry": ("complete_far_side",),
        "engine.splat": ("make_reprojection_views", "train_gaussians"),
    }

    def __init__(self, device: str):
        import importlib

        from engine import pipeline

        self.device = device
        self.reset()
        original = pipeline.Run.backend
        instrument = self

        def backend(run, slot):
            pooled = dict(run.pool.backends)
            start = time.perf_counter()
            obj = original(run, slot)
            created = [k for k, v in run.pool.backends.items() if pooled.get(k) is not v]
            if created:  # created now, not taken from the pool
                sync(device)
                instrument.loads[slot] += time.perf_counter() - start
                if slot in Guarded.SLOTS:
                    options_key = run.pool.backends[created[0]][0]
                    obj = Guarded(obj, slot, instrument)
                    run.pool.backends[created[0]] = (options_key, obj)
            return Timed(obj, slot, instrument)

        pipeline.Run.backend = backend
        for module_name, names in self.HELPERS.items():
            module = importlib.import_module(module_name)
            for name in names:
                setattr(module, name, self.timed(name, getattr(module, name)))
        train = sys.modules["engine.splat"].train_gaussians

        def train_with_stats(*args, **kwargs):
            kwargs.setdefault("stats", self.splat)  # steps, seconds, Gaussians (the stage passes none)
            return train(*args, **kwargs)

        sys.modules["engine.splat"].train_gaussians = train_with_stats

    def reset(self) -> None:
        self.loads: dict[str, float] = defaultdict(float)
        self.calls: dict[str, list[float]] = defaultdict(list)
        self.substitutions: dict[str, int] = defaultdict(int)
        self.splat: dict = {}

    def timed(self, name: str, function):
        def wrapper(*args, **kwargs):
            sync(self.device)
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                sync(self.device)
                self.calls[name].append(time.perf_counter() - start)

        return wrapper


class Timed:
    def __init__(self, backend, slot: str, instrument: Instrument):
        self._backend, self._slot, self._instrument = backend, slot, instrument

    def __getattr__(self, name):
        value = getattr(self._backend, name)
        if name in Instrument.METHODS:
            return self._instrument.timed(f"{self._slot}.{name}", value)
        return value


class Guarded:
    """Random weights give meaningless outputs, some of which would change what the run does:
    SAM finds no foreground (background inpainting would be skipped), depth may come out all
    invalid (the run would stop), fp16 noise may overflow to NaN pixels.  After the model has
    run in full, such an output is replaced by a plausible stand-in and counted, so the run
    does the work a real image makes it do."""

    SLOTS = ("layers", "geometry", "expansion_geometry", "background_inpaint", "expansion_inpaint")

    def __init__(self, backend, slot: str, instrument: Instrument):
        self.backend, self.slot, self.instrument = backend, slot, instrument

    def __getattr__(self, name):  # name, release(), ... of the wrapped backend
        return getattr(self.backend, name)

    def _substituted(self, what: str) -> None:
        self.instrument.substitutions[f"{self.slot}: {what}"] += 1

    def layers(self, image, depth, **kwargs):
        result = self.backend.layers(image, depth, **kwargs)
        if result.hidden.any():
            return result
        self._substituted("no foreground, central disc of 15%")
        h, w = depth.shape
        rows, cols = np.ogrid[:h, :w]
        disc = (rows - h / 2) ** 2 + (cols - w / 2) ** 2 < 0.15 * h * w / np.pi
        return dataclasses.replace(result, foreground=disc, hidden=disc & (depth > 0))

    def estimate(self, image, camera_hint=None, **kwargs):
        result = self.backend.estimate(image, camera_hint, **kwargs)
        if (result.valid & (result.depth > 0)).any():
            return result
        self._substituted("no valid depth, 3 m plane")
        return dataclasses.replace(result, depth=np.full(result.depth.shape, 3.0, np.float32), valid=np.ones(result.depth.shape, bool))

    def inpaint(self, image, mask, **kwargs):
        result = self.backend.inpaint(image, mask, **kwargs)
        if np.isfinite(result).all():
            return result
        self._substituted("non-finite pixels")
        return np.nan_to_num(result, nan=0.5, posinf=1.0, neginf=0.0)


def generate_once(args, image_path: Path, spec: str, pool, instrument: Instrument, memory: str) -> dict:
    import inspect

    import torch

    from engine import pipeline, protocol
    from engine.__main__ import build_parser, prepare_job

    steps, *settings = spec.split(",")  # "N" or "N,name=value,...": engine settings of this run
    job_dir = Path(tempfile.mkdtemp(prefix=f"bench-n{steps}-"))  # a fresh folder: no stage resumes
    argv = ["generate", str(image_path), "--out", str(job_dir), "--profile", args.profile, "--device", args.device]
    argv += ["--resolution", str(args.resolution), "--steps", steps]
    for setting in settings:
        argv += ["--set", setting]
    instrument.reset()
    recorder = Recorder()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    with GpuSampler() as sampler:
        start = time.perf_counter()
        job = prepare_job(build_parser().parse_args(argv))
        # Memory policies, where the pipeline has them: "resident" keeps the models between stages.
        policy = {"memory": memory} if "memory" in inspect.signature(pipeline.make_run).parameters else {}
        # The warm runs reuse the loaded backends (what `engine serve` keeps).
        run = pipeline.make_run(job, protocol.EventWriter(recorder), device=args.device, pool=pool, **policy)
        pipeline.run_job(run)
        sync(args.device)
        total = time.perf_counter() - start
    stages = {
        e["stage"]: {"s": e["seconds"], "peak_allocated_mb": e.get("peak_vram_mb")}
        for e in recorder.events
        if e.get("type") == "stage_done"
    }
    views = json.loads((job_dir / "expand" / "views.json").read_text())["steps"]
    from engine.splat.rasterize import resolve_backend

    splat = {k: v for k, v in instrument.splat.items() if k in ("steps", "seconds", "n_gaussians")}
    if splat.get("seconds"):
        splat["it_per_s"] = round(splat["steps"] / splat["seconds"], 1)
    return {
        "steps": int(steps),
        "settings": settings,
        "memory": policy.get("memory", "(no policies)"),
        "total_s": round(total, 2),
        "splat": splat,
        "stages": stages,
        "peak_allocated_mb": max((s["peak_allocated_mb"] or 0) for s in stages.values()),
        "peak_device_mb": round(sampler.peak_mb, 1) or None,  # as nvidia-smi sees it, CUDA context included
        "loads_s": {k: round(v, 2) for k, v in instrument.loads.items()},
        "calls": {k: {"n": len(v), "total_s": round(sum(v), 3), "mean_s": round(sum(v) / len(v), 3)} for k, v in instrument.calls.items()},
        "substitutions": dict(instrument.substitutions),
        "hole_fractions": [round(v["hole_fraction"], 3) for v in views],
        "points": views[-1]["points"] if views else None,
        "rasterizer": resolve_backend("auto", args.device),
    }


def command_e2e(args, result: dict, save) -> None:
    from engine import pipeline

    instrument = Instrument(args.device)
    image_path, _, _ = square_example(args.resolution)
    pool = pipeline.BackendPool()  # shared by the runs (under low-vram each stage empties it)
    result["runs"] = []
    for index, spec in enumerate(args.runs):
        label = "cold" if index == 0 else "warm"
        profiler = None
        if args.cprofile and index == len(args.runs) - 1:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        try:
            record = generate_once(args, image_path, spec, pool, instrument, args.memory)
        except Exception as exc:  # noqa: BLE001 - keep what the other runs measured
            record = {"steps": spec, "error": f"{type(exc).__name__}: {exc}"[:400]}
        if profiler is not None:
            profiler.disable()
            write_profile(profiler, args.out / "e2e_cprofile.txt")
            record["cprofile"] = "e2e_cprofile.txt"
        record["label"] = f"{label} {args.memory}" + (f" {spec.partition(',')[2]}" if "," in spec else "")
        record["warm"] = label == "warm"
        if label == "cold":
            record["since_process_start_s"] = round(time.perf_counter() - PROCESS_START, 2)
        result["runs"].append(record)
        save(result)
        print(json.dumps(record), flush=True)


def write_profile(profiler, path: Path) -> None:
    """Where a run's wall time goes, by Python function (GPU time shows where the host waits on it)."""
    import io
    import pstats

    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text).strip_dirs()
    stats.sort_stats("cumulative").print_stats(120)
    stats.sort_stats("tottime").print_stats(60)
    path.write_text(text.getvalue())


def print_e2e(result: dict) -> None:
    from engine.protocol import STAGES

    print("\n| run | total s | " + " | ".join(STAGES) + " | peak alloc GB | peak device GB |")
    for r in result["runs"]:
        if "error" in r:
            print(f"| N={r['steps']} {r['label']} | {r['error']} |")
            continue
        stage_s = " | ".join(f"{r['stages'].get(s, {}).get('s', float('nan')):.2f}" for s in STAGES)
        device_gb = (r["peak_device_mb"] or 0) / 1024
        print(f"| N={r['steps']} {r['label']} | {r['total_s']:.2f} | {stage_s} | {r['peak_allocated_mb'] / 1024:.2f} | {device_gb:.2f} |")
    for r in result["runs"]:
        if "calls" in r:
            calls = ", ".join(f"{k} {v['n']}x{v['mean_s']:.3f}s" for k, v in sorted(r["calls"].items(), key=lambda kv: -kv[1]["total_s"]))
            print(f"N={r['steps']} {r['label']}: loads {r['loads_s']}; calls: {calls}")


# --------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("build", "models", "e2e"))
    parser.add_argument("--profile", default="bench")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--runs", nargs="+", default=["8", "8", "4"], help="e2e runs in order, 'N' or 'N,setting=value,...'; the first is cold")
    parser.add_argument("--cprofile", action="store_true", help="e2e: profile the last run (cProfile) into e2e_cprofile.txt")
    parser.add_argument("--memory", default="resident", choices=("resident", "low-vram"), help="e2e memory policy")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per model after the first")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "bench" / "out"))
    args = parser.parse_args()
    from engine.__main__ import use_compile_caches

    use_compile_caches()  # the gsplat build of `engine warmup` (Set up engine): a cold run does not pay it
    import torch

    result = {"command": args.command, "profile": args.profile, "resolution": args.resolution, "date": time.strftime("%Y-%m-%d %H:%M")}
    result["device"] = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    result["torch"] = torch.__version__
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"bench_models_{args.command}.json"

    def save(payload: dict) -> None:
        path.write_text(json.dumps(payload, indent=1))

    {"build": command_build, "models": command_models, "e2e": command_e2e}[args.command](args, result, save)
    if args.command == "e2e":
        print_e2e(result)
    save(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
