"""Importing results in real Blender: attributes against the file, node trees, a Cycles render
of imported Gaussians, 3DGS File > Import/Export round trip, REPLACE/NEW and user objects."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

C0 = 0.28209479177387814


def _gaussian_file(ply, path, xyz, colour, opacity, sigma, rot, n_rest=9, seed=0):
    """A standard 3DGS PLY (pre-activation values) for the given activated parameters."""
    rng = np.random.default_rng(seed)
    count = len(xyz)
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(n_rest)] + ["opacity", "scale_0", "scale_1", "scale_2"]
    names += ["rot_0", "rot_1", "rot_2", "rot_3"]
    data = np.zeros(count, dtype=[(n, "<f4") for n in names])
    for i, axis in enumerate("xyz"):
        data[axis] = xyz[:, i]
        data[f"scale_{i}"] = np.log(sigma[:, i])
    for i in range(3):
        data[f"f_dc_{i}"] = (colour[:, i] - 0.5) / C0
    for i in range(n_rest):
        data[f"f_rest_{i}"] = rng.normal(size=count)
    data["opacity"] = np.log(opacity / (1 - opacity))
    for i in range(4):
        data[f"rot_{i}"] = rot[:, i] * 3.0  # unnormalised, as trainers store them
    ply.write_vertices(path, data)
    return data


def _random_gaussians(count, seed=0):
    rng = np.random.default_rng(seed)
    rot = rng.normal(size=(count, 4))
    return dict(
        xyz=rng.normal(size=(count, 3)) + [0, 0, 4],
        colour=rng.uniform(0, 1, (count, 3)),
        opacity=rng.uniform(0.05, 0.95, count),
        sigma=rng.uniform(0.01, 0.2, (count, 3)),
        rot=rot / np.linalg.norm(rot, axis=1, keepdims=True),
    )


def _input_camera(addon, job_dir):
    """A Blender-world input camera (job/camera.json, as Generate writes it)."""
    cameras = addon.engine.cameras
    pose = cameras.look_at([1.0, -5.0, 2.0], [0.0, 0.0, 1.0], up=[0.0, 0.0, -1.0])
    camera = cameras.Camera(cameras.intrinsics_from_fov(64, 48, 60.0), pose, 64, 48)
    (job_dir / "camera.json").write_text(json.dumps(camera.to_dict()))
    return camera


def test_import_gaussians_attributes_and_nodes(clean_scene, addon, tmp_path):
    import bpy

    importers, nodes, ply = addon.gen3d_addon.importers, addon.gen3d_addon.nodes, addon.gen3d_addon.ply
    g = _random_gaussians(40)
    data = _gaussian_file(ply, tmp_path / "gaussians.ply", g["xyz"], g["colour"], g["opacity"], g["sigma"], g["rot"])
    camera = _input_camera(addon, tmp_path)

    collection = importers.import_job(bpy.context, tmp_path, mode="REPLACE")
    assert collection["gen3d_job"] == str(tmp_path.resolve())
    root = collection.objects["Gen3D World"]
    np.testing.assert_allclose(np.array(root.matrix_world), camera.camera_to_world, atol=1e-5)
    obj = collection.objects["Gen3D Gaussians"]
    assert obj.parent == root
    mesh = obj.data
    get = lambda name: importers.get_attribute(mesh, name)  # noqa: E731
    np.testing.assert_allclose(get("position"), g["xyz"], atol=1e-5)
    np.testing.assert_allclose(get("color")[:, :3], g["colour"], atol=1e-5)
    np.testing.assert_allclose(get("opacity"), g["opacity"], atol=1e-5)
    np.testing.assert_allclose(get("scale"), g["sigma"], rtol=1e-5)
    np.testing.assert_allclose(get("rot"), g["rot"], atol=1e-5)
    np.testing.assert_allclose(get("f_rest_8"), data["f_rest_8"])
    assert mesh.attributes["rot"].data_type == "QUATERNION"

    modifier = obj.modifiers[importers.GAUSSIANS_GROUP]
    tree = modifier.node_group
    kinds = {node.bl_idname for node in tree.nodes}
    assert "GeometryNodeRealizeInstances" not in kinds  # a million ellipsoids stay instances
    assert {"GeometryNodeInstanceOnPoints", "GeometryNodeMeshIcoSphere", "GeometryNodeIsViewport",
            "FunctionNodeRandomValue", "GeometryNodeDeleteGeometry", "GeometryNodeMeshToPoints"} <= kinds
    rotation = [n for n in tree.nodes if n.bl_idname == "GeometryNodeInputNamedAttribute" and n.data_type == "QUATERNION"]
    assert rotation and rotation[0].inputs["Name"].default_value == "rot"
    material = nodes.modifier_input(modifier, "Material")
    assert {n.attribute_type for n in material.node_tree.nodes if n.bl_idname == "ShaderNodeAttribute"} == {"GEOMETRY", "INSTANCER"}

    # Evaluated: one ellipsoid instance per Gaussian above Min Opacity, with the right transform.
    nodes.set_modifier_input(modifier, "Viewport Ellipsoids", True)
    min_opacity = nodes.modifier_input(modifier, "Min Opacity")
    scale = nodes.modifier_input(modifier, "Scale")
    obj.update_tag()
    depsgraph = bpy.context.evaluated_depsgraph_get()
    matrices = [np.array(i.matrix_world) for i in depsgraph.object_instances if i.is_instance and i.parent and i.parent.original == obj]
    kept = g["opacity"] >= min_opacity
    assert len(matrices) == kept.sum()
    engine = np.linalg.inv(camera.camera_to_world) @ np.array(matrices)  # back into the engine world
    order = np.argsort(engine[:, 0, 3])
    want = np.argsort(g["xyz"][kept][:, 0])
    np.testing.assert_allclose(engine[order, :3, 3], g["xyz"][kept][want], atol=1e-4)
    axes = np.linalg.norm(engine[order, :3, :3], axis=1)  # column lengths = semi-axes
    np.testing.assert_allclose(axes, scale * g["sigma"][kept][want], rtol=1e-4)
    from mathutils import Quaternion

    for k, index in enumerate(want):
        rotation = engine[order[k], :3, :3] / axes[k]
        expected = np.array(Quaternion(g["rot"][kept][index]).to_matrix())
        np.testing.assert_allclose(rotation, expected, atol=1e-4)

    # The viewport shows points by default, a fraction of them when asked; render shows all.
    nodes.set_modifier_input(modifier, "Viewport Ellipsoids", False)
    nodes.set_modifier_input(modifier, "Viewport Fraction", 0.5)
    nodes.set_modifier_input(modifier, "Min Opacity", 0.0)
    obj.update_tag()
    geometry = obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).evaluated_geometry()
    shown = len(geometry.pointcloud.points)
    assert 5 < shown < 35


def test_import_points(clean_scene, addon, tmp_path):
    import bpy

    importers, ply = addon.gen3d_addon.importers, addon.gen3d_addon.ply
    rng = np.random.default_rng(2)
    data = np.zeros(100, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"),
                                ("blue", "u1"), ("radius", "<f4"), ("confidence", "<f4")])
    for axis in "xyz":
        data[axis] = rng.normal(size=100)
    for channel in ("red", "green", "blue"):
        data[channel] = rng.integers(0, 256, 100)
    data["radius"], data["confidence"] = rng.uniform(0.01, 0.02, 100), rng.uniform(0, 1, 100)
    ply.write_vertices(tmp_path / "points.ply", data)

    collection = importers.import_job(bpy.context, tmp_path, mode="REPLACE")
    obj = collection.objects["Gen3D Points"]
    np.testing.assert_allclose(np.array(collection.objects["Gen3D World"].matrix_world),
                               importers.world_from_engine(tmp_path), atol=1e-6)
    mesh = obj.data
    np.testing.assert_allclose(importers.get_attribute(mesh, "color")[:, 0], data["red"] / 255.0, atol=1e-6)
    np.testing.assert_allclose(importers.get_attribute(mesh, "confidence"), data["confidence"])
    np.testing.assert_allclose(importers.get_attribute(mesh, "radius"), data["radius"])
    assert not obj.hide_get()  # no Gaussians: the points are the result
    assert "GeometryNodeMeshToPoints" in {n.bl_idname for n in obj.modifiers[importers.POINTS_GROUP].node_group.nodes}
    evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).evaluated_geometry()
    assert len(evaluated.pointcloud.points) == 100
    radius = np.array([r.value for r in evaluated.pointcloud.attributes["radius"].data])
    np.testing.assert_allclose(np.sort(radius), np.sort(data["radius"] * 0.7), rtol=1e-5)


def test_render_gaussians_cycles(clean_scene, addon, tmp_path):
    """Two blobs, red left and blue right, seen by a camera: Cycles shows them in place."""
    import bpy

    importers, ply = addon.gen3d_addon.importers, addon.gen3d_addon.ply
    xyz = np.array([[-0.6, 0.0, 4.0], [0.6, 0.0, 4.0]])
    _gaussian_file(ply, tmp_path / "gaussians.ply", xyz, np.array([[1.0, 0, 0], [0, 0, 1.0]]),
                   np.array([0.95, 0.95]), np.full((2, 3), 0.25), np.array([[1.0, 0, 0, 0]] * 2), n_rest=0)
    importers.import_job(bpy.context, tmp_path, mode="REPLACE")  # no camera.json: looks along +Y
    scene = clean_scene
    obj = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))
    scene.collection.objects.link(obj)
    obj.rotation_euler = (math.pi / 2, 0.0, 0.0)  # at the origin looking along +Y, as the input view
    scene.camera = obj
    scene.render.engine = "CYCLES"
    scene.cycles.device, scene.cycles.samples = "CPU", 8
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 64, 48, 100
    scene.render.filepath = str(tmp_path / "render.png")
    bpy.ops.render.render(write_still=True)
    image = bpy.data.images.load(str(tmp_path / "render.png"))
    pixels = np.array(image.pixels[:]).reshape(48, 64, 4)[::-1, :, :3]  # top row first

    # Where the camera convention says the blob centres are.
    camera = addon.gen3d_addon.camera_bridge.camera_from_object(scene, obj)
    cameras = addon.engine.cameras
    centres, _ = cameras.project(camera, cameras.transform_points(importers.world_from_engine(tmp_path), xyz))
    (ru, rv), (bu, bv) = centres.astype(int)
    red, blue = pixels[rv, ru], pixels[bv, bu]
    assert red[0] > 0.4 and red[0] > 3 * red[2], red
    assert blue[2] > 0.4 and blue[2] > 3 * blue[0], blue
    assert pixels[2, 2].max() < 0.05 and pixels[-3, -3].max() < 0.05  # background stays empty


def test_file_import_export_round_trip(clean_scene, addon, tmp_path):
    import bpy

    ply = addon.gen3d_addon.ply
    g = _random_gaussians(30, seed=3)
    source = _gaussian_file(ply, tmp_path / "in.ply", g["xyz"], g["colour"], g["opacity"], g["sigma"], g["rot"], n_rest=15)
    assert bpy.ops.gen3d.import_gaussians(filepath=str(tmp_path / "in.ply")) == {"FINISHED"}
    obj = bpy.context.active_object
    assert len(obj.data.vertices) == 30
    assert bpy.ops.gen3d.export_gaussians(filepath=str(tmp_path / "out.ply")) == {"FINISHED"}
    result = ply.read_vertices(tmp_path / "out.ply")
    assert set(result.dtype.names) == set(source.dtype.names)
    for name in source.dtype.names:
        if name.startswith("rot_") or name.startswith("n"):
            continue
        np.testing.assert_allclose(result[name], source[name], rtol=1e-4, atol=1e-4, err_msg=name)
    rot = np.stack([result[f"rot_{i}"] for i in range(4)], axis=1)
    np.testing.assert_allclose(rot, g["rot"], atol=1e-5)  # normalised on import
    for menu in (bpy.types.TOPBAR_MT_file_import, bpy.types.TOPBAR_MT_file_export):
        assert any(f.__module__.startswith(addon.__name__) for f in menu.draw._draw_funcs), menu


def test_replace_and_new_keep_user_objects(clean_scene, addon, tmp_path):
    import bpy

    importers, ply = addon.gen3d_addon.importers, addon.gen3d_addon.ply
    g = _random_gaussians(10)
    _gaussian_file(ply, tmp_path / "gaussians.ply", g["xyz"], g["colour"], g["opacity"], g["sigma"], g["rot"])
    scene = clean_scene
    user_mesh = bpy.data.meshes.new("UserMesh")
    user = bpy.data.objects.new("User", user_mesh)
    scene.collection.objects.link(user)
    user.location = (1.0, 2.0, 3.0)

    first = importers.import_job(bpy.context, tmp_path, mode="REPLACE")
    stray = bpy.data.objects.new("Stray", None)  # the artist drops their own object in our collection
    first.objects.link(stray)
    second = importers.import_job(bpy.context, tmp_path, mode="REPLACE")
    assert len(importers.job_collections(tmp_path)) == 1 and second.name == first_name(tmp_path)
    assert "Stray" in bpy.data.objects and bpy.data.objects["Stray"].name in scene.collection.objects
    third = importers.import_job(bpy.context, tmp_path, mode="NEW")
    assert len(importers.job_collections(tmp_path)) == 2 and third["gen3d_version"] == 2
    assert third.name.endswith(" v2")
    importers.import_job(bpy.context, tmp_path, mode="REPLACE")
    assert len(importers.job_collections(tmp_path)) == 1

    assert tuple(user.location) == (1.0, 2.0, 3.0) and user.data == user_mesh and user.name in scene.collection.objects
    assert [g.name for g in bpy.data.node_groups] == [importers.GAUSSIANS_GROUP]  # reused, no .001
    assert sum(m.name.startswith(importers.SPLAT_MATERIAL) for m in bpy.data.materials) == 1
    assert sum(o.name.startswith("Gen3D Gaussians") for o in bpy.data.objects) == 1
    assert sum(m.users == 0 for m in bpy.data.meshes) == 0  # replaced meshes removed too


def first_name(job_dir):
    return f"Gen3D {job_dir.resolve().name}"


def test_job_with_points_and_gaussians_shows_gaussians(clean_scene, addon, tmp_path):
    import bpy

    importers, ply = addon.gen3d_addon.importers, addon.gen3d_addon.ply
    g = _random_gaussians(10)
    _gaussian_file(ply, tmp_path / "gaussians.ply", g["xyz"], g["colour"], g["opacity"], g["sigma"], g["rot"])
    points = np.zeros(10, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    points["z"] = np.arange(10)
    ply.write_vertices(tmp_path / "points.ply", points)
    collection = importers.import_job(bpy.context, tmp_path, mode="REPLACE")
    assert {o.name for o in collection.objects} == {"Gen3D World", "Gen3D Points", "Gen3D Gaussians"}
    assert collection.objects["Gen3D Points"].hide_get() and collection.objects["Gen3D Points"].hide_render
    assert not collection.objects["Gen3D Gaussians"].hide_get()
    assert importers.get_attribute(collection.objects["Gen3D Points"].data, "radius").min() > 0  # made up: none stored
