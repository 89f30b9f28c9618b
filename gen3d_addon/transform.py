"""Moving 3D Gaussians by an affine matrix: positions, covariances and view-dependent colour.

numpy only (no bpy); the SH basis and quaternion formulas are the rasterizer's (engine/gaussian_math.py).

* Position: ``x' = A x + t``.
* Covariance ``Sigma = R diag(s^2) R^T`` becomes ``A Sigma A^T``.  For a similarity (rotation,
  uniform scale, optionally a mirror) that is the rotation ``U q`` and scales ``|s| s``, each
  Gaussian keeping its axis order.  Under a non-uniform scale or shear it is decomposed exactly
  by an eigen-decomposition (rotation = eigenvectors, scales = sqrt of the eigenvalues).
* SH bands 1..3 are functions of the view direction; they turn with the orthogonal factor ``O``
  of ``A``'s polar decomposition ``A = O P`` (``O = A / s`` for a similarity, exact).  A shear
  bends view directions in a way no band-limited SH follows, so there the rotation is what is
  kept.
* Normals (when a file has them) follow ``A^-T`` and keep their length.
"""

from __future__ import annotations

import numpy as np

from ..engine import gaussian_math


def sh_basis(degree: int, dirs: np.ndarray) -> np.ndarray:
    """Real SH basis, 3DGS order and signs, at unit directions [..., 3] -> [..., (degree+1)^2]."""
    return np.stack(gaussian_math.sh_terms(degree, *np.moveaxis(np.asarray(dirs, np.float64), -1, 0)), axis=-1)


def _sphere(count: int) -> np.ndarray:
    """Fibonacci directions: well spread, deterministic."""
    i = np.arange(count) + 0.5
    z = 1.0 - 2.0 * i / count
    r = np.sqrt(1.0 - z * z)
    phi = np.pi * (3.0 - np.sqrt(5.0)) * i
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def sh_rotation(orthogonal: np.ndarray, degree: int) -> np.ndarray:
    """Block-diagonal [(d+1)^2, (d+1)^2] matrix D with ``D @ c`` the coefficients of the
    function ``d -> f(O^T d)`` (f turned by O) when ``c`` are those of f.

    Each band spans a space that rotations map onto itself, so the band's block is the unique
    solution of ``Y(d_i) D_l = Y(O^T d_i)`` over enough directions: exact, not a fit.
    """
    dirs = _sphere(64)
    size = (degree + 1) ** 2
    here, turned = sh_basis(degree, dirs), sh_basis(degree, dirs @ np.asarray(orthogonal, np.float64))
    matrix = np.zeros((size, size))
    for band in range(degree + 1):
        block = slice(band * band, (band + 1) ** 2)
        matrix[block, block] = np.linalg.lstsq(here[:, block], turned[:, block], rcond=None)[0]
    return matrix


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Unit wxyz quaternions [N, 4] -> rotation matrices [N, 3, 3]."""
    q = np.asarray(q, np.float64)
    return np.stack(gaussian_math.rotation_terms(*np.moveaxis(q, -1, 0)), axis=-1).reshape(q.shape[:-1] + (3, 3))


def matrix_to_quat(m: np.ndarray) -> np.ndarray:
    """Rotation matrices [N, 3, 3] -> unit wxyz quaternions [N, 4] with w >= 0 (Shepperd's
    method: the largest of w, x, y, z is taken from the diagonal, the rest from off-diagonals)."""
    m = np.asarray(m, np.float64)
    trace = m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2]
    candidates = np.stack([trace, m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]], axis=1)
    pick = np.argmax(candidates, axis=1)
    q = np.empty((len(m), 4))
    for k in range(4):
        rows = pick == k
        a = m[rows]
        t = 2.0 * np.sqrt(np.maximum(1.0 + 2.0 * candidates[rows, k] - trace[rows], 1e-300))
        if k == 0:
            q[rows] = np.stack([t / 4, (a[:, 2, 1] - a[:, 1, 2]) / t, (a[:, 0, 2] - a[:, 2, 0]) / t,
                                (a[:, 1, 0] - a[:, 0, 1]) / t], 1)
        elif k == 1:
            q[rows] = np.stack([(a[:, 2, 1] - a[:, 1, 2]) / t, t / 4, (a[:, 0, 1] + a[:, 1, 0]) / t,
                                (a[:, 0, 2] + a[:, 2, 0]) / t], 1)
        elif k == 2:
            q[rows] = np.stack([(a[:, 0, 2] - a[:, 2, 0]) / t, (a[:, 0, 1] + a[:, 1, 0]) / t, t / 4,
                                (a[:, 1, 2] + a[:, 2, 1]) / t], 1)
        else:
            q[rows] = np.stack([(a[:, 1, 0] - a[:, 0, 1]) / t, (a[:, 0, 2] + a[:, 2, 0]) / t,
                                (a[:, 1, 2] + a[:, 2, 1]) / t, t / 4], 1)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return np.where(q[:, :1] < 0, -q, q)


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of wxyz quaternions (broadcasting): the rotation b, then a."""
    aw, ax, ay, az = np.moveaxis(np.asarray(a, np.float64), -1, 0)
    bw, bx, by, bz = np.moveaxis(np.asarray(b, np.float64), -1, 0)
    return np.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], -1)


