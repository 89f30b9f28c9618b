"""Generate WorldScore's static track with Gen3D through WorldScore's own dataloader and helper.

Run with WorldScore installed and its .env exported (WORLDSCORE_PATH, MODEL_PATH, DATA_PATH):

    python run_gen3d_worldscore.py --gen3d /path/to/gen3d [--profile full --steps 8]

WorldScore's dataloader skips finished cases (its data_exists) and writes camera_data.json; its
helper writes image_data.json, input_image.png, time.txt, frames/ and videos/output.mp4.  Each
case runs the Gen3D engine (its own interpreter, --python) as `generate` then `render-path` along
the 50 interpolated cameras.  For many GPUs or hosts use `python -m engine batch static.json`
instead, which writes the same folders.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

from worldscore.benchmark.helpers import GetHelpers


def generate(args, image_path, prompt, cameras_interp, job):
    import numpy as np

    from engine import trajectory, worldscore

    path = worldscore.engine_cameras(cameras_interp)
    picks = sorted({round(float(k)) for k in np.linspace(0, len(path) - 1, args.steps + 1)})
    job.mkdir(parents=True, exist_ok=True)
    (job.parent / f"{job.name}_camera.json").write_text(json.dumps(path[0].to_dict()))
    trajectory.save_trajectory(job.parent / f"{job.name}_expand.json", [path[k] for k in picks], source="worldscore")
    trajectory.save_trajectory(job.parent / f"{job.name}_frames.json", path, source="worldscore")
    engine = [args.python, "-m", "engine"]
    common = ["--device", args.device]
    subprocess.run(
        [*engine, "generate", image_path, "--out", str(job), "--profile", args.profile, "--prompt", prompt,
         "--camera", str(job.parent / f"{job.name}_camera.json"), "--trajectory", str(job.parent / f"{job.name}_expand.json"),
         "--resolution", str(args.resolution), "--steps", str(args.steps), *common],
        cwd=args.gen3d, check=True, stdout=subprocess.DEVNULL,
    )
    frames = job / "frames_out"
    subprocess.run(
        [*engine, "render-path", str(job), "--out", str(frames), "--trajectory", str(job.parent / f"{job.name}_frames.json"), *common],
        cwd=args.gen3d, check=True, stdout=subprocess.DEVNULL,
    )
    return [Image.open(p).convert("RGB") for p in sorted((frames / "frames").glob("*.png"))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gen3d", type=Path, required=True, help="the Gen3D checkout (holds engine/)")
    parser.add_argument("--python", default=sys.executable, help="the Gen3D engine's interpreter")
    parser.add_argument("--jobs", type=Path, default=Path(os.environ.get("MODEL_PATH", ".")) / "Gen3D" / "jobs")
    parser.add_argument("--profile", default="full")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--json_file", default="")
    args = parser.parse_args()
    sys.path.insert(0, str(args.gen3d))  # engine.worldscore and engine.trajectory need numpy only
    from engine.worldscore import LAYOUT_TYPE

    dataloader, helper = GetHelpers("gen3d", "static", args.json_file)
    for data in dataloader:
        image_path, prompts, cameras, cameras_interp = helper.adapt(data)
        # One scene per case: intra layouts keep the input's prompt, inter ones describe the next scene.
        prompt = prompts[1] if len(prompts) > 1 and LAYOUT_TYPE[data["camera_path"][0]] == "inter" else prompts[0]
        relative = Path(data["output_dir"]).relative_to(Path(data["output_dir"]).parents[4])
        helper.save(generate(args, image_path, prompt, cameras_interp, args.jobs / relative))


if __name__ == "__main__":
    main()
