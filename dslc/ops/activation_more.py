"""More pointwise activations (MobileNet / EfficientNet / modern recipes): relu6, silu, hardswish, hardsigmoid,
softplus, elu, mish, clip. Same contract as dslc/ops/activation.py; formulas are PyTorch's (hardsigmoid is
relu6(x + 3) / 6, as in torch.nn.Hardsigmoid, i.e. ONNX HardSigmoid with alpha=1/6, beta=0.5)."""
import numpy as np

from dslc.kernels import nn as K
from dslc.ops.activation import _pointwise, _unary_lower
from dslc.ops.registry import Case, Param


def _softplus(x):
    """log(1 + exp(x)) without overflow."""
    return np.logaddexp(x, 0.0).astype(x.dtype, copy=False)


def _mask_grad(gy, mask, slope=1.0):
    g = mask.astype(gy.dtype)
    if slope != 1.0:
        g *= slope
    g *= gy
    return g


# ---- clip(min, max) and relu6 = clip(0, 6) ---------------------------------------------------------------------
def _clip_bounds(attrs):
    return attrs.get("min", 0.0), attrs.get("max", 6.0)


def clip_forward(ctx, xs, ws, attrs):
    lo, hi = _clip_bounds(attrs)
    return [np.clip(xs[0], lo, hi)], None


def clip_vjp(ctx, gys, saved, xs, ws, attrs):
    lo, hi = _clip_bounds(attrs)
    x = xs[0]
    return [_mask_grad(gys[0], (x > lo) & (x < hi))], {}


def clip_lower(ctx, node):
    lo, hi = _clip_bounds(ctx.attrs(node))
    ctx.emit("Clip", [ctx.x(node), ctx.const(np.float32(lo), "float32", "lo"), ctx.const(np.float32(hi), "float32", "hi")],
             ctx.out(node))


# ---- silu ------------------------------------------------------------------------------------------------------
def silu_forward(ctx, xs, ws, attrs):
    s = K.sigmoid(xs[0])
    return [xs[0] * s], s


def silu_vjp(ctx, gys, saved, xs, ws, attrs):
    s = saved
    return [gys[0] * (s * (1 + xs[0] * (1 - s)))], {}


def silu_lower(ctx, node):
    x = ctx.x(node)
    ctx.emit("Mul", [x, ctx.emit("Sigmoid", [x])], ctx.out(node))


# ---- hardsigmoid / hardswish -------------------------------------------------------------------------------------
def hardsigmoid_forward(ctx, xs, ws, attrs):
    return [np.clip(xs[0] / 6 + 0.5, 0, 1).astype(xs[0].dtype, copy=False)], None


def hardsigmoid_vjp(ctx, gys, saved, xs, ws, attrs):
    x = xs[0]
    return [_mask_grad(gys[0], (x > -3) & (x < 3), 1.0 / 6)], {}


def hardsigmoid_lower(ctx, node):
    ctx.emit("HardSigmoid", [ctx.x(node)], ctx.out(node), alpha=1.0 / 6, beta=0.5)


def hardswish_forward(ctx, xs, ws, attrs):
    x = xs[0]
    return [x * np.clip(x / 6 + 0.5, 0, 1).astype(x.dtype, copy=False)], None


def hardswish_vjp(ctx, gys, saved, xs, ws, attrs):
    """d/dx = 0 below -3, 1 above 3, x/3 + 1/2 between (PyTorch's hardswish_backward)."""
    x = xs[0]
    mid = np.where(x <= -3, 0.0, np.where(x >= 3, 1.0, x / 3 + 0.5)).astype(gys[0].dtype, copy=False)
    return [gys[0] * mid], {}


# ---- softplus / elu / mish ---------------------------------------------------------------------------------------
def softplus_forward(ctx, xs, ws, attrs):
    return [_softplus(xs[0])], None


def softplus_vjp(ctx, gys, saved, xs, ws, attrs):
    return [gys[0] * K.sigmoid(xs[0])], {}


