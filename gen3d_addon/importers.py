"""Bring results into the scene: coloured points and 3D Gaussians as renderable geometry nodes.

* Arrays go into mesh attributes with one ``foreach_set`` each (no per-point Python); 3DGS
  parameters are activated once in numpy (sigmoid opacity, exp scale, unit quaternion,
  colour = 0.5 + C0 * f_dc) and stored as attributes ``color``, ``opacity``, ``scale``, ``rot``.
* The SH rest coefficients (``f_rest_*``, 45 floats a Gaussian at degree 3, three quarters of
  the weight) are only read by export and never drawn: they stay in the PLY the Gaussians came
  from, which the mesh refers to (its path, size and time, each point's row, and the turn Apply
  Transform gave them).  Store SH in .blend (or a re-run of the job, which rewrites the PLY)
  copies them into ``f_rest_*`` attributes, as a file that was converted on import has them.
* Geometry nodes draw them: points through Mesh to Points, Gaussians as unrealised instances of
  one quad facing the scene camera (the engine's compositing order), each carrying the matrix
  its material evaluates the Gaussian (``rot``, ``scale``) through.
  The viewport shows a fraction of them (Random Value + Is Viewport) as points; render uses all.
* Results of a job live in their own collection, parented to an empty at the input camera's
  frame (the engine world is that camera's OpenCV frame), so they line up with the Blender
  camera that framed the input image, at metric scale; moving the empty moves the world.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import bpy
import mathutils
import numpy as np

from ..engine import cameras
from ..engine.gaussian_math import ANTIALIASED_COMMENTS, SH_C0, antialiased_from_comments, ply_comments
from . import nodes, ply, sky_world, splat_draw, transform

COLLECTION_PREFIX = "Gen3D"
TAG = "gen3d_generated"  # custom property on every object we create: only these are ever removed
POINTS_GROUP = "Gen3D Points"
GAUSSIANS_GROUP = "Gen3D Gaussians"
POINTS_MATERIAL = "Gen3D Points"
SPLAT_MATERIAL = "Gen3D Splat"
VIEWPORT_BUDGET = 250_000  # points shown in the viewport by default; render always shows all
# OpenCV/COLMAP axes (Y down, Z forward) into Blender's (Z up), looking along +Y from the origin.
OPENCV_TO_BLENDER = np.array([[1.0, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]])


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


def world_from_engine(job_dir: Path | str | None) -> np.ndarray:
    """4x4 matrix taking engine-world points into Blender's world (``None``: no job, the default frame)."""
    camera = input_camera(job_dir) if job_dir is not None else None
    if camera is None:
        # No Blender camera framed the input: the input view looks along +Y from the origin, Z up.
        return OPENCV_TO_BLENDER.copy()
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


def _rest_names(names) -> list[str]:
    return sorted((name for name in names if name.startswith("f_rest_")), key=lambda name: int(name[7:]))


_STANDARD = {"x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
             "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"}


def read_gaussians(path: Path | str) -> dict:
    """A standard 3DGS PLY, activated for rendering, plus what export needs to give it back:
    xyz [N,3], color [N,3], opacity [N], scale [N,3], rot [N,4] (w, x, y, z, unit),
    f_rest [K][N] (raw columns, K may be 0), opacity_logit [N] (as stored: sigmoid in float32
    saturates above ~17), normal [N,3] or None (absent or all zero), extra {name: column}
    (every other property, in its own type), layout [(name, type)] (the file's order) and
    source {path, size, mtime_ns} (the file, to read f_rest from again)."""
    vertices = ply.read_vertices(path)
    table = columns(vertices)
    rot = _stack(table, ["rot_0", "rot_1", "rot_2", "rot_3"])
    norm = np.linalg.norm(rot, axis=1, keepdims=True)
    rot = np.where(norm > 0, rot / np.maximum(norm, 1e-12), np.array([1.0, 0, 0, 0], np.float32))
    logit = _stack(table, ["opacity"])[:, 0]
    normal = _stack(table, ["nx", "ny", "nz"]) if {"nx", "ny", "nz"} <= table.keys() else None
    names = vertices.dtype.names
    stat = Path(path).stat()
    return {
        "xyz": _stack(table, ["x", "y", "z"]),
        "color": 0.5 + SH_C0 * _stack(table, ["f_dc_0", "f_dc_1", "f_dc_2"]),
        "opacity": (1.0 / (1.0 + np.exp(-logit.astype(np.float64)))).astype(np.float32),
        "opacity_logit": logit,
        "scale": np.exp(_stack(table, ["scale_0", "scale_1", "scale_2"])),
        "rot": rot.astype(np.float32),
        "f_rest": [table[name] for name in _rest_names(names)],
        "normal": normal if normal is not None and normal.any() else None,
        "extra": {name: vertices[name] for name in names if name not in _STANDARD and not name.startswith("f_rest_")},
        "layout": [(name, vertices.dtype[name].str[1:]) for name in names],
        # where f_rest can be read again (gaussians_object refers to it instead of copying it)
        "source": {"path": str(Path(path).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns},
        "antialiased": antialiased_from_comments(ply_comments(path)),  # its image formation (engine.gaussian_math)
    }


def standard_layout(n_rest: int) -> list[tuple[str, str]]:
    """The INRIA reference's property order (what Gen3D's engine writes too)."""
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(n_rest)]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    return [(name, "f4") for name in names]


