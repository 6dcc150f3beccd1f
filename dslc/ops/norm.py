"""Normalisation and regularisation: batchnorm, layernorm, dropout (all shape-preserving)."""
import numpy as np

from dslc.kernels.nn import wants
from dslc.ops.common import require_known, shp
from dslc.ops.registry import Case, Op, Param, ShapeError, WeightSpec, register
from dslc.types import TensorType


def _bn_infer(ins, attrs):
    x = ins[0]
    if not 2 <= x.rank <= 5:
        raise ShapeError(f"batchnorm expects a rank 2..5 input [N, C, ...], got {shp(x)} (rank {x.rank})")
    require_known(x.shape[1], "batchnorm: the channel dim (dim 1)", x)
    return [x]


def _bn_weights(ins, attrs):
    c = ins[0].shape[1]
    return {"weight": WeightSpec((c,), "ones"), "bias": WeightSpec((c,), "zeros"),
            "running_mean": WeightSpec((c,), "zeros", trainable=False),
            "running_var": WeightSpec((c,), "ones", trainable=False)}


# ---- numpy executor (dslc/ops/registry.py contract) -------------------------------------------------------
def _bn_axes(x):
    """Reduction axes (all but channels) and the broadcast shape of per-channel vectors."""
    return (0,) + tuple(range(2, x.ndim)), (1, x.shape[1]) + (1,) * (x.ndim - 2)


def batchnorm_forward(ctx, xs, ws, attrs):
    """Training: batch statistics (biased variance to normalise) and an in-place update of the running stats
    (PyTorch convention: unbiased batch variance, running = (1 - momentum) * running + momentum * batch), in
    two compiled passes (dslc/kernels/batchnorm.py). Evaluation: the running statistics. Saves only per-channel
    vectors: the vjp rebuilds x-hat from x."""
    x = xs[0]
    _, bshape = _bn_axes(x)
    if ctx.training:
        from dslc.kernels import batchnorm as KB
        x3 = KB.as_ncs(x)
        c = x.shape[1]
        n = x.size // c
        mean, var, invstd = np.empty(c), np.empty(c), np.empty(c)
        y = np.empty(x.shape, x.dtype)
        KB.forward_train(x3, ws["weight"], ws["bias"], float(attrs["eps"]), y.reshape(x3.shape), mean, var,
                         invstd)
        m = attrs["momentum"]
        rm, rv = ws["running_mean"], ws["running_var"]
        rm *= 1.0 - m
        rm += m * mean.astype(rm.dtype)
        rv *= 1.0 - m
        rv += (m * n / max(n - 1, 1)) * var.astype(rv.dtype)
        return [y], (mean, invstd, True)
    invstd = 1 / np.sqrt(ws["running_var"] + attrs["eps"])
    xhat = (x - ws["running_mean"].reshape(bshape)) * invstd.reshape(bshape)
    y = xhat * ws["weight"].reshape(bshape)
    y += ws["bias"].reshape(bshape)
    return [y], (ws["running_mean"].astype(np.float64), invstd.astype(np.float64), False)


def batchnorm_vjp(ctx, gys, saved, xs, ws, attrs):
    from dslc.kernels import batchnorm as KB
    mean, invstd, training = saved
    gy, x = gys[0], xs[0]
    gy3 = KB.as_ncs(gy)
    c = x.shape[1]
    gw, gb = np.empty(c, gy.dtype), np.empty(c, gy.dtype)
    want = wants(ctx, 0)
    gx = np.empty(gy.shape, gy.dtype) if want else None
    KB.backward(gy3, KB.as_ncs(x), ws["weight"], mean, invstd, training, want,
                gx.reshape(gy3.shape) if want else gy3, gw, gb)
    return [gx], {"weight": gw, "bias": gb}


# ---- ONNX lowering: lower(ctx, node), see dslc/lowering/context.py ---------------------------------------
def batchnorm_lower(ctx, node):
    """Inference form (running statistics); `dslc compile` then folds it into a preceding Conv unless --no-fold-bn."""
    ins = [ctx.x(node)] + [ctx.weight(node, k) for k in ("weight", "bias", "running_mean", "running_var")]
    ctx.emit("BatchNormalization", ins, ctx.out(node), epsilon=float(ctx.attrs(node)["eps"]))


def batchnorm_torch(e):
    """F.batch_norm: batch statistics in training (running ones updated with the same momentum and the unbiased
    batch variance), the running statistics in evaluation."""
    return (f"F.batch_norm({e.x()}, {e.w('running_mean')}, {e.w('running_var')}, {e.w('weight')}, {e.w('bias')}, "
            f"{e.training}, {e.a['momentum']!r}, {e.a['eps']!r})")


