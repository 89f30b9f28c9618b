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


def _evaluated_geometry(obj):
    """What obj's modifiers make, with a ``pointcloud`` (evaluated_geometry() from 4.4 on, kept
    alive by the caller; before it, the depsgraph hands a point cloud out as an instance)."""
    import types

    import bpy

    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = obj.evaluated_get(depsgraph)
    if hasattr(evaluated, "evaluated_geometry"):
        return evaluated.evaluated_geometry()
    clouds = [i.object.data for i in depsgraph.object_instances
              if i.object.type == "POINTCLOUD" and i.object.original == obj]
    assert len(clouds) == 1, clouds
    return types.SimpleNamespace(pointcloud=clouds[0])


def _input_camera(addon, job_dir):
    """A Blender-world input camera (job/camera.json, as Generate writes it)."""
    cameras = addon.engine.cameras
    pose = cameras.look_at([1.0, -5.0, 2.0], [0.0, 0.0, 1.0], up=[0.0, 0.0, -1.0])
    camera = cameras.Camera(cameras.intrinsics_from_fov(64, 48, 60.0), pose, 64, 48)
    (job_dir / "camera.json").write_text(json.dumps(camera.to_dict()))
    return camera


def test_import_gaussians_attributes_and_nodes(clean_scene, addon, tmp_path):
    import bpy
    import mathutils

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
    assert mesh.attributes["rot"].data_type == "QUATERNION"
    # The SH rest (export only) stays in the job's PLY: per point its row there, nothing more.
    assert not [name for name in mesh.attributes.keys() if name.startswith("f_rest_")]
    np.testing.assert_array_equal(get(importers.SH_ROW), np.arange(40))
    np.testing.assert_array_equal(importers.gaussians_from_object(obj)["f_rest"][8], data["f_rest_8"])

    modifier = obj.modifiers[importers.GAUSSIANS_GROUP]
    tree = modifier.node_group
    kinds = {node.bl_idname for node in tree.nodes}
    assert "GeometryNodeRealizeInstances" not in kinds  # a million quads stay instances
    assert {"GeometryNodeInstanceOnPoints", "GeometryNodeMeshGrid", "GeometryNodeInputActiveCamera", "GeometryNodeIsViewport",
            "FunctionNodeRandomValue", "GeometryNodeDeleteGeometry", "GeometryNodeMeshToPoints"} <= kinds
    rotation = [n for n in tree.nodes if n.bl_idname == "GeometryNodeInputNamedAttribute" and n.data_type == "QUATERNION"]
    assert rotation and rotation[0].inputs["Name"].default_value == "rot"
    material = nodes.modifier_input(modifier, "Material")
    assert {n.attribute_type for n in material.node_tree.nodes if n.bl_idname == "ShaderNodeAttribute"} == {"GEOMETRY", "INSTANCER"}

    # The viewport draws them as splats (gen3d_addon/splat_draw.py); the geometry preview is off.
    assert obj["gen3d_splat_draw"] and nodes.modifier_input(modifier, "Viewport Fraction") == 0.0
    # Evaluated: one quad instance per Gaussian above Min Opacity, at its centre, parallel to the
    # scene camera's image plane, its half side Scale x the largest sigma x distance / depth.
    view = bpy.data.objects.new("Gen3D test view", bpy.data.cameras.new("Gen3D test view"))
    bpy.context.scene.collection.objects.link(view)
    view.matrix_world = mathutils.Matrix(camera.camera_to_world @ np.diag([1.0, -1.0, -1.0, 1.0]))  # OpenCV -> Blender axes
    bpy.context.scene.camera = view
    nodes.set_modifier_input(modifier, "Viewport Fraction", 1.0)
    nodes.set_modifier_input(modifier, "Viewport Quads", True)
    min_opacity = nodes.modifier_input(modifier, "Min Opacity")
    scale = nodes.modifier_input(modifier, "Scale")
    obj.update_tag()
    depsgraph = bpy.context.evaluated_depsgraph_get()
    matrices = [np.array(i.matrix_world) for i in depsgraph.object_instances if i.is_instance and i.parent and i.parent.original == obj]
    kept = g["opacity"] >= min_opacity
    assert len(matrices) == kept.sum()
    engine = np.linalg.inv(camera.camera_to_world) @ np.array(matrices)  # back into the engine world = the view's frame
    order = np.argsort(engine[:, 0, 3])
    want = np.argsort(g["xyz"][kept][:, 0])
    centres = g["xyz"][kept][want]
    np.testing.assert_allclose(engine[order, :3, 3], centres, atol=1e-4)
    sides = np.linalg.norm(engine[order, :3, :3], axis=1)
    widen = np.linalg.norm(centres, axis=1) / np.maximum(centres[:, 2], 0.25 * np.linalg.norm(centres, axis=1))
    half = scale * g["sigma"][kept][want].max(axis=1) * widen
    np.testing.assert_allclose(sides, np.stack([half, half, np.ones_like(half)], 1), rtol=1e-4)
    facing = engine[order, :3, :3] / sides[:, None, :]
    np.testing.assert_allclose(facing, np.broadcast_to(np.diag([1.0, -1.0, -1.0]), facing.shape), atol=1e-4)

    # The viewport shows points by default, a fraction of them when asked; render shows all.
    nodes.set_modifier_input(modifier, "Viewport Quads", False)
    nodes.set_modifier_input(modifier, "Viewport Fraction", 0.5)
    nodes.set_modifier_input(modifier, "Min Opacity", 0.0)
    obj.update_tag()
    geometry = _evaluated_geometry(obj)
    shown = len(geometry.pointcloud.points)
    assert 5 < shown < 35