def write_gaussians(path: Path | str, gaussians: dict) -> None:
    """Inverse of read_gaussians: a 3DGS PLY, pre-activation, in the layout it came with (the
    standard one otherwise), every property back with its type.  The opacity logit is written as
    read when there is one; otherwise it is the logit of the activated opacity."""
    xyz = np.asarray(gaussians["xyz"], np.float32)
    count = len(xyz)
    f_rest = gaussians.get("f_rest", [])
    extra = gaussians.get("extra", {})
    layout = gaussians.get("layout") or standard_layout(len(f_rest))
    fields = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]}
    normal = gaussians.get("normal")
    normal = np.zeros((count, 3), np.float32) if normal is None else np.asarray(normal)
    fields.update({"nx": normal[:, 0], "ny": normal[:, 1], "nz": normal[:, 2]})
    f_dc = (np.asarray(gaussians["color"], np.float64) - 0.5) / SH_C0
    fields.update({f"f_dc_{i}": f_dc[:, i] for i in range(3)})
    fields.update({f"f_rest_{i}": column for i, column in enumerate(f_rest)})
    if gaussians.get("opacity_logit") is not None:
        fields["opacity"] = gaussians["opacity_logit"]
    else:
        opacity = np.clip(np.asarray(gaussians["opacity"], np.float64), 1e-7, 1 - 1e-7)
        fields["opacity"] = np.log(opacity / (1.0 - opacity))
    log_scale = np.log(np.maximum(np.asarray(gaussians["scale"], np.float64), 1e-30))
    fields.update({f"scale_{i}": log_scale[:, i] for i in range(3)})
    rot = np.asarray(gaussians["rot"], np.float64)
    fields.update({f"rot_{i}": rot[:, i] for i in range(4)})
    fields.update(extra)
    missing = [name for name, _ in layout if name not in fields]
    if missing:
        raise ValueError(f"no values for the properties {', '.join(missing)}")
    data = np.empty(count, dtype=[(name, "<" + kind) for name, kind in layout])
    for name, _ in layout:
        data[name] = fields[name]
    ply.write_vertices(path, data, list(ANTIALIASED_COMMENTS) if gaussians.get("antialiased") else [])


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
    absent (reads zero), so the material works on points and on instanced quads alike."""
    x, y = location
    geometry = nodes.node(tree, "ShaderNodeAttribute", (x, y), attribute_name=name, attribute_type="GEOMETRY")
    instancer = nodes.node(tree, "ShaderNodeAttribute", (x, y - 180), attribute_name=name, attribute_type="INSTANCER")
    vector = output in ("Color", "Vector")
    add = nodes.node(tree, "ShaderNodeVectorMath" if vector else "ShaderNodeMath", (x + 200, y - 90), operation="ADD")
    nodes.link(tree, geometry, output, add, "Vector" if vector else "Value")
    tree.links.new(nodes.socket(instancer.outputs, output), add.inputs[1])
    return add


MATERIAL_VERSION = 4  # bumped when the material's or the Gaussians group's nodes change: older files get them rebuilt
# The engine cuts a Gaussian where alpha < 1/255, at most sqrt(2 ln 255) = 3.33 sigma from its centre.
QUAD_RADIUS = 3.4  # sigmas: the half side of each camera-facing quad (before the off-axis widening)
ALPHA_CUT = 1.0 / 255.0  # the engine (and gsplat) skip fainter samples
ALPHA_MAX = 0.999  # the engine's alpha clamp
# The matrix that takes a quad's own coordinates to the Gaussian's standardised ones (one row each).
ROWS = ("gen3d_row_0", "gen3d_row_1", "gen3d_row_2")


def _math(tree, operation, location, a, b=None, **settings):
    """A Math (float) or Vector Math node fed by sockets or constants; returns its first output."""
    vector = operation.startswith("V_")
    node = nodes.node(tree, "ShaderNodeVectorMath" if vector else "ShaderNodeMath", location,
                      operation=operation[2:] if vector else operation, **settings)
    for slot, value in enumerate((a, b)):
        if value is None:
            continue
        if isinstance(value, bpy.types.NodeSocket):
            tree.links.new(value, node.inputs[slot])
        else:
            node.inputs[slot].default_value = (value,) * 3 if vector else value
    return node.outputs["Vector" if vector and operation not in ("V_DOT_PRODUCT", "V_LENGTH") else "Value" if vector else 0]


def _srgb_decode(tree, display, location):
    """The exact sRGB curve (engine/colour.py), display -> linear, from nodes Blender 4.2 has
    (its Vector Math has no Power or Sign): x / 12.92 below the knee 0.04045,
    ((x + 0.055) / 1.055)^2.4 above, the power from a Gamma node."""
    x, y = location
    display = _math(tree, "V_MAXIMUM", (x, y), display, 0.0)
    low = _math(tree, "V_SCALE", (x + 200, y + 200), display)
    low.node.inputs["Scale"].default_value = 1 / 12.92
    base = _math(tree, "V_MULTIPLY_ADD", (x + 200, y), display, 1 / 1.055)
    base.node.inputs[2].default_value = (0.055 / 1.055,) * 3
    power = nodes.node(tree, "ShaderNodeGamma", (x + 400, y))
    tree.links.new(base, power.inputs["Color"])
    power.inputs["Gamma"].default_value = 2.4
    high = power.outputs["Color"]
    knees = _math(tree, "V_SCALE", (x + 200, y - 200), display)  # >= 1 exactly above the knee
    knees.node.inputs["Scale"].default_value = 1 / 0.04045
    step = _math(tree, "V_MINIMUM", (x + 600, y - 200), _math(tree, "V_FLOOR", (x + 400, y - 200), knees), 1.0)
    lerp = _math(tree, "V_MULTIPLY_ADD", (x + 800, y), step, _math(tree, "V_SUBTRACT", (x + 600, y), high, low))
    tree.links.new(low, lerp.node.inputs[2])
    return lerp


def _splat_alpha(tree, location):
    """The Gaussian's alpha where the ray crosses its camera-facing quad, as the engine composites it.

    The Gaussians group hands each quad instance the rows of A = S^-1 R^T (x - mu) per unit of
    the quad's own coordinates (ROWS), so p = A q is the hit point q in the Gaussian's
    standardised space, where the Gaussian is exp(-|p|^2 / 2), and d = A w the ray's direction
    there (w: the quad-space Incoming).  Along the ray the Gaussian peaks at exp(-b^2 / 2), b^2 =
    |p|^2 - (p.d)^2 / |d|^2: the splat's value at that pixel, whatever its shape and the view.
    Alpha is clamped at 0.999 and cut below 1/255 as in the engine.
    """
    x, y = location
    opacity = _attribute_sum(tree, "opacity", "Factor", (x, y)).outputs[0]
    coords = nodes.node(tree, "ShaderNodeTexCoord", (x, y - 1400))
    geometry = nodes.node(tree, "ShaderNodeNewGeometry", (x, y - 1700))
    to_object = nodes.node(tree, "ShaderNodeVectorTransform", (x + 200, y - 1700), vector_type="VECTOR",
                           convert_from="WORLD", convert_to="OBJECT")
    nodes.link(tree, geometry, "Incoming", to_object, "Vector")
    point = nodes.node(tree, "ShaderNodeCombineXYZ", (x + 800, y - 1000))
    direction = nodes.node(tree, "ShaderNodeCombineXYZ", (x + 800, y - 1300))
    for i, name in enumerate(ROWS):
        row = _attribute_sum(tree, name, "Vector", (x + 200, y - 400 - 300 * i)).outputs[0]
        tree.links.new(_math(tree, "V_DOT_PRODUCT", (x + 600, y - 400 - 300 * i), row, coords.outputs["Object"]),
                       point.inputs[i])
        tree.links.new(_math(tree, "V_DOT_PRODUCT", (x + 600, y - 500 - 300 * i), row, to_object.outputs["Vector"]),
                       direction.inputs[i])
    unit = _math(tree, "V_NORMALIZE", (x + 1000, y - 1300), direction.outputs[0])
    along = _math(tree, "V_DOT_PRODUCT", (x + 1200, y - 1200), point.outputs[0], unit)
    b2 = _math(tree, "SUBTRACT", (x + 1400, y - 1000), _math(tree, "V_DOT_PRODUCT", (x + 1200, y - 1000), point.outputs[0], point.outputs[0]),
               _math(tree, "MULTIPLY", (x + 1400, y - 1200), along, along))
    alpha = _math(tree, "MINIMUM", (x + 2000, y - 300),
                  _math(tree, "MULTIPLY", (x + 1800, y - 300), opacity,
                        _math(tree, "EXPONENT", (x + 1600, y - 1000), _math(tree, "MULTIPLY", (x + 1500, y - 900), b2, -0.5))),
                  ALPHA_MAX)
    kept = _math(tree, "GREATER_THAN", (x + 2200, y - 500), alpha, ALPHA_CUT - 1e-7)
    return _math(tree, "MULTIPLY", (x + 2400, y - 300), alpha, kept)


def _material(name: str, splat: bool) -> bpy.types.Material:
    """Emission of the stored colour (the splats carry baked light, so they look as trained),
    decoded from display values with the exact sRGB curve; the splat material mixes it with
    transparency by each Gaussian's own alpha (_splat_alpha)."""
    material = bpy.data.materials.get(name)
    if material is not None and material.get("gen3d_version") == MATERIAL_VERSION:
        return material
    if material is None:
        material = bpy.data.materials.new(name)
    if material.node_tree is None:  # Blender 4.x makes materials without nodes
        material.use_nodes = True
    tree = material.node_tree
    tree.nodes.clear()
    colour = _attribute_sum(tree, "color", "Color", (-2200, 600))
    linear = _srgb_decode(tree, colour.outputs["Vector"], (-1900, 600))
    emission = nodes.node(tree, "ShaderNodeEmission", (-800, 600))
    tree.links.new(linear, emission.inputs["Color"])
    output = nodes.node(tree, "ShaderNodeOutputMaterial", (600, 200))
    if not splat:
        nodes.link(tree, emission, "Emission", output, "Surface")
    else:
        alpha = _splat_alpha(tree, (-2600, -200))
        transparent = nodes.node(tree, "ShaderNodeBsdfTransparent", (100, 100))
        mix = nodes.node(tree, "ShaderNodeMixShader", (400, 200))
        tree.links.new(alpha, mix.inputs["Fac"])
        tree.links.new(transparent.outputs[0], mix.inputs[1])
        tree.links.new(emission.outputs[0], mix.inputs[2])
        nodes.link(tree, mix, "Shader", output, "Surface")
        material.surface_render_method = "DITHERED"
        material.use_backface_culling = False  # a quad faces the scene camera; other views see it from either side
    material["gen3d_version"] = MATERIAL_VERSION
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


