"""Normalisation and regularisation: batchnorm, layernorm, dropout (all shape-preserving)."""
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


# ---- ONNX lowering: lower(ctx, node), see dslc/lowering/context.py ---------------------------------------
def batchnorm_lower(ctx, node):
    """Inference form (running statistics); `dslc compile --fold-bn` folds it into a preceding Conv."""
    ins = [ctx.x(node)] + [ctx.weight(node, k) for k in ("weight", "bias", "running_mean", "running_var")]
    ctx.emit("BatchNormalization", ins, ctx.out(node), epsilon=float(ctx.attrs(node)["eps"]))


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
    lower=batchnorm_lower,
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


def layernorm_lower(ctx, node):
    ctx.emit("LayerNormalization", [ctx.x(node), ctx.weight(node, "weight"), ctx.weight(node, "bias")],
             ctx.out(node), axis=-1, epsilon=float(ctx.attrs(node)["eps"]))


LAYERNORM = register(Op(
    name="layernorm", inputs=("x",), infer=_ln_infer, weights=_ln_weights, short="ln",
    params=(Param("eps", "float", 1e-5),),
    doc="Layer normalisation over the last dim, with per-feature scale and shift; shape unchanged.",
    cases=[
        Case((TensorType((2, 3, 8)),)),
        Case((TensorType(("N", 4)),), {"eps": 1e-6}, "symbolic batch"),
    ],
    lower=layernorm_lower,
))


def _drop_prepare(ins, attrs):
    if not 0.0 <= attrs["p"] < 1.0:
        raise TypeError(f"`p` must be in [0, 1), got {attrs['p']}")
    return attrs


def dropout_lower(ctx, node):
    """The identity in inference export: no ONNX node at all."""
    ctx.alias(node, ctx.x(node))


DROPOUT = register(Op(
    name="dropout", inputs=("x",), infer=lambda ins, attrs: [ins[0]], prepare=_drop_prepare, short="drop",
    params=(Param("p", "float", 0.5, doc="drop probability (training only)"),),
    doc="Inverted dropout with drop probability p while training, identity at inference; shape unchanged.",
    cases=[
        Case((TensorType((2, 8)),)),
        Case((TensorType(("N", 3, 4)),), {"p": 0.1}, "symbolic batch"),
    ],
    lower=dropout_lower,
))
