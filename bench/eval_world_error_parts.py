"""eval-world at one error level's parts taken one at a time: which of the typical errors costs "ours".

    python3 bench/eval_world_error_parts.py --scene courtyard --out DIR [eval-world options]

Adds three levels to ``engine.oracle.ERROR_LEVELS`` for this process only (no user or CI path
sees them), each with one part of ``typical``: ``typical-scale`` (per-view scale and shift),
``typical-warp`` (the smooth warp), ``typical-edges`` (the blurred depth edges), and runs
``python -m engine eval-world`` at each (``--level`` is set here; any other eval-world option
passes through), writing ``DIR/LEVEL/eval_world.json``.  With ``--jobs`` shared, true depth and
the baselines of one level resume.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.oracle import ERROR_LEVELS, ErrorLevel  # noqa: E402

TYPICAL = ERROR_LEVELS["typical"]
ZERO = ErrorLevel(0.0, 0.0, 0.0, 0.0)
PARTS = {
    "typical-scale": replace(ZERO, scale=TYPICAL.scale, shift=TYPICAL.shift),
    "typical-warp": replace(ZERO, warp=TYPICAL.warp),
    "typical-edges": replace(ZERO, edge_blur_px=TYPICAL.edge_blur_px),
}


def main(argv: list[str]) -> int:
    from engine.__main__ import main as engine_main

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args, rest = parser.parse_known_args(argv)  # the rest goes to eval-world as it is
    ERROR_LEVELS.update(PARTS)
    status = 0
    for level in PARTS:
        status |= engine_main(["eval-world", "--level", level, "--out", str(args.out / level), *rest])
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
