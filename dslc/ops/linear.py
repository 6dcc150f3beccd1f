"""Dense layers: linear (fully connected) and matmul."""
import numpy as np

from dslc.kernels.nn import unbroadcast, wants
from dslc.ops.common import check_positive, dim1, numel1, require_known, shp
from dslc.ops.registry import Case, Op, Param, ShapeError, WeightSpec, register
from dslc.types import TensorType, broadcast_shapes


def _linear_infer(ins, attrs):
    x = ins[0]
    if x.rank < 1:
        raise ShapeError(f"linear expects an input with at least 1 dim [..., in], got a scalar {shp(x)}")
    require_known(x.shape[-1], "linear: the input's last dim (in features)", x)
    return [x.with_shape(x.shape[:-1] + (attrs["out"],))]


def _linear_prepare(ins, attrs):
    check_positive(attrs, "out")
    return attrs


def _linear_weights(ins, attrs):
    n_in, n_out = ins[0].shape[-1], attrs["out"]
    w = {"weight": WeightSpec((n_out, n_in), "fan_in", fan_in=n_in, fan_out=n_out)}
    if attrs["bias"]:
        w["bias"] = WeightSpec((n_out,), "zeros")
    return w


def _linear_macs(ins, outs, attrs):
    return numel1(outs[0].shape) * ins[0].shape[-1]


# ---- numpy executor (dslc/ops/registry.py contract) -------------------------------------------------------
def linear_forward(ctx, xs, ws, attrs):
    x, w = xs[0], ws["weight"]
    y = x.reshape(-1, x.shape[-1]) @ w.T  # one GEMM over all leading dims
    if attrs["bias"]:
        y += ws["bias"]
    return [y.reshape(x.shape[:-1] + (w.shape[0],))], None


def linear_vjp(ctx, gys, saved, xs, ws, attrs):
    x, w = xs[0], ws["weight"]
    gy2 = gys[0].reshape(-1, w.shape[0])
    x2 = x.reshape(-1, x.shape[-1])
    # the gradient in the weight's memory order (the executor keeps W column-major: dslc/train/executor.py)
    gws = {"weight": (x2.T @ gy2).T if w.flags.f_contiguous and not w.flags.c_contiguous else gy2.T @ x2}
    if attrs["bias"]:
        gws["bias"] = gy2.sum(axis=0)
    gx = (gy2 @ w).reshape(x.shape) if wants(ctx, 0) else None
    return [gx], gws


# ---- ONNX lowering: lower(ctx, node), see dslc/lowering/context.py ---------------------------------------
def linear_lower(ctx, node):
    """Rank 2: one Gemm (x W^T + b). Other ranks: MatMul by W^T (derived initializer `<node>.weight.T`) + Add."""
    a = ctx.attrs(node)
    x = ctx.x(node)
    if ctx.in_types(node)[0].rank == 2:
        ins = [x, ctx.weight(node, "weight")] + ([ctx.weight(node, "bias")] if a["bias"] else [])
        ctx.emit("Gemm", ins, ctx.out(node), transB=1)
        return
    wt = ctx.derived(node, "weight.T", ctx.weight_array(node, "weight").T)
    if not a["bias"]:
        ctx.emit("MatMul", [x, wt], ctx.out(node))
        return
    ctx.emit("Add", [ctx.emit("MatMul", [x, wt]), ctx.weight(node, "bias")], ctx.out(node))


def linear_torch(e):
    return f"F.linear({e.x()}, {e.w('weight')}, {e.w('bias') if e.a['bias'] else None})"


LINEAR = register(Op(
    name="linear", inputs=("x",), infer=_linear_infer, prepare=_linear_prepare, weights=_linear_weights,
    macs=_linear_macs, short="fc",
    params=(Param("out", "int", doc="output features"), Param("bias", "bool", True, doc="learn an additive bias")),
    doc="Fully connected layer y = x W^T + b over the last dim: [..., in] -> [..., out].",
    cases=[
        Case((TensorType((2, 8)),), {"out": 4}),
        Case((TensorType(("N", 8)),), {"out": 3, "bias": False}, "symbolic batch, no bias"),
        Case((TensorType((2, 3, 8)),), {"out": 5}, "applied over the last dim of a rank-3 input"),
    ],
    lower=linear_lower, forward=linear_forward, vjp=linear_vjp, torch=linear_torch,
))


