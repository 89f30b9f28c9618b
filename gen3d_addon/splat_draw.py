"""The Gaussians drawn in the 3D viewport as splats, with Blender's ``gpu`` module.

Each Gaussian is a screen-aligned quad whose vertex shader projects the 3D covariance as the
engine's rasterizer does (EWA: the Jacobian at the mean, clamped to 1.3x the frustum, plus the
EPS2D = 0.3 px^2 anti-aliasing blur), sized to the engine's box (``min(3.33, sqrt(2 ln(255 o)))`` sigma);
the fragment shader evaluates the 2D Gaussian, clamps alpha at 0.999 and drops it below 1/255.
Quads are drawn back to front (re-sorted on the CPU whenever the view moves) with premultiplied
blending of linear colours, the engine's image-formation model (engine/colour.py).

A budget (``VIEWPORT_BUDGET`` of the most opaque-and-largest Gaussians per object) keeps the
draw interactive; render engines always see all of them through the geometry-nodes quads.
"""

from __future__ import annotations

import bpy
import gpu
import numpy as np

from ..engine import colour
from ..engine.gaussian_math import EPS2D
from .sky_world import SKY_PROPERTY

VIEWPORT_BUDGET = 250_000
DRAW_PROPERTY = "gen3d_splat_draw"  # object custom property: False hides an object's splat draw

_VERTEX = """
void main()
{
    vec4 view = ViewMatrix * vec4(center, 1.0);
    float z = -view.z;
    if (z < 0.01) { gl_Position = vec4(0.0, 0.0, -2.0, 1.0); return; }  /* behind: clipped */
    mat3 W = mat3(ViewMatrix);
    mat3 sigma3 = mat3(cov_a.x, cov_a.y, cov_a.z, cov_a.y, cov_b.x, cov_b.y, cov_a.z, cov_b.y, cov_b.z);
    mat3 cov = W * sigma3 * transpose(W);
    float fx = ProjMatrix[0][0] * 0.5 * Viewport.x;
    float fy = ProjMatrix[1][1] * 0.5 * Viewport.y;
    float lim_x = 1.3 / ProjMatrix[0][0];
    float lim_y = 1.3 / ProjMatrix[1][1];
    float tx = z * clamp(view.x / z, -lim_x, lim_x);
    float ty = z * clamp(view.y / z, -lim_y, lim_y);
    /* rows of the Jacobian of (fx x / -z, fy y / -z) with respect to view coordinates */
    vec3 j0 = vec3(fx / z, 0.0, fx * tx / (z * z));
    vec3 j1 = vec3(0.0, fy / z, fy * ty / (z * z));
    float a = dot(j0, cov * j0) + EPS2D;
    float b = dot(j0, cov * j1);
    float c = dot(j1, cov * j1) + EPS2D;
    float det = a * c - b * b;
    float o = rgba.a;
#ifdef ANTIALIASED
    o *= sqrt(max((a - EPS2D) * (c - EPS2D) - b * b, 0.0) / det);  /* gsplat's antialiased mode: the blur keeps coverage */
#endif
    float extend = min(3.33, sqrt(2.0 * log(max(o, 1.0 / 255.0) * 255.0)));
    vec2 radius = extend * sqrt(vec2(a, c));
    offset = corner * radius;
    conic = vec3(c, -b, a) / det;
    paint = vec4(rgba.rgb, o);
    gl_Position = ProjMatrix * view;
    gl_Position.xy += offset * 2.0 / Viewport * gl_Position.w;
}
"""

_FRAGMENT = """
void main()
{
    float s = 0.5 * (conic.x * offset.x * offset.x + conic.z * offset.y * offset.y) + conic.y * offset.x * offset.y;
    float alpha = min(0.999, paint.a * exp(-s));
    if (s < 0.0 || alpha < 1.0 / 255.0) { discard; }
    fragColor = vec4(paint.rgb * alpha, alpha);
}
"""