def _material_points(tree, mesh, radius, material, location):
    """Mesh to Points (a radius per point) then Set Material, from these output sockets; the Set
    Material node."""
    x, y = location
    to_points = nodes.node(tree, "GeometryNodeMeshToPoints", (x, y))
    tree.links.new(mesh, nodes.socket(to_points.inputs, "Mesh"))
    tree.links.new(radius, nodes.socket(to_points.inputs, "Radius"))
    set_material = nodes.node(tree, "GeometryNodeSetMaterial", (x + 250, y))
    nodes.link(tree, to_points, "Points", set_material, "Geometry")
    tree.links.new(material, nodes.socket(set_material.inputs, "Material"))
    return set_material


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
        material = _material_points(tree, nodes.socket(delete.outputs, "Geometry"), nodes.socket(scaled.outputs, "Value"),
                                    nodes.socket(group_in.outputs, "Material"), (300, 0))
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


def _camera_facing_quads(tree, points, half_side, material, location):
    """One quad per Gaussian through its centre, parallel to the scene camera's image plane, so a
    ray meets the quads in the order of their centres' camera depth: the order the engine (and
    gsplat) composites in.  (Ellipsoid meshes are entered by each ray at a different depth, and
    on a dense surface that order changes which of 20-35 overlapping Gaussians shows: 22.9 dB on
    the example's brick wall, bench/RESULTS.md.)  Each quad's half side is ``half_side`` times
    the Gaussian's largest sigma, widened by distance / depth for off-axis views, so it encloses
    the Gaussian's footprint; it carries the rows of its quad-to-Gaussian matrix (ROWS) for the
    material (_splat_alpha).  Returns the instances' geometry socket."""
    x, y = location
    camera = nodes.node(tree, "GeometryNodeInputActiveCamera", (x - 400, y + 600))
    info = nodes.node(tree, "GeometryNodeObjectInfo", (x - 200, y + 600), transform_space="RELATIVE")
    nodes.link(tree, camera, "Active Camera", info, "Object")
    camera_rotation = nodes.socket(info.outputs, "Rotation")
    inverse = nodes.node(tree, "FunctionNodeInvertRotation", (x, y + 700))
    tree.links.new(camera_rotation, nodes.socket(inverse.inputs, "Rotation"))

    def rotate(vector, rotation, at):
        node = nodes.node(tree, "FunctionNodeRotateVector", at)
        if isinstance(vector, bpy.types.NodeSocket):
            tree.links.new(vector, nodes.socket(node.inputs, "Vector"))
        else:
            nodes.socket(node.inputs, "Vector").default_value = vector
        tree.links.new(rotation, nodes.socket(node.inputs, "Rotation"))
        return node.outputs[0]

    position = nodes.node(tree, "GeometryNodeInputPosition", (x - 200, y + 400)).outputs[0]
    offset = _math(tree, "V_SUBTRACT", (x, y + 400), position, nodes.socket(info.outputs, "Location"))
    depth = _math(tree, "V_DOT_PRODUCT", (x + 200, y + 500), offset, rotate((0.0, 0.0, -1.0), camera_rotation, (x, y + 550)))
    distance = _math(tree, "V_LENGTH", (x + 200, y + 350), offset)
    widen = _math(tree, "DIVIDE", (x + 600, y + 400), distance,
                  _math(tree, "MAXIMUM", (x + 400, y + 450), depth, _math(tree, "MULTIPLY", (x + 400, y + 300), distance, 0.25)))
    rot = nodes.node(tree, "GeometryNodeInputNamedAttribute", (x - 200, y), data_type="QUATERNION")
    nodes.set_inputs(rot, Name="rot")
    sigma = nodes.node(tree, "GeometryNodeInputNamedAttribute", (x - 200, y - 150), data_type="FLOAT_VECTOR")
    nodes.set_inputs(sigma, Name="scale")
    sigmas = nodes.node(tree, "ShaderNodeSeparateXYZ", (x, y - 150))
    nodes.link(tree, sigma, "Attribute", sigmas, "Vector")
    largest = _math(tree, "MAXIMUM", (x + 400, y - 100), _math(tree, "MAXIMUM", (x + 200, y - 100), sigmas.outputs[0], sigmas.outputs[1]),
                    sigmas.outputs[2])
    half = _math(tree, "MULTIPLY", (x + 800, y + 200), _math(tree, "MULTIPLY", (x + 600, y + 100), largest, half_side), widen)
    size = nodes.node(tree, "ShaderNodeCombineXYZ", (x + 1000, y + 200))
    tree.links.new(half, size.inputs[0])
    tree.links.new(half, size.inputs[1])
    size.inputs[2].default_value = 1.0
    geometry = nodes.socket(points.outputs, "Geometry")
    for i, name in enumerate(ROWS):  # row i of S^-1 R^T R_camera diag(half, half, 1)
        axis = rotate(tuple(float(i == k) for k in range(3)), nodes.socket(rot.outputs, "Attribute"), (x + 200, y - 300 - 200 * i))
        scaled = _math(tree, "V_SCALE", (x + 400, y - 300 - 200 * i), axis)
        tree.links.new(_math(tree, "DIVIDE", (x + 200, y - 400 - 200 * i), 1.0, sigmas.outputs[i]),
                       nodes.socket(scaled.node.inputs, "Scale"))
        row = _math(tree, "V_MULTIPLY", (x + 1200, y - 300 - 200 * i),
                    rotate(scaled, inverse.outputs[0], (x + 600, y - 300 - 200 * i)), size.outputs[0])
        store = nodes.node(tree, "GeometryNodeStoreNamedAttribute", (x + 1400 + 200 * i, y + 400), data_type="FLOAT_VECTOR", domain="POINT")
        nodes.set_inputs(store, Name=name)
        tree.links.new(geometry, nodes.socket(store.inputs, "Geometry"))
        tree.links.new(row, nodes.socket(store.inputs, "Value"))
        geometry = nodes.socket(store.outputs, "Geometry")
    quad = nodes.node(tree, "GeometryNodeMeshGrid", (x + 1400, y))
    nodes.set_inputs(quad, Size_X=2.0, Size_Y=2.0, Vertices_X=2, Vertices_Y=2)
    quad_material = nodes.node(tree, "GeometryNodeSetMaterial", (x + 1600, y))
    nodes.link(tree, quad, "Mesh", quad_material, "Geometry")
    tree.links.new(material, nodes.socket(quad_material.inputs, "Material"))
    instances = nodes.node(tree, "GeometryNodeInstanceOnPoints", (x + 2200, y + 200))
    tree.links.new(geometry, nodes.socket(instances.inputs, "Points"))
    nodes.link(tree, quad_material, "Geometry", instances, "Instance")
    tree.links.new(camera_rotation, nodes.socket(instances.inputs, "Rotation"))
    tree.links.new(size.outputs[0], nodes.socket(instances.inputs, "Scale"))
    return nodes.socket(instances.outputs, "Instances")


