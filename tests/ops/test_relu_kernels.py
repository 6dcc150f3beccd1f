"""relu's compiled forward and backward (dslc/kernels/jit.py) against numpy's formulation, special values included."""
import numpy as np
import pytest

from dslc.kernels.context import ExecContext
from dslc.ops.activation import relu_forward, relu_vjp

SPECIAL = [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 3.0, -3.0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_forward_equals_np_maximum(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3, 7)).astype(dtype)
    x.flat[:len(SPECIAL)] = SPECIAL
    (y,), saved = relu_forward(ExecContext(True), [x], {}, {})
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_array_equal(y, np.maximum(x, 0))   # NaN stays NaN, as np.maximum (and torch.relu) give
    assert not np.signbit(y[x == 0]).any()
    assert saved is y
    # a non-contiguous input (a transposed view) gives the same values
    (yt,), _ = relu_forward(ExecContext(True), [x.T], {}, {})
    np.testing.assert_array_equal(yt, np.maximum(x.T, 0))


def test_relu_backward_is_threshold_backward():
    """The gradient passes where y > 0 and is 0 elsewhere, even a NaN or inf gradient at a clamped unit."""
    x = np.array([[-1.0, 0.0, 2.0, np.nan, 5.0, -2.0]], np.float32)
    (y,), saved = relu_forward(ExecContext(True), [x], {}, {})
    gy = np.array([[np.nan, np.inf, 3.0, 4.0, -np.inf, 7.0]], np.float32)
    (gx,), gws = relu_vjp(ExecContext(True), [gy], saved, [x], {}, {})
    np.testing.assert_array_equal(gx, [[0.0, 0.0, 3.0, 0.0, -np.inf, 0.0]])
    assert gx.dtype == np.float32 and gws == {}
