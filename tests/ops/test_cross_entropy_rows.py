"""cross_entropy's compiled [N, C] path (class indices) against its general numpy path (the same logits with a
trailing spatial dim of 1): loss and gradient agree, with and without label smoothing, in float32 and float64."""
from __future__ import annotations

import numpy as np
import pytest

from dslc.kernels.context import ExecContext
from dslc.ops.loss import cross_entropy_forward, cross_entropy_vjp


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_rows_path_equals_general_path(dtype, eps):
    rng = np.random.default_rng(7)
    z = (rng.standard_normal((9, 6)) * 4).astype(dtype)
    z[3] += 80.0   # large logits: the max subtraction must keep exp finite
    t = rng.integers(0, 6, 9)
    attrs = {"label_smoothing": eps}
    ctx = ExecContext(True)
    (loss_rows,), saved_rows = cross_entropy_forward(ctx, [z, t], {}, attrs)
    z3, t3 = z[:, :, None], t[:, None]
    (loss_gen,), saved_gen = cross_entropy_forward(ctx, [z3, t3], {}, attrs)
    assert loss_rows.dtype == dtype and np.isfinite(loss_rows)
    np.testing.assert_allclose(loss_rows, loss_gen, rtol=1e-6 if dtype == np.float32 else 1e-12)
    gy = np.asarray(0.7, dtype)
    (g_rows, _), _ = cross_entropy_vjp(ctx, [gy], saved_rows, [z, t], {}, attrs)
    (g_gen, _), _ = cross_entropy_vjp(ctx, [gy], saved_gen, [z3, t3], {}, attrs)
    assert g_rows.dtype == dtype
    np.testing.assert_allclose(g_rows, g_gen[:, :, 0], rtol=1e-5, atol=1e-7 if dtype == np.float32 else 1e-14)


@pytest.mark.parametrize("bad", [-1, 6])
def test_rows_path_names_an_out_of_range_class(bad):
    z = np.zeros((3, 6), np.float32)
    t = np.array([0, bad, 2])
    with pytest.raises(ValueError, match=f"class index {bad} is out of range for 6 classes"):
        cross_entropy_forward(ExecContext(True), [z, t], {}, {"label_smoothing": 0.0})
