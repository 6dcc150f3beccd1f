"""Multi-head self-attention, parameterised like torch.nn.MultiheadAttention (same parameter count)."""
from dslc.kernels import nn as K
from dslc.ops.common import check_positive, dim1, require_known, require_rank, shp
from dslc.ops.registry import Case, Op, Param, ShapeError, WeightSpec, register
from dslc.types import TensorType


def _attn_prepare(ins, attrs):
    check_positive(attrs, "heads")
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


# ---- numpy executor (dslc/ops/registry.py contract): batched GEMMs in dslc/kernels/nn.py -------------------
def attention_forward(ctx, xs, ws, attrs):
    y, saved = K.attention_forward(xs[0], ws["in_weight"], ws.get("in_bias") if attrs["bias"] else None,
                                   ws["out_weight"], ws.get("out_bias") if attrs["bias"] else None,
                                   attrs["heads"], attrs["causal"])
    return [y], saved


def attention_vjp(ctx, gys, saved, xs, ws, attrs):
    gx, gwi, gbi, gwo, gbo = K.attention_backward(gys[0], saved, ws["in_weight"], ws["out_weight"],
                                                  attrs["heads"], need_x=K.wants(ctx, 0))
    gws = {"in_weight": gwi, "out_weight": gwo}
    if attrs["bias"]:
        gws.update(in_bias=gbi, out_bias=gbo)
    return [gx], gws


# ---- ONNX lowering: lower(ctx, node), see dslc/lowering/context.py ---------------------------------------
def attention_lower(ctx, node):
    """A compact standard-op subgraph (no com.microsoft ops): packed qkv MatMul (+ bias), one Reshape +
    Transpose + Split into heads, scores with 1/sqrt(head dim) folded into the query projection, optional
    causal mask, Softmax, MatMul, heads merged (Transpose + Reshape), output projection. Derived initializers:
    `<node>.in_weight.T` (transposed, query rows scaled), `<node>.in_bias.scaled`, `<node>.out_weight.T`."""
    import numpy as np
    a = ctx.attrs(node)
    x = ctx.x(node)
    _n, t, d = ctx.in_types(node)[0].shape
    h = a["heads"]
    dh = d // h
    scale = np.float32(1.0 / np.sqrt(dh))
    w_in = ctx.weight_array(node, "in_weight").astype(np.float32)              # [3D, D]
    w_in = np.concatenate([w_in[:d] * scale, w_in[d:]])
    qkv = ctx.emit("MatMul", [x, ctx.derived(node, "in_weight.T", w_in.T)])     # [N, T, 3D]
    if a["bias"]:
        b_in = ctx.weight_array(node, "in_bias").astype(np.float32)
        b_in = np.concatenate([b_in[:d] * scale, b_in[d:]])
        qkv = ctx.emit("Add", [qkv, ctx.derived(node, "in_bias.scaled", b_in)])
    heads = ctx.emit("Reshape", [qkv, ctx.ints([0, 0, 3 * h, dh])])             # [N, T, 3h, dh]
    heads = ctx.emit("Transpose", [heads], None, perm=[0, 2, 1, 3])             # [N, 3h, T, dh]
    q, k, v = ctx.emit("Split", [heads, ctx.ints([h, h, h], "split")], None, n_outputs=3, axis=1)
    scores = ctx.emit("MatMul", [q, ctx.emit("Transpose", [k], None, perm=[0, 1, 3, 2])])   # [N, h, T, T]
    if a["causal"]:
        if isinstance(t, int):
            mask = ctx.const(np.triu(np.full((t, t), -np.inf, np.float32), 1), None, "causal_mask")
        else:
            from onnx import numpy_helper
            tt = ctx.emit("Shape", [x], None, start=1, end=2)
            full = ctx.emit("ConstantOfShape", [ctx.emit("Concat", [tt, tt], None, axis=0)],
                            value=numpy_helper.from_array(np.array([-np.inf], np.float32)))
            mask = ctx.emit("Trilu", [full, ctx.const(np.int64(1), None, "one")], upper=1)
        scores = ctx.emit("Add", [scores, mask])
    probs = ctx.emit("Softmax", [scores], None, axis=-1)
    merged = ctx.emit("Transpose", [ctx.emit("MatMul", [probs, v])], None, perm=[0, 2, 1, 3])  # [N, T, h, dh]
    merged = ctx.emit("Reshape", [merged, ctx.ints([0, 0, d])])                  # [N, T, D]
    w_out = ctx.derived(node, "out_weight.T", ctx.weight_array(node, "out_weight").T)
    if a["bias"]:
        ctx.emit("Add", [ctx.emit("MatMul", [merged, w_out]), ctx.weight(node, "out_bias")], ctx.out(node))
    else:
        ctx.emit("MatMul", [merged, w_out], ctx.out(node))


# ---- PyTorch lowering: torch(e), see dslc/ops/registry.py ------------------------------------------------
def attention_torch(e):
    b = e.a["bias"]
    return (f"{e.helper('attention')}({e.x()}, {e.w('in_weight')}, {e.w('in_bias') if b else None}, "
            f"{e.w('out_weight')}, {e.w('out_bias') if b else None}, {e.a['heads']}, {e.a['causal']})")


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
    lower=attention_lower, forward=attention_forward, vjp=attention_vjp, torch=attention_torch,
))