def test_a_file_from_an_older_add_on_gets_todays_splats_with_its_settings(clean_scene, addon, tmp_path):
    """Opening a .blend whose Gaussians group is an older version rebuilds it (load_post), keeping
    each modifier's input values by name, a renamed input's too."""
    import bpy

    importers, nodes, ply = addon.gen3d_addon.importers, addon.gen3d_addon.nodes, addon.gen3d_addon.ply
    g = _random_gaussians(10)
    _gaussian_file(ply, tmp_path / "gaussians.ply", g["xyz"], g["colour"], g["opacity"], g["sigma"], g["rot"])
    _input_camera(addon, tmp_path)
    importers.import_job(bpy.context, tmp_path, mode="REPLACE")
    tree = bpy.data.node_groups[importers.GAUSSIANS_GROUP]
    modifier = bpy.data.objects["Gen3D Gaussians"].modifiers[importers.GAUSSIANS_GROUP]
    nodes.set_modifier_input(modifier, "Min Opacity", 0.1)
    nodes.set_modifier_input(modifier, "Viewport Quads", True)
    next(i for i in tree.interface.items_tree if i.name == "Viewport Quads").name = "Viewport Ellipsoids"  # as 3 named it
    tree["gen3d_version"] = importers.MATERIAL_VERSION - 1
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "old.blend"))
    bpy.ops.wm.open_mainfile(filepath=str(tmp_path / "old.blend"))

    tree = bpy.data.node_groups[importers.GAUSSIANS_GROUP]
    modifier = bpy.data.objects["Gen3D Gaussians"].modifiers[importers.GAUSSIANS_GROUP]
    assert tree["gen3d_version"] == importers.MATERIAL_VERSION and modifier.node_group == tree
    assert nodes.modifier_input(modifier, "Min Opacity") == pytest.approx(0.1)
    assert nodes.modifier_input(modifier, "Viewport Quads")


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
    evaluated = _evaluated_geometry(obj)
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