def _matmul_infer(ins, attrs):
    a, b = ins
    if a.rank < 1 or b.rank < 1:
        raise ShapeError(f"matmul needs inputs of rank >= 1, got {shp(a)} and {shp(b)}",
                         operand=0 if a.rank < 1 else 1)
    if a.dtype != b.dtype:
        raise ShapeError(f"matmul operands have different dtypes: {a} and {b}", operand=1)
    sa = (1,) + a.shape if a.rank == 1 else a.shape
    sb = b.shape + (1,) if b.rank == 1 else b.shape
    if sa[-1] != sb[-2]:
        raise ShapeError(f"cannot matmul {shp(a)} by {shp(b)}: inner dims differ ({sa[-1]} vs {sb[-2]})",
                         hint="the last dim of the first operand must equal the second-to-last dim of the second",
                         operand=1)
    batch = broadcast_shapes(sa[:-2], sb[:-2])
    if batch is None:
        raise ShapeError(f"cannot matmul {shp(a)} by {shp(b)}: batch dims {shp(sa[:-2])} and {shp(sb[:-2])} "
                         f"do not broadcast", operand=1)
    out = batch + ((sa[-2],) if a.rank > 1 else ()) + ((sb[-1],) if b.rank > 1 else ())
    return [a.with_shape(out)]


def _matmul_macs(ins, outs, attrs):
    a = ins[0]
    return numel1(outs[0].shape) * dim1(a.shape[-1])


def matmul_forward(ctx, xs, ws, attrs):
    return [np.matmul(xs[0], xs[1])], None


def matmul_vjp(ctx, gys, saved, xs, ws, attrs):
    a, b = xs
    g = gys[0]
    # work on the rank-promoted operands (a: [1, K], b: [K, 1]) and put the dropped dims back into g
    if b.ndim == 1:
        g = g[..., None]
    if a.ndim == 1:
        g = np.expand_dims(g, -2)
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    ga = gb = None
    if wants(ctx, 0) and a.dtype.kind == "f":
        ga = unbroadcast(np.matmul(g, np.swapaxes(b2, -1, -2)), a2.shape).reshape(a.shape)
    if wants(ctx, 1) and b.dtype.kind == "f":
        if b2.ndim == 2 and g.ndim > 2 and a2.shape[:-2] == g.shape[:-2]:  # shared matrix: one GEMM
            gb = a2.reshape(-1, a2.shape[-1]).T @ g.reshape(-1, g.shape[-1])
        else:
            gb = unbroadcast(np.matmul(np.swapaxes(a2, -1, -2), g), b2.shape)
        gb = gb.reshape(b.shape)
    return [ga, gb], {}


def matmul_lower(ctx, node):
    ctx.emit("MatMul", ctx.inputs(node), ctx.out(node))


def matmul_torch(e):
    return f"torch.matmul({e.x(0)}, {e.x(1)})"


MATMUL = register(Op(
    name="matmul", inputs=("a", "b"), infer=_matmul_infer, macs=_matmul_macs,
    doc="numpy matmul: [..., M, K] @ [..., K, P] -> [..., M, P], batch dims broadcast; rank-1 operands "
        "are promoted and the added dim dropped.",
    cases=[
        Case((TensorType((3, 4)), TensorType((4, 5)))),
        Case((TensorType((2, 3, 4)), TensorType((4, 5))), note="batched by broadcasting"),
        Case((TensorType((2, 1, 3, 4)), TensorType((3, 4, 2))), note="batch dims broadcast"),
        Case((TensorType(("N", 3, 4)), TensorType(("N", 4, 3))), note="symbolic batch"),
        Case((TensorType((4,)), TensorType((4, 3))), note="vector @ matrix"),
    ],
    lower=matmul_lower, forward=matmul_forward, vjp=matmul_vjp, torch=matmul_torch,
))
