"""Build, render and export the bundled RGB-D example ("courtyard") with real Blender.

    .venv/bin/python scripts/make_example.py [--out examples/courtyard] [--blend /tmp/courtyard.blend]

Needs Blender as a Python module (``bpy`` 5.0.1).  Everything is built in code (no assets):
a small walled courtyard with a tiled floor, brick and plaster walls, a hedge, a fountain, a
stone pillar that hides part of it, a crate that hides part of a red ball, a potted tree, a
bench and a topiary cone; a sun plus sky light.  Cycles renders it on the CPU from an input
camera and from held-out cameras near it.

Outputs (``--out``), all in Blender's world frame (Z up, metres):

* ``image.png`` (8-bit sRGB) and ``depth.png`` (16-bit, millimetres of z-depth, 0 = sky);
* ``camera.json``: the input camera, ``engine.cameras.Camera.to_dict()``, built by
  ``engine.cameras.from_blender`` from the real camera's values;
* ``heldout/NN_image.png``, ``heldout/NN_depth.png``, ``heldout/cameras.json``;
* ``surface.npz``: ``points`` float32 [N, 3], uniform by area on the true surfaces inside the
  union of the cameras' frusta (the only part any method could reconstruct).

Depth: Cycles' Z pass (``Depth.Z``) is the *planar* z-depth (distance along the optical axis),
not the distance along the ray: ``check_z_pass`` renders a plane facing the camera and finds
the same depth in the centre and in the corners (a ray distance would grow by 1/cos there).
The script runs that check every time, so a Blender that changes it fails loudly.  The depth
pass is rendered separately with one sample and a near-zero pixel filter, so each depth is
the surface at the pixel centre (the colour render uses the usual anti-aliasing filter).
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
import OpenEXR
from mathutils import Vector

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from engine.cameras import Camera, from_blender, project  # noqa: E402

WIDTH, HEIGHT = 320, 240
SEED = 7
COLOUR_SAMPLES = 32
SURFACE_POINTS = 100_000
MAX_DEPTH_M = 65.0  # 16-bit millimetres; Cycles writes ~1e10 for rays that hit nothing

INPUT_EYE, INPUT_TARGET = (0.3, -5.2, 1.55), (0.0, 0.6, 0.75)
# Held-out cameras: (eye offset from the input eye, target offset) -> 5-15 degrees, 0.2-0.5 m.
HELDOUT = [
    ((0.45, 0.0, 0.0), (-0.6, 0.0, 0.0)),  # right, turned left
    ((-0.4, 0.1, 0.0), (0.7, 0.0, 0.0)),  # left, turned right
    ((0.1, 0.35, 0.3), (0.0, 0.0, -0.35)),  # up and forward, looking down
    ((0.25, -0.1, -0.25), (-1.1, 0.0, 0.1)),  # low right, panned left
]


# ---------------------------------------------------------------------------------------------
# Materials (all procedural)
# ---------------------------------------------------------------------------------------------


def _material(name: str, roughness: float = 0.6):
    mat = bpy.data.materials.new(name)
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    bsdf = nodes["Principled BSDF"]
    bsdf.inputs["Roughness"].default_value = roughness
    return mat, nodes, links, bsdf


def _ramp(nodes, stops):
    ramp = nodes.new("ShaderNodeValToRGB")
    elements = ramp.color_ramp.elements
    for index, (position, colour) in enumerate(stops):
        element = elements[index] if index < len(elements) else elements.new(position)
        element.position = position
        element.color = (*colour, 1.0)
    return ramp


def _bump(nodes, links, bsdf, height_socket, strength: float) -> None:
    bump = nodes.new("ShaderNodeBump")
    bump.inputs["Strength"].default_value = strength
    links.new(height_socket, bump.inputs["Height"])
    links.new(bump.outputs["Normal"], bsdf.inputs["Normal"])


def _object_coords(nodes, links, scale: float, vertical: bool = False):
    """Object-space coordinates; ``vertical`` turns the XZ plane (a wall) into the 2-D textures' XY."""
    coords = nodes.new("ShaderNodeTexCoord")
    mapping = nodes.new("ShaderNodeMapping")
    mapping.inputs["Scale"].default_value = (scale, scale, scale)
    if vertical:
        mapping.inputs["Rotation"].default_value = (-math.pi / 2.0, 0.0, 0.0)
    links.new(coords.outputs["Object"], mapping.inputs["Vector"])
    return mapping.outputs["Vector"]