def test_sh_rest_stays_in_the_ply_until_stored_and_exports_bit_for_bit(clean_scene, addon, tmp_path):
    import bpy

    importers, ply = addon.gen3d_addon.importers, addon.gen3d_addon.ply
    g = _random_gaussians(50, seed=5)
    source = _gaussian_file(ply, tmp_path / "in.ply", g["xyz"], g["colour"], g["opacity"], g["sigma"], g["rot"], n_rest=45)
    assert bpy.ops.gen3d.import_gaussians(filepath=str(tmp_path / "in.ply"), y_down=False) == {"FINISHED"}
    obj = bpy.context.active_object
    mesh = obj.data
    stored = {name for name in mesh.attributes.keys() if not name.startswith(".")}  # not Blender's own (selection)
    assert stored == {"position", "color", "opacity", "opacity_logit", "scale", "rot", importers.SH_ROW, importers.SH_FILE}
    # Points deleted: the others keep their rows, and export finds their coefficients.
    import bmesh

    edit = bmesh.new()
    edit.from_mesh(mesh)
    bmesh.ops.delete(edit, geom=list(edit.verts)[::2], context="VERTS")
    edit.to_mesh(mesh)
    edit.free()
    rows = importers.get_attribute(mesh, importers.SH_ROW)
    assert len(rows) == 25
    assert bpy.ops.gen3d.export_gaussians(filepath=str(tmp_path / "out.ply"), y_down=False) == {"FINISHED"}
    out = ply.read_vertices(tmp_path / "out.ply")
    for i in range(45):
        np.testing.assert_array_equal(out[f"f_rest_{i}"], source[f"f_rest_{i}"][rows])
    # The file rewritten (a re-run): export refuses, saying why, and writes nothing.
    original = (tmp_path / "in.ply").read_bytes()
    (tmp_path / "in.ply").write_bytes(original + b"\0")
    with pytest.raises(RuntimeError, match="changed since the import"):
        bpy.ops.gen3d.export_gaussians(filepath=str(tmp_path / "stale.ply"), y_down=False)
    assert not (tmp_path / "stale.ply").exists()
    # Put back (same bytes, not the same file): refused too, until it is imported again or ...
    (tmp_path / "in.ply").write_bytes(original)
    with pytest.raises(RuntimeError, match="changed since the import"):
        bpy.ops.gen3d.export_gaussians(filepath=str(tmp_path / "stale.ply"), y_down=False)
    # ... Store SH in .blend, from the file as imported: then the file may go.
    assert bpy.ops.gen3d.import_gaussians(filepath=str(tmp_path / "in.ply"), y_down=False) == {"FINISHED"}
    again = bpy.context.active_object
    assert bpy.ops.gen3d.store_sh() == {"FINISHED"} and not importers.refers_sh(again.data)
    (tmp_path / "in.ply").unlink()
    assert bpy.ops.gen3d.export_gaussians(filepath=str(tmp_path / "stored.ply"), y_down=False) == {"FINISHED"}
    stored = ply.read_vertices(tmp_path / "stored.ply")
    for i in range(45):
        np.testing.assert_array_equal(stored[f"f_rest_{i}"], source[f"f_rest_{i}"])
    # The first object's file is gone now: its export says where its SH should be.
    for other in bpy.context.selected_objects:
        other.select_set(False)
    bpy.context.view_layer.objects.active = obj
    with pytest.raises(RuntimeError, match="which is missing"):
        bpy.ops.gen3d.export_gaussians(filepath=str(tmp_path / "lost.ply"), y_down=False)


def test_a_rerun_of_the_job_keeps_the_sh_of_earlier_imports(clean_scene, addon, tmp_path):
    import bpy

    importers, ply = addon.gen3d_addon.importers, addon.gen3d_addon.ply
    g = _random_gaussians(12, seed=6)
    source = _gaussian_file(ply, tmp_path / "gaussians.ply", g["xyz"], g["colour"], g["opacity"], g["sigma"], g["rot"])
    kept = importers.import_job(bpy.context, tmp_path, mode="NEW").objects["Gen3D Gaussians"]
    assert importers.refers_sh(kept.data)
    assert importers.keep_sh_of(tmp_path / "gaussians.ply") == [kept.data.name]  # what Generate does before it runs
    _gaussian_file(ply, tmp_path / "gaussians.ply", g["xyz"], g["colour"], g["opacity"], g["sigma"], g["rot"], seed=9)
    np.testing.assert_array_equal(importers.gaussians_from_object(kept)["f_rest"][3], source["f_rest_3"])