def gaussians_group() -> bpy.types.GeometryNodeTree:
    def build(tree, group_in, group_out):
        g = lambda name: nodes.socket(group_in.outputs, name)  # noqa: E731 - group input by name
        # Spherical-harmonics rest terms only matter to export: keep them out of the evaluated copy.
        strip = nodes.node(tree, "GeometryNodeRemoveAttribute", (-700, 200))
        nodes.link(tree, group_in, "Geometry", strip, "Geometry")
        if "Pattern Mode" in strip.inputs:
            nodes.socket(strip.inputs, "Pattern Mode").default_value = "Wildcard"
            nodes.set_inputs(strip, Name="f_rest_*")
        else:  # 4.2/4.5 LTS: no wildcards, one node per coefficient (degree 3 at most)
            nodes.set_inputs(strip, Name="f_rest_0")
            for i in range(1, 45):
                following = nodes.node(tree, "GeometryNodeRemoveAttribute", (-700, 200 + 20 * i))
                nodes.set_inputs(following, Name=f"f_rest_{i}")
                nodes.link(tree, strip, "Geometry", following, "Geometry")
                strip = following
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
        quads = _camera_facing_quads(tree, delete, g("Scale"), g("Material"), (0, 200))
        sigma = nodes.node(tree, "GeometryNodeInputNamedAttribute", (200, -550), data_type="FLOAT_VECTOR")
        nodes.set_inputs(sigma, Name="scale")
        axes = nodes.node(tree, "ShaderNodeVectorMath", (400, -550), operation="SCALE")
        nodes.link(tree, sigma, "Attribute", axes, "Vector")
        tree.links.new(g("Scale"), nodes.socket(axes.inputs, "Scale"))
        # Viewport points: a sphere per Gaussian of radius Scale * RMS sigma, cheap to draw.
        rms = nodes.node(tree, "ShaderNodeVectorMath", (400, -750), operation="LENGTH")
        nodes.link(tree, axes, "Vector", rms, "Vector")
        radius = nodes.node(tree, "ShaderNodeMath", (600, -750), operation="MULTIPLY")
        tree.links.new(rms.outputs["Value"], radius.inputs[0])
        radius.inputs[1].default_value = 3.0 ** -0.5
        points_material = _material_points(tree, nodes.socket(delete.outputs, "Geometry"), nodes.socket(radius.outputs, "Value"),
                                           g("Material"), (600, -300))
        # Points in the viewport (unless asked for the quads), the camera-facing quads at render.
        is_viewport = nodes.node(tree, "GeometryNodeIsViewport", (400, 500))
        use_points = nodes.node(tree, "FunctionNodeBooleanMath", (600, 500), operation="NIMPLY")
        nodes.link(tree, is_viewport, "Is Viewport", use_points, "Boolean")
        tree.links.new(g("Viewport Quads"), use_points.inputs[1])
        switch = nodes.node(tree, "GeometryNodeSwitch", (1000, 0), input_type="GEOMETRY")
        nodes.link(tree, use_points, "Boolean", switch, "Switch")
        tree.links.new(quads, nodes.socket(switch.inputs, "False"))
        nodes.link(tree, points_material, "Geometry", switch, "True")
        nodes.link(tree, switch, "Output", group_out, "Geometry")

    return nodes.geometry_group(
        GAUSSIANS_GROUP,
        [
            ("Material", "MATERIAL", {"default_value": _material(SPLAT_MATERIAL, splat=True)}),
            ("Scale", "FLOAT", {"default_value": QUAD_RADIUS, "min_value": 0.1, "max_value": 6.0, "description": "Half side of each camera-facing quad in standard deviations; the material fades and cuts each Gaussian as the engine does (alpha < 1/255, at most 3.33 sigma), so the quad must enclose that: below the default it clips the tails"}),
            ("Min Opacity", "FLOAT", {"default_value": ALPHA_CUT, "min_value": 0.0, "max_value": 1.0, "subtype": "FACTOR", "description": "Gaussians fainter than this are dropped (viewport and render)"}),
            ("Viewport Fraction", "FLOAT", {"default_value": 1.0, "min_value": 0.0, "max_value": 1.0, "subtype": "FACTOR", "description": "Share of the Gaussians drawn in the viewport (render draws all)"}),
            ("Viewport Quads", "BOOLEAN", {"default_value": False, "description": "Draw the render's quads in the viewport too (slower; they face the scene camera, not the view); otherwise points"}),
        ],
        build,
        version=MATERIAL_VERSION,
    )