def plain(name, colour, roughness=0.5, noise=0.0, scale=6.0):
    """A flat colour, optionally mottled by noise (stone, plaster, foliage)."""
    mat, nodes, links, bsdf = _material(name, roughness)
    if noise <= 0:
        bsdf.inputs["Base Color"].default_value = (*colour, 1.0)
        return mat
    tex = nodes.new("ShaderNodeTexNoise")
    tex.inputs["Scale"].default_value = scale
    tex.inputs["Detail"].default_value = 6.0
    links.new(_object_coords(nodes, links, 1.0), tex.inputs["Vector"])
    dark = tuple(c * (1.0 - noise) for c in colour)
    light = tuple(min(1.0, c * (1.0 + noise)) for c in colour)
    ramp = _ramp(nodes, [(0.3, dark), (0.7, light)])
    links.new(tex.outputs["Fac"], ramp.inputs["Fac"])
    links.new(ramp.outputs["Color"], bsdf.inputs["Base Color"])
    _bump(nodes, links, bsdf, tex.outputs["Fac"], 0.25)
    return mat


def bricks(name, colour1, colour2, mortar, scale, brick_width, row_height, offset=0.5, vertical=False):
    mat, nodes, links, bsdf = _material(name, 0.8)
    tex = nodes.new("ShaderNodeTexBrick")
    tex.offset = offset
    tex.inputs["Color1"].default_value = (*colour1, 1.0)
    tex.inputs["Color2"].default_value = (*colour2, 1.0)
    tex.inputs["Mortar"].default_value = (*mortar, 1.0)
    tex.inputs["Scale"].default_value = scale
    tex.inputs["Mortar Size"].default_value = 0.025
    tex.inputs["Brick Width"].default_value = brick_width
    tex.inputs["Row Height"].default_value = row_height
    links.new(_object_coords(nodes, links, 1.0, vertical), tex.inputs["Vector"])
    links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
    _bump(nodes, links, bsdf, tex.outputs["Fac"], 0.3)
    return mat


def wood(name, light, dark, scale=3.0):
    mat, nodes, links, bsdf = _material(name, 0.55)
    tex = nodes.new("ShaderNodeTexWave")
    tex.inputs["Scale"].default_value = scale
    tex.inputs["Distortion"].default_value = 6.0
    tex.inputs["Detail"].default_value = 3.0
    links.new(_object_coords(nodes, links, 1.0), tex.inputs["Vector"])
    ramp = _ramp(nodes, [(0.2, dark), (0.8, light)])
    links.new(tex.outputs["Fac"], ramp.inputs["Fac"])
    links.new(ramp.outputs["Color"], bsdf.inputs["Base Color"])
    return mat


def checker(name, colour1, colour2, scale):
    mat, nodes, links, bsdf = _material(name, 0.35)
    tex = nodes.new("ShaderNodeTexChecker")
    tex.inputs["Color1"].default_value = (*colour1, 1.0)
    tex.inputs["Color2"].default_value = (*colour2, 1.0)
    tex.inputs["Scale"].default_value = scale
    links.new(_object_coords(nodes, links, 1.0), tex.inputs["Vector"])
    links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
    return mat


# ---------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------


def _finish(obj, material, smooth=False):
    obj.data.materials.append(material)
    if smooth:
        for polygon in obj.data.polygons:
            polygon.use_smooth = True
    return obj


def box(location, size, material, rotation_z=0.0):
    bpy.ops.mesh.primitive_cube_add(size=1.0, location=location, rotation=(0.0, 0.0, math.radians(rotation_z)))
    obj = bpy.context.active_object
    obj.scale = size
    # Bake the scale into the mesh so object-space textures are in metres, whatever the size.
    bpy.ops.object.transform_apply(location=False, rotation=False, scale=True)
    return _finish(obj, material)


