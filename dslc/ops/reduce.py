"""Reductions beside `mean` (dslc/ops/shape_ops.py): sum(x, axis), max(x, axis) and global_maxpool.

max's gradient is shared equally among tied maxima (torch.amax's rule); ties do not occur in float data
often enough to matter, but the split keeps the VJP the derivative of a symmetric function."""
import numpy as np

from dslc.ops.pool import global_pool_infer_for, global_pool_lower_for, global_pool_torch_for
from dslc.ops.registry import Case, Op, Param, register
from dslc.ops.shape_ops import _mean_axes, _mean_prepare, reduce_infer_for, reduce_torch_for
from dslc.types import TensorType

_REDUCE_PARAMS = (Param("axis", "ints", doc="an axis or a list of axes"), Param("keepdims", "bool", False))


def _kept(g, x, axes, keepdims):
    """The output (gradient) with the reduced axes back as size-1 dims, to broadcast against x."""
    return g if keepdims else np.expand_dims(g, axes)


# ---- sum ------------------------------------------------------------------------------------------------------
def sum_forward(ctx, xs, ws, attrs):
    x = xs[0]
    return [np.asarray(x.sum(axis=_mean_axes(x, attrs), keepdims=attrs["keepdims"]), x.dtype)], None


def sum_vjp(ctx, gys, saved, xs, ws, attrs):
    x = xs[0]
    if x.dtype.kind != "f":
        return [None], {}
    gx = np.empty(x.shape, gys[0].dtype)
    gx[...] = _kept(gys[0], x, _mean_axes(x, attrs), attrs["keepdims"])
    return [gx], {}


def _reduce_lower(onnx_op):
    def lower(ctx, node):
        a = ctx.attrs(node)
        r = ctx.in_types(node)[0].rank
        ctx.reduce(onnx_op, ctx.x(node), sorted({ax % r for ax in a["axis"]}), ctx.out(node), keepdims=a["keepdims"])
    return lower


# ---- max and global_maxpool -------------------------------------------------------------------------------------
def _max_over(x, axes, keepdims):
    m = x.max(axis=axes, keepdims=True)
    return (m if keepdims else np.squeeze(m, axes)), m


def _max_grad(gy, x, m, axes, keepdims):
    hit = (x == m).astype(gy.dtype)
    hit /= hit.sum(axis=axes, keepdims=True)
    hit *= _kept(gy, x, axes, keepdims)
    return hit


def max_forward(ctx, xs, ws, attrs):
    y, m = _max_over(xs[0], _mean_axes(xs[0], attrs), attrs["keepdims"])
    return [np.asarray(y)], m


def max_vjp(ctx, gys, saved, xs, ws, attrs):
    x = xs[0]
    if x.dtype.kind != "f":
        return [None], {}
    return [_max_grad(gys[0], x, saved, _mean_axes(x, attrs), attrs["keepdims"])], {}


def _spatial(x):
    return tuple(range(2, x.ndim))


def global_maxpool_forward(ctx, xs, ws, attrs):
    y, m = _max_over(xs[0], _spatial(xs[0]), attrs["keepdims"])
    return [y], m


def global_maxpool_vjp(ctx, gys, saved, xs, ws, attrs):
    return [_max_grad(gys[0], xs[0], saved, _spatial(xs[0]), attrs["keepdims"])], {}


_AXIS_CASES = [
    Case((TensorType((2, 3, 4)),), {"axis": 1}),
    Case((TensorType((2, 3, 4, 4)),), {"axis": [2, 3], "keepdims": True}, "spatial, keepdims"),
    Case((TensorType(("N", "T", 8)),), {"axis": -2}, "over tokens, symbolic"),
]

SUM = register(Op(
    name="sum", inputs=("x",), infer=reduce_infer_for("sum"), prepare=_mean_prepare, category="shape",
    params=_REDUCE_PARAMS, doc="Sum over `axis` (int or list); those dims are dropped, or kept as 1 with keepdims.",
    cases=list(_AXIS_CASES), lower=_reduce_lower("ReduceSum"), forward=sum_forward, vjp=sum_vjp,
    torch=reduce_torch_for("sum"),
))
MAX = register(Op(
    name="max", inputs=("x",), infer=reduce_infer_for("max"), prepare=_mean_prepare, category="shape",
    params=_REDUCE_PARAMS,
    doc="Maximum over `axis` (int or list); dims dropped, or kept as 1 with keepdims. Ties share the gradient.",
    cases=list(_AXIS_CASES), lower=_reduce_lower("ReduceMax"), forward=max_forward, vjp=max_vjp,
    torch=reduce_torch_for("amax"),
))
GLOBAL_MAXPOOL = register(Op(
    name="global_maxpool", inputs=("x",), infer=global_pool_infer_for("global_maxpool"), params=(Param("keepdims", "bool", False),), short="gmp",
    doc="Maximum over all spatial dims: [N, C, *spatial] -> [N, C] (or [N, C, 1, ...] with keepdims); "
        "NCL for 1-D (text CNN), NCHW for images.",
    cases=[
        Case((TensorType((2, 4, 4, 4)),)),
        Case((TensorType(("N", 3, 5, 5)),), {"keepdims": True}, "keepdims, symbolic batch"),
        Case((TensorType((2, 3, "T")),), note="1-D, symbolic length"),
    ],
    lower=global_pool_lower_for("GlobalMaxPool", "ReduceMax"), forward=global_maxpool_forward, vjp=global_maxpool_vjp,
    torch=global_pool_torch_for("amax"),
))
