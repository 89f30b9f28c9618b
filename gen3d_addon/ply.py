"""Binary PLY vertex reading/writing with numpy only (Blender ships numpy, not plyfile)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
_NAMES = {value: key for key, value in reversed(list(_TYPES.items()))}


class PlyError(ValueError):
    pass


class OtherFormat(PlyError):
    """A splat file in a format the engine converts (gsply there), not a plain vertex PLY."""

    def __init__(self, path, name: str):
        super().__init__(f"{path} is a {name} file")
        self.format = name


def read_vertices(path: Path | str) -> np.ndarray:
    """The ``vertex`` element of a binary PLY as a structured array (one field per property)."""
    with open(path, "rb") as handle:
        if handle.readline().strip() != b"ply":
            raise PlyError(f"{path} is not a PLY file (splats import from .ply, compressed .ply, .spz and .sog)")
        endian, fields, count, in_vertex = "<", [], None, False
        while True:
            line = handle.readline()
            if not line:
                raise PlyError(f"{path}: header has no end_header")
            words = line.decode("ascii", "replace").split()
            if not words:
                continue
            if words[0] == "format":
                if words[1] == "ascii":
                    raise PlyError(f"{path}: ASCII PLY is not supported; save it as binary")
                endian = "<" if words[1] == "binary_little_endian" else ">"
            elif words[0] == "element":
                in_vertex = words[1] == "vertex"
                if in_vertex:
                    count = int(words[2])
                elif count is None and words[1] == "chunk":  # its per-256-splat ranges come first
                    raise OtherFormat(path, "PlayCanvas compressed PLY (SuperSplat)")
                elif count is None:
                    raise PlyError(f"{path}: element {words[1]!r} before 'vertex' is not a layout Gen3D reads")
            elif words[0] == "property" and in_vertex:
                if words[1] == "list":
                    raise PlyError(f"{path}: list properties on vertices are not supported")
                fields.append((words[2], endian + _TYPES[words[1]]))
            elif words[0] == "end_header":
                break
        if count is None:
            raise PlyError(f"{path} has no vertex element")
        data = np.fromfile(handle, dtype=np.dtype(fields), count=count)
    if len(data) != count:
        raise PlyError(f"{path} is truncated: {len(data)} of {count} vertices")
    return data


def write_vertices(path: Path | str, data: np.ndarray, comments: list[str] = ()) -> None:
    """Write a structured array as the vertex element of a binary little-endian PLY."""
    header = ["ply", "format binary_little_endian 1.0", *(f"comment {c}" for c in comments), f"element vertex {len(data)}"]
    for name in data.dtype.names:
        header.append(f"property {_NAMES[data.dtype[name].newbyteorder('<').str[1:]]} {name}")
    header.append("end_header")
    little = data.astype(data.dtype.newbyteorder("<"))
    tmp = Path(str(path) + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(("\n".join(header) + "\n").encode("ascii"))
        little.tofile(handle)
    tmp.replace(path)
