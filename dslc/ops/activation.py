"""Pointwise activations: shape-preserving, no weights."""
import math

import numpy as np

from dslc.kernels import nn as K
from dslc.kernels.special import ndtr
from dslc.ops.common import norm_axis
from dslc.ops.registry import Case, Op, Param, ShapeError, register
from dslc.types import TensorType


def same_type(ins, attrs):
    return [ins[0]]


def _pointwise(name, doc, params=(), cases_attrs=({},), aliases=(), forward=None, vjp=None, lower=None, torch=None,
               vjp_reads_inputs=True):
    return register(Op(
        name=name, inputs=("x",), infer=same_type, params=params, category="activation", doc=doc,
        forward=forward, vjp=vjp, lower=lower, torch=torch, vjp_reads_inputs=vjp_reads_inputs,
        cases=[Case((TensorType((2, 3, 4, 5)),), a) for a in cases_attrs] + [Case((TensorType((3, 7)),))],
    ), aliases)


# ---- numpy executor: forward(ctx, xs, ws, attrs) -> (ys, saved); vjp(ctx, gys, saved, xs, ws, attrs) -> (gxs, gws)
def relu_forward(ctx, xs, ws, attrs):
    from dslc.kernels.jit import relu_forward as kernel
    x = np.ascontiguousarray(xs[0])
    y = np.empty_like(x)
    kernel(x.reshape(-1), y.reshape(-1))
    return [y], y


def relu_vjp(ctx, gys, saved, xs, ws, attrs):
    """gy where y > 0, else 0 (PyTorch's threshold_backward: a NaN / inf gradient at a clamped unit gives 0):
    one compiled pass instead of numpy's compare, bool temporary and multiply (LeNet-5's first relu:
    0.13 -> 0.04 ms)."""
    from dslc.kernels.jit import relu_backward
    gy = np.ascontiguousarray(gys[0])
    gx = np.empty_like(gy)
    relu_backward(gy.reshape(-1), saved.reshape(-1), gx.reshape(-1))
    return [gx], {}


def leaky_relu_forward(ctx, xs, ws, attrs):
    x, a = xs[0], attrs["alpha"]
    if 0.0 <= a <= 1.0:
        return [np.maximum(x, x * a)], None
    return [np.where(x > 0, x, x * a)], None


def leaky_relu_vjp(ctx, gys, saved, xs, ws, attrs):
    gy, a = gys[0], attrs["alpha"]
    slope = (xs[0] > 0).astype(gy.dtype)  # 1 or alpha
    slope *= 1.0 - a
    slope += a
    slope *= gy
    return [slope], {}


def sigmoid_forward(ctx, xs, ws, attrs):
    y = K.sigmoid(xs[0])
    return [y], y


def sigmoid_vjp(ctx, gys, saved, xs, ws, attrs):
    return [gys[0] * saved * (1 - saved)], {}


def tanh_forward(ctx, xs, ws, attrs):
    y = np.tanh(xs[0])
    return [y], y


def tanh_vjp(ctx, gys, saved, xs, ws, attrs):
    return [gys[0] * (1 - saved * saved)], {}


_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def gelu_forward(ctx, xs, ws, attrs):
    x = xs[0]
    cdf = ndtr(x)
    return [x * cdf], cdf


def gelu_vjp(ctx, gys, saved, xs, ws, attrs):
    x = xs[0]
    pdf = np.exp(x * x * -0.5) * _INV_SQRT_2PI
    return [gys[0] * (saved + x * pdf)], {}


# ---- ONNX lowering: lower(ctx, node), see dslc/lowering/context.py ---------------------------------------
def _unary_lower(onnx_op, **attr_map):
    """One ONNX node; attr_map: ONNX attribute name -> dslc attr name."""
    def lower(ctx, node):
        a = ctx.attrs(node)
        ctx.emit(onnx_op, [ctx.x(node)], ctx.out(node), **{k: a[v] for k, v in attr_map.items()})
    return lower


relu_lower = _unary_lower("Relu")
leaky_relu_lower = _unary_lower("LeakyRelu", alpha="alpha")
sigmoid_lower = _unary_lower("Sigmoid")
tanh_lower = _unary_lower("Tanh")
softmax_lower = _unary_lower("Softmax", axis="axis")
log_softmax_lower = _unary_lower("LogSoftmax", axis="axis")