def elu_forward(ctx, xs, ws, attrs):
    x, a = xs[0], attrs["alpha"]
    neg = np.expm1(np.minimum(x, 0)) * a
    return [np.where(x > 0, x, neg).astype(x.dtype, copy=False)], neg


def elu_vjp(ctx, gys, saved, xs, ws, attrs):
    x, a = xs[0], attrs["alpha"]
    return [gys[0] * np.where(x > 0, 1.0, saved + a).astype(gys[0].dtype, copy=False)], {}


def mish_forward(ctx, xs, ws, attrs):
    x = xs[0]
    t = np.tanh(_softplus(x))
    return [x * t], t


def mish_vjp(ctx, gys, saved, xs, ws, attrs):
    """d/dx x tanh(sp(x)) = t + x (1 - t^2) sigmoid(x)."""
    x, t = xs[0], saved
    return [gys[0] * (t + x * (1 - t * t) * K.sigmoid(x))], {}


def mish_lower(ctx, node):
    """Native Mish from opset 18; x * tanh(softplus(x)) before."""
    x = ctx.x(node)
    if ctx.opset >= 18:
        ctx.emit("Mish", [x], ctx.out(node))
        return
    ctx.emit("Mul", [x, ctx.emit("Tanh", [ctx.emit("Softplus", [x])])], ctx.out(node))


def clip_torch(e):
    lo, hi = _clip_bounds(e.a)
    return f"torch.clamp({e.x()}, {lo!r}, {hi!r})"


RELU6 = _pointwise("relu6", "min(max(x, 0), 6) (MobileNetV2).", forward=clip_forward, vjp=clip_vjp,
                   lower=clip_lower, torch=lambda e: f"F.relu6({e.x()})")
CLIP = _pointwise("clip", "min(max(x, min), max).",
                  (Param("min", "float", doc="lower bound"), Param("max", "float", doc="upper bound")),
                  ({"min": -0.5, "max": 0.7},), forward=clip_forward, vjp=clip_vjp, lower=clip_lower, torch=clip_torch)
CLIP.cases[-1] = Case(CLIP.cases[-1].inputs, {"min": 0.0, "max": 1.0})  # min and max are required
SILU = _pointwise("silu", "x * sigmoid(x) (swish).", forward=silu_forward, vjp=silu_vjp, lower=silu_lower,
                  aliases=("swish",), torch=lambda e: f"F.silu({e.x()})")
HARDSIGMOID = _pointwise("hardsigmoid", "relu6(x + 3) / 6 (PyTorch's nn.Hardsigmoid).",
                         forward=hardsigmoid_forward, vjp=hardsigmoid_vjp, lower=hardsigmoid_lower,
                         torch=lambda e: f"F.hardsigmoid({e.x()})")
HARDSWISH = _pointwise("hardswish", "x * relu6(x + 3) / 6 (MobileNetV3).", forward=hardswish_forward,
                       vjp=hardswish_vjp, lower=_unary_lower("HardSwish"), torch=lambda e: f"F.hardswish({e.x()})")
SOFTPLUS = _pointwise("softplus", "log(1 + exp(x)).", forward=softplus_forward, vjp=softplus_vjp,
                      lower=_unary_lower("Softplus"), torch=lambda e: f"F.softplus({e.x()})")
ELU = _pointwise("elu", "x if x > 0 else alpha * (exp(x) - 1).", (Param("alpha", "float", 1.0),),
                 ({"alpha": 1.0}, {"alpha": 0.5}), forward=elu_forward, vjp=elu_vjp,
                 lower=_unary_lower("Elu", alpha="alpha"), torch=lambda e: f"F.elu({e.x()}, {e.a['alpha']!r})")
MISH = _pointwise("mish", "x * tanh(softplus(x)).", forward=mish_forward, vjp=mish_vjp, lower=mish_lower,
                  torch=lambda e: f"F.mish({e.x()})")