RENAMED_INPUTS = {"Viewport Ellipsoids": "Viewport Quads"}  # older groups' input names -> today's


def upgrade_node_groups() -> list[str]:
    """Rebuild the Gaussians group (and its material) a file saved with an older add-on holds,
    keeping every modifier's input values by name where the input still exists (RENAMED_INPUTS
    for renamed ones); returns the objects upgraded.  Runs when a file loads: a saved world
    renders with today's splats without a re-import, and its settings stay."""
    tree = bpy.data.node_groups.get(GAUSSIANS_GROUP)
    if tree is None or tree.get("gen3d_version") == MATERIAL_VERSION:
        return []
    users = [(obj, modifier) for obj in bpy.data.objects for modifier in obj.modifiers
             if modifier.type == "NODES" and modifier.node_group == tree]
    before = nodes.input_identifiers(tree)
    saved = [(obj, modifier, {RENAMED_INPUTS.get(name, name): modifier[key] for name, key in before.items() if key in modifier.keys()})
             for obj, modifier in users]
    gaussians_group()  # rebuilt in place: the modifiers keep the group
    names = nodes.input_identifiers(tree)
    for obj, modifier, values in saved:
        for name, value in values.items():
            if name in names:
                modifier[names[name]] = value
        obj.update_tag()
    return [obj.name for obj, _ in users]