def cylinder(location, radius, depth, material, vertices=48, radius_top=None):
    if radius_top is None:
        bpy.ops.mesh.primitive_cylinder_add(vertices=vertices, radius=radius, depth=depth, location=location)
    else:
        bpy.ops.mesh.primitive_cone_add(
            vertices=vertices, radius1=radius, radius2=radius_top, depth=depth, location=location
        )
    return _finish(bpy.context.active_object, material, smooth=True)


def sphere(location, radius, material, subdivisions=4):
    bpy.ops.mesh.primitive_ico_sphere_add(subdivisions=subdivisions, radius=radius, location=location)
    return _finish(bpy.context.active_object, material, smooth=True)


def torus(location, major, minor, material):
    bpy.ops.mesh.primitive_torus_add(
        location=location, major_radius=major, minor_radius=minor, major_segments=48, minor_segments=16
    )
    return _finish(bpy.context.active_object, material, smooth=True)


def build_scene() -> None:
    stone = plain("stone", (0.55, 0.52, 0.47), 0.8, noise=0.35, scale=5.0)
    floor = bricks("floor tiles", (0.62, 0.55, 0.45), (0.45, 0.40, 0.34), (0.22, 0.20, 0.18), 0.8, 0.5, 0.5, 0.0)
    brick = bricks("brick wall", (0.55, 0.17, 0.09), (0.40, 0.12, 0.07), (0.78, 0.74, 0.66), 2.0, 0.5, 0.2, vertical=True)
    plaster = plain("plaster", (0.85, 0.66, 0.36), 0.9, noise=0.25, scale=3.0)
    hedge = plain("hedge", (0.10, 0.30, 0.08), 0.9, noise=0.6, scale=18.0)
    foliage = plain("foliage", (0.18, 0.42, 0.10), 0.8, noise=0.5, scale=14.0)
    terracotta = plain("terracotta", (0.70, 0.30, 0.14), 0.7, noise=0.15, scale=8.0)
    crate = wood("crate", (0.72, 0.52, 0.30), (0.45, 0.28, 0.14))
    bench = wood("bench", (0.45, 0.30, 0.18), (0.25, 0.15, 0.08), scale=5.0)
    red = plain("red ball", (0.75, 0.05, 0.04), 0.25)
    water = plain("water", (0.06, 0.30, 0.45), 0.15)
    gold = plain("gold", (0.85, 0.62, 0.12), 0.3)
    blue = checker("blue tiles", (0.08, 0.22, 0.62), (0.85, 0.85, 0.80), 6.0)
    purple = plain("purple", (0.38, 0.12, 0.50), 0.4)
    teal = plain("teal vase", (0.05, 0.50, 0.45), 0.3)

    bpy.ops.mesh.primitive_plane_add(size=1.0, location=(0.0, -1.5, 0.0))  # a plane: no hidden underside
    plane = bpy.context.active_object
    plane.scale = (9.0, 12.0, 1.0)
    bpy.ops.object.transform_apply(location=False, rotation=False, scale=True)
    _finish(plane, floor)
    box((0.0, 3.15, 1.6), (8.0, 0.3, 3.2), brick)  # back wall
    box((-3.65, 0.5, 1.3), (0.3, 5.0, 2.6), plaster)  # left wall
    box((3.6, 0.5, 0.7), (0.8, 5.0, 1.4), hedge)  # hedge on the right
    # Fountain in the middle, partly behind the pillar.
    cylinder((-0.5, 1.3, 0.25), 0.8, 0.5, stone)
    cylinder((-0.5, 1.3, 0.46), 0.7, 0.05, water, vertices=64)
    cylinder((-0.5, 1.3, 0.8), 0.12, 0.7, stone)
    sphere((-0.5, 1.3, 1.3), 0.22, gold)
    torus((-0.5, 1.3, 1.12), 0.25, 0.05, blue)
    # Stone pillar with a cap, in front of the fountain.
    cylinder((-1.05, -0.9, 1.2), 0.2, 2.4, stone)
    box((-1.05, -0.9, 2.45), (0.5, 0.5, 0.1), stone)
    # A crate hides the lower part of a red ball; a vase stands on the crate.
    sphere((1.45, 0.5, 0.45), 0.45, red)
    box((1.05, -0.6, 0.35), (0.7, 0.7, 0.7), crate, rotation_z=22.0)
    cylinder((1.0, -0.65, 0.9), 0.11, 0.4, teal, radius_top=0.07)
    # Potted tree at the back right.
    cylinder((2.35, 1.9, 0.3), 0.32, 0.6, terracotta, radius_top=0.42)
    cylinder((2.35, 1.9, 1.0), 0.07, 1.0, bench)
    sphere((2.35, 1.9, 1.75), 0.55, foliage, subdivisions=3)
    sphere((2.0, 1.7, 1.45), 0.35, foliage, subdivisions=3)
    sphere((2.65, 1.75, 1.5), 0.38, foliage, subdivisions=3)
    # Bench against the back wall.
    box((0.9, 2.6, 0.45), (1.6, 0.45, 0.08), bench)
    for x in (0.25, 1.55):
        box((x, 2.6, 0.21), (0.1, 0.4, 0.42), bench)
    # Topiary cone on the left and a purple ball in the left foreground.
    cylinder((-2.7, 1.9, 0.2), 0.3, 0.4, terracotta, radius_top=0.36)
    cylinder((-2.7, 1.9, 1.05), 0.45, 1.3, foliage, radius_top=0.0)
    sphere((-2.3, -0.7, 0.3), 0.3, purple)
    sphere((0.35, -1.7, 0.14), 0.14, blue)


