"""Time importing N Gaussians from a standard 3DGS .ply to a renderable object in Blender.

    .venv/bin/python bench/bench_import.py [--count 1000000] [--sh-degree 3] [--store-sh]

Phases: read + activate (numpy), mesh + attributes (foreach_set), node setup, and the first
evaluation of the geometry-nodes modifier (viewport: points; render: camera-facing quad instances).
Then the weight in the .blend: the file saved (uncompressed, Blender's default) less an empty
one, per Gaussian.
Runs the add-on from this working tree with the bpy module (no install needed).
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def load_addon():
    """This repository as the package ``gen3d`` so the add-on's relative imports resolve."""
    spec = importlib.util.spec_from_file_location("gen3d", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen3d"] = module
    spec.loader.exec_module(module)
    importlib.import_module("gen3d.gen3d_addon.importers")  # the package imports its modules only in register()
    return module


def write_file(ply, path: Path, count: int, sh_degree: int) -> None:
    rng = np.random.default_rng(0)
    n_rest = 3 * ((sh_degree + 1) ** 2 - 1)
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(n_rest)] + ["opacity", "scale_0", "scale_1", "scale_2"]
    names += ["rot_0", "rot_1", "rot_2", "rot_3"]
    data = np.zeros(count, dtype=[(n, "<f4") for n in names])
    for name in names:
        data[name] = rng.normal(size=count).astype(np.float32)
    for i in range(3):
        data[f"scale_{i}"] -= 5.0
    ply.write_vertices(path, data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--sh-degree", type=int, default=3)
    parser.add_argument("--store-sh", action="store_true", help="SH rest into the .blend (as Store SH in .blend does)")
    args = parser.parse_args()

    import bpy

    addon = load_addon()
    importers, ply = addon.gen3d_addon.importers, addon.gen3d_addon.ply
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gaussians.ply"
        write_file(ply, path, args.count, args.sh_degree)
        size_mb = path.stat().st_size / 1e6
        bpy.ops.wm.read_homefile(use_empty=True)
        empty = Path(tmp) / "empty.blend"
        bpy.ops.wm.save_as_mainfile(filepath=str(empty), copy=True)
        times = {}
        start = time.perf_counter()
        gaussians = importers.read_gaussians(path)
        if args.store_sh:
            gaussians["source"] = None
        times["read + activate"] = time.perf_counter() - start
        mark = time.perf_counter()
        obj = importers.gaussians_object("Gaussians", gaussians)
        bpy.context.scene.collection.objects.link(obj)
        times["mesh + attributes + nodes"] = time.perf_counter() - mark
        mark = time.perf_counter()
        depsgraph = bpy.context.evaluated_depsgraph_get()
        geometry = obj.evaluated_get(depsgraph).evaluated_geometry()
        shown = len(geometry.pointcloud.points) if geometry.pointcloud else 0  # the splat draw shows them otherwise
        times["first viewport evaluation"] = time.perf_counter() - mark
        total = time.perf_counter() - start
        # What a render evaluates: every Gaussian as a camera-facing quad instance (not in the total).
        modifier = obj.modifiers[importers.GAUSSIANS_GROUP]
        nodes = addon.gen3d_addon.nodes
        nodes.set_modifier_input(modifier, "Viewport Quads", True)
        nodes.set_modifier_input(modifier, "Viewport Fraction", 1.0)
        obj.update_tag()
        mark = time.perf_counter()
        geometry = obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).evaluated_geometry()
        instances = len(geometry.instances_pointcloud().points)
        quads = time.perf_counter() - mark
        blend = Path(tmp) / "imported.blend"
        bpy.ops.wm.save_as_mainfile(filepath=str(blend), copy=True)
        weight = blend.stat().st_size - empty.stat().st_size
    for name, seconds in times.items():
        print(f"{name:28s} {seconds:6.2f} s")
    print(f"{'total':28s} {total:6.2f} s   ({args.count} Gaussians, SH degree {args.sh_degree}, "
          f"{size_mb:.0f} MB; viewport shows {shown} points)")
    print(f"{'all as quad instances':28s} {quads:6.2f} s   ({instances} instances, unrealised)")
    print(f"{'.blend weight':28s} {weight / 1e6:6.1f} MB  ({weight / args.count:.1f} bytes per Gaussian, SH rest "
          f"{'in the .blend' if args.store_sh else 'left in the PLY'}; the PLY: "
          f"{size_mb * 1e6 / args.count:.1f})")
    print(f"machine: {platform.machine()} {platform.processor() or ''} {len(__import__('os').sched_getaffinity(0))} cores, "
          f"Blender {bpy.app.version_string}")


if __name__ == "__main__":
    main()
