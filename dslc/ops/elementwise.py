"""Binary elementwise arithmetic with numpy broadcasting: add, sub, mul, div."""
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


def _binary(name, sym):
    return register(Op(
        name=name, inputs=("a", "b"), infer=_binary_infer_for(name), category="elementwise",
        doc=f"Elementwise a {sym} b with numpy broadcasting (trailing dims aligned; each pair equal or 1).",
        cases=[
            Case((TensorType((2, 3, 4, 4)), TensorType((2, 3, 4, 4)))),
            Case((TensorType((2, 3, 4, 4)), TensorType((3, 1, 1))), note="per-channel broadcast"),
            Case((TensorType((2, 1, 4)), TensorType((3, 1))), note="both sides broadcast"),
            Case((TensorType(("N", 4)), TensorType((4,))), note="symbolic batch, bias-like"),
            Case((TensorType((3, 4)), TensorType(())), note="scalar operand"),
        ],
    ))


ADD = _binary("add", "+")
SUB = _binary("sub", "-")
MUL = _binary("mul", "*")
DIV = _binary("div", "/")
