"""Max pooling on what random test data rarely shows -- ties (the gradient goes to the first maximum in row-major
order, like PyTorch), and for the compiled halving kernels (dslc/kernels/jit.py) a NaN (it wins its window, like
np.maximum) -- plus overlapping windows, padding and ceil-mode overhang on the slice path, against a direct
per-window numpy reference."""
from __future__ import annotations

import numpy as np
import pytest

from dslc.kernels import pool as KP


def _reference(x, g):
    xp = np.full((g.N, g.C, g.Hx, g.Wx), -np.inf)
    xp[:, :, g.pt:g.pt + g.H, g.pl:g.pl + g.W] = x
    y = np.empty((g.N, g.C, g.OH, g.OW))
    first = np.empty((g.N, g.C, g.OH, g.OW, 2), int)
    for idx in np.ndindex(g.N, g.C, g.OH, g.OW):
        n, c, oh, ow = idx
        win = xp[n, c, oh * g.sh:oh * g.sh + g.KH, ow * g.sw:ow * g.sw + g.KW]
        flat = win.reshape(-1)
        k = int(np.argmax(np.isnan(flat))) if np.isnan(flat).any() else int(np.argmax(flat))  # first max / NaN
        y[idx] = flat[k]
        first[idx] = (oh * g.sh + k // g.KW - g.pt, ow * g.sw + k % g.KW - g.pl)
    return y, first


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel,stride,pads,ceil,hw,compiled", [
    ((2, 2), (2, 2), (0, 0, 0, 0), False, (8, 6), True), ((2, 2), (2, 2), (0, 0, 0, 0), False, (7, 6), False),
    ((3, 3), (1, 1), (1, 1, 1, 1), False, (7, 6), False), ((3, 2), (2, 1), (0, 1, 1, 0), True, (7, 6), False),
    ((2, 2), (2, 2), (0, 0, 0, 0), True, (7, 6), False)])
def test_maxpool_ties_nan_and_gradient_routing(dtype, kernel, stride, pads, ceil, hw, compiled):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, (2, 3) + hw).astype(dtype)   # few distinct values: many ties
    if compiled:
        x[0, 1, 2, 3] = np.nan
    g = KP.pool_geom(x.shape, kernel, stride, pads, ceil)
    y, arg = KP.maxpool2d(x, g)
    assert (arg is not None) == compiled
    want, first = _reference(x, g)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, want)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = KP.maxpool2d_grad(gy, x, y, arg, g)
    ref = np.zeros(x.shape)
    for idx in np.ndindex(*y.shape):
        r, c = first[idx]
        ref[idx[0], idx[1], r, c] += gy[idx]
    assert gx.dtype == dtype and gx.shape == x.shape
    np.testing.assert_allclose(gx, ref, rtol=1e-6)