BATCHNORM = register(Op(
    name="batchnorm", inputs=("x",), infer=_bn_infer, weights=_bn_weights, short="bn",
    params=(Param("eps", "float", 1e-5), Param("momentum", "float", 0.1,
                                                doc="running = (1 - momentum) * running + momentum * batch")),
    doc="Batch normalisation over axis 1 (channels) of a rank 2..5 input; shape unchanged.",
    cases=[
        Case((TensorType((2, 3, 4, 4)),)),
        Case((TensorType((4, 5)),), {"eps": 1e-3, "momentum": 0.2}, "rank 2"),
        Case((TensorType(("N", 3, 8)),), note="rank 3, symbolic batch"),
    ],
    lower=batchnorm_lower, forward=batchnorm_forward, vjp=batchnorm_vjp, torch=batchnorm_torch,
))


def _ln_infer(ins, attrs):
    x = ins[0]
    if x.rank < 1:
        raise ShapeError(f"layernorm expects an input with at least 1 dim, got a scalar {shp(x)}")
    require_known(x.shape[-1], "layernorm: the last dim", x)
    return [x]


def _ln_weights(ins, attrs):
    c = ins[0].shape[-1]
    return {"weight": WeightSpec((c,), "ones"), "bias": WeightSpec((c,), "zeros")}


def layernorm_forward(ctx, xs, ws, attrs):
    x = xs[0]
    xc = x - x.mean(axis=-1, keepdims=True)
    invstd = 1 / np.sqrt(np.mean(xc * xc, axis=-1, keepdims=True) + attrs["eps"])
    xhat = xc
    xhat *= invstd
    y = xhat * ws["weight"]
    y += ws["bias"]
    return [y], (xhat, invstd)


def layernorm_vjp(ctx, gys, saved, xs, ws, attrs):
    xhat, invstd = saved
    gy = gys[0]
    d = gy.shape[-1]
    gw = (gy * xhat).reshape(-1, d).sum(axis=0)
    gb = gy.reshape(-1, d).sum(axis=0)
    gx = None
    if wants(ctx, 0):
        gxh = gy * ws["weight"]
        gx = gxh - gxh.mean(axis=-1, keepdims=True)
        gx -= xhat * (gxh * xhat).mean(axis=-1, keepdims=True)
        gx *= invstd
    return [gx], {"weight": gw, "bias": gb}


def layernorm_lower(ctx, node):
    ctx.emit("LayerNormalization", [ctx.x(node), ctx.weight(node, "weight"), ctx.weight(node, "bias")],
             ctx.out(node), axis=-1, epsilon=float(ctx.attrs(node)["eps"]))


def layernorm_torch(e):
    return (f"F.layer_norm({e.x()}, ({e.in_types[0].shape[-1]},), {e.w('weight')}, {e.w('bias')}, "
            f"{e.a['eps']!r})")


LAYERNORM = register(Op(
    name="layernorm", inputs=("x",), infer=_ln_infer, weights=_ln_weights, short="ln",
    params=(Param("eps", "float", 1e-5),),
    doc="Layer normalisation over the last dim, with per-feature scale and shift; shape unchanged.",
    cases=[
        Case((TensorType((2, 3, 8)),)),
        Case((TensorType(("N", 4)),), {"eps": 1e-6}, "symbolic batch"),
    ],
    lower=layernorm_lower, forward=layernorm_forward, vjp=layernorm_vjp, torch=layernorm_torch,
))


def _drop_prepare(ins, attrs):
    if not 0.0 <= attrs["p"] < 1.0:
        raise TypeError(f"`p` must be in [0, 1), got {attrs['p']}")
    return attrs


def dropout_forward(ctx, xs, ws, attrs):
    """Inverted dropout: training keeps each element with probability 1 - p (ctx.rng) and scales by 1/(1-p);
    evaluation returns the input itself."""
    x, p = xs[0], attrs["p"]
    if not ctx.training or p == 0.0:
        return [x], None
    mask = (ctx.rng.random(x.shape, dtype=x.dtype) >= p).astype(x.dtype)
    mask *= 1.0 / (1.0 - p)
    return [x * mask], mask


def dropout_vjp(ctx, gys, saved, xs, ws, attrs):
    return [gys[0] if saved is None else gys[0] * saved], {}


def dropout_lower(ctx, node):
    """The identity in inference export: no ONNX node at all."""
    ctx.alias(node, ctx.x(node))


def dropout_torch(e):
    return f"F.dropout({e.x()}, {e.a['p']!r}, {e.training})"


DROPOUT = register(Op(
    name="dropout", inputs=("x",), infer=lambda ins, attrs: [ins[0]], prepare=_drop_prepare, short="drop",
    params=(Param("p", "float", 0.5, doc="drop probability (training only)"),),
    doc="Inverted dropout with drop probability p while training, identity at inference; shape unchanged.",
    cases=[
        Case((TensorType((2, 8)),)),
        Case((TensorType(("N", 3, 4)),), {"p": 0.1}, "symbolic batch"),
    ],
    lower=dropout_lower, forward=dropout_forward, vjp=dropout_vjp, torch=dropout_torch,
))