def build_lighting(scene) -> None:
    sun_data = bpy.data.lights.new("sun", "SUN")
    sun_data.energy = 4.5
    sun_data.angle = math.radians(8.0)  # soft shadow edges
    sun_data.color = (1.0, 0.93, 0.82)
    sun = bpy.data.objects.new("sun", sun_data)
    sun.rotation_euler = (math.radians(40.0), 0.0, math.radians(-40.0))  # from the front left, high
    scene.collection.objects.link(sun)

    world = bpy.data.worlds.new("sky")
    scene.world = world
    nodes, links = world.node_tree.nodes, world.node_tree.links
    coords = nodes.new("ShaderNodeTexCoord")
    split = nodes.new("ShaderNodeSeparateXYZ")
    ramp = _ramp(nodes, [(0.0, (0.85, 0.80, 0.70)), (0.45, (0.35, 0.55, 0.90))])
    links.new(coords.outputs["Generated"], split.inputs["Vector"])  # world: the view direction
    links.new(split.outputs["Z"], ramp.inputs["Fac"])
    background = nodes["Background"]
    background.inputs["Strength"].default_value = 0.6
    links.new(ramp.outputs["Color"], background.inputs["Color"])


# ---------------------------------------------------------------------------------------------
# Cameras and rendering
# ---------------------------------------------------------------------------------------------


def add_camera(scene, name: str, eye, target):
    data = bpy.data.cameras.new(name)
    data.lens = 30.0
    data.sensor_width = 36.0
    obj = bpy.data.objects.new(name, data)
    obj.location = eye
    obj.rotation_euler = (Vector(target) - Vector(eye)).to_track_quat("-Z", "Y").to_euler()
    scene.collection.objects.link(obj)
    return obj


def engine_camera(scene, obj) -> Camera:
    bpy.context.view_layer.update()  # matrix_world follows location/rotation only after an update
    data, render = obj.data, scene.render
    scale = render.resolution_percentage / 100.0
    return from_blender(
        lens=data.lens,
        sensor_width=data.sensor_width,
        sensor_height=data.sensor_height,
        sensor_fit=data.sensor_fit,
        shift_x=data.shift_x,
        shift_y=data.shift_y,
        resolution_x=round(render.resolution_x * scale),
        resolution_y=round(render.resolution_y * scale),
        matrix_world=np.array(obj.matrix_world),
        camera_type=data.type,
        pixel_aspect_x=render.pixel_aspect_x,
        pixel_aspect_y=render.pixel_aspect_y,
        name=obj.name,
    )


