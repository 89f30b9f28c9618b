"""Issue 7, item 4: many Generate runs in a row in one Blender session leave no zombie or
stray processes, no leaked threads, file descriptors or Blender data, and memory that comes
back near its start.

GEN3D_LOAD_RUNS sets the number of runs (default 5 to keep the suite quick on a shared CPU;
scripts/reliability_report.py runs 10); GEN3D_LOAD_REPORT names a JSON file for the numbers.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
from pathlib import Path

import pytest

from conftest import ADDON_MODULE, EXAMPLE

RUNS = int(os.environ.get("GEN3D_LOAD_RUNS", "5"))
RSS_GROWTH_LIMIT_MB = 100  # over all runs after the first; a leak of a result per run would pass it within a few runs


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def children() -> list[tuple[int, str]]:
    """(pid, state) of this process's children, zombies included, from /proc."""
    found = []
    me = str(os.getpid())
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # ended while we looked
            if fields[1] == me:
                found.append((int(entry.name), fields[0]))
    return found


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_generate_many_times_in_one_session(clean_scene, tmp_path):
    import bpy

    generate = sys.modules[f"{ADDON_MODULE}.operators.generate"]
    prefs = bpy.context.preferences.addons[ADDON_MODULE].preferences
    prefs.jobs_folder, prefs.profile, prefs.device = str(tmp_path / "jobs"), "offline", "cpu"
    prefs.engine_python = sys.executable
    settings = clean_scene.gen3d
    settings.image_path, settings.depth_path = str(EXAMPLE / "image.png"), str(EXAMPLE / "depth.png")
    settings.use_scene_camera = False
    settings.resolution, settings.steps, settings.splat_iterations = 64, 0, 5
    settings.import_mode = "REPLACE"

    rss_before = rss_mb()
    samples = []
    for run in range(RUNS):
        settings.seed = run  # a new seed redoes the stages from inpainting on: real work each run
        assert bpy.ops.gen3d.generate(timeout=300) == {"FINISHED"}, settings.message
        assert generate.active_run() is None
        gc.collect()
        samples.append(
            {"rss_mb": round(rss_mb(), 1), "children": children(), "threads": threading.active_count(),
             "fds": open_fds(), "meshes": len(bpy.data.meshes), "objects": len(bpy.data.objects),
             "collections": len(bpy.data.collections)}
        )
    first, last = samples[0], samples[-1]
    report = {
        "runs": RUNS,
        "rss_before_mb": round(rss_before, 1), "rss_first_mb": first["rss_mb"], "rss_last_mb": last["rss_mb"],
        "rss_growth_mb": round(last["rss_mb"] - first["rss_mb"], 1),
        "child_processes_left": max(len(s["children"]) for s in samples),
        "zombies": sum(state == "Z" for s in samples for _, state in s["children"]),
        "threads_first": first["threads"], "threads_last": last["threads"],
        "fds_first": first["fds"], "fds_last": last["fds"],
        "objects_first": first["objects"], "objects_last": last["objects"],
    }
    if os.environ.get("GEN3D_LOAD_REPORT"):
        Path(os.environ["GEN3D_LOAD_REPORT"]).write_text(json.dumps({**report, "samples": samples}, indent=1))
    assert report["child_processes_left"] == 0 and report["zombies"] == 0, samples
    # Reader threads end with their engine; descriptors (pipes, logs) are closed; REPLACE keeps
    # one result in the scene.
    assert all(s["threads"] == first["threads"] for s in samples), samples
    assert all(s["fds"] == first["fds"] for s in samples), samples
    assert all((s["objects"], s["meshes"], s["collections"]) == (first["objects"], first["meshes"], first["collections"]) for s in samples), samples
    assert report["rss_growth_mb"] < RSS_GROWTH_LIMIT_MB, report
