"""Shape manipulation and reductions: flatten, reshape, transpose (permute), concat, slice, split, mean,
expand_batch."""
from collections import Counter

import numpy as np

from dslc.ops.common import dim_offset, norm_axis, shp
from dslc.ops.registry import Case, Op, Param, ShapeError, register
from dslc.types import TensorType, dim_add, dim_floordiv, dims_product, is_known


# ---- flatten ------------------------------------------------------------------------------------------------
def _flatten_infer(ins, attrs):
    x = ins[0]
    if x.rank == 0:
        return [x.with_shape((1,))]
    s = norm_axis(attrs["start"], x.rank, "flatten start")
    e = norm_axis(attrs["end"], x.rank, "flatten end")
    if s > e:
        raise ShapeError(f"flatten: start {attrs['start']} comes after end {attrs['end']} for {shp(x)}")
    return [x.with_shape(x.shape[:s] + (dims_product(x.shape[s:e + 1]),) + x.shape[e + 1:])]


# ---- numpy executor (dslc/ops/registry.py contract) -------------------------------------------------------
# Shape ops return views where numpy can (reshape, transpose, slice, split); the executor never writes into
# values or gradients it did not allocate. Integer inputs get no gradient.
def _fgrad(x, make):
    return make() if x.dtype.kind == "f" else None


def flatten_forward(ctx, xs, ws, attrs):
    x = xs[0]
    if x.ndim == 0:
        return [x.reshape(1)], None
    s, e = attrs["start"] % x.ndim, attrs["end"] % x.ndim
    n = 1
    for d in x.shape[s:e + 1]:
        n *= d
    return [x.reshape(x.shape[:s] + (n,) + x.shape[e + 1:])], None


def reshape_vjp(ctx, gys, saved, xs, ws, attrs):
    """The VJP of every pure reshape (flatten, reshape)."""
    return [_fgrad(xs[0], lambda: gys[0].reshape(xs[0].shape))], {}


def flatten_lower(ctx, node):
    """Flatten(axis=1) for the usual [N, ...] -> [N, rest]; otherwise one Reshape."""
    from dslc.lowering.helpers import reshape
    src, dst = ctx.in_types(node)[0], ctx.out_types(node)[0]
    a = ctx.attrs(node)
    if src.rank >= 2 and a["start"] % src.rank == 1 and a["end"] % src.rank == src.rank - 1:
        ctx.emit("Flatten", [ctx.x(node)], ctx.out(node), axis=1)
    elif src.shape == dst.shape:
        ctx.alias(node, ctx.x(node))
    else:
        reshape(ctx, ctx.x(node), src, dst, ctx.out(node))


def flatten_torch(e):
    if e.in_types[0].rank == 0:
        return f"{e.x()}.reshape(1)"
    return f"torch.flatten({e.x()}, {e.a['start']}, {e.a['end']})"


FLATTEN = register(Op(
    name="flatten", inputs=("x",), infer=_flatten_infer, category="shape",
    params=(Param("start", "int", 1), Param("end", "int", -1)),
    doc="Merge dims start..end (inclusive, torch semantics) into one whose size is their product.",
    cases=[
        Case((TensorType((2, 3, 4, 4)),)),
        Case((TensorType(("N", 3, 4, 4)),), note="symbolic batch"),
        Case((TensorType((2, 3, 4, 5)),), {"start": 1, "end": 2}, "middle dims"),
        Case((TensorType((2, "T", 4)),), {"start": 0, "end": 1}, "symbolic dim merged"),
    ],
    lower=flatten_lower, forward=flatten_forward, vjp=reshape_vjp, torch=flatten_torch,
))


# ---- reshape ------------------------------------------------------------------------------------------------
def _factors(dims):
    n, syms = 1, Counter()
    for d in dims:
        if is_known(d):
            n *= d
        else:
            syms[d] += 1
    return n, syms


def _count(dims) -> str:
    """An element count for messages: symbolic factors, then the product of the known ones (N*8192)."""
    n, syms = _factors(dims)
    parts = sorted(syms.elements()) + ([str(n)] if n != 1 or not syms else [])
    return "*".join(parts)


