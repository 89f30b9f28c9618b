"""engine.colour: the exact sRGB curve, shared by the loss, the PLY boundary and the add-on."""

import numpy as np
import torch

from engine import colour


def test_srgb_curve_is_the_piecewise_standard_and_inverts():
    x = np.array([0.0, 0.0031308, 0.18, 0.5, 1.0])
    # IEC 61966-2-1 values: 18 % grey -> 0.4614, 0.5 -> 0.7354; continuous at the knee
    assert np.allclose(colour.linear_to_srgb(x), [0.0, 0.04045, 0.46135, 0.73536, 1.0], atol=2e-5)
    grid = np.linspace(-0.2, 1.5, 2001)
    assert np.abs(colour.srgb_to_linear(colour.linear_to_srgb(grid)) - grid).max() < 1e-12
    # not a 2.2 gamma: the difference is largest in the shadows
    assert abs(colour.srgb_to_linear(np.array(0.1)) - 0.1 ** 2.2) > 1.5e-3


def test_torch_gradient_is_the_slope():
    x = torch.linspace(-0.1, 1.2, 501, dtype=torch.float64, requires_grad=True)
    colour.linear_to_srgb(x).sum().backward()
    assert torch.allclose(x.grad, colour.srgb_slope(x.detach()))


def test_display_sh_round_trip_and_first_order_agreement():
    g = torch.Generator().manual_seed(0)
    sh0, shN = torch.randn(64, 1, 3, generator=g, dtype=torch.float64), 0.01 * torch.randn(64, 8, 3, generator=g, dtype=torch.float64)
    d0, dN = colour.sh_to_display(sh0, shN)
    b0, bN = colour.sh_from_display(d0, dN)
    assert torch.allclose(b0, sh0) and torch.allclose(bN, shN)
    # a viewer evaluating the display SH sees the encoded linear colour to first order
    basis = torch.randn(8, generator=g, dtype=torch.float64) * 0.3
    linear = 0.5 + colour.SH_C0 * sh0[:, 0] + torch.einsum("k,nkc->nc", basis, shN)
    seen = 0.5 + colour.SH_C0 * d0[:, 0] + torch.einsum("k,nkc->nc", basis, dN)
    ok = linear[:, :].min(1).values > 0.05  # away from the knee, where the curve bends sharply
    assert (seen - colour.linear_to_srgb(linear))[ok].abs().max() < 2e-3