def similarity(linear: np.ndarray, tolerance: float = 1e-6) -> float | None:
    """The uniform scale s when ``linear = s O`` with O orthogonal (a mirror allowed), else None."""
    det = float(np.linalg.det(linear))
    if abs(det) < 1e-300:
        return None
    s = abs(det) ** (1.0 / 3.0)
    return s if np.abs(linear @ linear.T / (s * s) - np.eye(3)).max() < tolerance else None


def polar_orthogonal(linear: np.ndarray) -> np.ndarray:
    """O of the polar decomposition ``linear = O P`` (the rotation, or rotation with mirror)."""
    u, _, vt = np.linalg.svd(linear)
    return u @ vt


def orthogonal_factor(linear: np.ndarray) -> np.ndarray:
    """What view directions (and so SH bands 1..3) turn by under ``linear``: ``A / s`` for a
    similarity, else the polar factor."""
    s = similarity(linear)
    return linear / s if s is not None else polar_orthogonal(linear)


def is_identity(matrix: np.ndarray) -> bool:
    """Identity up to float32 noise: Blender's matrices are float32, and turning an object by
    the Y-down import and back leaves ~4e-8 (cos 90 deg) where zeros belong."""
    return bool(np.abs(np.asarray(matrix, np.float64) - np.eye(4)).max() < 1e-6)


def transform_gaussians(gaussians: dict, matrix: np.ndarray) -> dict:
    """The Gaussians moved by the 4x4 affine ``matrix`` (dict layout of importers.read_gaussians:
    xyz, rot (unit wxyz), scale (sigmas), f_rest (channel-major columns), normal or None).
    Other entries are passed through; the input is not modified."""
    matrix = np.asarray(matrix, np.float64)
    out = dict(gaussians)
    if is_identity(matrix):
        return out
    linear, offset = matrix[:3, :3], matrix[:3, 3]
    out["xyz"] = (np.asarray(gaussians["xyz"], np.float64) @ linear.T + offset).astype(np.float32)
    rot = np.asarray(gaussians["rot"], np.float64)
    scale = np.asarray(gaussians["scale"], np.float64)
    s = similarity(linear)
    if s is not None:
        orthogonal = linear / s
        proper = orthogonal * np.sign(np.linalg.det(orthogonal))  # -O turns covariances as O does
        out["rot"] = quat_multiply(matrix_to_quat(proper[None]), rot).astype(np.float32)
        out["scale"] = (scale * s).astype(np.float32)
    else:
        axes = linear[None] @ quat_to_matrix(rot) * scale[:, None, :]  # A R diag(s)
        values, vectors = np.linalg.eigh(axes @ np.swapaxes(axes, 1, 2))
        vectors[:, :, 0] *= np.sign(np.linalg.det(vectors))[:, None]  # a rotation, not a mirror
        out["rot"] = matrix_to_quat(vectors).astype(np.float32)
        out["scale"] = np.sqrt(np.maximum(values, 0.0)).astype(np.float32)
    out["f_rest"] = rotate_sh_columns(gaussians.get("f_rest", []), orthogonal_factor(linear))
    normal = gaussians.get("normal")
    if normal is not None:
        normal = np.asarray(normal, np.float64)
        turned = normal @ np.linalg.inv(linear)  # rows: (A^-T n)^T
        length, new_length = np.linalg.norm(normal, axis=1), np.linalg.norm(turned, axis=1)
        factor = np.divide(length, new_length, out=np.zeros_like(length), where=new_length > 0)
        out["normal"] = (turned * factor[:, None]).astype(np.float32)
    return out