def _reshape_prepare(ins, attrs):
    shape = tuple(attrs["shape"])
    if sum(1 for v in shape if v == -1) > 1:
        raise TypeError(f"`shape` may contain at most one -1, got {list(shape)}")
    if any(v < -1 for v in shape):
        raise TypeError(f"`shape` entries must be positive, 0 (copy the input dim) or -1 (infer), got {list(shape)}")
    attrs = dict(attrs)
    attrs["shape"] = shape
    return attrs


def _reshape_infer(ins, attrs):
    x = ins[0]
    spec = attrs["shape"]
    out = []
    for i, v in enumerate(spec):
        if v == 0:
            if i >= x.rank:
                raise ShapeError(f"reshape: 0 at position {i} copies an input dim, but {shp(x)} has only {x.rank}")
            out.append(x.shape[i])
        else:
            out.append(v)
    n_in, s_in = _factors(x.shape)
    known_out = [d for d in out if d != -1]
    n_out, s_out = _factors(known_out)

    def mismatch():
        shown = shp([d if d != -1 else -1 for d in out])
        n_out_txt = _count(known_out) if -1 not in out else f"a multiple of {_count(known_out)}"
        return ShapeError(f"cannot reshape {shp(x)} ({_count(x.shape)} elements) to {shown} ({n_out_txt} elements)",
                          hint="the element count must stay the same")

    provable = not (s_out - s_in)  # every symbolic output dim also appears in the input
    if -1 in out:
        rest = s_in - s_out
        if provable and n_in % n_out == 0:
            inferred = dims_product([n_in // n_out] + sorted(rest.elements()))
        elif provable and not rest:
            raise mismatch()
        else:  # the count cannot be proven: a symbolic dim
            inferred = dim_floordiv(dims_product(x.shape), dims_product(known_out))
        out = [inferred if d == -1 else d for d in out]
    elif s_in == s_out and n_in != n_out:
        raise mismatch()
    return [x.with_shape(tuple(out))]


def reshape_forward(ctx, xs, ws, attrs):
    x = xs[0]
    return [x.reshape([x.shape[i] if v == 0 else v for i, v in enumerate(attrs["shape"])])], None


def reshape_lower(ctx, node):
    """dslc's shape spec has ONNX's semantics (0 copies the input dim, -1 infers): one Reshape."""
    if ctx.in_types(node)[0].shape == ctx.out_types(node)[0].shape:
        ctx.alias(node, ctx.x(node))
        return
    ctx.emit("Reshape", [ctx.x(node), ctx.ints(ctx.attrs(node)["shape"])], ctx.out(node))


def reshape_torch(e):
    """0 copies the input's dim (ONNX's rule), read from the tensor so symbolic dims stay symbolic."""
    x = e.x()
    dims = [f"{x}.shape[{i}]" if v == 0 else str(v) for i, v in enumerate(e.a["shape"])]
    return f"{x}.reshape({', '.join(dims)}{',' if len(dims) == 1 else ''})"


RESHAPE = register(Op(
    name="reshape", inputs=("x",), infer=_reshape_infer, prepare=_reshape_prepare, category="shape",
    params=(Param("shape", "shape", doc="target shape; 0 copies the input dim at that position, one -1 is inferred"),),
    doc="Reshape to `shape` (ONNX semantics: 0 copies the input dim, -1 takes the rest); element count unchanged.",
    cases=[
        Case((TensorType((2, 3, 4)),), {"shape": [2, 12]}),
        Case((TensorType((2, 3, 4)),), {"shape": [0, -1]}, "0 and -1"),
        Case((TensorType(("N", 3, 4)),), {"shape": [0, -1, 2]}, "symbolic batch via 0"),
        Case((TensorType((2, 12)),), {"shape": [-1, 3, 4]}, "-1 leading"),
    ],
    lower=reshape_lower, forward=reshape_forward, vjp=reshape_vjp, torch=reshape_torch,
))


# ---- transpose ----------------------------------------------------------------------------------------------
def _transpose_infer(ins, attrs):
    x = ins[0]
    perm = tuple(attrs["perm"])
    if sorted(perm) != list(range(x.rank)):
        raise ShapeError(f"transpose: perm {list(perm)} is not a permutation of 0..{x.rank - 1} for {shp(x)}",
                         hint=f"give each of the {x.rank} axes exactly once")
    return [x.with_shape(tuple(x.shape[p] for p in perm))]


def transpose_forward(ctx, xs, ws, attrs):
    return [xs[0].transpose([p % xs[0].ndim for p in attrs["perm"]])], None


def transpose_vjp(ctx, gys, saved, xs, ws, attrs):
    inv = np.argsort([p % xs[0].ndim for p in attrs["perm"]])
    return [_fgrad(xs[0], lambda: gys[0].transpose(inv))], {}


def transpose_lower(ctx, node):
    perm = [int(p) % ctx.in_types(node)[0].rank for p in ctx.attrs(node)["perm"]]
    if perm == sorted(perm):
        ctx.alias(node, ctx.x(node))
        return
    ctx.emit("Transpose", [ctx.x(node)], ctx.out(node), perm=perm)


def transpose_torch(e):
    return f"{e.x()}.permute{tuple(e.a['perm'])}"


TRANSPOSE = register(Op(
    name="transpose", inputs=("x",), infer=_transpose_infer, category="shape",
    params=(Param("perm", "ints", doc="output axis i is input axis perm[i]"),),
    doc="Permute the axes: output dim i = input dim perm[i].",
    cases=[
        Case((TensorType((2, 3)),), {"perm": [1, 0]}),
        Case((TensorType(("N", 3, 4, 5)),), {"perm": [0, 2, 3, 1]}, "NCHW -> NHWC, symbolic batch"),
        Case((TensorType((2, 3, 4)),), {"perm": [0, 2, 1]}),
    ],
    lower=transpose_lower, forward=transpose_forward, vjp=transpose_vjp, torch=transpose_torch,
), aliases=("permute",))


# ---- concat -------------------------------------------------------------------------------------------------
def _concat_infer(ins, attrs):
    if not ins:
        raise ShapeError("concat needs at least one input")
    first = ins[0]
    if first.rank == 0:
        raise ShapeError("concat cannot join scalars", operand=0)
    axis = norm_axis(attrs["axis"], first.rank)
    total = first.shape[axis]
    for j, t in enumerate(ins[1:], start=1):
        if t.rank != first.rank:
            raise ShapeError(f"cannot concat {shp(first)} with {shp(t)} along axis {attrs['axis']}: ranks differ "
                             f"({first.rank} vs {t.rank})", operand=j)
        if t.dtype != first.dtype:
            raise ShapeError(f"cannot concat {first} with {t}: dtypes differ ({first.dtype} vs {t.dtype})",
                             operand=j)
        for i, (a, b) in enumerate(zip(first.shape, t.shape)):
            if i != axis and a != b:
                raise ShapeError(f"cannot concat {shp(first)} with {shp(t)} along axis {attrs['axis']}: dim {i} "
                                 f"differs ({a} vs {b})",
                                 hint="all dims except the concat axis must match", operand=j)
        total = dim_add(total, t.shape[axis])
    return [first.with_shape(first.shape[:axis] + (total,) + first.shape[axis + 1:])]


def concat_forward(ctx, xs, ws, attrs):
    return [np.concatenate(xs, axis=attrs["axis"])], None


def concat_vjp(ctx, gys, saved, xs, ws, attrs):
    axis = attrs["axis"] % xs[0].ndim
    cuts = np.cumsum([x.shape[axis] for x in xs])[:-1]
    parts = np.split(gys[0], cuts, axis=axis)
    return [p if x.dtype.kind == "f" else None for p, x in zip(parts, xs)], {}


def concat_lower(ctx, node):
    xs = ctx.inputs(node)
    if len(xs) == 1:
        ctx.alias(node, xs[0])
        return
    ctx.emit("Concat", xs, ctx.out(node), axis=ctx.attrs(node)["axis"])


def concat_torch(e):
    return f"torch.cat([{', '.join(e.xs)}], dim={e.a['axis']})"


CONCAT = register(Op(
    name="concat", inputs=("*xs",), infer=_concat_infer, category="shape",
    params=(Param("axis", "int", 1),),
    doc="Join tensors along `axis`; all other dims must match; the axis sizes add up.",
    cases=[
        Case((TensorType((2, 3, 4, 4)), TensorType((2, 5, 4, 4)))),
        Case((TensorType(("N", 2, 4)), TensorType(("N", 3, 4)), TensorType(("N", 1, 4))), note="three inputs"),
        Case((TensorType((2, 3)), TensorType((2, 4))), {"axis": -1}, "negative axis"),
        Case((TensorType((1, 4)), TensorType(("N", 4))), {"axis": 0}, "symbolic along the axis"),
    ],
    lower=concat_lower, forward=concat_forward, vjp=concat_vjp, torch=concat_torch,
))


# ---- slice / split ------------------------------------------------------------------------------------------
_BIG = 2 ** 31 - 1


def _slice_prepare(ins, attrs):
    if attrs["step"] == 0:
        raise TypeError("`step` must not be 0")
    return attrs


def _slice_infer(ins, attrs):
    x = ins[0]
    axis = norm_axis(attrs["axis"], x.rank)
    d = x.shape[axis]
    start, end, step = attrs["start"], attrs["end"], attrs["step"]
    if is_known(d):
        n = len(range(*slice(start, end, step).indices(d)))
        if n == 0:
            raise ShapeError(f"slice [{start}:{end}:{step}] of dim {axis} (size {d}) of {shp(x)} is empty")
    elif step == 1 and start >= 0 and end >= _BIG:
        n = dim_offset(d, -start)
    elif step > 0 and 0 <= start < end < _BIG:
        n = len(range(start, end, step))  # a fixed-size slice: the symbolic dim is assumed large enough
    elif step == 1 and start < 0 and end >= _BIG:
        n = -start
    else:
        n = f"slice({d},{start},{end},{step})"
    return [x.with_shape(x.shape[:axis] + (n,) + x.shape[axis + 1:])]


def _slice_index(x, attrs):
    axis = attrs["axis"] % x.ndim
    return (slice(None),) * axis + (slice(attrs["start"], attrs["end"], attrs["step"]),)


def slice_forward(ctx, xs, ws, attrs):
    return [xs[0][_slice_index(xs[0], attrs)]], None


def slice_vjp(ctx, gys, saved, xs, ws, attrs):
    x = xs[0]
    if x.dtype.kind != "f":
        return [None], {}
    gx = np.zeros(x.shape, gys[0].dtype)
    gx[_slice_index(x, attrs)] = gys[0]
    return [gx], {}


def slice_lower(ctx, node):
    a = ctx.attrs(node)
    ins = [ctx.x(node), ctx.ints([a["start"]], "starts"), ctx.ints([a["end"]], "ends"), ctx.ints([a["axis"]], "axes")]
    if a["step"] != 1:
        ins.append(ctx.ints([a["step"]], "steps"))
    ctx.emit("Slice", ins, ctx.out(node))


def slice_torch(e):
    a = e.a
    if a["step"] is not None and a["step"] < 0:
        raise ValueError("slice with a negative step has no PyTorch lowering")
    axis = a["axis"] % e.in_types[0].rank
    part = ":".join("" if v is None else str(v) for v in (a["start"], a["end"], a["step"]))
    return f"{e.x()}[{':, ' * axis}{part}]"


SLICE = register(Op(
    name="slice", inputs=("x",), infer=_slice_infer, prepare=_slice_prepare, category="shape",
    params=(Param("axis", "int"), Param("start", "int"), Param("end", "int"), Param("step", "int", 1)),
    doc="x[start:end:step] along `axis` with python semantics (negative indices count from the end, clamped).",
    cases=[
        Case((TensorType((2, 8, 4)),), {"axis": 1, "start": 2, "end": 6}),
        Case((TensorType((2, 8)),), {"axis": -1, "start": -3, "end": 100}, "negative start, clamped end"),
        Case((TensorType((2, 3, 8)),), {"axis": 2, "start": 0, "end": 8, "step": 3}, "step"),
        Case((TensorType(("N", 5, 4)),), {"axis": 1, "start": 0, "end": 1}, "class token, symbolic batch"),
    ],
    lower=slice_lower, forward=slice_forward, vjp=slice_vjp, torch=slice_torch,
))


def _split_prepare(ins, attrs):
    if not attrs["sizes"] or any(s <= 0 for s in attrs["sizes"]):
        raise TypeError(f"`sizes` must be positive integers, got {list(attrs['sizes'])}")
    return attrs


def _split_infer(ins, attrs):
    x = ins[0]
    axis = norm_axis(attrs["axis"], x.rank)
    d = x.shape[axis]
    sizes = attrs["sizes"]
    if is_known(d) and sum(sizes) != d:
        raise ShapeError(f"split sizes {list(sizes)} sum to {sum(sizes)}, but dim {axis} of {shp(x)} is {d}",
                         hint="the sizes must add up to the split dim")
    return [x.with_shape(x.shape[:axis] + (s,) + x.shape[axis + 1:]) for s in sizes]


def split_forward(ctx, xs, ws, attrs):
    x = xs[0]
    return np.split(x, np.cumsum(attrs["sizes"])[:-1], axis=attrs["axis"] % x.ndim), None


def split_vjp(ctx, gys, saved, xs, ws, attrs):
    """Outputs that get no gradient (None) contribute zeros."""
    x = xs[0]
    if x.dtype.kind != "f":
        return [None], {}
    axis = attrs["axis"] % x.ndim
    dt = next((g.dtype for g in gys if g is not None), x.dtype)
    parts = [g if g is not None else np.zeros(x.shape[:axis] + (s,) + x.shape[axis + 1:], dt)
             for g, s in zip(gys, attrs["sizes"])]
    return [np.concatenate(parts, axis=axis)], {}


def split_lower(ctx, node):
    a = ctx.attrs(node)
    if len(a["sizes"]) == 1:
        ctx.alias(node, ctx.x(node))
        return
    outs = [ctx.out(node, i) for i in range(len(a["sizes"]))]
    ctx.emit("Split", [ctx.x(node), ctx.ints(a["sizes"], "split")], outs, axis=a["axis"])


def split_torch(e):
    return f"torch.split({e.x()}, {list(e.a['sizes'])}, dim={e.a['axis']})"


SPLIT = register(Op(
    name="split", inputs=("x",), infer=_split_infer, prepare=_split_prepare, category="shape",
    params=(Param("sizes", "ints", doc="one size per output"), Param("axis", "int", 1)),
    doc="Split along `axis` into len(sizes) outputs of those sizes (they must sum to the dim).",
    cases=[
        Case((TensorType((2, 6, 4)),), {"sizes": [2, 4]}),
        Case((TensorType(("N", 4, 6)),), {"sizes": [2, 2, 2], "axis": -1}, "three outputs, symbolic batch"),
    ],
    lower=split_lower, forward=split_forward, vjp=split_vjp, torch=split_torch,
))


# ---- mean ---------------------------------------------------------------------------------------------------
def reduce_infer_for(name):
    """The shape rule of a reduction over attrs["axis"] (mean, sum, max)."""
    def infer(ins, attrs):
        x = ins[0]
        axes = sorted(norm_axis(a, x.rank) for a in attrs["axis"])
        if len(set(axes)) != len(axes):
            raise ShapeError(f"{name}: axis {list(attrs['axis'])} names an axis twice for {shp(x)}")
        if attrs["keepdims"]:
            out = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
        else:
            out = tuple(d for i, d in enumerate(x.shape) if i not in axes)
        return [x.with_shape(out)]
    return infer


_mean_infer = reduce_infer_for("mean")


def _mean_prepare(ins, attrs):
    attrs = dict(attrs)
    if not attrs["axis"]:
        raise TypeError("`axis` must name at least one axis")
    if ins and all(-ins[0].rank <= a < ins[0].rank for a in attrs["axis"]):
        attrs["axes"] = tuple(sorted({a % ins[0].rank for a in attrs["axis"]}))
    return attrs


def _mean_axes(x, attrs):
    return attrs.get("axes") or tuple(sorted({a % x.ndim for a in attrs["axis"]}))


def mean_forward(ctx, xs, ws, attrs):
    x = xs[0]
    y = x.mean(axis=_mean_axes(x, attrs), keepdims=attrs["keepdims"])
    return [np.asarray(y if x.dtype.kind == "f" else y.astype(x.dtype))], None


def mean_vjp(ctx, gys, saved, xs, ws, attrs):
    x = xs[0]
    if x.dtype.kind != "f":
        return [None], {}
    axes = _mean_axes(x, attrs)
    n = 1
    for a in axes:
        n *= x.shape[a]
    g = gys[0] if attrs["keepdims"] else np.expand_dims(gys[0], axes)
    gx = np.empty(x.shape, gys[0].dtype)
    np.multiply(g, 1.0 / n, out=gx)
    return [gx], {}


def mean_lower(ctx, node):
    a = ctx.attrs(node)
    r = ctx.in_types(node)[0].rank
    axes = sorted({ax % r for ax in a["axis"]})
    ctx.reduce("ReduceMean", ctx.x(node), axes, ctx.out(node), keepdims=a["keepdims"])


def reduce_torch_for(method):
    """x.<method>(dim=axes, keepdim=...) for mean / sum / amax."""
    def lower(e):
        axes = e.a.get("axes") or tuple(sorted({a % e.in_types[0].rank for a in e.a["axis"]}))
        return f"{e.x()}.{method}(dim={tuple(axes)}, keepdim={e.a['keepdims']})"
    return lower


mean_torch = reduce_torch_for("mean")


MEAN = register(Op(
    name="mean", inputs=("x",), infer=_mean_infer, prepare=_mean_prepare, category="shape",
    params=(Param("axis", "ints", doc="an axis or a list of axes"), Param("keepdims", "bool", False)),
    doc="Mean over `axis` (int or list); those dims are dropped, or kept as 1 with keepdims. "
        "attrs[\"axes\"] holds them normalised (non-negative, sorted).",
    cases=[
        Case((TensorType((2, 3, 4)),), {"axis": 1}),
        Case((TensorType((2, 3, 4, 4)),), {"axis": [2, 3], "keepdims": True}, "spatial, keepdims"),
        Case((TensorType(("N", "T", 8)),), {"axis": -2}, "mean over tokens, symbolic"),
    ],
    lower=mean_lower, forward=mean_forward, vjp=mean_vjp, torch=mean_torch,
))


# ---- expand_batch -------------------------------------------------------------------------------------------
def _expand_batch_infer(ins, attrs):
    t, like = ins
    if t.rank < 1 or t.shape[0] != 1:
        raise ShapeError(f"expand_batch expects its first input to have shape [1, ...], got {shp(t)}", operand=0)
    if like.rank < 1:
        raise ShapeError(f"expand_batch needs `like` with a batch dim, got a scalar {shp(like)}", operand=1)
    return [t.with_shape((like.shape[0],) + t.shape[1:])]


def expand_batch_forward(ctx, xs, ws, attrs):
    t, like = xs
    return [np.repeat(t, like.shape[0], axis=0)], None


def expand_batch_vjp(ctx, gys, saved, xs, ws, attrs):
    """`like` only lends its batch size: its gradient is zero (None)."""
    return [_fgrad(xs[0], lambda: gys[0].sum(axis=0, keepdims=True)), None], {}


def expand_batch_lower(ctx, node):
    """Expand t [1, ...] to [B, 1, ...]-broadcast shape; B read from `like` at run time when symbolic."""
    t, like = ctx.inputs(node)
    tt, lt = ctx.in_types(node)
    b = lt.shape[0]
    ones = [1] * (tt.rank - 1)
    if isinstance(b, int):
        shape = ctx.ints([b] + ones)
    else:
        shape = ctx.emit("Shape", [like], None, start=0, end=1)
        if ones:
            shape = ctx.emit("Concat", [shape, ctx.ints(ones)], None, axis=0)
    ctx.emit("Expand", [t, shape], ctx.out(node))


def expand_batch_torch(e):
    return f"{e.x(0)}.expand({e.x(1)}.shape[0], *{e.x(0)}.shape[1:])"


EXPAND_BATCH = register(Op(
    name="expand_batch", inputs=("t", "like"), infer=_expand_batch_infer, category="shape",
    doc="Broadcast t [1, ...] along axis 0 to like's batch size: -> [like.shape[0], *t.shape[1:]] "
        "(e.g. ViT class tokens).",
    cases=[
        Case((TensorType((1, 1, 8)), TensorType((2, 4, 8)))),
        Case((TensorType((1, 1, 4)), TensorType(("N", 3, 4))), note="symbolic batch"),
    ],
    lower=expand_batch_lower, forward=expand_batch_forward, vjp=expand_batch_vjp, torch=expand_batch_torch,
))