# ---------------------------------------------------------------------------------------------
# Objects
# ---------------------------------------------------------------------------------------------


def _tagged_object(name: str, data) -> bpy.types.Object:
    obj = bpy.data.objects.new(name, data)
    obj[TAG] = True
    return obj


def _default_fraction(count: int) -> float:
    return min(1.0, VIEWPORT_BUDGET / max(count, 1))


PLY_LAYOUT = "gen3d_ply"  # mesh custom property: the file's properties, their types and attributes
FRAME = "gen3d_frame"  # mesh custom property: reference points the attributes' frame is tied to
_RESERVED = {"position", "color", "opacity", "opacity_logit", "scale", "rot", "ply_normal"}


def _extra_attribute(name: str) -> str:
    taken = name in _RESERVED or name.startswith((".", "gen3d_", "f_rest_")) or name.startswith("ply_")
    return f"ply_{name}" if taken else name


def _set_extra(mesh, attribute: str, column: np.ndarray) -> None:
    if column.dtype.kind in "ui":
        # Blender's integer attribute is int32: a uint32 goes in bit for bit, smaller ones widen.
        values = column.view(np.int32) if column.dtype.itemsize == 4 else column.astype(np.int32)
        set_attribute(mesh, attribute, values, kind="INT")
    else:
        set_attribute(mesh, attribute, column, kind="FLOAT")


def _get_extra(mesh, attribute: str, kind: str) -> np.ndarray:
    values = get_attribute(mesh, attribute)
    dtype = np.dtype("<" + kind)
    return values.view(dtype) if dtype.kind in "ui" and dtype.itemsize == 4 else values.astype(dtype)


def gaussians_object(name: str, gaussians: dict) -> bpy.types.Object:
    """A mesh of loose points carrying the activated Gaussians, drawn by the Gaussians group;
    the opacity logit, normals and any other property of the file ride along for export.  The
    SH rest stays in ``gaussians["source"]`` when there is one (rows in file order), else it is
    stored on the mesh."""
    mesh = point_mesh(name, gaussians["xyz"])
    set_attribute(mesh, "color", _rgba(gaussians["color"]))
    set_attribute(mesh, "opacity", gaussians["opacity"])
    if gaussians.get("opacity_logit") is not None:
        set_attribute(mesh, "opacity_logit", gaussians["opacity_logit"])
    if gaussians.get("source") and len(gaussians["f_rest"]):
        _refer_sh(mesh, gaussians["source"])
        _set_frame_dependent(mesh, dict(gaussians, f_rest=[]))
    else:
        _set_frame_dependent(mesh, gaussians)
    layout = []
    for field, kind in gaussians.get("layout") or standard_layout(len(gaussians["f_rest"])):
        attribute = _extra_attribute(field) if field in gaussians.get("extra", {}) else ""
        if attribute:
            _set_extra(mesh, attribute, gaussians["extra"][field])
        layout.append([field, kind, attribute])
    mesh[PLY_LAYOUT] = json.dumps(layout)
    mesh[ANTIALIASED] = bool(gaussians.get("antialiased"))
    mesh[FRAME] = json.dumps(transform.reference_frame(gaussians["xyz"]))
    obj = _tagged_object(name, mesh)
    modifier = nodes.ensure_modifier(obj, gaussians_group(), GAUSSIANS_GROUP)
    # The viewport shows them as splats (splat_draw); the point preview stays one slider away.
    obj[splat_draw.DRAW_PROPERTY] = True
    nodes.set_modifier_input(modifier, "Viewport Fraction", 0.0)
    return obj


