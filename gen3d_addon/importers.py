"""Bring results into the scene: coloured points and 3D Gaussians as renderable geometry nodes.

* Arrays go into mesh attributes with one ``foreach_set`` each (no per-point Python); 3DGS
  parameters are activated once in numpy (sigmoid opacity, exp scale, unit quaternion,
  colour = 0.5 + C0 * f_dc) and stored as attributes ``color``, ``opacity``, ``scale``, ``rot``
  (+ ``f_rest_*`` so an export gives the file back).
* Geometry nodes draw them: points through Mesh to Points, Gaussians as unrealised instances of
  one ico sphere, rotated by the ``rot`` quaternion and scaled by ``Scale`` standard deviations.
  The viewport shows a fraction of them (Random Value + Is Viewport) as points; render uses all.
* Results of a job live in their own collection, parented to an empty at the input camera's
  frame (the engine world is that camera's OpenCV frame), so they line up with the Blender
  camera that framed the input image, at metric scale; moving the empty moves the world.
"""

from __future__ import annotations

import json
from pathlib import Path

import bpy
import mathutils
import numpy as np

from ..engine import cameras
from . import nodes, ply

COLLECTION_PREFIX = "Gen3D"
SH_C0 = 0.28209479177387814
TAG = "gen3d_generated"  # custom property on every object we create: only these are ever removed
POINTS_GROUP = "Gen3D Points"
GAUSSIANS_GROUP = "Gen3D Gaussians"
POINTS_MATERIAL = "Gen3D Points"
SPLAT_MATERIAL = "Gen3D Splat"
VIEWPORT_BUDGET = 250_000  # points shown in the viewport by default; render always shows all


# ---------------------------------------------------------------------------------------------
# Placement
# ---------------------------------------------------------------------------------------------


def input_camera(job_dir: Path | str) -> cameras.Camera | None:
    """The input camera in the client's world: JOB/camera.json, else job.json's ``camera``."""
    job_dir = Path(job_dir)
    camera_file = job_dir / "camera.json"
    if camera_file.is_file():
        return cameras.Camera.from_dict(json.loads(camera_file.read_text(encoding="utf-8")))
    job_file = job_dir / "job.json"
    if job_file.is_file():
        camera = json.loads(job_file.read_text(encoding="utf-8")).get("camera")
        if camera:
            return cameras.Camera.from_dict(camera)
    return None


def world_from_engine(job_dir: Path | str) -> np.ndarray:
    """4x4 matrix taking engine-world points into Blender's world."""
    camera = input_camera(job_dir)
    if camera is None:
        # No Blender camera framed the input: the input view looks along +Y from the origin, Z up.
        return np.array([[1.0, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]])
    return camera.camera_to_world


# ---------------------------------------------------------------------------------------------
# Arrays <-> files
# ---------------------------------------------------------------------------------------------


def columns(vertices: np.ndarray) -> dict[str, np.ndarray]:
    """Each property of a PLY vertex array as a contiguous float32 column.

    A 3DGS file is 62 float32 per row; reading a column is a strided walk over the whole file,
    so a homogeneous array is transposed in row blocks that fit in cache (4x faster at 1M).
    """
    names = vertices.dtype.names
    if all(vertices.dtype[name] == np.dtype("<f4") for name in names) and vertices.dtype.itemsize == 4 * len(names):
        rows = vertices.view("<f4").reshape(len(vertices), len(names))
        table = np.empty((len(names), len(vertices)), np.float32)
        for start in range(0, len(vertices), 4096):
            table[:, start:start + 4096] = rows[start:start + 4096].T
        return dict(zip(names, table))
    return {name: vertices[name].astype(np.float32) for name in names}


