"""Convert Gaussian splat files between the formats other tools write and the standard 3DGS PLY.

Read: PlayCanvas compressed PLY (what SuperSplat saves), Niantic SPZ (v1-v4) and PlayCanvas SOG;
write: standard PLY, SPZ (v4, what PlayCanvas' engine loads).  All through gsply (the kept
library; SOG needs imagecodecs for WebP).  Values stay as the file stores them: pre-activation,
and SPZ axes unconverted, as splat-transform 3.7.0 and gsply read and write them (Niantic's own
tools convert PLY's RDF axes to RUB; such files come in turned 180 degrees about X).

The training mode travels too, as splat-transform carries it: a PLY's header comments
(engine.gaussian_math.antialiased_from_comments), SPZ's header flag 0x1 (``FLAG_ANTIALIASED`` of
Niantic's format) and SOG's ``"model": "antialiased"`` in meta.json are read, and a written PLY or SPZ
carries the mode; gsply keeps none of them, so they are read and set here.
"""

from __future__ import annotations

import argparse
import gzip
import json
import zipfile
from pathlib import Path

from . import protocol
from .errors import BadInputError
from .gaussian_math import ANTIALIASED_COMMENTS, antialiased_from_comments, ply_comments

READS = {".ply": "PLY (standard or PlayCanvas compressed)", ".spz": "Niantic SPZ", ".sog": "PlayCanvas SOG"}
WRITES = {".ply": "standard 3DGS PLY", ".spz": "Niantic SPZ v4"}
SPZ_FLAG_ANTIALIASED = 0x1
_SPZ_FLAGS_BYTE = 14  # magic u32, version u32, points u32, SH degree u8, fractional bits u8, flags u8


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


def trained_antialiased(path: Path) -> bool:
    """Whether the file marks its Gaussians as trained (so to be rendered) in gsplat's antialiased
    mode; unmarked files are classic."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".spz":
            with path.open("rb") as raw:
                head = raw.read(16)
            if head[:2] == b"\x1f\x8b":  # v1-v3: the header is inside the gzip stream
                with gzip.open(path, "rb") as unpacked:
                    head = unpacked.read(16)
            return len(head) == 16 and bool(head[_SPZ_FLAGS_BYTE] & SPZ_FLAG_ANTIALIASED)
        if suffix == ".sog":
            with zipfile.ZipFile(path) as bundle:
                return json.loads(bundle.read("meta.json")).get("model") == "antialiased"
        return antialiased_from_comments(ply_comments(path))
    except (OSError, EOFError, KeyError, ValueError, gzip.BadGzipFile, zipfile.BadZipFile):
        return False  # read() says what is wrong with the file


def write(path: Path, data, antialiased: bool = False) -> None:
    import gsply

    suffix = _suffix(path, WRITES, "write")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if suffix == ".spz":
        gsply.write_spz(tmp, data, version=4)  # v4's 32-byte header is not compressed
        if antialiased:
            with tmp.open("r+b") as out:
                out.seek(_SPZ_FLAGS_BYTE)
                flags = out.read(1)[0]
                out.seek(_SPZ_FLAGS_BYTE)
                out.write(bytes([flags | SPZ_FLAG_ANTIALIASED]))
    else:
        gsply.plywrite(tmp, data, compressed=False)
        if antialiased:
            _add_ply_comments(tmp, ANTIALIASED_COMMENTS)
    tmp.replace(path)


def _add_ply_comments(path: Path, comments) -> None:
    """``comments`` right after the header's ``ply`` and ``format`` lines (where strict readers
    want those two), the rest copied unchanged."""
    import shutil

    staged = path.with_name(path.name + ".comment")
    with path.open("rb") as source, staged.open("wb") as out:
        out.write(source.readline() + source.readline())  # "ply", "format ..."
        out.write("".join(f"comment {c}\n" for c in comments).encode())
        shutil.copyfileobj(source, out, 1 << 20)
    staged.replace(path)


def main(args: argparse.Namespace, events: protocol.EventWriter) -> int:
    _suffix(args.output, WRITES, "write")
    data = read(args.input)
    write(args.output, data, antialiased=trained_antialiased(args.input))
    events.emit("result", outputs={"gaussians": str(args.output.resolve())}, count=int(len(data.means)))
    return protocol.EXIT_OK