_shaders: dict[bool, gpu.types.GPUShader] = {}


def shader(antialiased: bool = False) -> gpu.types.GPUShader:
    """The splat program for one image formation (engine.gaussian_math.ANTIALIASED_COMMENT)."""
    if antialiased not in _shaders:
        interface = gpu.types.GPUStageInterfaceInfo("gen3d_splat_interface")
        interface.smooth("VEC2", "offset")
        interface.flat("VEC3", "conic")
        interface.flat("VEC4", "paint")
        info = gpu.types.GPUShaderCreateInfo()
        info.push_constant("MAT4", "ViewMatrix")
        info.push_constant("MAT4", "ProjMatrix")
        info.push_constant("VEC2", "Viewport")
        for slot, (kind, name) in enumerate((("VEC3", "center"), ("VEC3", "cov_a"), ("VEC3", "cov_b"),
                                             ("VEC4", "rgba"), ("VEC2", "corner"))):
            info.vertex_in(slot, kind, name)
        info.vertex_out(interface)
        info.fragment_out(0, "VEC4", "fragColor")
        info.vertex_source(_VERTEX)
        info.fragment_source(_FRAGMENT)
        info.define("EPS2D", f"{EPS2D!r}")  # the engine's blur, one constant (engine/gaussian_math.py)
        if antialiased:
            info.define("ANTIALIASED")
        _shaders[antialiased] = gpu.shader.create_from_info(info)
    return _shaders[antialiased]


def splat_arrays(gaussians: dict[str, np.ndarray], matrix_world: np.ndarray, budget: int = VIEWPORT_BUDGET) -> dict[str, np.ndarray]:
    """World-space means, covariances (xx xy xz | yy yz zz), linear colour + opacity of at most
    ``budget`` Gaussians (those that cover most: opacity x largest sigma^2, kept in order)."""
    opacity = np.asarray(gaussians["opacity"], np.float64)
    scale = np.asarray(gaussians["scale"], np.float64)
    keep = np.flatnonzero(opacity >= 1.0 / 255.0)
    if len(keep) > budget:
        weight = opacity[keep] * scale[keep].max(1) ** 2
        keep = np.sort(keep[np.argpartition(-weight, budget)[:budget]])
    w, x, y, z = np.asarray(gaussians["rot"], np.float64)[keep].T
    rot = np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], axis=1).reshape(-1, 3, 3)
    matrix_world = np.asarray(matrix_world, np.float64)
    m = matrix_world[:3, :3] @ rot * scale[keep][:, None, :]  # A R S
    cov = m @ m.transpose(0, 2, 1)
    means = np.asarray(gaussians["xyz"], np.float64)[keep] @ matrix_world[:3, :3].T + matrix_world[:3, 3]
    linear = colour.srgb_to_linear(np.clip(np.asarray(gaussians["color"], np.float64)[keep, :3], 0.0, None))
    return {
        "center": means.astype(np.float32),
        "cov_a": cov[:, 0, :].astype(np.float32),
        "cov_b": np.stack([cov[:, 1, 1], cov[:, 1, 2], cov[:, 2, 2]], 1).astype(np.float32),
        "rgba": np.concatenate([linear, opacity[keep, None]], 1).astype(np.float32),
        "antialiased": bool(gaussians.get("antialiased")),
    }