def rotate_sh_columns(f_rest: list, orthogonal: np.ndarray) -> list:
    """Rotate 3DGS ``f_rest`` columns (channel-major: K of red, K of green, K of blue)."""
    if not len(f_rest):
        return list(f_rest)
    if len(f_rest) % 3:
        raise ValueError(f"{len(f_rest)} f_rest columns is not a multiple of 3")
    k = len(f_rest) // 3
    degree = int(round(np.sqrt(k + 1))) - 1
    if (degree + 1) ** 2 - 1 != k or degree > 3:
        raise ValueError(f"{k} SH coefficients per channel is not a full band 1..3 set")
    rotation = sh_rotation(orthogonal, degree)[1:, 1:]  # band 0 is invariant
    rest = np.asarray(f_rest, np.float64).reshape(3, k, -1)  # [channel, coefficient, N]
    turned = np.einsum("ij,cjn->cin", rotation, rest)
    return list(turned.reshape(3 * k, -1).astype(np.float32))


def apply_points(matrix: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, np.float64)
    return (np.asarray(xyz, np.float64) @ matrix[:3, :3].T + matrix[:3, 3]).astype(np.float32)


# Blender's Apply Transform moves mesh positions and nothing else.  A few points recorded when
# the attributes were written tell afterwards which affine map the positions went through.


def reference_frame(xyz: np.ndarray) -> dict:
    """Indices and positions of up to 8 points spanning the cloud: 4 spread out (far apart, off
    the line, off the plane), 4 more that a fitted map must also explain."""
    xyz = np.asarray(xyz, np.float64)
    if len(xyz) < 4:
        return {"count": len(xyz), "index": [], "position": []}
    picks = [int(np.argmax(np.linalg.norm(xyz - xyz.mean(axis=0), axis=1)))]
    picks.append(int(np.argmax(np.linalg.norm(xyz - xyz[picks[0]], axis=1))))
    line = xyz[picks[1]] - xyz[picks[0]]
    offset = xyz - xyz[picks[0]]
    picks.append(int(np.argmax(np.linalg.norm(np.cross(offset, line), axis=1))))
    normal = np.cross(line, xyz[picks[2]] - xyz[picks[0]])
    picks.append(int(np.argmax(np.abs(offset @ normal))))
    picks += np.linspace(0, len(xyz) - 1, 6).astype(int)[1:5].tolist()
    return {"count": len(xyz), "index": picks, "position": xyz[picks].tolist()}


def fitted_frame(frame: dict, after: np.ndarray) -> np.ndarray | None:
    """The affine map taking the recorded points to ``after`` (where they are now): identity
    when they did not move, None when no single map explains it (or the cloud is flat)."""
    before = np.asarray(frame["position"], np.float64).reshape(-1, 3)
    if not len(before):
        return np.eye(4)
    after = np.asarray(after, np.float64).reshape(-1, 3)
    extent = float(np.abs(before - before.mean(axis=0)).max()) + 1e-12
    if np.abs(after - before).max() <= 1e-7 * extent:
        return np.eye(4)
    homogeneous = np.hstack([before, np.ones((len(before), 1))])
    if np.linalg.matrix_rank(homogeneous, tol=1e-6 * extent) < 4:
        return None
    solution = np.linalg.lstsq(homogeneous, after, rcond=None)[0]  # [4, 3]
    matrix = np.eye(4)
    matrix[:3, :] = solution.T
    scale = float(np.abs(after - after.mean(axis=0)).max()) + 1e-12
    if np.abs(homogeneous @ solution - after).max() > 1e-5 * scale:
        return None
    return matrix