def _set_frame_dependent(mesh: bpy.types.Mesh, gaussians: dict) -> None:
    """The attributes a transform turns: scale, rot, the f_rest columns given, the normals."""
    set_attribute(mesh, "scale", gaussians["scale"])
    set_attribute(mesh, "rot", gaussians["rot"], kind="QUATERNION")
    for i, column in enumerate(gaussians["f_rest"]):
        set_attribute(mesh, f"f_rest_{i}", column)
    if gaussians.get("normal") is not None:
        set_attribute(mesh, "ply_normal", gaussians["normal"])


ANTIALIASED = "gen3d_antialiased"  # mesh custom property: trained in gsplat's antialiased mode (the PLY's comment)
SH_SOURCE = "gen3d_sh_source"  # mesh custom property: the PLY holding f_rest (path, size, time), their turn
SH_ROW = "gen3d_sh_row"  # per point: its row in that PLY
SH_FILE = "gen3d_sh_file"  # per point: a tag of that PLY (points joined in from elsewhere have another)


def _file_tag(source: dict) -> int:
    return (zlib.crc32(json.dumps([source["path"], source["size"], source["mtime_ns"]]).encode()) & 0x7FFFFFFF) | 1


def _refer_sh(mesh: bpy.types.Mesh, source: dict) -> None:
    count = len(mesh.vertices)
    mesh[SH_SOURCE] = json.dumps({**source, "turn": np.eye(3).tolist()})
    set_attribute(mesh, SH_ROW, np.arange(count, dtype=np.int32))
    set_attribute(mesh, SH_FILE, np.full(count, _file_tag(source), np.int32))


def refers_sh(mesh: bpy.types.Mesh) -> bool:
    return SH_SOURCE in mesh and not _rest_names(mesh.attributes.keys())


def _referenced_sh(mesh: bpy.types.Mesh) -> list[np.ndarray]:
    """The f_rest columns of the mesh's points, read from the PLY it refers to and turned as
    the points were; a clear ValueError when that file is gone or no longer the one imported."""
    source = json.loads(mesh[SH_SOURCE])
    path = Path(source["path"])
    where = f"The view-dependent colour (SH) of {mesh.name!r} stays in {path}"
    try:
        stat = path.stat()
    except OSError:
        raise ValueError(f"{where}, which is missing: put it back there (Store SH in .blend keeps it in the .blend)") from None
    if (stat.st_size, stat.st_mtime_ns) != (source["size"], source["mtime_ns"]):
        raise ValueError(f"{where}, which changed since the import (the job ran again?): import it again")
    if SH_FILE not in mesh.attributes or (get_attribute(mesh, SH_FILE) != _file_tag(source)).any():
        raise ValueError(f"{mesh.name!r} holds points that did not come from {path} (joined in from another object, "
                         "or added), so their SH is not there: Store SH in .blend on each object before joining them")
    rows = get_attribute(mesh, SH_ROW)
    vertices = ply.read_vertices(path)
    columns = [np.ascontiguousarray(vertices[name][rows]) for name in _rest_names(vertices.dtype.names)]
    turn = np.array(source["turn"])
    return columns if np.array_equal(turn, np.eye(3)) else transform.rotate_sh_columns(columns, turn)


def store_sh_in_blend(mesh: bpy.types.Mesh) -> bool:
    """Copy the SH the mesh refers to into ``f_rest_*`` attributes, so the .blend holds all it
    exports; False when it already does.  Raises ValueError when the file cannot serve."""
    if not refers_sh(mesh):
        return False
    for i, column in enumerate(_referenced_sh(mesh)):
        set_attribute(mesh, f"f_rest_{i}", column)
    for name in (SH_ROW, SH_FILE):
        mesh.attributes.remove(mesh.attributes[name])
    del mesh[SH_SOURCE]
    return True


def keep_sh_of(path: Path | str) -> list[str]:
    """Store in the .blend the SH of every mesh referring to ``path``, before something rewrites
    it (a re-run of its job); the meshes it stored."""
    path = str(Path(path).resolve())
    kept = []
    for mesh in bpy.data.meshes:
        if refers_sh(mesh) and json.loads(mesh[SH_SOURCE])["path"] == path:
            try:
                store_sh_in_blend(mesh)
                kept.append(mesh.name)
            except ValueError:
                pass  # already changed or gone: nothing left to keep
    return kept


def _stored_gaussians(mesh: bpy.types.Mesh, sh: bool = True) -> dict:
    """What the mesh holds, in read_gaussians' layout; ``sh=False``: without f_rest (not read)."""
    if not sh:
        f_rest = []
    elif refers_sh(mesh):
        f_rest = _referenced_sh(mesh)
    else:
        f_rest = [get_attribute(mesh, n) for n in _rest_names(mesh.attributes.keys())]
    gaussians = {
        "xyz": get_attribute(mesh, "position"),
        "color": get_attribute(mesh, "color")[:, :3],
        "opacity": get_attribute(mesh, "opacity"),
        "scale": get_attribute(mesh, "scale"),
        "rot": get_attribute(mesh, "rot"),
        "f_rest": f_rest,
        "opacity_logit": get_attribute(mesh, "opacity_logit") if "opacity_logit" in mesh.attributes else None,
        "normal": get_attribute(mesh, "ply_normal") if "ply_normal" in mesh.attributes else None,
        "extra": {},
        "layout": [],
        "antialiased": bool(mesh.get(ANTIALIASED, False)),
    }
    if PLY_LAYOUT in mesh:
        for field, kind, attribute in json.loads(mesh[PLY_LAYOUT]):
            if attribute and attribute not in mesh.attributes:
                continue  # the artist removed it: export without it
            if attribute:
                gaussians["extra"][field] = _get_extra(mesh, attribute, kind)
            elif field.startswith("f_rest_") and int(field[7:]) >= len(f_rest):
                continue
            gaussians["layout"].append((field, kind))
    return gaussians


