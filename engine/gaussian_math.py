"""The math of one 3D Gaussian shared by the engine's rasterizer and the add-on's transforms
(a boundary module, like colour.py): the real SH basis and a quaternion's rotation matrix, and the
PLY header marks of the image formation the Gaussians were trained in.

Each function takes the components of a numpy array or a torch tensor and returns the terms as a
list, using only operators both share; the caller stacks them (``np.stack`` / ``torch.stack``),
so the add-on runs the same formulas without torch and gradients flow through the torch ones.
"""

from __future__ import annotations

EPS2D = 0.3  # px^2: the blur added to every projected 2D covariance (gsplat's eps2d, 3DGS's 0.3)
# The PLY header comment of Gaussians trained, and so to be rendered, in gsplat's "antialiased" mode:
# opacity times sqrt(det S / det(S + EPS2D I)), so the blur keeps a Gaussian's coverage (a pixel filter's
# effect; Cycles' Gaussian filter of the same variance reproduces it).  Without it: "classic".
ANTIALIASED_COMMENT = "gen3d rasterize_mode antialiased"
# Other tools' marks of the same training mode in a PLY header, as splat-transform's README and
# PlayCanvas' anti-aliasing page list them (read 2026-12-03; tests/data/splat-formats/README.md): Brush
# and splat-transform write "SplatRenderMode: mip" (or "default"), Postshot "antialiased 1" (or 0;
# PlayCanvas also names "postshot.anti_aliasing=1").  The last mark in the header wins.  We write
# ours and Brush's, so that those viewers render our files in the mode they were trained in.
ANTIALIASED_COMMENTS = (ANTIALIASED_COMMENT, "SplatRenderMode: mip")
_MARKS = {ANTIALIASED_COMMENT.lower(): True, "splatrendermode: mip": True, "splatrendermode mip": True,
          "splatrendermode: default": False, "antialiased 1": True, "antialiased 0": False,
          "postshot.anti_aliasing=1": True, "postshot.anti_aliasing=0": False}


def antialiased_from_comments(comments) -> bool:
    """Whether a PLY header's comment lines (their text) mark Gaussians trained antialiased."""
    marks = [_MARKS[c.strip().lower()] for c in comments if c.strip().lower() in _MARKS]
    return marks[-1] if marks else False


def ply_comments(path) -> list[str]:
    """A PLY header's ``comment`` lines (their text), in order; only the header is read (and at
    most 10,000 comments of it, should a file have no ``end_header``)."""
    comments = []
    with open(path, "rb") as handle:
        for line in handle:
            words = line.decode("ascii", "replace").strip()
            if words == "end_header" or len(comments) > 10_000:
                break
            if words.startswith("comment "):
                comments.append(words[len("comment "):])
    return comments

# Real SH constants of the 3DGS reference (its sign and order conventions).
SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
         -0.4570457994644658, 1.445305721320277, -0.5900435899266435)


def sh_terms(degree: int, x, y, z) -> list:
    """The (degree+1)^2 basis functions at unit directions (x, y, z), in 3DGS order."""
    if not 0 <= degree <= 3:
        raise ValueError(f"SH degree {degree} is outside 0..3")
    out = [SH_C0 + 0 * x]
    if degree >= 1:
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [SH_C2[0] * x * y, SH_C2[1] * y * z, SH_C2[2] * (2 * zz - xx - yy), SH_C2[3] * x * z,
                SH_C2[4] * (xx - yy)]
    if degree >= 3:
        out += [SH_C3[0] * y * (3 * xx - yy), SH_C3[1] * x * y * z, SH_C3[2] * y * (4 * zz - xx - yy),
                SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy), SH_C3[4] * x * (4 * zz - xx - yy),
                SH_C3[5] * z * (xx - yy), SH_C3[6] * x * (xx - 3 * yy)]
    return out


def rotation_terms(w, x, y, z) -> list:
    """The 9 entries, row by row, of the rotation matrix of the unit quaternion (w, x, y, z)."""
    return [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]
