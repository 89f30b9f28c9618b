"""`python -m engine batch` on a real local Dask cluster (two worker processes, offline profile):
a WorldScore-shaped manifest, one worker killed mid-case, a failing case, a re-run that skips."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from conftest import EXAMPLE, ROOT, engine_command

from engine import worldscore
from engine.batch import MULTICAST_OFF, load_manifest, worker_specs

LAYOUTS = ["push_in", "orbit_left", "pan_right", "move_left"]
FLAGS = ["--workers", "2", "--gpus", "0,1", "--device", "cpu", "--profile", "offline",
         "--resolution", "48", "--steps", "1", "--iterations", "8", "--frame-size", "32"]


def _dataset(root: Path) -> Path:
    """DATA_PATH/WorldScore-Dataset/static/static.json with WorldScore's fields (plus our depth)."""
    dataset = root / "WorldScore-Dataset"
    images = dataset / "static" / "photorealistic" / "outdoor" / "courtyard"
    images.mkdir(parents=True)
    entries = []
    for index, layout in enumerate(LAYOUTS + ["push_in"]):
        image = images / f"{index:03d}.png"
        if index < len(LAYOUTS):
            shutil.copyfile(EXAMPLE / "image.png", image)
        else:
            image.write_bytes(b"not a png")  # this case fails; the others go on
        entries.append({
            "image": f"static/photorealistic/outdoor/courtyard/{index:03d}.png",
            "depth": str(EXAMPLE / "depth.png"),
            "visual_movement": "static", "visual_style": "photorealistic", "scene_type": "outdoor",
            "camera_path": [layout], "style": "Photorealistic.",
            "prompt_list": ["a stone courtyard", "a sunny garden"], "content_list": [["pillar"], ["tree"]],
        })
    manifest = dataset / "static" / "static.json"
    manifest.write_text(json.dumps(entries, indent=1))
    return manifest


def _log(out: Path) -> list[dict]:
    path = out / "batch_log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _kill_one_mid_case(process: subprocess.Popen, out: Path, timeout: float = 240) -> str:
    """SIGKILL the worker running the first case seen past its depth stage (its finished stages stay)."""
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        for start in (e for e in _log(out) if e["event"] == "start"):
            events = out / "jobs" / start["case"] / "events.jsonl"
            stages = [json.loads(line) for line in events.read_text().splitlines()] if events.is_file() else []
            if any(e["type"] == "stage_start" and e["stage"] in ("segment", "inpaint", "expand") for e in stages):
                os.kill(start["pid"], signal.SIGKILL)
                return start["case"]
        time.sleep(0.05)
    raise AssertionError("no case reached its segment stage")


