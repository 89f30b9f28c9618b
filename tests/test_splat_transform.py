"""Moving Gaussians (gen3d_addon/transform.py, numpy only): the shared SH basis and rotation
formulas in numpy and torch, SH rotation against the SH evaluated at turned directions,
covariances under any affine map, and renders of a moved world against the original."""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.cameras import Camera, intrinsics_from_fov, look_at
from engine.splat.rasterize import quat_to_rotmat, rasterize, sh_basis as engine_sh_basis

# The add-on's module inside a stand-in for the extension package, so its ``..engine`` import
# resolves without gen3d_addon/__init__, which registers Blender classes.
ROOT = Path(__file__).resolve().parent.parent
for _name, _folder in (("gen3d_ext", ROOT), ("gen3d_ext.gen3d_addon", ROOT / "gen3d_addon")):
    sys.modules.setdefault(_name, types.ModuleType(_name)).__path__ = [str(_folder)]
transform = importlib.import_module("gen3d_ext.gen3d_addon.transform")


def _rotation(rng) -> np.ndarray:
    q = rng.normal(size=4)
    return transform.quat_to_matrix((q / np.linalg.norm(q))[None])[0]


def _unit(rng, count):
    d = rng.normal(size=(count, 3))
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def test_sh_basis_and_rotations_agree_in_numpy_and_torch():
    rng = np.random.default_rng(0)
    dirs = _unit(rng, 200)
    np.testing.assert_allclose(transform.sh_basis(3, dirs), engine_sh_basis(3, torch.from_numpy(dirs)).numpy(), atol=1e-12)
    q = rng.normal(size=(50, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    np.testing.assert_allclose(transform.quat_to_matrix(q), quat_to_rotmat(torch.from_numpy(q)).numpy(), atol=1e-12)


def test_sh_basis_is_orthonormal_over_the_sphere():
    # Fibonacci points are an equal-area quadrature: sum Y_i Y_j * 4 pi / n -> delta_ij.
    n = 20000
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    phi = np.pi * (3 - np.sqrt(5)) * i
    dirs = np.stack([np.sqrt(1 - z * z) * np.cos(phi), np.sqrt(1 - z * z) * np.sin(phi), z], 1)
    basis = transform.sh_basis(3, dirs)
    np.testing.assert_allclose(basis.T @ basis * 4 * np.pi / n, np.eye(16), atol=2e-3)


def test_quaternion_of_a_quarter_turn_about_z():
    half = np.sqrt(0.5)
    np.testing.assert_allclose(transform.quat_to_matrix([[half, 0, 0, half]])[0], [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)


@pytest.mark.parametrize("mirror", [False, True])
def test_sh_rotation_matches_the_function_at_turned_directions(mirror):
    rng = np.random.default_rng(1)
    orthogonal = _rotation(rng) @ (np.diag([1.0, -1.0, 1.0]) if mirror else np.eye(3))
    coefficients = rng.normal(size=16)
    rotation = transform.sh_rotation(orthogonal, 3)
    dirs = _unit(rng, 300)  # not the directions the blocks were solved on
    turned = transform.sh_basis(3, dirs) @ (rotation @ coefficients)
    expected = transform.sh_basis(3, dirs @ orthogonal) @ coefficients  # f(O^T d)
    np.testing.assert_allclose(turned, expected, atol=1e-10)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(16), atol=1e-10)
    # Band 1 is the direction itself: Y1 = C1 (-y, z, -x), so its block is O in that basis.
    permute = np.array([[0, -1, 0], [0, 0, 1], [-1, 0, 0]], float)
    np.testing.assert_allclose(rotation[1:4, 1:4], permute @ orthogonal @ permute.T, atol=1e-10)
    other = _rotation(rng)
    np.testing.assert_allclose(transform.sh_rotation(other @ orthogonal, 3), transform.sh_rotation(other, 3) @ rotation, atol=1e-10)


def test_quaternion_round_trip():
    rng = np.random.default_rng(2)
    q = rng.normal(size=(500, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q[:5] = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0.6, 0.8, 0]]  # every branch
    back = transform.matrix_to_quat(transform.quat_to_matrix(q))
    np.testing.assert_allclose(np.abs(np.sum(back * q, axis=1)), 1.0, atol=1e-12)  # same rotation (q ~ -q)


def _gaussians(count, rng, degree=3):
    q = rng.normal(size=(count, 4))
    k = (degree + 1) ** 2 - 1
    return {
        "xyz": (rng.normal(size=(count, 3)) * 0.5 + [0, 0, 4]).astype(np.float32),
        "rot": (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32),
        "scale": rng.uniform(0.05, 0.3, (count, 3)).astype(np.float32),
        "f_rest": list(rng.normal(size=(3 * k, count)).astype(np.float32) * 0.5),
        "normal": _unit(rng, count).astype(np.float32),
    }


def _covariance(g):
    r = transform.quat_to_matrix(g["rot"])
    return r @ (np.asarray(g["scale"], np.float64)[:, :, None] ** 2 * np.swapaxes(r, 1, 2))


@pytest.mark.parametrize("stretch", [(1.0, 1.0, 1.0), (2.0, 0.5, 1.3)])
def test_covariances_and_positions_follow_any_affine_map(stretch):
    rng = np.random.default_rng(3)
    g = _gaussians(50, rng)
    matrix = np.eye(4)
    matrix[:3, :3] = _rotation(rng) @ np.diag(stretch) * 1.7
    matrix[:3, :3] += 0.3 * np.outer([1, 0, 0], [0, 1, 0]) * (stretch[0] != 1.0)  # a shear too
    matrix[:3, 3] = [0.4, -2.0, 7.0]
    moved = transform.transform_gaussians(g, matrix)
    linear = matrix[:3, :3]
    np.testing.assert_allclose(moved["xyz"], g["xyz"] @ linear.T + matrix[:3, 3], atol=1e-5)
    np.testing.assert_allclose(_covariance(moved), linear @ _covariance(g) @ linear.T, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(moved["rot"], axis=1), 1.0, atol=1e-6)
    # Normals: perpendicular to the same tangent planes, same length.
    tangent = np.cross(g["normal"], [0.3, 0.1, 0.9])
    np.testing.assert_allclose(np.sum(moved["normal"] * (tangent @ linear.T), axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(moved["normal"], axis=1), 1.0, atol=1e-6)
    assert transform.transform_gaussians(g, np.eye(4))["rot"] is g["rot"]  # identity: untouched


def _render(g, camera):
    k = len(g["f_rest"]) // 3
    rest = np.asarray(g["f_rest"]).reshape(3, k, -1).transpose(2, 1, 0)  # [N, K, 3]
    dc = np.full((len(g["xyz"]), 1, 3), 0.3)
    colours = torch.from_numpy(np.concatenate([dc, rest], axis=1)).float()
    rgb, alpha, _ = rasterize(
        torch.from_numpy(np.asarray(g["xyz"])).float(), torch.from_numpy(np.asarray(g["rot"])).float(),
        torch.from_numpy(np.asarray(g["scale"])).float(), torch.full((len(g["xyz"]),), 0.8), colours,
        torch.from_numpy(camera.world_to_camera).float(), torch.from_numpy(camera.K).float(),
        camera.width, camera.height, sh_degree=3, backend="torch",
    )
    return rgb.numpy(), alpha.numpy()


def test_moved_world_renders_as_the_original_from_the_moved_camera():
    """Rotate, scale (uniformly) and move the world and the camera with it: the same picture,
    view-dependent colour included (a camera looking from elsewhere would see other colours)."""
    rng = np.random.default_rng(4)
    g = _gaussians(60, rng)
    camera = Camera(intrinsics_from_fov(48, 40, 60.0), look_at([1.0, -0.5, 0.0], [0, 0, 4], up=[0, -1, 0]), 48, 40)
    s, rotation, offset = 1.8, _rotation(rng), np.array([3.0, -1.0, 2.0])
    matrix = np.eye(4)
    matrix[:3, :3], matrix[:3, 3] = s * rotation, offset
    moved = transform.transform_gaussians(g, matrix)
    # x_cam = R_c x + t_c  ->  the moved camera sees s * x_cam: the same projection.
    view = np.eye(4)
    view[:3, :3] = camera.world_to_camera[:3, :3] @ rotation.T
    view[:3, 3] = s * camera.world_to_camera[:3, 3] - view[:3, :3] @ offset
    moved_camera = Camera(camera.K, view, camera.width, camera.height)
    (rgb, alpha), (rgb_moved, alpha_moved) = _render(g, camera), _render(moved, moved_camera)
    assert alpha.max() > 0.5
    np.testing.assert_allclose(rgb_moved, rgb, atol=2e-4)
    np.testing.assert_allclose(alpha_moved, alpha, atol=2e-4)
    unturned = dict(moved, f_rest=g["f_rest"])  # SH left as they were: visibly different colours
    assert np.abs(_render(unturned, moved_camera)[0] - rgb).max() > 0.05
