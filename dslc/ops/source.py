"""Sources: ops with no tensor inputs -- a learned tensor (param) and a scalar constant."""
import numpy as np

from dslc.ops.registry import Case, Op, Param, WeightSpec, register
from dslc.types import DTYPES, NUMPY_DTYPE, TensorType


def _param_prepare(ins, attrs):
    shape = tuple(attrs["shape"])
    if not shape or any(d <= 0 for d in shape):
        raise TypeError(f"`shape` of a param must be a non-empty list of positive integers, got {list(shape)}")
    if attrs["std"] <= 0:
        raise TypeError(f"`std` must be positive, got {attrs['std']}")
    attrs = dict(attrs)
    attrs["shape"] = shape
    return attrs


def _param_init(attrs):
    return f"normal:{attrs['std']}" if attrs["init"] == "normal" else attrs["init"]


# ---- numpy executor (dslc/ops/registry.py contract) -------------------------------------------------------
def param_forward(ctx, xs, ws, attrs):
    """The weight array itself (not a copy): downstream ops never write into their inputs."""
    return [ws["value"]], None


def param_vjp(ctx, gys, saved, xs, ws, attrs):
    return [], {"value": gys[0]}


def constant_forward(ctx, xs, ws, attrs):
    return [np.array(attrs["value"], dtype=NUMPY_DTYPE[attrs["dtype"]])], None


def constant_vjp(ctx, gys, saved, xs, ws, attrs):
    return [], {}


# ---- ONNX lowering: lower(ctx, node), see dslc/lowering/context.py ---------------------------------------
def param_lower(ctx, node):
    """The learned tensor is the initializer `<node>.value` itself: no node."""
    ctx.alias(node, ctx.weight(node, "value"))


def param_torch(e):
    return e.w("value")


PARAM = register(Op(
    name="param", inputs=(), infer=lambda ins, attrs: [TensorType(tuple(attrs["shape"]))], prepare=_param_prepare,
    weights=lambda ins, attrs: {"value": WeightSpec(tuple(attrs["shape"]), _param_init(attrs))},
    short="param", category="source",
    params=(Param("shape", "shape", doc="concrete positive dims"),
            Param("init", "choice", "zeros", ("zeros", "ones", "normal")),
            Param("std", "float", 0.02, doc="std of init=\"normal\"")),
    doc="A learned tensor of the given concrete `shape` (weight `value`, init zeros / ones / normal(std)).",
    cases=[
        Case((), {"shape": [1, 1, 8]}),
        Case((), {"shape": [1, 5, 8], "init": "normal", "std": 0.02}, "position embedding"),
        Case((), {"shape": [4], "init": "ones"}),
    ],
    lower=param_lower, forward=param_forward, vjp=param_vjp, torch=param_torch,
))


def constant_lower(ctx, node):
    """A scalar initializer (deduplicated): no node."""
    a = ctx.attrs(node)
    ctx.alias(node, ctx.const(a["value"], NUMPY_DTYPE[a["dtype"]], "scalar"))


def constant_torch(e):
    dtype = {"f32": "float32", "f64": "float64", "i64": "int64", "i32": "int32", "bool": "bool"}[e.a["dtype"]]
    return f"torch.tensor({e.a['value']!r}, dtype=torch.{dtype})"


CONSTANT = register(Op(
    name="constant", inputs=(), infer=lambda ins, attrs: [TensorType((), attrs["dtype"])], category="source",
    params=(Param("value", "float"), Param("dtype", "choice", "f32", DTYPES)),
    doc="A scalar constant `value` of `dtype`; shape [].",
    cases=[Case((), {"value": 1.5}), Case((), {"value": 2, "dtype": "f32"})],
    lower=constant_lower, forward=constant_forward, vjp=constant_vjp, torch=constant_torch,
))
