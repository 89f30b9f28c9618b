"""Convert Gaussian splat files between the formats other tools write and the standard 3DGS PLY.

Read: PlayCanvas compressed PLY (what SuperSplat saves), Niantic SPZ (v1-v4) and PlayCanvas SOG;
write: standard PLY, SPZ (v4, what PlayCanvas' engine loads).  All through gsply (the kept
library; SOG needs imagecodecs for WebP).  Values stay as the file stores them: pre-activation,
and SPZ axes unconverted, as splat-transform 3.7.0 and gsply read and write them (Niantic's own
tools convert PLY's RDF axes to RUB; such files come in turned 180 degrees about X).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import protocol
from .errors import BadInputError

READS = {".ply": "PLY (standard or PlayCanvas compressed)", ".spz": "Niantic SPZ", ".sog": "PlayCanvas SOG"}
WRITES = {".ply": "standard 3DGS PLY", ".spz": "Niantic SPZ v4"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="a .ply (standard or compressed), .spz or .sog file")
    parser.add_argument("output", type=Path, help="a .ply (standard 3DGS) or .spz file")


def _suffix(path: Path, table: dict[str, str], verb: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in table:
        raise BadInputError(f"cannot {verb} {path.name}: {verb}s {', '.join(f'{v} ({k})' for k, v in table.items())}")
    return suffix


def read(path: Path):
    """gsply's GSData for any file in READS (pre-activation values)."""
    import gsply

    suffix = _suffix(path, READS, "read")
    if not path.is_file():
        raise BadInputError(f"{path} does not exist")
    try:
        if suffix == ".spz":
            return gsply.read_spz(path)
        if suffix == ".sog":
            from gsply.sog_reader import sogread

            return sogread(path)
        return gsply.plyread(path)
    except ImportError as exc:
        raise BadInputError(f"reading {path.name} needs a package the engine's environment lacks: {exc}") from exc
    except (ValueError, KeyError, OSError) as exc:
        raise BadInputError(f"{path} is not a readable {READS[suffix]} file: {exc}") from exc


def write(path: Path, data) -> None:
    import gsply

    suffix = _suffix(path, WRITES, "write")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if suffix == ".spz":
        gsply.write_spz(tmp, data, version=4)
    else:
        gsply.plywrite(tmp, data, compressed=False)
    tmp.replace(path)


def main(args: argparse.Namespace, events: protocol.EventWriter) -> int:
    _suffix(args.output, WRITES, "write")
    data = read(args.input)
    write(args.output, data)
    events.emit("result", outputs={"gaussians": str(args.output.resolve())}, count=int(len(data.means)))
    return protocol.EXIT_OK