def test_batch_worldscore_kill_fail_resume(tmp_path):
    manifest, out = _dataset(tmp_path), tmp_path / "out"
    command = engine_command("batch", str(manifest), "--out", str(out), "--layout", "worldscore", *FLAGS)
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = _kill_one_mid_case(process, out)
    stdout, stderr = process.communicate(timeout=400)
    assert process.returncode == 1, stderr[-3000:]  # one case failed

    summary = json.loads((out / "summary.json").read_text())
    rows = {row["name"]: row for row in summary["cases"]}
    names = [f"photorealistic/outdoor/courtyard/{k:03d}" for k in range(5)]
    assert list(rows) == names and all(isinstance(r["seconds"], float) for r in rows.values())
    assert summary["counts"] == {"done": 4, "failed": 1, "skipped": 0}
    assert "004.png" in rows[names[4]]["error"] and rows[names[4]]["code"] == "bad_input"
    assert "done" in stderr and "failed 1" in stderr  # the summary table
    assert json.loads(stdout.splitlines()[-1])["type"] == "result"

    log = _log(out)
    for name in names:
        starts = [e for e in log if e["case"] == name and e["event"] == "start"]
        ends = [e for e in log if e["case"] == name and e["event"] != "start"]
        assert len(starts) == (2 if name == killed else 1) and len(ends) == 1, (name, starts, ends)
        assert ends[0]["event"] == ("failed" if name == names[4] else "done")
    # Each worker pinned to its own (fake) GPU, NVLink multicast off in every worker.
    assert {e["env"]["CUDA_VISIBLE_DEVICES"] for e in log if e["event"] == "start"} == {"0", "1"}
    assert all(e["env"][k] == v for e in log if e["event"] == "start" for k, v in MULTICAST_OFF.items())

    # The retried case resumed: every stage its first attempt finished was cached in the second.
    events = [json.loads(line) for line in (out / "jobs" / killed / "events.jsonl").read_text().splitlines()]
    second = max(i for i, e in enumerate(events) if e["type"] == "stage_start" and e["stage"] == "inputs")
    first_done = {e["stage"] for e in events[:second] if e["type"] == "stage_done"}
    again = {e["stage"]: e["cached"] for e in events[second:] if e["type"] == "stage_done"}
    assert first_done and all(again[stage] for stage in first_done)
    assert not any(again[stage] for stage in set(again) - first_done)

    for name, layout in zip(names, LAYOUTS):
        folder = out / "worldscore_output" / "static" / name
        assert worldscore.data_exists(folder, [layout]), name
        image_data = json.loads((folder / "image_data.json").read_text())
        camera_data = json.loads((folder / "camera_data.json").read_text())
        frames = sorted(p.name for p in (folder / "frames").iterdir())
        # evaluator.py: len(cameras_interp) == total_frames == len(frames)
        assert frames == [f"{k:03d}.png" for k in range(50)] == [f"{k:03d}.png" for k in range(image_data["total_frames"])]
        assert len(camera_data["cameras_interp"]) == 50 and image_data["camera_path"] == [layout]
        assert (folder / "videos" / "output.mp4").stat().st_size > 0
        assert (folder / "time.txt").read_text().startswith("generate_time: ")
        from PIL import Image

        assert Image.open(folder / "input_image.png").size == (512, 512)
    leftovers = [p for p in out.rglob("*") if ".tmp" in p.name or p.name.endswith(".partial")]
    assert not leftovers

    # A re-run skips the finished cases and reports the failed one again.
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=400)
    summary = json.loads((out / "summary.json").read_text())
    assert again.returncode == 1 and summary["counts"] == {"done": 0, "failed": 1, "skipped": 4}
    assert len([e for e in _log(out) if e["event"] == "start"]) == len([e for e in log if e["event"] == "start"]) + 1


def test_manifests_folder_csv_and_worker_pinning(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("b.png", "a.jpg", "notes.txt", "b_depth.png"):
        (folder / name).write_bytes(b"")
    cases, layout = load_manifest(folder, None)
    assert layout == "jobs" and [c.name for c in cases] == ["a", "b"] and cases[0].image == str(folder / "a.jpg")
    assert cases[0].depth == "" and cases[1].depth == str(folder / "b_depth.png")  # NAME_depth.* is NAME's depth
    cases, layout = load_manifest(folder, "worldscore")
    assert [c.output for c in cases] == ["worldscore_output/static/custom/custom/images/a", "worldscore_output/static/custom/custom/images/b"]

    (tmp_path / "list.csv").write_text(
        'image,depth,prompt,settings\nimages/a.jpg,d.npy,a hall,"{""steps"": 2}"\nimages/a.jpg,,,\n'
    )
    cases, _ = load_manifest(tmp_path / "list.csv", None)
    assert [c.name for c in cases] == ["a", "a_2"] and cases[0].settings == {"steps": 2}
    assert cases[0].depth == str(tmp_path / "d.npy") and cases[0].prompt == "a hall" and cases[1].depth == ""

    specs = worker_specs(3, ["4", "6"])  # three workers on two GPUs: round robin
    envs = [spec["options"]["env"] for spec in specs.values()]
    assert [env["CUDA_VISIBLE_DEVICES"] for env in envs] == ["4", "6", "4"]
    assert all(env[k] == v for env in envs for k, v in MULTICAST_OFF.items())
    assert all(spec["options"]["nthreads"] == 1 and spec["options"]["resources"] == {"GPU": 1} for spec in specs.values())
    assert "CUDA_VISIBLE_DEVICES" not in worker_specs(2, [])["gen3d-0"]["options"]["env"]
