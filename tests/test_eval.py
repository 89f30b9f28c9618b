"""eval-rgbd end to end through the real CLI subprocess, on the committed Blender example.

Small and short so it fits CI (2 cores): 64 px long side, 40 3DGS steps, CPU (~15-35 s).
Measured with these settings (docs/EVAL.md): psnr_covisible 25.95, ssim_covisible 0.772;
baseline (input points reprojected, no 3DGS) PSNR 15.89, SSIM 0.513 with 7.4% of the covisible
pixels left as holes; point_error_mean 0.0182 m, median 0.0171 m (true-depth floor: median
0.0170 m, the spacing of the surface samples); covisible_fraction 0.74.  The floors sit below
that (an earlier trainer gave 23.5 here) so harmless changes pass while a broken camera,
transform or trainer (PSNR ~12, errors of metres) fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_eval_rgbd_cli(tmp_path):
    out = tmp_path / "eval"
    command = [sys.executable, "-m", "engine", "eval-rgbd", "--out", str(out), "--resolution", "64",
               "--iterations", "40", "--device", "cpu"]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert all(isinstance(event, dict) and "type" in event for event in events)
    assert events[-1]["type"] == "result"
    assert "3DGS PSNR" in proc.stderr  # the table

    report = json.loads((out / "eval.json").read_text())
    for key in ("psnr_covisible", "ssim_covisible", "point_error_mean", "point_error_median", "point_error_p90",
                "psnr_points_covisible", "covisible_fraction", "point_error_floor_median", "views"):
        assert key in report, key
    assert len(report["views"]) == 4
    assert 0.6 < report["covisible_fraction"] < 0.9
    assert report["psnr_covisible"] > 22.5 and report["ssim_covisible"] > 0.6
    assert report["psnr_points_covisible"] > 14.0
    assert report["psnr_covisible"] > report["psnr_points_covisible"] + 4.0  # what 3DGS adds: filled cracks
    # Points come from the true depth, so they sit on the true surface, up to the sampling floor.
    assert report["point_error_floor_median"] < 0.025
    assert report["point_error_median"] < 0.025 and report["point_error_mean"] < 0.03
    assert sorted(p.name for p in (out / "renders").iterdir())[:3] == ["00_covisible.png", "00_gaussians.png", "00_points.png"]
