"""Today's default against the new default, side by side in one GPU session: per stage, cold and
warm, peak VRAM, and eval-rgbd quality of both 3DGS schedules.

    python bench/e2e_compare.py [--out DIR]      # on the GPU machine (device tool), ~6 minutes

1. ``python -m engine warmup``: gsplat's CUDA built as Set up engine builds it (timed), so the
   cold runs below are "cold after set-up".
2. ``bench/bench_models.py build``: random weights at the published sizes (profile ``bench``).
3. Per default, one process: N=8 at 512², resident, a cold run then a warm run
   (``bench_models.py e2e``); then the new default once more in low-VRAM mode, its own process.
4. ``python -m engine eval-rgbd --device cuda --resolution 320`` with each default's 3DGS schedule.

Writes ``DIR/results/DATE-DEVICE-e2e.json`` (``device``, ``date``, per run ``label``, ``warm``,
``settings``, ``total_s`` and the per-stage record of bench_models.py) and prints its tables.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# What changed, as engine settings: "today" spells out the defaults before issue 13.
DEFAULTS = {
    "today": ["inpaint_steps=30", "diffusion_solver=pndm", "cuda_graphs=false", "splat_schedule=lucid"],
    "new": [],
}


def run(argv: list[str], log: Path) -> float:
    start = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.call(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    seconds = time.perf_counter() - start
    print(f"[{seconds:6.1f} s] exit {code}: {' '.join(argv[1:])}", flush=True)
    return seconds if code == 0 else -seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "bench" / "out"))
    parser.add_argument("--skip", nargs="*", default=[], help="parts to leave out: build, today, low-vram, eval")
    args = parser.parse_args()
    import torch

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    device = torch.cuda.get_device_name(0)
    result: dict = {"device": device, "date": time.strftime("%Y-%m-%d"), "time_utc": time.strftime("%H:%M", time.gmtime()),
                    "torch": torch.__version__, "resolution": 512, "profile": "bench", "defaults": DEFAULTS, "runs": []}
    path = out / "results" / f"{result['date']}-{device.replace(' ', '-')}-e2e.json"
    path.parent.mkdir(exist_ok=True)

    def save() -> None:
        path.write_text(json.dumps(result, indent=1))

    warmup = out / "warmup.log"
    result["warmup_s"] = round(run([py, "-m", "engine", "warmup", "--device", "cuda"], warmup), 1)
    result["warmup_event"] = warmup.read_text().strip().splitlines()[-1:]  # the result event
    if "build" not in args.skip:
        result["build_s"] = round(run([py, "bench/bench_models.py", "build", "--out", str(out / "build")], out / "build.log"), 1)
    plans = [(tag, "resident") for tag in DEFAULTS if tag not in args.skip] + \
        ([("new", "low-vram")] if "low-vram" not in args.skip else [])
    for tag, memory in plans:
        spec = ",".join(["8", *DEFAULTS[tag]])
        specs = [spec, spec] if memory == "resident" else [spec]
        folder = out / f"e2e-{tag}-{memory}"
        seconds = run([py, "bench/bench_models.py", "e2e", "--memory", memory, "--out", str(folder), "--runs", *specs],
                      out / f"e2e-{tag}-{memory}.log")
        record = json.loads((folder / "bench_models_e2e.json").read_text()) if (folder / "bench_models_e2e.json").is_file() else {}
        for index, r in enumerate(record.get("runs", [])):
            r.update(label=f"{tag} default, {memory}, {'warm' if index else 'cold'}", warm=bool(index), default=tag,
                     settings=DEFAULTS[tag] or ["(new defaults)"])
            result["runs"].append(r)
        result.setdefault("process_s", {})[f"{tag} {memory}"] = round(seconds, 1)
        save()
    if "eval" not in args.skip:
        result["eval_rgbd"] = {}
        for tag, schedule in (("today", "lucid"), ("new", "fast")):
            folder = out / f"eval-{tag}"
            seconds = run([py, "-m", "engine", "eval-rgbd", "--out", str(folder), "--device", "cuda", "--resolution", "320",
                           "--splat-schedule", schedule], out / f"eval-{tag}.log")
            report = json.loads((folder / "eval.json").read_text()) if (folder / "eval.json").is_file() else {}
            result["eval_rgbd"][tag] = {k: report.get(k) for k in ("psnr_covisible", "ssim_covisible", "gaussians", "seconds")}
            result["eval_rgbd"][tag].update(schedule=schedule, process_s=round(seconds, 1))
            save()
    save()
    print_tables(result)
    return 0


def print_tables(result: dict) -> None:
    from engine.protocol import STAGES as stages

    print(f"\n{result['device']}, {result['date']}; warmup {result.get('warmup_s')} s")
    print("| run | total s | " + " | ".join(stages) + " | 3DGS it, Gaussians | peak alloc GB | peak device GB |")
    print("|---" * (len(stages) + 5) + "|")
    for r in result["runs"]:
        if "error" in r:
            print(f"| {r['label']} | {r['error']} |")
            continue
        cells = " | ".join(f"{r['stages'].get(s, {}).get('s', float('nan')):.2f}" for s in stages)
        splat = r.get("splat", {})
        print(f"| {r['label']} | **{r['total_s']:.2f}** | {cells} | {splat.get('steps')}, {splat.get('n_gaussians')} | "
              f"{r['peak_allocated_mb'] / 1024:.2f} | {(r.get('peak_device_mb') or 0) / 1024:.2f} |")
    for tag, e in result.get("eval_rgbd", {}).items():
        print(f"eval-rgbd {tag} ({e.get('schedule')}): PSNR {e.get('psnr_covisible')} SSIM {e.get('ssim_covisible')} "
              f"Gaussians {e.get('gaussians')} in {e.get('seconds')} s")


if __name__ == "__main__":
    sys.exit(main())
