"""Multi-head self-attention, parameterised like torch.nn.MultiheadAttention (same parameter count)."""
from dslc.ops.common import dim1, require_known, require_rank, shp
from dslc.ops.registry import Case, Op, Param, ShapeError, WeightSpec, register
from dslc.types import TensorType


def _attn_prepare(ins, attrs):
    if attrs["heads"] <= 0:
        raise TypeError(f"`heads` must be a positive integer, got {attrs['heads']}")
    return attrs


def _attn_infer(ins, attrs):
    x = ins[0]
    require_rank(x, (3,), "attention", layout="N, T, D")
    d = require_known(x.shape[2], "attention: the model dim D (dim 2)", x)
    if d % attrs["heads"]:
        raise ShapeError(f"attention: model dim {d} of {shp(x)} is not divisible by heads={attrs['heads']}",
                         hint="choose heads dividing the model dim")
    return [x]


def _attn_weights(ins, attrs):
    d = ins[0].shape[2]
    w = {"in_weight": WeightSpec((3 * d, d), "fan_in", fan_in=d, fan_out=3 * d)}
    if attrs["bias"]:
        w["in_bias"] = WeightSpec((3 * d,), "zeros")
    w["out_weight"] = WeightSpec((d, d), "fan_in", fan_in=d, fan_out=d)
    if attrs["bias"]:
        w["out_bias"] = WeightSpec((d,), "zeros")
    return w


def _attn_macs(ins, outs, attrs):
    n, t, d = (dim1(v) for v in ins[0].shape)
    return n * (4 * t * d * d + 2 * t * t * d)


ATTENTION = register(Op(
    name="attention", inputs=("x",), infer=_attn_infer, prepare=_attn_prepare, weights=_attn_weights,
    macs=_attn_macs, short="attn",
    params=(Param("heads", "int", doc="number of heads; must divide D"), Param("causal", "bool", False),
            Param("bias", "bool", True)),
    doc="Multi-head self-attention over [N, T, D] -> [N, T, D] (packed q/k/v projection in_weight [3D, D], "
        "out projection [D, D]); causal masks future positions.",
    cases=[
        Case((TensorType((2, 4, 8)),), {"heads": 2}),
        Case((TensorType((1, 3, 8)),), {"heads": 4, "causal": True, "bias": False}, "causal, no bias"),
        Case((TensorType(("N", "T", 8)),), {"heads": 1}, "symbolic batch and length"),
    ],
))