def baked_transform(mesh: bpy.types.Mesh) -> np.ndarray | None:
    """The affine map Blender applied to the points alone since their rotations, scales and SH
    were last written (Apply Transform, or all points moved together in Edit Mode); identity
    when none; None when the points were edited one by one (some moved, added or removed)."""
    if FRAME not in mesh:
        return np.eye(4)
    frame = json.loads(mesh[FRAME])
    if frame["count"] != len(mesh.vertices):
        return None
    # Only the reference points are read: this runs after every change to the mesh.
    return transform.fitted_frame(frame, [tuple(mesh.vertices[i].co) for i in frame["index"]])


def sync_frame(mesh: bpy.types.Mesh) -> bool:
    """Turn the rotations, scales, SH and normals by what Apply Transform did to the positions
    (Blender moves only the positions), so the splats look and export as they should.
    Returns True when the attributes changed."""
    baked = baked_transform(mesh)
    if baked is not None and transform.is_identity(baked):
        return False
    if baked is not None:
        referenced = refers_sh(mesh)
        gaussians = _stored_gaussians(mesh, sh=not referenced)
        at = dict(gaussians, xyz=transform.apply_points(np.linalg.inv(baked), gaussians["xyz"]))
        _set_frame_dependent(mesh, transform.transform_gaussians(at, baked))
        if referenced:  # the file's coefficients stay as they are; the turn is kept beside them
            source = json.loads(mesh[SH_SOURCE])
            source["turn"] = (transform.orthogonal_factor(baked[:3, :3]) @ np.array(source["turn"])).tolist()
            mesh[SH_SOURCE] = json.dumps(source)
    mesh[FRAME] = json.dumps(transform.reference_frame(get_attribute(mesh, "position")))
    return baked is not None


def is_gaussians(obj) -> bool:
    mesh = getattr(obj, "data", None)
    return isinstance(mesh, bpy.types.Mesh) and all(n in mesh.attributes for n in ("color", "opacity", "scale", "rot"))


def gaussians_from_object(obj: bpy.types.Object, matrix: np.ndarray | None = None) -> dict:
    """The Gaussians stored on an object made by gaussians_object, in its local coordinates, or
    moved by the 4x4 ``matrix`` (e.g. its world matrix): positions, rotations, scales, SH
    coefficients and normals all follow.  An Apply Transform not yet synced is taken into account;
    points edited one by one keep the rotations they have."""
    if not is_gaussians(obj):
        raise ValueError(f"{obj.name!r} holds no Gaussians (attributes color, opacity, scale, rot)")
    gaussians = _stored_gaussians(obj.data)
    baked = baked_transform(obj.data)
    if baked is not None and not transform.is_identity(baked):
        gaussians["xyz"] = transform.apply_points(np.linalg.inv(baked), gaussians["xyz"])
        matrix = baked if matrix is None else np.asarray(matrix, np.float64) @ baked
    return gaussians if matrix is None else transform.transform_gaussians(gaussians, matrix)


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
                          parent: bpy.types.Object | None = None, name: str = "", store_sh: bool = False) -> bpy.types.Object:
    """Import a standard 3DGS PLY as a Gaussians object (into ``collection`` or the active one);
    ``store_sh``: its SH rest coefficients go into the .blend rather than staying in the file."""
    path = Path(path)
    gaussians = read_gaussians(path)
    if store_sh:
        gaussians["source"] = None
    obj = gaussians_object(name or f"{COLLECTION_PREFIX} {path.stem}", gaussians)
    (collection or context.collection).objects.link(obj)
    obj.parent = parent
    return obj


def import_job(context, job_dir: Path | str, *, mode: str = "REPLACE") -> bpy.types.Collection:
    """Import a finished job (points.ply and/or gaussians.ply, and its sky.ply) into its own collection."""
    job_dir = Path(job_dir)
    points_file, gaussians_file, sky_file = job_dir / "points.ply", job_dir / "gaussians.ply", job_dir / "sky.ply"
    if not points_file.is_file() and not gaussians_file.is_file():
        raise OSError(f"{job_dir} has neither points.ply nor gaussians.ply")
    vertices = ply.read_vertices(points_file) if points_file.is_file() else None
    gaussians = read_gaussians(gaussians_file) if gaussians_file.is_file() else None
    sky = read_gaussians(sky_file) if sky_file.is_file() else None
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
    if sky is not None:  # the far layer: part of the world, under the same empty
        dome = gaussians_object(f"{COLLECTION_PREFIX} Sky", sky)
        dome[sky_world.SKY_PROPERTY] = True
        dome[sky_world.RADIUS_PROPERTY] = float(np.linalg.norm(sky["xyz"], axis=1).max(initial=0.0))
        collection.objects.link(dome)
        dome.parent = root
    return collection
