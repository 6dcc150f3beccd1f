"""embedding(vocab, dim): integer token ids of any shape [..] -> f32 vectors [.., dim] (a table lookup).

The weight is PyTorch's nn.Embedding layout, [vocab, dim], initialised N(0, 1) as PyTorch does. Ids are the
op's integer input (declared `tokens: i64[N, T]`); the front end's dtype rule lets only this slot be integer.
Out-of-range ids: the numpy executor refuses them with a clear error. ONNX Runtime's Gather rejects ids
outside [-vocab, vocab) with an "indices element out of data bounds" failure and -- like numpy -- reads a
negative id in that range from the end of the table, so a served model does not diagnose `-1` ids."""
import numpy as np

from dslc.ops.common import check_positive, numel1, shp
from dslc.ops.registry import Case, Op, Param, ShapeError, WeightSpec, register
from dslc.types import TensorType


def _embedding_prepare(ins, attrs):
    check_positive(attrs, "vocab", "dim")
    return attrs


def _embedding_infer(ins, attrs):
    ids = ins[0]
    if ids.dtype not in ("i64", "i32"):
        raise ShapeError(f"embedding looks up integer token ids, but its input is {ids}",
                         "declare the token input as i64[...], e.g. `tokens: i64[N, T]`", operand=0)
    return [TensorType(ids.shape + (attrs["dim"],), "f32")]


def _embedding_weights(ins, attrs):
    return {"weight": WeightSpec((attrs["vocab"], attrs["dim"]), "normal:1.0",
                                 fan_in=attrs["vocab"], fan_out=attrs["dim"])}


def embedding_forward(ctx, xs, ws, attrs):
    ids, w = xs[0], ws["weight"]
    if ids.size and (ids.min() < 0 or ids.max() >= w.shape[0]):
        from dslc.train.executor import ExecutorError  # lazily: the executor imports the ops
        bad = ids[(ids < 0) | (ids >= w.shape[0])].reshape(-1)[0]
        raise ExecutorError(f"embedding: token id {int(bad)} is out of range for a vocabulary of {w.shape[0]} "
                            f"(ids must be in [0, {w.shape[0] - 1}])")
    return [w[ids]], None


def embedding_vjp(ctx, gys, saved, xs, ws, attrs):
    """Scatter-add the output gradient into the rows looked up: a repeated id accumulates."""
    ids, w = xs[0], ws["weight"]
    gw = np.zeros(w.shape, gys[0].dtype)
    np.add.at(gw, ids.reshape(-1), gys[0].reshape(-1, w.shape[1]))
    return [None], {"weight": gw}


def embedding_lower(ctx, node):
    ctx.emit("Gather", [ctx.weight(node, "weight"), ctx.x(node)], ctx.out(node), axis=0)


EMBEDDING = register(Op(
    name="embedding", inputs=("ids",), infer=_embedding_infer, prepare=_embedding_prepare,
    weights=_embedding_weights, short="emb", int_inputs=(0,),
    params=(Param("vocab", "int", doc="number of token ids"), Param("dim", "int", doc="vector size")),
    doc="Look up integer token ids [..] in a learned [vocab, dim] table: -> f32 [.., dim] (nn.Embedding). "
        "Ids outside [0, vocab) are an executor error; the exported model's Gather (ONNX Runtime) reads ids in "
        "[-vocab, 0) from the table's end and fails outside [-vocab, vocab).",
    cases=[
        Case((TensorType((2, 4), "i64"),), {"vocab": 5, "dim": 3}),
        Case((TensorType(("N", "T"), "i64"),), {"vocab": 4, "dim": 6}, "symbolic batch and length"),
        Case((TensorType((7,), "i32"),), {"vocab": 3, "dim": 2}, "rank 1, i32 ids"),
    ],
    lower=embedding_lower, forward=embedding_forward, vjp=embedding_vjp,
    torch=lambda e: f"F.embedding({e.x()}, {e.w('weight')})",
))