def gelu_lower(ctx, node):
    """Native Gelu (opset >= 20); the exact erf form 0.5 * x * (1 + erf(x / sqrt(2))) before that."""
    x = ctx.x(node)
    if ctx.opset >= 20:
        ctx.emit("Gelu", [x], ctx.out(node))
        return
    e = ctx.emit("Erf", [ctx.emit("Mul", [x, ctx.const(0.7071067811865476, "float32", "inv_sqrt2")])])
    h = ctx.emit("Mul", [x, ctx.const(0.5, "float32", "half")])
    ctx.emit("Mul", [h, ctx.emit("Add", [e, ctx.const(1.0, "float32", "one")])], ctx.out(node))


RELU = _pointwise("relu", "max(x, 0).", forward=relu_forward, vjp=relu_vjp, lower=relu_lower,
                  torch=lambda e: f"F.relu({e.x()})", vjp_reads_inputs=False)
LEAKY_RELU = _pointwise("leaky_relu", "x if x > 0 else alpha * x.", (Param("alpha", "float", 0.01),),
                        ({"alpha": 0.01}, {"alpha": 0.2}), forward=leaky_relu_forward, vjp=leaky_relu_vjp,
                        lower=leaky_relu_lower, torch=lambda e: f"F.leaky_relu({e.x()}, {e.a['alpha']!r})")
SIGMOID = _pointwise("sigmoid", "1 / (1 + exp(-x)).", forward=sigmoid_forward, vjp=sigmoid_vjp, lower=sigmoid_lower,
                    torch=lambda e: f"torch.sigmoid({e.x()})")
TANH = _pointwise("tanh", "Hyperbolic tangent.", forward=tanh_forward, vjp=tanh_vjp, lower=tanh_lower,
                 torch=lambda e: f"torch.tanh({e.x()})")
GELU = _pointwise("gelu", "Gaussian error linear unit (exact, erf form).", forward=gelu_forward, vjp=gelu_vjp,
                  lower=gelu_lower, torch=lambda e: f"F.gelu({e.x()})")


def _softmax_infer(ins, attrs):
    x = ins[0]
    if x.rank < 1:
        # unnamed: shared by softmax and log_softmax, the elaborator prefixes the op's name
        raise ShapeError(f"needs an input with at least 1 dim, got a scalar {x.shape_str()}")
    norm_axis(attrs["axis"], x.rank)
    return [x]


def _softmax_like(name, doc, forward=None, vjp=None, lower=None, torch=None):
    return register(Op(
        name=name, inputs=("x",), infer=_softmax_infer, params=(Param("axis", "int", -1),), category="activation",
        doc=doc, forward=forward, vjp=vjp, lower=lower, torch=torch,
        cases=[Case((TensorType((2, 5)),)), Case((TensorType((2, 3, 4)),), {"axis": 1}),
               Case((TensorType(("N", 4, 6)),), {"axis": -1}, "symbolic batch")],
    ))


def softmax_forward(ctx, xs, ws, attrs):
    y = K.softmax(xs[0], attrs["axis"])
    return [y], y


def softmax_vjp(ctx, gys, saved, xs, ws, attrs):
    return [K.softmax_grad(gys[0], saved, attrs["axis"])], {}


def log_softmax_forward(ctx, xs, ws, attrs):
    y = K.log_softmax(xs[0], attrs["axis"])
    return [y], y


def log_softmax_vjp(ctx, gys, saved, xs, ws, attrs):
    return [K.log_softmax_grad(gys[0], saved, attrs["axis"])], {}


SOFTMAX = _softmax_like("softmax", "exp(x) / sum(exp(x)) along `axis` (default last); shape unchanged.",
                        forward=softmax_forward, vjp=softmax_vjp, lower=softmax_lower,
                        torch=lambda e: f"torch.softmax({e.x()}, dim={e.a['axis']})")
LOG_SOFTMAX = _softmax_like("log_softmax", "x - logsumexp(x) along `axis` (default last); shape unchanged.",
                            forward=log_softmax_forward, vjp=log_softmax_vjp, lower=log_softmax_lower,
                            torch=lambda e: f"torch.log_softmax({e.x()}, dim={e.a['axis']})")
