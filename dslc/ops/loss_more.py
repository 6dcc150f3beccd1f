"""More training losses: l1, smooth_l1 (Huber with PyTorch's beta) and dice (segmentation overlap).
Same executor contract as dslc/ops/loss.py: a 0-d loss of the prediction's dtype."""
import numpy as np

from dslc.kernels import nn as K
from dslc.ops.loss import _same_shape_loss, _scaled
from dslc.ops.registry import Case, Op, Param, ShapeError, register
from dslc.types import TensorType


def _pair_cases():
    return [Case((TensorType((2, 3)), TensorType((2, 3)))),
            Case((TensorType(("N", 1)), TensorType(("N", 1))), note="symbolic batch")]


def _pair_grads(ctx, g):
    return [g if K.wants(ctx, 0) else None, -g if K.wants(ctx, 1) else None]


def l1_forward(ctx, xs, ws, attrs):
    d = xs[0] - xs[1]
    return [np.asarray(np.mean(np.abs(d)), dtype=d.dtype)], d


def l1_vjp(ctx, gys, saved, xs, ws, attrs):
    return _pair_grads(ctx, _scaled(np.sign(saved), gys[0], saved.size)), {}


def smooth_l1_forward(ctx, xs, ws, attrs):
    """0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta (torch.nn.SmoothL1Loss)."""
    d, beta = xs[0] - xs[1], attrs["beta"]
    a = np.abs(d)
    per = np.where(a < beta, 0.5 * d * d / beta, a - 0.5 * beta)
    return [np.asarray(np.mean(per), dtype=d.dtype)], d


def smooth_l1_vjp(ctx, gys, saved, xs, ws, attrs):
    d, beta = saved, attrs["beta"]
    g = np.where(np.abs(d) < beta, d / beta, np.sign(d)).astype(d.dtype, copy=False)
    return _pair_grads(ctx, _scaled(g, gys[0], d.size)), {}


def _beta_prepare(ins, attrs):
    if attrs["beta"] <= 0:
        raise TypeError(f"`beta` must be positive, got {attrs['beta']}")
    return attrs


def _dice_infer(ins, attrs):
    logits = ins[0]
    if logits.rank < 2:
        raise ShapeError(f"dice: logits must be [N, C, *spatial], got {logits}", operand=0)
    return _same_shape_loss("dice", "logits")(ins, attrs)


def _dice_axes(x):
    return _dice_axes_of(x)


def _dice_axes_of(t):
    """The batch and spatial axes of an array or a tensor type (the sums of dice's ratio)."""
    return (0,) + tuple(range(2, t.ndim if hasattr(t, "ndim") else t.rank))


def dice_forward(ctx, xs, ws, attrs):
    """1 - mean_c (2 sum p t + s) / (sum p + sum t + s), p = sigmoid(logits), sums over the batch and space."""
    z, t = xs
    s = attrs["smooth"]
    p = K.sigmoid(z)
    ax = _dice_axes(z)
    inter, denom = (p * t).sum(axis=ax), p.sum(axis=ax) + t.sum(axis=ax)
    dice = (2 * inter + s) / (denom + s)
    return [np.asarray(1.0 - dice.mean(), dtype=z.dtype)], (p, inter, denom)


def dice_vjp(ctx, gys, saved, xs, ws, attrs):
    z, t = xs
    p, inter, denom = saved
    s, c = attrs["smooth"], z.shape[1]
    shape = (1, c) + (1,) * (z.ndim - 2)
    num, den = (2 * inter + s).reshape(shape), (denom + s).reshape(shape)
    # d dice_c / d p = 2 t / den - num / den^2; d / d t = 2 p / den - num / den^2; loss = 1 - mean_c dice_c
    scale = -np.asarray(gys[0]) / c
    gz = gt = None
    if K.wants(ctx, 0):
        gz = ((2 * t / den - num / (den * den)) * (p * (1 - p)) * scale).astype(z.dtype, copy=False)
    if K.wants(ctx, 1):
        gt = ((2 * p / den - num / (den * den)) * scale).astype(z.dtype, copy=False)
    return [gz, gt], {}


L1 = register(Op(
    name="l1", inputs=("pred", "target"), infer=_same_shape_loss("l1", "pred"), category="loss",
    doc="Mean absolute error mean(|pred - target|); same shapes; output a scalar [].",
    cases=_pair_cases(), forward=l1_forward, vjp=l1_vjp, torch=lambda e: f"F.l1_loss({e.x(0)}, {e.x(1)})",
))
SMOOTH_L1 = register(Op(
    name="smooth_l1", inputs=("pred", "target"), infer=_same_shape_loss("smooth_l1", "pred"), category="loss",
    prepare=_beta_prepare, params=(Param("beta", "float", 1.0, doc="where the quadratic part turns linear"),),
    doc="Huber-style loss (torch SmoothL1Loss): 0.5 d^2 / beta for |d| < beta, else |d| - beta / 2; mean.",
    cases=_pair_cases() + [Case((TensorType((3, 4)), TensorType((3, 4))), {"beta": 0.5})],
    forward=smooth_l1_forward, vjp=smooth_l1_vjp,
    torch=lambda e: f"F.smooth_l1_loss({e.x(0)}, {e.x(1)}, beta={e.a['beta']!r})",
))
DICE = register(Op(
    name="dice", inputs=("logits", "target"), infer=_dice_infer, category="loss",
    params=(Param("smooth", "float", 1.0, doc="added to both sides of the ratio (empty masks give 0 loss)"),),
    doc="Dice loss for segmentation masks: logits [N, C, *spatial] (sigmoid per channel) against a float mask of "
        "the same shape; 1 - mean over channels of (2|P.T| + smooth) / (|P| + |T| + smooth); output a scalar [].",
    cases=[Case((TensorType((2, 1, 4, 4)), TensorType((2, 1, 4, 4)))),
           Case((TensorType(("N", 3, 5)), TensorType(("N", 3, 5))), {"smooth": 0.0}, "multi-channel 1-D")],
    forward=dice_forward, vjp=dice_vjp,
    torch=lambda e: f"{e.helper('dice')}({e.x(0)}, {e.x(1)}, {e.a['smooth']!r}, {_dice_axes_of(e.in_types[0])})",
))