def configure_render(scene, width: int, height: int) -> None:
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.seed = SEED
    scene.cycles.max_bounces = 4
    scene.cycles.use_adaptive_sampling = False  # same noise pattern on every run
    scene.render.resolution_x, scene.render.resolution_y = width, height
    scene.render.resolution_percentage = 100
    scene.render.use_persistent_data = True  # build the BVH once for all renders
    scene.view_settings.view_transform = "AgX"
    scene.view_settings.look = "AgX - Medium High Contrast"


def render_colour(scene, path: Path) -> None:
    scene.cycles.samples = COLOUR_SAMPLES
    scene.cycles.use_denoising = True
    scene.cycles.filter_width = 1.5
    scene.view_layers[0].use_pass_z = False
    settings = scene.render.image_settings
    settings.media_type = "IMAGE"
    settings.file_format = "PNG"
    settings.color_mode = "RGB"
    settings.color_depth = "8"
    settings.compression = 100
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)


def render_depth(scene, path: Path) -> np.ndarray:
    """Z pass at the pixel centres (one sample, ~zero filter): float32 [H, W] metres, 0 = none."""
    scene.cycles.samples = 1
    scene.cycles.use_denoising = False
    scene.cycles.filter_width = 0.01
    scene.view_layers[0].use_pass_z = True
    scene.render.image_settings.media_type = "MULTI_LAYER_IMAGE"
    scene.render.image_settings.color_depth = "32"
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    exr = OpenEXR.File(str(path))
    depth = next(c.pixels for part in exr.parts for name, c in part.channels.items() if name.endswith("Depth.Z"))
    depth = np.asarray(depth, dtype=np.float32)
    return np.where(np.isfinite(depth) & (depth < MAX_DEPTH_M), depth, 0.0).astype(np.float32)


def check_z_pass(scene, tmp: Path) -> None:
    """Prove on this Blender that the Z pass is planar z-depth, using a plane facing the camera."""
    bpy.ops.mesh.primitive_plane_add(size=100.0, location=(0.0, 0.0, -3.0))
    plane = bpy.context.active_object
    camera = add_camera(scene, "z_check", (0.0, 0.0, 0.0), (0.0, 0.0, -1.0))
    camera.data.lens = 14.0  # wide: the corner rays are ~50 degrees off axis
    scene.camera = camera
    configure_render(scene, 64, 48)
    depth = render_depth(scene, tmp / "z_check.exr")
    ray_length_corner = 3.0 / math.cos(math.atan(math.hypot(18.0, 13.5) / 14.0))
    if not np.allclose(depth, 3.0, atol=1e-3):
        raise RuntimeError(
            f"Cycles' Z pass is not planar z-depth here: {depth.min():.4f}..{depth.max():.4f} m on a plane at "
            f"3 m (a ray distance would reach {ray_length_corner:.3f} m in the corners)"
        )
    bpy.data.objects.remove(plane)
    bpy.data.objects.remove(camera)


def write_depth_png(path: Path, depth: np.ndarray) -> None:
    millimetres = np.round(depth * 1000.0).astype(np.uint16)
    import cv2  # only for the 16-bit PNG writer

    if not cv2.imwrite(str(path), millimetres):
        raise RuntimeError(f"could not write {path}")


# ---------------------------------------------------------------------------------------------
# True surface samples
# ---------------------------------------------------------------------------------------------


