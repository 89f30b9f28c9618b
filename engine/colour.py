"""The one image-formation model shared by the engine and Blender (like cameras.py, a boundary module).

Gaussians carry **linear-light** colours and the rasterizer composites them linearly, as Cycles
and Eevee do; the loss compares the sRGB-encoded render (the exact piecewise sRGB curve of
IEC 61966-2-1) with the sRGB training images, so Blender's linear compositing shown through the
Standard view transform reproduces the engine's render.  Values above 1 stay on the power branch
(smooth); negative ones on the linear branch (the curve is odd there, so it stays invertible).

The 3DGS PLY is read by other viewers, which take ``0.5 + C0 * f_dc`` as a display colour, so
the file stores display-space SH: ``f_dc`` is the encoded DC colour, ``dc' = enc(c)``, and the
higher bands are scaled by the curve's slope at the DC, ``rest' = enc'(c) * rest`` (the
first-order expansion of ``enc(c + rest . Y)``, exact where the view-dependent part is 0).
Reading divides by the same slope, so a write/read round trip returns the engine's coefficients.

Every function takes a numpy array or a torch tensor (only operators both share, so the add-on
can use this module without torch); gradients flow through the torch ones.
"""

from __future__ import annotations

from .gaussian_math import SH_C0

ENCODE_KNEE = 0.0031308  # linear value where the sRGB curve switches to the power branch
DECODE_KNEE = 0.04045  # the same point in display values (12.92 * 0.0031308)


def _piecewise(low, low_value, high_value):
    return low * low_value + ~low * high_value


def linear_to_srgb(x):
    """sRGB OETF: linear light -> display value."""
    return _piecewise(x <= ENCODE_KNEE, 12.92 * x, 1.055 * x.clip(min=ENCODE_KNEE) ** (1 / 2.4) - 0.055)


def srgb_to_linear(x):
    """Inverse of linear_to_srgb: display value -> linear light."""
    return _piecewise(x <= DECODE_KNEE, x / 12.92, ((x.clip(min=DECODE_KNEE) + 0.055) / 1.055) ** 2.4)


def srgb_slope(x):
    """d linear_to_srgb / dx at the linear value ``x``."""
    return _piecewise(x <= ENCODE_KNEE, 12.92 + 0 * x, (1.055 / 2.4) * x.clip(min=ENCODE_KNEE) ** (1 / 2.4 - 1))


def sh_to_display(sh0, shN):
    """Linear-light SH (DC ``sh0 [N, 1, 3]``, higher bands ``shN [N, K, 3]``) -> the display-space
    SH a 3DGS PLY stores."""
    linear = 0.5 + SH_C0 * sh0
    return (linear_to_srgb(linear) - 0.5) / SH_C0, shN * srgb_slope(linear)


def sh_from_display(sh0, shN):
    """Inverse of sh_to_display."""
    linear = srgb_to_linear(0.5 + SH_C0 * sh0)
    return (linear - 0.5) / SH_C0, shN / srgb_slope(linear)
