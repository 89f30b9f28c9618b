"""Exporting Gaussians placed in a Blender scene (real Blender): a rotated, scaled and moved world
exports rotated, scaled and moved Gaussians (covariances, SH and renders checked against the
originals), Apply Transform keeps them right, and files other tools write come back whole."""

from __future__ import annotations

import math

import numpy as np
import pytest

C0 = 0.28209479177387814


def _file(ply, path, count, *, seed=0, degree=3, normals=True, extra=(), logits=None):
    """A 3DGS PLY in the INRIA layout (normals after xyz), optional extra properties after rot."""
    rng = np.random.default_rng(seed)
    k = 3 * ((degree + 1) ** 2 - 1)
    names = ["x", "y", "z"] + (["nx", "ny", "nz"] if normals else []) + ["f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(k)] + ["opacity", "scale_0", "scale_1", "scale_2"]
    names += ["rot_0", "rot_1", "rot_2", "rot_3"]
    data = np.zeros(count, dtype=[(n, "<f4") for n in names] + list(extra))
    xyz = rng.normal(size=(count, 3)) * 0.4 + [0, 0, 3]
    for i, axis in enumerate("xyz"):
        data[axis] = xyz[:, i]
        data[f"scale_{i}"] = np.log(rng.uniform(0.03, 0.25, count))
        data[f"f_dc_{i}"] = rng.normal(size=count)
    for i in range(k):
        data[f"f_rest_{i}"] = rng.normal(size=count) * 0.4
    data["opacity"] = rng.normal(size=count) * 2 if logits is None else logits
    q = rng.normal(size=(count, 4))
    for i in range(4):
        data[f"rot_{i}"] = q[:, i] * 2.5  # unnormalised, as trainers store them
    for name, kind in extra:
        data[name] = rng.integers(0, 200, count) if np.dtype(kind).kind in "ui" else rng.normal(size=count)
    ply.write_vertices(path, data)
    return data


def _covariances(vertices):
    q = np.stack([vertices[f"rot_{i}"] for i in range(4)], 1).astype(np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    r = np.stack([np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
                  np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
                  np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1)], -2)
    s = np.exp(np.stack([vertices[f"scale_{i}"] for i in range(3)], 1).astype(np.float64))
    return r @ (s[:, :, None] ** 2 * np.swapaxes(r, 1, 2))


def _xyz(vertices):
    return np.stack([vertices[a] for a in "xyz"], 1).astype(np.float64)


def _sh_colour(transform, vertices, dirs):
    """View-dependent colour of each Gaussian along unit dirs [N, 3] (the basis the add-on
    shares with the engine's rasterizer, checked against it in test_splat_transform.py)."""
    rest = np.stack([vertices[f"f_rest_{i}"] for i in range(45)], 1).reshape(-1, 3, 15).transpose(0, 2, 1)
    dc = np.stack([vertices[f"f_dc_{i}"] for i in range(3)], 1)[:, None]
    return np.einsum("nb,nbc->nc", transform.sh_basis(3, dirs), np.concatenate([dc, rest], 1))


def _camera_object(scene, matrix):
    import bpy
    import mathutils

    obj = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))
    scene.collection.objects.link(obj)
    obj.matrix_world = mathutils.Matrix(np.asarray(matrix).tolist())
    bpy.context.view_layer.update()
    return obj


def _render_file(path, camera):
    from engine.export import read_gaussians_ply

    return read_gaussians_ply(path).render(camera, backend="torch")


def _moved_world(scene, addon, tmp_path):
    """Import a file, export it as is ("same") and after rotating, scaling and moving the world
    empty it hangs from ("moved"); cameras before and after, the second moved with the world."""
    import bpy
    import mathutils

    cameras = addon.engine.cameras
    importers, ply, bridge = addon.gen3d_addon.importers, addon.gen3d_addon.ply, addon.gen3d_addon.camera_bridge
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 48, 36, 100
    source = _file(ply, tmp_path / "in.ply", 80, normals=False)  # gsplat's exporter writes none
    assert bpy.ops.gen3d.import_gaussians(filepath=str(tmp_path / "in.ply")) == {"FINISHED"}
    obj = bpy.context.active_object
    world = bpy.data.objects.new("World", None)
    scene.collection.objects.link(world)
    obj.parent = world
    file_to_blender = importers.OPENCV_TO_BLENDER  # the file's frame in Blender (OpenCV axes)
    eye = cameras.look_at([0.6, -0.4, 0.0], [0.0, 0.0, 3.0], up=[0, -1, 0])  # world-to-camera, file frame
    camera_before = _camera_object(scene, file_to_blender @ np.linalg.inv(eye) @ cameras.CV_FROM_BLENDER)
    before = bridge.camera_from_object(scene, camera_before)
    assert bpy.ops.gen3d.export_gaussians(filepath=str(tmp_path / "same.ply")) == {"FINISHED"}

    world.matrix_world = mathutils.Matrix.LocRotScale((2.0, -3.0, 1.0), mathutils.Euler((0.3, -0.5, 1.1)), (1.6,) * 3)
    bpy.context.view_layer.update()
    assert bpy.ops.gen3d.export_gaussians(filepath=str(tmp_path / "moved.ply")) == {"FINISHED"}
    delta = np.linalg.inv(file_to_blender) @ np.array(world.matrix_world) @ file_to_blender  # in the file's axes
    # The camera moved with the world (Blender's camera; its scale left out).
    camera_after = _camera_object(scene, np.array(world.matrix_world) @ np.array(camera_before.matrix_world))
    camera_after.matrix_world = mathutils.Matrix.LocRotScale(camera_after.matrix_world.to_translation(),
                                                             camera_after.matrix_world.to_quaternion(), (1, 1, 1))
    bpy.context.view_layer.update()
    after = bridge.camera_from_object(scene, camera_after)
    in_file = lambda c: cameras.Camera(c.K, c.world_to_camera @ file_to_blender, c.width, c.height)  # noqa: E731
    return source, delta, in_file(before), in_file(after)


