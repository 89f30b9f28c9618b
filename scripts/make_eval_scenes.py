"""Build and render the eval-world scenes with real Blender: input view, a camera path, held-out views.

    .venv/bin/python scripts/make_eval_scenes.py --scene courtyard --out DIR [--path orbit] [--resolution 128] [--steps 4]
    .venv/bin/python scripts/make_eval_scenes.py --list

A sibling of ``make_example.py`` (whose materials, cameras, Cycles settings, Z-pass check and
surface sampling it reuses).  Scenes, all built in code:

* ``courtyard`` — the bundled example's walled courtyard (default path: orbit);
* ``room`` — an indoor room: sofa, table and chairs, bookshelf, a doorway onto a lit corridor,
  a column and a tall cabinet close to the camera as strong occluders (default path: look-around);
* ``street`` — a 60 m street between building rows with lamp posts, parked cars and trees; the
  far end lies ~55 m away (default path: dolly).

The camera path is the engine's own preset (``engine.trajectory.preset``, the one Generate
uses) around the input camera, with ``scene_depth`` the median true depth of the input view.
Held-out cameras sit half-way between consecutive path views (the same preset sampled twice as
densely) and are then moved a little off the path (3 % of the scene depth sideways or up,
turned 2°), so they show what the path's views do not quite show.

Writes into ``--out`` (Blender's world, Z up, metres): ``scene.json`` (cameras as
``Camera.to_dict()``, the path, settings), ``views/NAME_image.png`` (8-bit sRGB),
``views/NAME_depth.npy`` (float32 z-depth, 0 = sky) for ``input``, ``path_KK`` and
``heldout_KK``, and ``surface.npz`` (``points`` [N, 3] uniform by area on the true surfaces
that face one of the cameras, inside its frustum).  Colour: Cycles, 16 samples + denoising.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_example as mx  # noqa: E402

from engine import trajectory  # noqa: E402  (make_example put the repo on sys.path)
from engine.cameras import Camera, to_blender  # noqa: E402

COLOUR_SAMPLES = 16
SURFACE_POINTS = 60_000
PRESET_ANGLE = 30.0  # degrees swept by orbit / look-around (the engine's default preset_angle)
OFF_PATH = 0.03  # held-out cameras leave the path by this fraction of the scene depth
OFF_PATH_TURN_DEG = 2.0


# ---------------------------------------------------------------------------------------------
# scenes
# ---------------------------------------------------------------------------------------------


def build_courtyard(scene) -> tuple[tuple, tuple]:
    mx.build_scene()
    mx.build_lighting(scene)
    return mx.INPUT_EYE, mx.INPUT_TARGET


def _room_lighting(scene) -> None:
    for name, location, size, energy in (
        ("ceiling light", (0.0, 0.5, 2.75), 2.5, 550.0),
        ("corridor light", (0.8, 6.0, 2.6), 1.2, 400.0),
    ):
        data = bpy.data.lights.new(name, "AREA")
        data.size, data.energy, data.color = size, energy, (1.0, 0.92, 0.8)
        light = bpy.data.objects.new(name, data)
        light.location = location  # area lights face -Z (down) by default
        scene.collection.objects.link(light)
    world = bpy.data.worlds.new("room ambient")
    scene.world = world
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.35, 0.35, 0.4, 1.0)
    world.node_tree.nodes["Background"].inputs["Strength"].default_value = 0.4


def build_room(scene) -> tuple[tuple, tuple]:
    """A 6 x 7 x 2.8 m room with a doorway in the back wall onto a corridor."""
    plaster = mx.plain("room plaster", (0.80, 0.76, 0.68), 0.9, noise=0.15, scale=4.0)
    blue_wall = mx.plain("blue wall", (0.30, 0.42, 0.58), 0.9, noise=0.15, scale=4.0)
    parquet = mx.bricks("parquet", (0.55, 0.36, 0.20), (0.42, 0.27, 0.15), (0.30, 0.20, 0.12), 1.2, 0.8, 0.15, 0.5)
    ceiling = mx.plain("ceiling", (0.9, 0.9, 0.88), 0.9)
    sofa = mx.plain("sofa", (0.55, 0.12, 0.14), 0.9, noise=0.2, scale=20.0)
    table = mx.wood("table", (0.62, 0.42, 0.24), (0.38, 0.24, 0.12))
    books = mx.checker("books", (0.15, 0.30, 0.55), (0.75, 0.62, 0.20), 9.0)
    cabinet = mx.wood("cabinet", (0.30, 0.22, 0.16), (0.18, 0.12, 0.08), scale=6.0)
    stone = mx.plain("column stone", (0.62, 0.60, 0.56), 0.8, noise=0.3, scale=6.0)
    rug = mx.checker("rug", (0.55, 0.45, 0.25), (0.25, 0.35, 0.30), 3.0)
    green = mx.plain("plant", (0.15, 0.45, 0.12), 0.8, noise=0.5, scale=14.0)
    corridor = mx.plain("corridor wall", (0.85, 0.60, 0.35), 0.9, noise=0.2, scale=3.0)

    mx.box((0.0, 0.5, -0.05), (6.0, 7.0, 0.1), parquet)  # floor
    mx.box((0.0, 0.5, 2.85), (6.0, 7.0, 0.1), ceiling)
    mx.box((-3.05, 0.5, 1.4), (0.1, 7.0, 2.8), blue_wall)  # left wall
    mx.box((3.05, 0.5, 1.4), (0.1, 7.0, 2.8), plaster)  # right wall
    mx.box((0.0, -3.05, 1.4), (6.0, 0.1, 2.8), plaster)  # wall behind the camera
    # Back wall (y = 4) with a 1 m x 2.1 m doorway at x = 0.3 .. 1.3.
    mx.box((-1.35, 4.05, 1.4), (3.3, 0.1, 2.8), plaster)
    mx.box((2.15, 4.05, 1.4), (1.7, 0.1, 2.8), plaster)
    mx.box((0.8, 4.05, 2.45), (1.0, 0.1, 0.7), plaster)
    # The corridor behind the doorway and what it shows.
    mx.box((0.8, 5.5, -0.05), (4.0, 3.0, 0.1), parquet)
    mx.box((0.8, 7.05, 1.4), (4.0, 0.1, 2.8), corridor)
    mx.box((-1.25, 5.5, 1.4), (0.1, 3.0, 2.8), corridor)
    mx.box((2.85, 5.5, 1.4), (0.1, 3.0, 2.8), corridor)
    mx.cylinder((0.6, 6.3, 0.25), 0.25, 0.5, cabinet, radius_top=0.3)
    mx.sphere((0.6, 6.3, 0.9), 0.45, green, subdivisions=3)
    # Sofa against the left wall, rug and table with chairs in the middle.
    mx.box((-2.5, 1.2, 0.25), (0.9, 2.2, 0.5), sofa)
    mx.box((-2.85, 1.2, 0.65), (0.25, 2.2, 0.6), sofa)
    for y in (0.2, 2.2):
        mx.box((-2.5, y, 0.55), (0.9, 0.2, 0.35), sofa)
    mx.box((-0.2, 1.6, 0.005), (2.4, 1.8, 0.01), rug)
    mx.box((0.1, 1.8, 0.75), (1.4, 0.9, 0.06), table)
    for x in (-0.5, 0.7):
        for y in (1.4, 2.2):
            mx.box((x, y, 0.36), (0.06, 0.06, 0.72), table)
    for x, y in ((-0.35, 0.95), (0.6, 2.65)):
        mx.box((x, y, 0.45), (0.45, 0.45, 0.05), cabinet)
        mx.box((x, y + (0.22 if y > 2 else -0.22), 0.75), (0.45, 0.05, 0.6), cabinet)
    mx.cylinder((0.1, 1.8, 0.95), 0.08, 0.35, stone, radius_top=0.05)
    # Bookshelf on the right wall, a tall cabinet and a column near the camera (the occluders).
    mx.box((2.8, 2.0, 1.0), (0.4, 1.6, 2.0), books)
    mx.box((1.3, -0.5, 1.05), (0.7, 0.6, 2.1), cabinet, rotation_z=-15.0)
    mx.cylinder((-0.9, -0.4, 1.4), 0.22, 2.8, stone)
    _room_lighting(scene)
    return (0.1, -2.6, 1.5), (0.3, 4.0, 1.1)


def build_street(scene) -> tuple[tuple, tuple]:
    """A street 60 m long between two building rows, ending at a building ~55 m from the camera."""
    asphalt = mx.plain("asphalt", (0.18, 0.18, 0.19), 0.9, noise=0.3, scale=3.0)
    pavement = mx.bricks("pavement", (0.55, 0.53, 0.50), (0.45, 0.44, 0.42), (0.3, 0.3, 0.3), 0.8, 0.5, 0.5, 0.0)
    facades = [
        mx.bricks("red brick", (0.55, 0.17, 0.09), (0.40, 0.12, 0.07), (0.78, 0.74, 0.66), 2.0, 0.5, 0.2, vertical=True),
        mx.plain("ochre render", (0.80, 0.60, 0.30), 0.9, noise=0.2, scale=2.0),
        mx.plain("grey render", (0.62, 0.64, 0.66), 0.9, noise=0.2, scale=2.0),
        mx.bricks("yellow brick", (0.75, 0.62, 0.35), (0.62, 0.50, 0.28), (0.85, 0.82, 0.75), 2.0, 0.5, 0.2, vertical=True),
    ]
    glass = mx.plain("window", (0.08, 0.10, 0.14), 0.15)
    metal = mx.plain("metal", (0.20, 0.22, 0.24), 0.4)
    car_colours = [mx.plain(f"car {i}", colour, 0.3) for i, colour in enumerate(
        ((0.7, 0.08, 0.06), (0.1, 0.25, 0.6), (0.85, 0.85, 0.82), (0.15, 0.45, 0.2))
    )]
    foliage = mx.plain("street trees", (0.16, 0.40, 0.10), 0.8, noise=0.5, scale=10.0)
    bark = mx.wood("bark", (0.35, 0.25, 0.15), (0.2, 0.13, 0.08))

    mx.box((0.0, 27.0, -0.05), (7.0, 80.0, 0.1), asphalt)
    for side in (-1, 1):
        mx.box((side * 4.5, 27.0, 0.0), (2.0, 80.0, 0.16), pavement)
        y = -12.0
        index = 0 if side < 0 else 2
        while y < 60.0:
            length = 7.0 + 3.0 * ((index * 7) % 3)
            height = 7.0 + 3.0 * ((index * 5) % 4)
            x = side * 7.5
            mx.box((x, y + length / 2, height / 2), (3.0, length - 0.2, height), facades[index % len(facades)])
            for floor in range(int(height // 3)):
                for k in range(int(length // 2.5)):
                    wy = y + 1.25 + 2.5 * k
                    mx.box((x - side * 1.52, wy, 1.8 + 3.0 * floor), (0.06, 1.1, 1.4), glass)
            y += length
            index += 1
        for y in range(-6, 60, 9):
            mx.cylinder((side * 3.8, y, 2.2), 0.07, 4.4, metal, vertices=16)
            mx.sphere((side * 3.6, y, 4.4), 0.18, metal, subdivisions=2)
    for k, (x, y) in enumerate(((-2.4, 3.0), (2.4, 7.5), (-2.4, 14.0), (2.4, 22.0), (-2.4, 31.0))):
        mx.box((x, y, 0.55), (1.8, 4.2, 0.9), car_colours[k % len(car_colours)])
        mx.box((x, y - 0.3, 1.25), (1.6, 2.2, 0.55), glass)
    for x, y in ((4.4, 1.5), (-4.4, 11.0), (4.4, 18.0), (-4.4, 26.0)):
        mx.cylinder((x, y, 1.3), 0.12, 2.6, bark, vertices=16)
        mx.sphere((x, y, 3.2), 1.1, foliage, subdivisions=3)
    mx.box((0.0, 58.0, 6.0), (16.0, 3.0, 12.0), facades[2])  # the building closing the street
    mx.build_lighting(scene)
    return (0.4, -2.0, 1.7), (0.0, 20.0, 1.6)


SCENES = {
    "courtyard": (build_courtyard, "orbit"),
    "room": (build_room, "look-around"),
    "street": (build_street, "dolly"),
}
PATHS = ("orbit", "look-around", "dolly")


# ---------------------------------------------------------------------------------------------
# cameras
# ---------------------------------------------------------------------------------------------


def place_camera(scene, camera: Camera):
    """A Blender camera object reproducing an engine camera (Blender world)."""
    values = to_blender(camera)
    data = bpy.data.cameras.new(camera.name or "camera")
    data.lens, data.sensor_width, data.sensor_fit = values["lens"], values["sensor_width"], values["sensor_fit"]
    data.shift_x, data.shift_y = values["shift_x"], values["shift_y"]
    obj = bpy.data.objects.new(camera.name or "camera", data)
    obj.matrix_world = Matrix(values["matrix_world"])
    scene.collection.objects.link(obj)
    return obj


def path_cameras(name: str, input_camera: Camera, steps: int, scene_depth: float) -> tuple[list[Camera], list[Camera]]:
    """The path (input first, then ``steps`` views) and its held-out cameras, Blender world."""
    sweep = {"angle": PRESET_ANGLE} if name in ("orbit", "look-around") else {}
    path = trajectory.preset(name, input_camera, steps + 1, scene_depth=scene_depth, **sweep)
    # Twice as dense: even samples are the path's own cameras, odd ones lie half-way between.
    closed = trajectory.PRESETS[name][1] and (name not in ("orbit", "look-around") or abs(PRESET_ANGLE) >= 360)
    dense = trajectory.preset(name, input_camera, 2 * (steps + 1) - (0 if closed else 1), scene_depth=scene_depth, **sweep)
    for k, camera in enumerate(path):
        if not np.allclose(camera.world_to_camera, dense[2 * k].world_to_camera, atol=1e-6):
            raise RuntimeError(f"preset {name!r}: the dense path does not contain the path's views")
    heldout = []
    for k, camera in enumerate(dense[1::2]):
        side = OFF_PATH * scene_depth
        offset = np.array([side, 0.0, 0.0]) if k % 2 == 0 else np.array([0.0, -side, 0.0])  # right, or up
        turn = math.radians(OFF_PATH_TURN_DEG if k % 2 == 0 else -OFF_PATH_TURN_DEG)
        nudge = np.eye(4)
        nudge[:3, :3] = [[math.cos(turn), 0.0, math.sin(turn)], [0.0, 1.0, 0.0], [-math.sin(turn), 0.0, math.cos(turn)]]
        nudge[:3, 3] = -nudge[:3, :3] @ offset  # move the eye by +offset in its own frame, then turn
        heldout.append(camera.with_pose(nudge @ camera.world_to_camera, name=f"heldout_{k:02d}"))
    path = [camera.with_pose(camera.world_to_camera, name="input" if k == 0 else f"path_{k:02d}") for k, camera in enumerate(path)]
    return path, heldout


def render_view(scene, camera: Camera, views: Path, tmp: Path) -> np.ndarray:
    obj = place_camera(scene, camera)
    scene.camera = obj
    check = mx.engine_camera(scene, obj)
    if not (np.allclose(check.K, camera.K, atol=1e-6) and np.allclose(check.world_to_camera, camera.world_to_camera, atol=1e-5)):
        raise RuntimeError(f"camera {camera.name}: Blender's camera does not reproduce the engine camera")
    mx.render_colour(scene, views / f"{camera.name}_image.png")
    depth = mx.render_depth(scene, tmp / f"{camera.name}.exr")
    np.save(views / f"{camera.name}_depth.npy", depth)
    print(f"make_eval_scenes: rendered {camera.name}", file=sys.stderr)
    return depth


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scene", choices=sorted(SCENES))
    parser.add_argument("--path", choices=PATHS, help="camera path preset (default: the scene's own)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--resolution", type=int, default=128, help="long side in pixels (4:3)")
    parser.add_argument("--steps", type=int, default=4, help="expansion views along the path")
    parser.add_argument("--list", action="store_true", help="print the scenes and their default paths")
    args = parser.parse_args(argv)
    if args.list:
        print(json.dumps({name: path for name, (_, path) in SCENES.items()}))
        return 0
    if not args.scene or not args.out:
        parser.error("--scene and --out are required")
    builder, default_path = SCENES[args.scene]
    path_name = args.path or default_path
    width, height = args.resolution, 2 * round(args.resolution * 3 / 8)

    # Cycles' denoiser and sample count: few samples, denoised, for files that stay small and fast.
    mx.COLOUR_SAMPLES = COLOUR_SAMPLES
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    views = args.out / "views"
    views.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gen3d_eval_scene_") as tmp_name:
        tmp = Path(tmp_name)
        mx.check_z_pass(scene, tmp)
        eye, target = builder(scene)
        mx.configure_render(scene, width, height)
        input_camera = mx.engine_camera(scene, mx.add_camera(scene, "input", eye, target))
        input_depth = render_view(scene, input_camera.with_pose(input_camera.world_to_camera, "input"), views, tmp)
        scene_depth = float(np.median(input_depth[input_depth > 0]))
        path, heldout = path_cameras(path_name, input_camera, args.steps, scene_depth)
        for camera in path[1:] + heldout:
            render_view(scene, camera, views, tmp)
        surface = mx.sample_surface(mx.scene_triangles(scene), path + heldout, SURFACE_POINTS, np.random.default_rng(mx.SEED))
    np.savez_compressed(args.out / "surface.npz", points=surface)
    description = {
        "scene": args.scene,
        "path_preset": path_name,
        "preset_angle": PRESET_ANGLE if path_name in ("orbit", "look-around") else None,
        "scene_depth": scene_depth,
        "steps": args.steps,
        "resolution": [width, height],
        "colour_samples": COLOUR_SAMPLES,
        "blender": bpy.app.version_string,
        "input": path[0].to_dict(),
        "path": [camera.to_dict() for camera in path[1:]],
        "heldout": [camera.to_dict() for camera in heldout],
    }
    (args.out / "scene.json").write_text(json.dumps(description, indent=1) + "\n")
    print(f"make_eval_scenes: wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