def scene_triangles(scene) -> np.ndarray:
    """All mesh triangles in world space (after modifiers): float64 [T, 3, 3]."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    triangles = []
    for obj in scene.objects:
        if obj.type != "MESH":
            continue
        evaluated = obj.evaluated_get(depsgraph)
        mesh = evaluated.to_mesh()
        mesh.calc_loop_triangles()
        vertices = np.empty(len(mesh.vertices) * 3)
        mesh.vertices.foreach_get("co", vertices)
        indices = np.empty(len(mesh.loop_triangles) * 3, dtype=np.int64)
        mesh.loop_triangles.foreach_get("vertices", indices)
        matrix = np.array(evaluated.matrix_world)
        world = vertices.reshape(-1, 3) @ matrix[:3, :3].T + matrix[:3, 3]
        triangles.append(world[indices.reshape(-1, 3)])
        evaluated.to_mesh_clear()
    return np.concatenate(triangles)


def sample_surface(triangles: np.ndarray, cameras: list[Camera], count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` points uniform by area on the triangles, on the side facing a camera, in its frustum.

    Back faces (the far side of a wall or a ball) can never be seen, so no sample is spent there;
    front faces hidden behind other objects are kept: they are true surfaces a method may guess.
    """
    edges1, edges2 = triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0]
    normals = np.cross(edges1, edges2)  # outward for Blender's counter-clockwise winding
    areas = 0.5 * np.linalg.norm(normals, axis=1)
    probabilities = areas / areas.sum()
    kept, total = [], 0
    while total < count:
        chosen = rng.choice(len(triangles), size=4 * count, p=probabilities)
        u, v = rng.random(len(chosen)), rng.random(len(chosen))
        flip = u + v > 1.0  # fold the parallelogram back onto the triangle
        u[flip], v[flip] = 1.0 - u[flip], 1.0 - v[flip]
        points = triangles[chosen, 0] + u[:, None] * edges1[chosen] + v[:, None] * edges2[chosen]
        inside = np.zeros(len(points), dtype=bool)
        for camera in cameras:
            pixels, depth = project(camera, points)
            margin = 0.1 * camera.width  # a little beyond the image, for points at its border
            facing = np.einsum("ij,ij->i", normals[chosen], camera.center - points) > 0
            inside |= (
                facing
                & (depth > 0.05)
                & (depth < MAX_DEPTH_M)
                & (pixels[:, 0] > -margin)
                & (pixels[:, 0] < camera.width + margin)
                & (pixels[:, 1] > -margin)
                & (pixels[:, 1] < camera.height + margin)
            )
        kept.append(points[inside])
        total += int(inside.sum())
    points = np.concatenate(kept)[:count].astype(np.float32)
    # Neighbours next to each other in the file: the compressed npz shrinks by ~10%.
    cells = np.floor(points / 0.05).astype(np.int64)
    return points[np.lexsort((cells[:, 2], cells[:, 1], cells[:, 0]))]


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "examples" / "courtyard")
    parser.add_argument("--blend", type=Path, help="also save the built scene here (not committed: it is large)")
    args = parser.parse_args(argv)

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    rng = np.random.default_rng(SEED)
    (args.out / "heldout").mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="gen3d_example_") as tmp_name:
        tmp = Path(tmp_name)
        check_z_pass(scene, tmp)
        print("make_example: Cycles' Z pass is planar z-depth (checked on a plane)", file=sys.stderr)

        build_scene()
        build_lighting(scene)
        configure_render(scene, WIDTH, HEIGHT)
        views = [("input", INPUT_EYE, INPUT_TARGET)] + [
            (
                f"heldout_{index:02d}",
                tuple(e + d for e, d in zip(INPUT_EYE, eye_offset)),
                tuple(t + d for t, d in zip(INPUT_TARGET, target_offset)),
            )
            for index, (eye_offset, target_offset) in enumerate(HELDOUT)
        ]
        cameras = []
        for index, (name, eye, target) in enumerate(views):
            obj = add_camera(scene, name, eye, target)
            scene.camera = obj
            cameras.append(engine_camera(scene, obj))
            folder, prefix = (args.out, "") if index == 0 else (args.out / "heldout", f"{index - 1:02d}_")
            render_colour(scene, folder / f"{prefix}image.png")
            write_depth_png(folder / f"{prefix}depth.png", render_depth(scene, tmp / f"{name}.exr"))
            print(f"make_example: rendered {name}", file=sys.stderr)

        (args.out / "camera.json").write_text(json.dumps(cameras[0].to_dict(), indent=1) + "\n")
        (args.out / "heldout" / "cameras.json").write_text(
            json.dumps([camera.to_dict() for camera in cameras[1:]], indent=1) + "\n"
        )
        surface = sample_surface(scene_triangles(scene), cameras, SURFACE_POINTS, rng)
        np.savez_compressed(args.out / "surface.npz", points=surface)
        if args.blend:
            bpy.ops.wm.save_as_mainfile(filepath=str(args.blend.resolve()))
    print(f"make_example: wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