def test_moved_world_exports_moved_gaussians(clean_scene, addon, tmp_path):
    ply = addon.gen3d_addon.ply
    source, delta, _, _ = _moved_world(clean_scene, addon, tmp_path)
    same = ply.read_vertices(tmp_path / "same.ply")
    np.testing.assert_array_equal(_xyz(same), _xyz(source))  # unmoved: the file as it came
    moved = ply.read_vertices(tmp_path / "moved.ply")
    linear = delta[:3, :3]
    np.testing.assert_allclose(_xyz(moved), _xyz(source) @ linear.T + delta[:3, 3], atol=1e-5)
    np.testing.assert_allclose(_covariances(moved), linear @ _covariances(source) @ linear.T, atol=1e-6)
    rotation = linear / 1.6
    dirs = np.random.default_rng(5).normal(size=(80, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    transform = addon.gen3d_addon.transform
    np.testing.assert_allclose(_sh_colour(transform, moved, dirs @ rotation.T), _sh_colour(transform, source, dirs), atol=1e-5)
    np.testing.assert_array_equal(moved["opacity"], source["opacity"])


@pytest.mark.engine
def test_moved_world_renders_as_before(clean_scene, addon, tmp_path):
    """The engine's rasterizer, view-dependent colour included: the moved world seen from the
    moved camera is the picture the original gave."""
    _, _, before, after = _moved_world(clean_scene, addon, tmp_path)
    want, got = _render_file(tmp_path / "same.ply", before), _render_file(tmp_path / "moved.ply", after)
    assert want.alpha.max() > 0.5
    np.testing.assert_allclose(got.image, want.image, atol=2e-3)
    np.testing.assert_allclose(got.alpha, want.alpha, atol=2e-3)


def test_apply_transform_and_anisotropic_scale(clean_scene, addon, tmp_path):
    import bpy
    import mathutils

    importers, ply = addon.gen3d_addon.importers, addon.gen3d_addon.ply
    source = _file(ply, tmp_path / "in.ply", 60, seed=1)
    assert bpy.ops.gen3d.import_gaussians(filepath=str(tmp_path / "in.ply"), y_down=False) == {"FINISHED"}
    obj = bpy.context.active_object
    obj.matrix_world = mathutils.Matrix.LocRotScale((0.5, 1.0, -2.0), mathutils.Euler((0.9, 0.2, -0.4)), (2.0, 0.5, 1.2))
    bpy.context.view_layer.update()
    matrix = np.array(obj.matrix_world)
    linear = matrix[:3, :3]
    options = dict(y_down=False)
    assert bpy.ops.gen3d.export_gaussians(filepath=str(tmp_path / "a.ply"), **options) == {"FINISHED"}
    exported = ply.read_vertices(tmp_path / "a.ply")
    # Non-uniform scale: the covariance A Sigma A^T, decomposed exactly.
    np.testing.assert_allclose(_covariances(exported), linear @ _covariances(source) @ linear.T, atol=1e-6)
    normal = np.stack([exported[n] for n in ("nx", "ny", "nz")], 1)
    np.testing.assert_array_equal(normal, 0.0)  # the file's zero normals stay zero

    # Apply Transform moves only the positions in Blender; the attributes are turned to match.
    with bpy.context.temp_override(active_object=obj, selected_editable_objects=[obj], object=obj):
        assert bpy.ops.object.transform_apply(location=True, rotation=True, scale=True) == {"FINISHED"}
    bpy.context.view_layer.update()
    assert np.allclose(np.array(obj.matrix_world), np.eye(4))
    rot = importers.get_attribute(obj.data, "rot").astype(np.float64)  # what the ellipsoids draw
    scale = importers.get_attribute(obj.data, "scale").astype(np.float64)
    stored_cov = addon.gen3d_addon.transform.quat_to_matrix(rot)
    stored_cov = stored_cov @ (scale[:, :, None] ** 2 * np.swapaxes(stored_cov, 1, 2))
    np.testing.assert_allclose(stored_cov, _covariances(exported), atol=1e-6)
    assert bpy.ops.gen3d.export_gaussians(filepath=str(tmp_path / "b.ply"), **options) == {"FINISHED"}
    applied = ply.read_vertices(tmp_path / "b.ply")
    np.testing.assert_allclose(_xyz(applied), _xyz(exported), atol=1e-5)
    np.testing.assert_allclose(_covariances(applied), _covariances(exported), atol=1e-6)
    for i in range(45):
        np.testing.assert_allclose(applied[f"f_rest_{i}"], exported[f"f_rest_{i}"], atol=1e-5)
    # Deleting points afterwards keeps the rest as they are.
    mesh = obj.data
    keep = len(mesh.vertices) - 10
    import bmesh

    edit = bmesh.new()
    edit.from_mesh(mesh)
    bmesh.ops.delete(edit, geom=list(edit.verts)[keep:], context="VERTS")
    edit.to_mesh(mesh)
    edit.free()
    bpy.context.view_layer.update()
    assert bpy.ops.gen3d.export_gaussians(filepath=str(tmp_path / "c.ply"), **options) == {"FINISHED"}
    trimmed = ply.read_vertices(tmp_path / "c.ply")
    np.testing.assert_allclose(_covariances(trimmed), _covariances(exported)[:keep], atol=1e-6)


def _gsplat_file(path, count, logits):
    """Written by gsplat 1.5.3's own exporter (no normals; f_rest channel-major)."""
    import torch
    from gsplat.exporter import export_splats

    rng = torch.Generator().manual_seed(3)
    export_splats(
        means=torch.randn(count, 3, generator=rng) + torch.tensor([0.0, 0.0, 3.0]),
        scales=torch.randn(count, 3, generator=rng) - 3.0, quats=torch.randn(count, 4, generator=rng),
        opacities=torch.as_tensor(logits, dtype=torch.float32), sh0=torch.randn(count, 1, 3, generator=rng),
        shN=torch.randn(count, 15, 3, generator=rng) * 0.3, format="ply", save_to=str(path),
    )


LOGITS = np.array([-30.0, 20.0, 0.0, 16.5, -16.5, 3.0] * 4, np.float32)  # past float32 sigmoid's reach


@pytest.mark.parametrize("shape", [pytest.param("gsplat-1.5.3", marks=pytest.mark.engine), "inria", "mip-splatting", "typed-extras"])
def test_round_trip_keeps_every_property(clean_scene, addon, tmp_path, shape):
    import bpy

    ply = addon.gen3d_addon.ply
    path = tmp_path / "in.ply"
    if shape == "gsplat-1.5.3":
        _gsplat_file(path, len(LOGITS), LOGITS)
    elif shape == "inria":
        _file(ply, path, len(LOGITS), logits=LOGITS)  # zero normals
    elif shape == "mip-splatting":
        _file(ply, path, len(LOGITS), logits=LOGITS, extra=[("filter_3D", "<f4")])  # its 3D smoothing filter
    else:
        source = _file(ply, path, len(LOGITS), degree=1, logits=LOGITS,
                       extra=[("confidence", "<f4"), ("label", "u1"), ("segment", "<u2"), ("id", "<u4"), ("opacity_logit", "<f4")])
        for axis in ("nx", "ny", "nz"):
            source[axis] = np.random.default_rng(9).normal(size=len(LOGITS))
        source["id"][0] = 4_000_000_000  # beyond int32
        ply.write_vertices(path, source)
    source = ply.read_vertices(path)
    assert bpy.ops.gen3d.import_gaussians(filepath=str(path)) == {"FINISHED"}
    assert bpy.ops.gen3d.export_gaussians(filepath=str(tmp_path / "out.ply")) == {"FINISHED"}
    result = ply.read_vertices(tmp_path / "out.ply")
    assert result.dtype == source.dtype  # same properties, same order, same types
    rot = np.stack([source[f"rot_{i}"] for i in range(4)], 1)
    rot /= np.linalg.norm(rot, axis=1, keepdims=True)
    for name in source.dtype.names:
        if name.startswith("rot_"):
            np.testing.assert_allclose(result[name], rot[:, int(name[4:])], atol=1e-6)  # same rotation, unit length
        elif name.startswith(("f_dc_", "scale_")):  # activated for Blender, float32 both ways
            np.testing.assert_allclose(result[name], source[name], rtol=2e-7, atol=2e-7, err_msg=name)
        else:
            np.testing.assert_array_equal(result[name], source[name], err_msg=name)
