"""drop_path(p): stochastic depth (Huang et al. 2016) as in timm / torchvision's StochasticDepth(mode="row").

While training each sample of the batch is kept with probability 1 - p and scaled by 1 / (1 - p) -- the whole
residual branch it is applied to drops out for that sample; at inference it is the identity and lowers to no
ONNX node at all."""
import numpy as np

from dslc.ops.norm import _drop_prepare, dropout_lower, dropout_vjp
from dslc.ops.registry import Case, Op, Param, ShapeError, register
from dslc.types import TensorType


def _drop_path_infer(ins, attrs):
    if ins[0].rank < 1:
        raise ShapeError(f"drop_path drops whole samples: it needs a batch dim, got a scalar {ins[0]}")
    return [ins[0]]


def drop_path_forward(ctx, xs, ws, attrs):
    x, p = xs[0], attrs["p"]
    if not ctx.training or p == 0.0:
        return [x], None
    keep = (ctx.rng.random((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype) >= p).astype(x.dtype)
    keep *= 1.0 / (1.0 - p)
    return [x * keep], keep


DROP_PATH = register(Op(
    name="drop_path", inputs=("x",), infer=_drop_path_infer, prepare=_drop_prepare, short="dpath",
    params=(Param("p", "float", 0.1, doc="probability of dropping a sample's branch (training only)"),),
    doc="Stochastic depth: drops the whole input of a sample with probability p while training (scaling the "
        "kept ones by 1/(1-p)); identity at inference and absent from the ONNX.",
    cases=[
        Case((TensorType((8, 3, 4)),), {"p": 0.5}),
        Case((TensorType(("N", 4, 2, 2)),), {"p": 0.2}, "symbolic batch"),
    ],
    lower=dropout_lower, forward=drop_path_forward, vjp=dropout_vjp,
    torch=lambda e: f"{e.helper('drop_path')}({e.x()}, {e.a['p']!r}, {e.training})",
))