def test_gaussians_joined_from_two_files_export_once_their_sh_is_stored(clean_scene, addon, tmp_path):
    import bpy

    importers, ply = addon.gen3d_addon.importers, addon.gen3d_addon.ply
    objects, sources = [], []
    for seed in (7, 8):
        g = _random_gaussians(6, seed=seed)
        path = tmp_path / f"part{seed}.ply"
        sources.append(_gaussian_file(ply, path, g["xyz"], g["colour"], g["opacity"], g["sigma"], g["rot"], seed=seed))
        assert bpy.ops.gen3d.import_gaussians(filepath=str(path), y_down=False) == {"FINISHED"}
        objects.append(bpy.context.active_object)

    def join(pair):
        joined = [o.copy() for o in pair]
        for o in joined:
            o.data = o.data.copy()
            clean_scene.collection.objects.link(o)
        with bpy.context.temp_override(active_object=joined[0], selected_editable_objects=joined):
            assert bpy.ops.object.join() == {"FINISHED"}
        for other in bpy.context.selected_objects:
            other.select_set(False)
        joined[0].select_set(True)
        bpy.context.view_layer.objects.active = joined[0]
        return joined[0]

    join(objects)
    with pytest.raises(RuntimeError, match="did not come from .*joined in from another object"):
        bpy.ops.gen3d.export_gaussians(filepath=str(tmp_path / "joined.ply"), y_down=False)
    for obj in objects:
        assert importers.store_sh_in_blend(obj.data)
    join(objects)
    assert bpy.ops.gen3d.export_gaussians(filepath=str(tmp_path / "joined.ply"), y_down=False) == {"FINISHED"}
    out = ply.read_vertices(tmp_path / "joined.ply")
    np.testing.assert_array_equal(out["f_rest_4"], np.concatenate([source["f_rest_4"] for source in sources]))


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


def test_a_gaussians_file_is_placed_by_its_own_job_folder_not_the_working_directory(clean_scene, addon, tmp_path, monkeypatch):
    """File > Import placed every PLY by a camera.json in Blender's working directory."""
    import bpy

    ply, importers = addon.gen3d_addon.ply, addon.gen3d_addon.importers
    g = _random_gaussians(5, seed=4)
    elsewhere, job, cwd = tmp_path / "elsewhere", tmp_path / "job", tmp_path / "cwd"
    for folder in (elsewhere, job, cwd):
        folder.mkdir()
    _input_camera(addon, cwd)  # a stray camera.json where Blender was started
    monkeypatch.chdir(cwd)
    for folder in (elsewhere, job):
        _gaussian_file(ply, folder / "gaussians.ply", g["xyz"], g["colour"], g["opacity"], g["sigma"], g["rot"])
    camera = _input_camera(addon, job)
    placed = {}
    for folder in (elsewhere, job):
        assert bpy.ops.gen3d.import_gaussians(filepath=str(folder / "gaussians.ply")) == {"FINISHED"}
        placed[folder] = np.array(bpy.context.active_object.matrix_world)
    np.testing.assert_allclose(placed[elsewhere], importers.world_from_engine(None), atol=1e-6)  # upright at the origin
    np.testing.assert_allclose(placed[job], camera.camera_to_world, atol=1e-6)  # where its job's results land