class SplatBatch:
    """One object's splats on the GPU: four vertices per Gaussian, re-indexed back to front."""

    _CORNERS = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float32)

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.centers = arrays["center"].astype(np.float64)
        self.antialiased = bool(arrays.get("antialiased"))
        n = len(self.centers)
        fmt = gpu.types.GPUVertFormat()
        for kind, name, width in (("center", "center", 3), ("cov_a", "cov_a", 3), ("cov_b", "cov_b", 3),
                                  ("rgba", "rgba", 4), ("corner", "corner", 2)):
            fmt.attr_add(id=name, comp_type="F32", len=width, fetch_mode="FLOAT")
        self.vbo = gpu.types.GPUVertBuf(fmt, 4 * n)
        for name in ("center", "cov_a", "cov_b", "rgba"):
            self.vbo.attr_fill(name, np.ascontiguousarray(np.repeat(arrays[name], 4, axis=0)))
        self.vbo.attr_fill("corner", np.ascontiguousarray(np.tile(self._CORNERS, (n, 1))))
        self.batch = None
        self.sorted_for = None

    def sort(self, view_matrix: np.ndarray) -> None:
        """Index buffer with the quads in back-to-front order for this view (skipped if unchanged)."""
        view_matrix = np.asarray(view_matrix, np.float64)
        if self.sorted_for is not None and np.array_equal(self.sorted_for, view_matrix):
            return
        depth = self.centers @ view_matrix[2, :3] + view_matrix[2, 3]  # view z: more negative is farther
        order = np.argsort(depth, kind="stable").astype(np.int32) * 4
        quads = order[:, None] + np.array([0, 1, 2, 0, 2, 3], np.int32)
        ibo = gpu.types.GPUIndexBuf(type="TRIS", seq=np.ascontiguousarray(quads.reshape(-1, 3)))
        self.batch = gpu.types.GPUBatch(type="TRIS", buf=self.vbo, elem=ibo)
        self.sorted_for = view_matrix.copy()

    def draw(self, view_matrix: np.ndarray, projection_matrix: np.ndarray, width: int, height: int) -> None:
        """Draw into the bound framebuffer (premultiplied linear colour, no depth write)."""
        self.sort(view_matrix)
        program = shader(self.antialiased)
        program.bind()
        program.uniform_float("ViewMatrix", _gpu_matrix(view_matrix))
        program.uniform_float("ProjMatrix", _gpu_matrix(projection_matrix))
        program.uniform_float("Viewport", (float(width), float(height)))
        gpu.state.blend_set("ALPHA_PREMULT")
        gpu.state.depth_mask_set(False)
        self.batch.draw(program)
        gpu.state.blend_set("NONE")


def _gpu_matrix(matrix: np.ndarray):
    import mathutils

    return mathutils.Matrix(np.asarray(matrix, np.float64).tolist())


# ---------------------------------------------------------------------------------------------
# The viewport draw handler: every visible Gaussians object with the draw on
# ---------------------------------------------------------------------------------------------

_batches: dict[str, tuple[tuple, SplatBatch]] = {}
_handle = None


def _object_key(obj) -> tuple:
    return (obj.data.name, len(obj.data.vertices), tuple(round(v, 6) for row in obj.matrix_world for v in row))


def _draw_objects() -> None:
    context = bpy.context
    region, view = context.region, context.region_data
    if region is None or view is None:
        return
    from .importers import gaussians_from_object

    seen = set()
    # Far sky Gaussians first: each object is sorted in itself, the sky lies behind every world.
    for obj in sorted(context.visible_objects, key=lambda o: not o.get(SKY_PROPERTY)):
        if obj.type != "MESH" or "rot" not in obj.data.attributes or not obj.get(DRAW_PROPERTY, True):
            continue
        key = _object_key(obj)
        cached = _batches.get(obj.name)
        if cached is None or cached[0] != key:
            cached = (key, SplatBatch(splat_arrays(gaussians_from_object(obj), np.array(obj.matrix_world))))
            _batches[obj.name] = cached
        seen.add(obj.name)
        cached[1].draw(np.array(view.view_matrix), np.array(view.window_matrix), region.width, region.height)
    for name in set(_batches) - seen:
        del _batches[name]


def register() -> None:
    global _handle
    if _handle is None:
        _handle = bpy.types.SpaceView3D.draw_handler_add(_draw_objects, (), "WINDOW", "POST_VIEW")


def unregister() -> None:
    global _handle
    if _handle is not None:
        bpy.types.SpaceView3D.draw_handler_remove(_handle, "WINDOW")
        _handle = None
    _batches.clear()
