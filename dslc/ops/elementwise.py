"""Binary elementwise arithmetic with numpy broadcasting: add, sub, mul, div."""
import numpy as np

from dslc.kernels.nn import unbroadcast, wants
from dslc.ops.common import shp
from dslc.ops.registry import Case, Op, ShapeError, register
from dslc.types import TensorType, broadcast_shapes

_HINTS = {
    "add": "a residual add needs a projection shortcut, e.g. conv2d(c, 1, stride=s)",
}
_DEFAULT_HINT = "broadcasting needs each pair of trailing dims to be equal or 1"


def _first_mismatch(a, b):
    """(output axis, dim of a, dim of b) of the first (leftmost) pair of dims that do not broadcast."""
    r = max(len(a), len(b))
    pa = (1,) * (r - len(a)) + tuple(a)
    pb = (1,) * (r - len(b)) + tuple(b)
    for i, (da, db) in enumerate(zip(pa, pb)):
        if da != db and da != 1 and db != 1:
            return i, da, db
    return None


def _binary_infer_for(name):
    def infer(ins, attrs):
        a, b = ins
        if a.dtype != b.dtype:
            raise ShapeError(f"cannot {name} {a} and {b}: dtypes differ ({a.dtype} vs {b.dtype})",
                             hint="convert one operand so both have the same dtype", operand=1)
        out = broadcast_shapes(a.shape, b.shape)
        if out is None:
            i, da, db = _first_mismatch(a.shape, b.shape)
            raise ShapeError(f"cannot {name} {shp(a)} and {shp(b)}: dims {i} differ ({da} vs {db})",
                             hint=_HINTS.get(name, _DEFAULT_HINT), operand=1)
        return [a.with_shape(out)]
    return infer


def _binary(name, sym, lower=None, forward=None, vjp=None, vjp_reads_inputs=True):
    def torch_lowering(e):
        return f"({e.x(0)} {sym} {e.x(1)})"

    return register(Op(
        name=name, inputs=("a", "b"), infer=_binary_infer_for(name), category="elementwise", lower=lower,
        forward=forward, vjp=vjp, torch=torch_lowering, vjp_reads_inputs=vjp_reads_inputs,
        doc=f"Elementwise a {sym} b with numpy broadcasting (trailing dims aligned; each pair equal or 1).",
        cases=[
            Case((TensorType((2, 3, 4, 4)), TensorType((2, 3, 4, 4)))),
            Case((TensorType((2, 3, 4, 4)), TensorType((3, 1, 1))), note="per-channel broadcast"),
            Case((TensorType((2, 1, 4)), TensorType((3, 1))), note="both sides broadcast"),
            Case((TensorType(("N", 4)), TensorType((4,))), note="symbolic batch, bias-like"),
            Case((TensorType((3, 4)), TensorType(())), note="scalar operand"),
        ],
    ))


# ---- ONNX lowering: lower(ctx, node), see dslc/lowering/context.py ---------------------------------------
def _binary_lower(onnx_op):
    def lower(ctx, node):
        ctx.emit(onnx_op, ctx.inputs(node), ctx.out(node))
    return lower


add_lower = _binary_lower("Add")
sub_lower = _binary_lower("Sub")
mul_lower = _binary_lower("Mul")
div_lower = _binary_lower("Div")


# ---- numpy executor (dslc/ops/registry.py contract); integer operands get no gradient ---------------------
def _grads(ctx, xs, ga, gb):
    """Per-operand gradients summed back over broadcast dims; ga / gb are thunks (computed only if wanted)."""
    a, b = xs
    return [unbroadcast(ga(), a.shape) if a.dtype.kind == "f" and wants(ctx, 0) else None,
            unbroadcast(gb(), b.shape) if b.dtype.kind == "f" and wants(ctx, 1) else None], {}


def add_forward(ctx, xs, ws, attrs):
    return [np.add(xs[0], xs[1])], None


def add_vjp(ctx, gys, saved, xs, ws, attrs):
    return _grads(ctx, xs, lambda: gys[0], lambda: gys[0])


def sub_forward(ctx, xs, ws, attrs):
    return [np.subtract(xs[0], xs[1])], None


def sub_vjp(ctx, gys, saved, xs, ws, attrs):
    return _grads(ctx, xs, lambda: gys[0], lambda: -gys[0])


def mul_forward(ctx, xs, ws, attrs):
    return [np.multiply(xs[0], xs[1])], None


def mul_vjp(ctx, gys, saved, xs, ws, attrs):
    return _grads(ctx, xs, lambda: gys[0] * xs[1], lambda: gys[0] * xs[0])


def div_forward(ctx, xs, ws, attrs):
    a, b = xs
    if a.dtype.kind in "iu":  # integer division truncates toward zero (ONNX Div), keeping the dtype
        return [np.sign(a) * np.sign(b) * (np.abs(a) // np.abs(b))], None
    y = np.divide(a, b)
    return [y], y


def div_vjp(ctx, gys, saved, xs, ws, attrs):
    gy, b = gys[0], xs[1]
    return _grads(ctx, xs, lambda: gy / b, lambda: -(gy * saved) / b)


ADD = _binary("add", "+", lower=add_lower, forward=add_forward, vjp=add_vjp, vjp_reads_inputs=False)
SUB = _binary("sub", "-", lower=sub_lower, forward=sub_forward, vjp=sub_vjp, vjp_reads_inputs=False)
MUL = _binary("mul", "*", lower=mul_lower, forward=mul_forward, vjp=mul_vjp)
DIV = _binary("div", "/", lower=div_lower, forward=div_forward, vjp=div_vjp)