def _sky_panorama(path, width=64, height=32):
    """An equirectangular test sky: ahead red, right green, left blue, behind yellow, the top white."""
    import bpy

    lon = (np.arange(width) + 0.5) / width * 2 * math.pi - math.pi
    colour = np.ones((height, width, 4), np.float32)
    colour[:, np.abs(lon) <= math.pi / 4, :3] = (1, 0, 0)
    colour[:, (lon > math.pi / 4) & (lon <= 3 * math.pi / 4), :3] = (0, 1, 0)
    colour[:, (lon < -math.pi / 4) & (lon >= -3 * math.pi / 4), :3] = (0, 0, 1)
    colour[:, np.abs(lon) > 3 * math.pi / 4, :3] = (1, 1, 0)
    colour[: height // 6, :, :3] = 1.0  # above 60 degrees
    image = bpy.data.images.new("test sky", width, height)
    image.pixels.foreach_set(colour[::-1].ravel())  # Blender's rows run bottom up
    image.filepath_raw, image.file_format = str(path), "PNG"
    image.save()
    bpy.data.images.remove(image)


def test_a_jobs_sky_comes_in_under_the_world_empty_and_becomes_the_world_only_on_request(clean_scene, addon, tmp_path):
    import bpy
    import mathutils

    importers, ply, sky_world = addon.gen3d_addon.importers, addon.gen3d_addon.ply, addon.gen3d_addon.sky_world
    g = _random_gaussians(10)
    _gaussian_file(ply, tmp_path / "gaussians.ply", g["xyz"], g["colour"], g["opacity"], g["sigma"], g["rot"])
    far = _random_gaussians(20, seed=1)
    dome = far["xyz"] / np.linalg.norm(far["xyz"], axis=1, keepdims=True) * 50.0
    _gaussian_file(ply, tmp_path / "sky.ply", dome, far["colour"], far["opacity"], far["sigma"], far["rot"], n_rest=0)
    _sky_panorama(tmp_path / "sky.png")
    _input_camera(addon, tmp_path)  # looking down at the scene: the panorama's axes are turned
    scene = clean_scene
    mine = bpy.data.worlds.new("Mine")
    scene.world = mine

    collection = importers.import_job(bpy.context, tmp_path, mode="REPLACE")
    sky = collection.objects["Gen3D Sky"]
    assert sky.parent == collection.objects["Gen3D World"] and sky[sky_world.SKY_PROPERTY]
    assert sky[sky_world.RADIUS_PROPERTY] == pytest.approx(50.0, rel=1e-5)
    assert scene.world == mine  # importing never touches the World

    assert bpy.ops.gen3d.sky_world() == {"FINISHED"}
    world = scene.world
    assert world.name.startswith("Gen3D Sky") and world[sky_world.PREVIOUS_WORLD] == "Mine"
    assert bpy.data.worlds["Mine"].use_fake_user  # the artist's World is kept in the file

    # Cycles sees the panorama where the engine's world says: along the input view, to its right...
    for obj in collection.objects:
        obj.hide_render = True  # the World alone
    to_world = importers.world_from_engine(tmp_path)[:3, :3]
    scene.render.engine = "CYCLES"
    scene.cycles.device, scene.cycles.samples = "CPU", 1
    scene.render.resolution_x = scene.render.resolution_y = 4
    scene.render.resolution_percentage, scene.render.film_transparent = 100, False
    scene.view_settings.view_transform = "Standard"
    camera = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))
    camera.data.lens = 300.0
    scene.collection.objects.link(camera)
    scene.camera = camera
    for engine_direction, expected in [((0, 0, 1), (1, 0, 0)), ((1, 0, 0), (0, 1, 0)), ((-1, 0, 0), (0, 0, 1)),
                                       ((0, 0, -1), (1, 1, 0)), ((0, -1, 0.3), (1, 1, 1))]:  # 73 degrees up
        direction = mathutils.Vector((to_world @ np.array(engine_direction, float)).tolist())
        camera.rotation_euler = direction.to_track_quat("-Z", "Y").to_euler()
        scene.render.filepath = str(tmp_path / "world.png")
        bpy.ops.render.render(write_still=True)
        image = bpy.data.images.load(str(tmp_path / "world.png"))
        centre = np.array(image.pixels[:]).reshape(4, 4, 4)[1:3, 1:3, :3].mean(axis=(0, 1))
        bpy.data.images.remove(image)
        np.testing.assert_allclose(centre, expected, atol=0.1, err_msg=str(engine_direction))

    # A camera that cannot see the dome is one of the render settings listed, and set on request.
    render_settings = addon.gen3d_addon.render_settings
    sky.hide_render = False
    camera.data.clip_end = 20.0
    assert any("cuts the sky dome" in issue for issue in render_settings.splat_issues(scene))
    render_settings.apply_splat_settings(scene)
    assert camera.data.clip_end > 50.0 and render_settings.splat_issues(scene) == []