def _stack(table: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    missing = [name for name in names if name not in table]
    if missing:
        raise ply.PlyError(f"PLY lacks the properties {', '.join(missing)}")
    return np.stack([table[name] for name in names], axis=1)


def read_gaussians(path: Path | str) -> dict[str, np.ndarray]:
    """A standard 3DGS PLY, activated: xyz [N,3], color [N,3], opacity [N], scale [N,3],
    rot [N,4] (w, x, y, z, unit), f_rest [K][N] (raw columns, K may be 0)."""
    table = columns(ply.read_vertices(path))
    rot = _stack(table, ["rot_0", "rot_1", "rot_2", "rot_3"])
    norm = np.linalg.norm(rot, axis=1, keepdims=True)
    rot = np.where(norm > 0, rot / np.maximum(norm, 1e-12), np.array([1.0, 0, 0, 0], np.float32))
    opacity = _stack(table, ["opacity"])[:, 0]
    rest = sorted((name for name in table if name.startswith("f_rest_")), key=lambda name: int(name[7:]))
    return {
        "xyz": _stack(table, ["x", "y", "z"]),
        "color": 0.5 + SH_C0 * _stack(table, ["f_dc_0", "f_dc_1", "f_dc_2"]),
        "opacity": (1.0 / (1.0 + np.exp(-opacity))).astype(np.float32),
        "scale": np.exp(_stack(table, ["scale_0", "scale_1", "scale_2"])),
        "rot": rot.astype(np.float32),
        "f_rest": [table[name] for name in rest],
    }


def write_gaussians(path: Path | str, gaussians: dict[str, np.ndarray]) -> None:
    """Inverse of read_gaussians: a standard 3DGS PLY, pre-activation, as viewers expect."""
    xyz = np.asarray(gaussians["xyz"], np.float32)
    count = len(xyz)
    f_rest = gaussians.get("f_rest", [])
    opacity = np.clip(np.asarray(gaussians["opacity"], np.float64), 1e-7, 1 - 1e-7)
    fields = {
        "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2],
        "nx": np.zeros(count), "ny": np.zeros(count), "nz": np.zeros(count),
    }
    f_dc = (np.asarray(gaussians["color"], np.float64) - 0.5) / SH_C0
    fields.update({f"f_dc_{i}": f_dc[:, i] for i in range(3)})
    fields.update({f"f_rest_{i}": column for i, column in enumerate(f_rest)})
    fields["opacity"] = np.log(opacity / (1.0 - opacity))
    log_scale = np.log(np.maximum(np.asarray(gaussians["scale"], np.float64), 1e-30))
    fields.update({f"scale_{i}": log_scale[:, i] for i in range(3)})
    rot = np.asarray(gaussians["rot"], np.float64)
    fields.update({f"rot_{i}": rot[:, i] for i in range(4)})
    data = np.empty(count, dtype=[(name, "<f4") for name in fields])
    for name, column in fields.items():
        data[name] = column
    ply.write_vertices(path, data)


# ---------------------------------------------------------------------------------------------
# Mesh attributes
# ---------------------------------------------------------------------------------------------

_VALUE_KEY = {"FLOAT": "value", "INT": "value", "FLOAT_VECTOR": "vector", "FLOAT_COLOR": "color", "QUATERNION": "value"}


def set_attribute(mesh: bpy.types.Mesh, name: str, values: np.ndarray, kind: str | None = None) -> None:
    """Write a per-point attribute with one foreach_set; its type comes from the array's shape
    ([N] float/int, [N,3] vector, [N,4] colour) unless ``kind`` says (e.g. QUATERNION)."""
    values = np.asarray(values)
    if len(values) != len(mesh.vertices):
        raise ValueError(f"attribute {name!r} has {len(values)} values for {len(mesh.vertices)} points")
    if kind is None:
        if values.ndim == 1:
            kind = "INT" if np.issubdtype(values.dtype, np.integer) else "FLOAT"
        else:
            kind = {3: "FLOAT_VECTOR", 4: "FLOAT_COLOR"}[values.shape[1]]
    dtype = np.int32 if kind == "INT" else np.float32
    if name in mesh.attributes:
        mesh.attributes.remove(mesh.attributes[name])
    attribute = mesh.attributes.new(name, kind, "POINT")
    attribute.data.foreach_set(_VALUE_KEY[kind], np.ascontiguousarray(values, dtype=dtype).ravel())


def get_attribute(mesh: bpy.types.Mesh, name: str) -> np.ndarray:
    attribute = mesh.attributes[name]
    width = {"FLOAT": 1, "INT": 1, "FLOAT_VECTOR": 3, "FLOAT_COLOR": 4, "QUATERNION": 4}[attribute.data_type]
    out = np.empty(len(attribute.data) * width, np.int32 if attribute.data_type == "INT" else np.float32)
    attribute.data.foreach_get(_VALUE_KEY[attribute.data_type], out)
    return out if width == 1 else out.reshape(-1, width)


def point_mesh(name: str, xyz: np.ndarray) -> bpy.types.Mesh:
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(len(xyz))
    mesh.attributes["position"].data.foreach_set("vector", np.ascontiguousarray(xyz, dtype=np.float32).ravel())
    mesh.update()
    return mesh


def _rgba(rgb: np.ndarray) -> np.ndarray:
    return np.concatenate([rgb.astype(np.float32), np.ones((len(rgb), 1), np.float32)], axis=1)


# ---------------------------------------------------------------------------------------------
# Materials and node groups (built once, reused by every import)
# ---------------------------------------------------------------------------------------------


def _attribute_sum(tree, name: str, output: str, location):
    """``name`` read from the geometry and from the instancer, added: one of them is always
    absent (reads zero), so the material works on points and on instanced ellipsoids alike."""
    x, y = location
    geometry = nodes.node(tree, "ShaderNodeAttribute", (x, y), attribute_name=name, attribute_type="GEOMETRY")
    instancer = nodes.node(tree, "ShaderNodeAttribute", (x, y - 180), attribute_name=name, attribute_type="INSTANCER")
    vector = output == "Color"
    add = nodes.node(tree, "ShaderNodeVectorMath" if vector else "ShaderNodeMath", (x + 200, y - 90), operation="ADD")
    nodes.link(tree, geometry, output, add, "Vector" if vector else "Value")
    tree.links.new(instancer.outputs[output], add.inputs[1])
    return add


def _material(name: str, splat: bool) -> bpy.types.Material:
    """Emission of the stored colour (the splats carry baked light, so they look as trained);
    the splat material fades with opacity and a Gaussian fall-off towards the silhouette."""
    material = bpy.data.materials.get(name)
    if material is not None and material.get("gen3d_version") == 1:
        return material
    if material is None:
        material = bpy.data.materials.new(name)
    tree = material.node_tree
    tree.nodes.clear()
    colour = _attribute_sum(tree, "color", "Color", (-1000, 300))
    positive = nodes.node(tree, "ShaderNodeVectorMath", (-700, 300), operation="MAXIMUM")
    nodes.link(tree, colour, "Vector", positive, "Vector")
    positive.inputs[1].default_value = (0.0, 0.0, 0.0)
    # Stored colours are display (sRGB-encoded) values like the training images; emission is linear.
    linear = nodes.node(tree, "ShaderNodeGamma", (-500, 300))
    nodes.set_inputs(linear, Gamma=2.2)
    nodes.link(tree, positive, "Vector", linear, "Color")
    emission = nodes.node(tree, "ShaderNodeEmission", (-300, 300))
    nodes.link(tree, linear, "Color", emission, "Color")
    output = nodes.node(tree, "ShaderNodeOutputMaterial", (300, 200))
    if not splat:
        nodes.link(tree, emission, "Emission", output, "Surface")
    else:
        # alpha = opacity * exp(-falloff * (1 - (N.I)^2)): on a sphere of radius R sigma, the ray
        # passing at distance b from the centre has (N.I)^2 = 1 - (b/R)^2, and the projected
        # Gaussian is exp(-b^2 / 2) with falloff = R^2 / 2 (stored per point by the node group).
        opacity = _attribute_sum(tree, "opacity", "Factor", (-1400, -100))
        falloff = _attribute_sum(tree, "gen3d_falloff", "Factor", (-1400, -500))
        geometry = nodes.node(tree, "ShaderNodeNewGeometry", (-1400, -900))
        facing = nodes.node(tree, "ShaderNodeVectorMath", (-1150, -900), operation="DOT_PRODUCT")
        nodes.link(tree, geometry, "Normal", facing, "Vector")
        tree.links.new(geometry.outputs["Incoming"], facing.inputs[1])
        squared = nodes.node(tree, "ShaderNodeMath", (-950, -900), operation="MULTIPLY")
        tree.links.new(facing.outputs["Value"], squared.inputs[0])
        tree.links.new(facing.outputs["Value"], squared.inputs[1])
        one_minus = nodes.node(tree, "ShaderNodeMath", (-750, -900), operation="SUBTRACT", use_clamp=True)
        one_minus.inputs[0].default_value = 1.0
        tree.links.new(squared.outputs[0], one_minus.inputs[1])
        exponent = nodes.node(tree, "ShaderNodeMath", (-550, -700), operation="MULTIPLY")
        tree.links.new(falloff.outputs[0], exponent.inputs[0])
        tree.links.new(one_minus.outputs[0], exponent.inputs[1])
        negate = nodes.node(tree, "ShaderNodeMath", (-400, -700), operation="MULTIPLY")
        tree.links.new(exponent.outputs[0], negate.inputs[0])
        negate.inputs[1].default_value = -1.0
        gaussian = nodes.node(tree, "ShaderNodeMath", (-250, -700), operation="EXPONENT")
        tree.links.new(negate.outputs[0], gaussian.inputs[0])
        alpha = nodes.node(tree, "ShaderNodeMath", (-100, -400), operation="MULTIPLY", use_clamp=True)
        tree.links.new(opacity.outputs[0], alpha.inputs[0])
        tree.links.new(gaussian.outputs[0], alpha.inputs[1])
        transparent = nodes.node(tree, "ShaderNodeBsdfTransparent", (-100, 100))
        mix = nodes.node(tree, "ShaderNodeMixShader", (100, 200))
        tree.links.new(alpha.outputs[0], mix.inputs["Fac"])
        tree.links.new(transparent.outputs[0], mix.inputs[1])
        tree.links.new(emission.outputs[0], mix.inputs[2])
        nodes.link(tree, mix, "Shader", output, "Surface")
        material.surface_render_method = "DITHERED"
    material["gen3d_version"] = 1
    return material


def _viewport_keep(tree, fraction_socket, location):
    """True where a point is kept: always at render, with probability ``fraction`` in the viewport."""
    x, y = location
    random = nodes.node(tree, "FunctionNodeRandomValue", (x, y), data_type="BOOLEAN")
    nodes.set_inputs(random, Seed=7)
    tree.links.new(fraction_socket, nodes.socket(random.inputs, "Probability"))
    is_viewport = nodes.node(tree, "GeometryNodeIsViewport", (x, y - 200))
    render = nodes.node(tree, "FunctionNodeBooleanMath", (x + 200, y - 200), operation="NOT")
    nodes.link(tree, is_viewport, "Is Viewport", render, "Boolean")
    keep = nodes.node(tree, "FunctionNodeBooleanMath", (x + 400, y), operation="OR")
    tree.links.new(random.outputs[3], keep.inputs[0])  # the BOOLEAN "Value"
    tree.links.new(render.outputs[0], keep.inputs[1])
    return keep.outputs[0]


def points_group() -> bpy.types.GeometryNodeTree:
    def build(tree, group_in, group_out):
        keep = _viewport_keep(tree, nodes.socket(group_in.outputs, "Viewport Fraction"), (-700, -300))
        drop = nodes.node(tree, "FunctionNodeBooleanMath", (-100, -300), operation="NOT")
        tree.links.new(keep, drop.inputs[0])
        delete = nodes.node(tree, "GeometryNodeDeleteGeometry", (100, 0), domain="POINT")
        nodes.link(tree, group_in, "Geometry", delete, "Geometry")
        nodes.link(tree, drop, "Boolean", delete, "Selection")
        radius = nodes.node(tree, "GeometryNodeInputNamedAttribute", (-100, -500), data_type="FLOAT")
        nodes.set_inputs(radius, Name="radius")
        scaled = nodes.node(tree, "ShaderNodeMath", (100, -400), operation="MULTIPLY")
        nodes.link(tree, radius, "Attribute", scaled, "Value")
        tree.links.new(nodes.socket(group_in.outputs, "Radius Scale"), scaled.inputs[1])
        to_points = nodes.node(tree, "GeometryNodeMeshToPoints", (300, 0))
        nodes.link(tree, delete, "Geometry", to_points, "Mesh")
        nodes.link(tree, scaled, "Value", to_points, "Radius")
        material = nodes.node(tree, "GeometryNodeSetMaterial", (550, 0))
        nodes.link(tree, to_points, "Points", material, "Geometry")
        nodes.link(tree, group_in, "Material", material, "Material")
        nodes.link(tree, material, "Geometry", group_out, "Geometry")

    return nodes.geometry_group(
        POINTS_GROUP,
        [
            ("Material", "MATERIAL", {"default_value": _material(POINTS_MATERIAL, splat=False)}),
            ("Radius Scale", "FLOAT", {"default_value": 0.7, "min_value": 0.0, "description": "Sphere radius as a fraction of each point's footprint"}),
            ("Viewport Fraction", "FLOAT", {"default_value": 1.0, "min_value": 0.0, "max_value": 1.0, "subtype": "FACTOR", "description": "Share of the points drawn in the viewport (render draws all)"}),
        ],
        build,
    )


def gaussians_group() -> bpy.types.GeometryNodeTree:
    def build(tree, group_in, group_out):
        g = lambda name: nodes.socket(group_in.outputs, name)  # noqa: E731 - group input by name
        # Spherical-harmonics rest terms only matter to export: keep them out of the evaluated copy.
        strip = nodes.node(tree, "GeometryNodeRemoveAttribute", (-700, 200))
        nodes.socket(strip.inputs, "Pattern Mode").default_value = "Wildcard"
        nodes.set_inputs(strip, Name="f_rest_*")
        nodes.link(tree, group_in, "Geometry", strip, "Geometry")
        # Delete: too transparent anywhere, or not in the viewport's random share.
        opacity = nodes.node(tree, "GeometryNodeInputNamedAttribute", (-700, -100), data_type="FLOAT")
        nodes.set_inputs(opacity, Name="opacity")
        faint = nodes.node(tree, "FunctionNodeCompare", (-500, -100), data_type="FLOAT", operation="LESS_THAN")
        nodes.link(tree, opacity, "Attribute", faint, "A")
        tree.links.new(g("Min Opacity"), nodes.socket(faint.inputs, "B"))
        keep = _viewport_keep(tree, g("Viewport Fraction"), (-900, -400))
        hidden = nodes.node(tree, "FunctionNodeBooleanMath", (-300, -300), operation="IMPLY")  # not kept, or faint
        tree.links.new(keep, hidden.inputs[0])
        tree.links.new(faint.outputs[0], hidden.inputs[1])
        delete = nodes.node(tree, "GeometryNodeDeleteGeometry", (-300, 200), domain="POINT")
        nodes.link(tree, strip, "Geometry", delete, "Geometry")
        nodes.link(tree, hidden, "Boolean", delete, "Selection")
        # falloff = R^2 / 2 for the material's Gaussian fade (R: ellipsoid radius in sigmas).
        half_square = nodes.node(tree, "ShaderNodeMath", (-300, 400), operation="MULTIPLY")
        tree.links.new(g("Scale"), half_square.inputs[0])
        tree.links.new(g("Scale"), half_square.inputs[1])
        falloff = nodes.node(tree, "ShaderNodeMath", (-100, 400), operation="MULTIPLY")
        tree.links.new(half_square.outputs[0], falloff.inputs[0])
        falloff.inputs[1].default_value = 0.5
        store = nodes.node(tree, "GeometryNodeStoreNamedAttribute", (0, 200), data_type="FLOAT", domain="POINT")
        nodes.set_inputs(store, Name="gen3d_falloff")
        nodes.link(tree, delete, "Geometry", store, "Geometry")
        nodes.link(tree, falloff, "Value", store, "Value")
        # Ellipsoids: one shared ico sphere, instanced (never realised) with rotation and scale.
        sphere = nodes.node(tree, "GeometryNodeMeshIcoSphere", (0, -200))
        nodes.set_inputs(sphere, Radius=1.0)
        tree.links.new(g("Subdivisions"), nodes.socket(sphere.inputs, "Subdivisions"))
        smooth = nodes.node(tree, "GeometryNodeSetShadeSmooth", (200, -200))
        nodes.link(tree, sphere, "Mesh", smooth, "Mesh")
        sphere_material = nodes.node(tree, "GeometryNodeSetMaterial", (400, -200))
        nodes.link(tree, smooth, "Mesh", sphere_material, "Geometry")
        tree.links.new(g("Material"), nodes.socket(sphere_material.inputs, "Material"))
        rot = nodes.node(tree, "GeometryNodeInputNamedAttribute", (200, -400), data_type="QUATERNION")
        nodes.set_inputs(rot, Name="rot")
        sigma = nodes.node(tree, "GeometryNodeInputNamedAttribute", (200, -550), data_type="FLOAT_VECTOR")
        nodes.set_inputs(sigma, Name="scale")
        axes = nodes.node(tree, "ShaderNodeVectorMath", (400, -550), operation="SCALE")
        nodes.link(tree, sigma, "Attribute", axes, "Vector")
        tree.links.new(g("Scale"), nodes.socket(axes.inputs, "Scale"))
        instances = nodes.node(tree, "GeometryNodeInstanceOnPoints", (600, 0))
        nodes.link(tree, store, "Geometry", instances, "Points")
        nodes.link(tree, sphere_material, "Geometry", instances, "Instance")
        nodes.link(tree, rot, "Attribute", instances, "Rotation")
        nodes.link(tree, axes, "Vector", instances, "Scale")
        # Viewport points: a sphere per Gaussian of radius Scale * RMS sigma, cheap to draw.
        rms = nodes.node(tree, "ShaderNodeVectorMath", (400, -750), operation="LENGTH")
        nodes.link(tree, axes, "Vector", rms, "Vector")
        radius = nodes.node(tree, "ShaderNodeMath", (600, -750), operation="MULTIPLY")
        tree.links.new(rms.outputs["Value"], radius.inputs[0])
        radius.inputs[1].default_value = 3.0 ** -0.5
        to_points = nodes.node(tree, "GeometryNodeMeshToPoints", (600, -300))
        nodes.link(tree, store, "Geometry", to_points, "Mesh")
        nodes.link(tree, radius, "Value", to_points, "Radius")
        points_material = nodes.node(tree, "GeometryNodeSetMaterial", (800, -300))
        nodes.link(tree, to_points, "Points", points_material, "Geometry")
        tree.links.new(g("Material"), nodes.socket(points_material.inputs, "Material"))
        # Points in the viewport (unless asked for ellipsoids), ellipsoids at render.
        is_viewport = nodes.node(tree, "GeometryNodeIsViewport", (400, 500))
        use_points = nodes.node(tree, "FunctionNodeBooleanMath", (600, 500), operation="NIMPLY")
        nodes.link(tree, is_viewport, "Is Viewport", use_points, "Boolean")
        tree.links.new(g("Viewport Ellipsoids"), use_points.inputs[1])
        switch = nodes.node(tree, "GeometryNodeSwitch", (1000, 0), input_type="GEOMETRY")
        nodes.link(tree, use_points, "Boolean", switch, "Switch")
        nodes.link(tree, instances, "Instances", switch, "False")
        nodes.link(tree, points_material, "Geometry", switch, "True")
        nodes.link(tree, switch, "Output", group_out, "Geometry")

    return nodes.geometry_group(
        GAUSSIANS_GROUP,
        [
            ("Material", "MATERIAL", {"default_value": _material(SPLAT_MATERIAL, splat=True)}),
            ("Scale", "FLOAT", {"default_value": 2.5, "min_value": 0.1, "max_value": 5.0, "description": "Ellipsoid radius in standard deviations"}),
            ("Min Opacity", "FLOAT", {"default_value": 0.02, "min_value": 0.0, "max_value": 1.0, "subtype": "FACTOR", "description": "Gaussians fainter than this are dropped (viewport and render)"}),
            ("Viewport Fraction", "FLOAT", {"default_value": 1.0, "min_value": 0.0, "max_value": 1.0, "subtype": "FACTOR", "description": "Share of the Gaussians drawn in the viewport (render draws all)"}),
            ("Viewport Ellipsoids", "BOOLEAN", {"default_value": False, "description": "Draw ellipsoids in the viewport too (slower); otherwise points"}),
            ("Subdivisions", "INT", {"default_value": 2, "min_value": 1, "max_value": 4, "description": "Ico sphere subdivisions of each ellipsoid"}),
        ],
        build,
    )


# ---------------------------------------------------------------------------------------------
# Objects
# ---------------------------------------------------------------------------------------------


def _tagged_object(name: str, data) -> bpy.types.Object:
    obj = bpy.data.objects.new(name, data)
    obj[TAG] = True
    return obj


def _default_fraction(count: int) -> float:
    return min(1.0, VIEWPORT_BUDGET / max(count, 1))


def gaussians_object(name: str, gaussians: dict[str, np.ndarray]) -> bpy.types.Object:
    """A mesh of loose points carrying the activated Gaussians, drawn by the Gaussians group."""
    mesh = point_mesh(name, gaussians["xyz"])
    set_attribute(mesh, "color", _rgba(gaussians["color"]))
    set_attribute(mesh, "opacity", gaussians["opacity"])
    set_attribute(mesh, "scale", gaussians["scale"])
    set_attribute(mesh, "rot", gaussians["rot"], kind="QUATERNION")
    for i, column in enumerate(gaussians["f_rest"]):
        set_attribute(mesh, f"f_rest_{i}", column)
    obj = _tagged_object(name, mesh)
    modifier = nodes.ensure_modifier(obj, gaussians_group(), GAUSSIANS_GROUP)
    nodes.set_modifier_input(modifier, "Viewport Fraction", _default_fraction(len(mesh.vertices)))
    return obj


def gaussians_from_object(obj: bpy.types.Object) -> dict[str, np.ndarray]:
    """The Gaussians stored on an object made by gaussians_object (local coordinates)."""
    mesh = obj.data
    if not isinstance(mesh, bpy.types.Mesh) or not all(n in mesh.attributes for n in ("color", "opacity", "scale", "rot")):
        raise ValueError(f"{obj.name!r} holds no Gaussians (attributes color, opacity, scale, rot)")
    rest = sorted((n for n in mesh.attributes.keys() if n.startswith("f_rest_")), key=lambda n: int(n[7:]))
    return {
        "xyz": get_attribute(mesh, "position"),
        "color": get_attribute(mesh, "color")[:, :3],
        "opacity": get_attribute(mesh, "opacity"),
        "scale": get_attribute(mesh, "scale"),
        "rot": get_attribute(mesh, "rot"),
        "f_rest": [get_attribute(mesh, n) for n in rest],
    }


_POINT_FIELDS = {"x", "y", "z", "nx", "ny", "nz", "red", "green", "blue", "alpha"}


def points_object(name: str, vertices: np.ndarray) -> bpy.types.Object:
    """A mesh of loose points from a coloured point PLY (x y z red green blue [radius, confidence...]);
    every other scalar property becomes an attribute of the same name."""
    table = columns(vertices)
    xyz = _stack(table, ["x", "y", "z"])
    rgb = _stack(table, ["red", "green", "blue"])
    if vertices.dtype["red"].kind in "ui":
        rgb = rgb / float(np.iinfo(vertices.dtype["red"]).max)
    mesh = point_mesh(name, xyz)
    set_attribute(mesh, "color", _rgba(rgb))
    for field in vertices.dtype.names:
        if field not in _POINT_FIELDS:
            set_attribute(mesh, field, table[field])
    if "radius" not in vertices.dtype.names and len(xyz):
        # No footprint stored: a small share of the extent so the points are visible at all.
        extent = float(np.linalg.norm(xyz.max(axis=0) - xyz.min(axis=0)))
        set_attribute(mesh, "radius", np.full(len(xyz), max(extent, 1e-3) * 1e-3, np.float32))
    obj = _tagged_object(name, mesh)
    modifier = nodes.ensure_modifier(obj, points_group(), POINTS_GROUP)
    nodes.set_modifier_input(modifier, "Viewport Fraction", _default_fraction(len(xyz)))
    return obj


# ---------------------------------------------------------------------------------------------
# Collections
# ---------------------------------------------------------------------------------------------


def job_collections(job_dir: Path | str) -> list[bpy.types.Collection]:
    key = str(Path(job_dir).resolve())
    return [c for c in bpy.data.collections if c.get("gen3d_job") == key]


def remove_result(collection: bpy.types.Collection, scene: bpy.types.Scene) -> None:
    """Remove a result collection and the objects Gen3D made in it; anything the user put
    there is moved to the scene's collection, untouched otherwise."""
    for obj in list(collection.all_objects):
        if obj.get(TAG):
            data = obj.data
            bpy.data.objects.remove(obj, do_unlink=True)
            if data is not None and data.users == 0:
                if isinstance(data, bpy.types.Mesh):
                    bpy.data.meshes.remove(data)
        elif len(obj.users_collection) == 1:
            scene.collection.objects.link(obj)
    for child in list(collection.children):
        if not child.get("gen3d_job"):
            scene.collection.children.link(child)
    bpy.data.collections.remove(collection)


def result_collection(context, job_dir: Path | str, mode: str) -> bpy.types.Collection:
    """A fresh collection for a job's result: REPLACE removes this job's earlier results
    (ours only, found by the stored job path); NEW keeps them and adds a version."""
    if mode not in ("REPLACE", "NEW"):
        raise ValueError(f"import mode must be REPLACE or NEW, not {mode!r}")
    job_dir = Path(job_dir).resolve()
    earlier = job_collections(job_dir)
    version = 1 + max((c.get("gen3d_version", 1) for c in earlier), default=0)
    if mode == "REPLACE":
        for collection in earlier:
            remove_result(collection, context.scene)
        version = 1
    name = f"{COLLECTION_PREFIX} {job_dir.name}" + (f" v{version}" if version > 1 else "")
    collection = bpy.data.collections.new(name)
    collection["gen3d_job"] = str(job_dir)
    collection["gen3d_version"] = version
    context.scene.collection.children.link(collection)
    return collection


def world_empty(collection: bpy.types.Collection, matrix: np.ndarray) -> bpy.types.Object:
    root = _tagged_object(f"{COLLECTION_PREFIX} World", None)
    root.empty_display_type = "ARROWS"
    root.empty_display_size = 0.5
    # mathutils.Matrix takes rows; a plain nested list assigned to matrix_world is read as columns.
    root.matrix_world = mathutils.Matrix(np.asarray(matrix).tolist())
    collection.objects.link(root)
    return root


def import_gaussians_file(context, path: Path | str, *, collection: bpy.types.Collection | None = None,
                          parent: bpy.types.Object | None = None, name: str = "") -> bpy.types.Object:
    """Import a standard 3DGS PLY as a Gaussians object (into ``collection`` or the active one)."""
    path = Path(path)
    obj = gaussians_object(name or f"{COLLECTION_PREFIX} {path.stem}", read_gaussians(path))
    (collection or context.collection).objects.link(obj)
    obj.parent = parent
    return obj


def import_job(context, job_dir: Path | str, *, mode: str = "REPLACE") -> bpy.types.Collection:
    """Import a finished job (points.ply and/or gaussians.ply) into its own collection."""
    job_dir = Path(job_dir)
    points_file, gaussians_file = job_dir / "points.ply", job_dir / "gaussians.ply"
    if not points_file.is_file() and not gaussians_file.is_file():
        raise OSError(f"{job_dir} has neither points.ply nor gaussians.ply")
    vertices = ply.read_vertices(points_file) if points_file.is_file() else None
    gaussians = read_gaussians(gaussians_file) if gaussians_file.is_file() else None
    matrix = world_from_engine(job_dir)  # read everything before touching the scene
    collection = result_collection(context, job_dir, mode)
    root = world_empty(collection, matrix)
    if vertices is not None:
        points = points_object(f"{COLLECTION_PREFIX} Points", vertices)
        collection.objects.link(points)
        points.parent = root
        if gaussians is not None:  # the Gaussians are the result to look at; points stay one click away
            points.hide_render = True
            points.hide_set(True)
    if gaussians is not None:
        splats = gaussians_object(f"{COLLECTION_PREFIX} Gaussians", gaussians)
        collection.objects.link(splats)
        splats.parent = root
    return collection
