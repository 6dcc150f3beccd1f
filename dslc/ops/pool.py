"""Pooling and resampling: maxpool, avgpool (1-D or 2-D by input rank), global_avgpool, adaptive_avgpool,
upsample.

prepare() normalises kernel/stride to tuples of the pooled rank (stride defaults to kernel) and padding to
explicit ONNX pads attrs["pads"] (begin..., end...); "same" as for conv (None when it needs a symbolic size,
with attrs["auto_pad"] = "SAME_UPPER"). ceil_mode follows ONNX/PyTorch: the last window must start inside the
input plus the left pad.
"""
import numpy as np

from dslc.ops.common import (check_positive, dim_ceildiv, explicit_pads, ntuple, require_rank, same_pads, shp,
                             window_out)
from dslc.ops.registry import Case, Op, Param, ShapeError, register
from dslc.types import TensorType, dim_mul, is_known
from dslc.kernels import pool as KP


def _pool_prepare(ins, attrs):
    attrs = dict(attrs)
    x = ins[0] if ins else None
    nsp = x.rank - 2 if x is not None and x.rank in (3, 4) else len(attrs["kernel"])
    if nsp not in (1, 2):
        nsp = 2
    attrs["kernel"] = ntuple(attrs["kernel"], nsp, "kernel")
    attrs["stride"] = attrs["kernel"] if attrs["stride"] is None else ntuple(attrs["stride"], nsp, "stride")
    check_positive(attrs, "kernel", "stride")
    attrs["auto_pad"] = "NOTSET"
    if attrs["padding"] == "same":
        sizes = x.shape[2:] if x is not None and x.rank == nsp + 2 else ("?",) * nsp
        attrs["pads"] = same_pads(sizes, attrs["kernel"], attrs["stride"], (1,) * nsp)
        if attrs["pads"] is None:
            attrs["auto_pad"] = "SAME_UPPER"
    else:
        attrs["pads"] = explicit_pads(attrs["padding"], nsp)
    if attrs["pads"] is not None:
        for i, k in enumerate(attrs["kernel"]):
            if max(attrs["pads"][i], attrs["pads"][i + nsp]) > k // 2:
                raise TypeError(f"pooling padding must be at most half the kernel, got pads "
                                f"{list(attrs['pads'])} for kernel {list(attrs['kernel'])}")
    return attrs


def _pool_infer_for(name):
    def infer(ins, attrs):
        x = ins[0]
        require_rank(x, (3, 4), name, layout="N, C, W or N, C, H, W")
        nsp = x.rank - 2
        if len(attrs["kernel"]) != nsp:
            raise ShapeError(f"{name}: a {len(attrs['kernel'])}-D kernel does not fit input {shp(x)}")
        k, s, pads = attrs["kernel"], attrs["stride"], attrs["pads"]
        out = []
        for i, n in enumerate(x.shape[2:]):
            if pads is None:
                o = dim_ceildiv(n, s[i])
            else:
                o = window_out(n, k[i], s[i], 1, pads[i], pads[i + nsp], attrs["ceil_mode"])
            if is_known(o) and o <= 0:
                raise ShapeError(
                    f"spatial size shrinks to 0: {name} over input size {n} (dim {i + 2} of {shp(x)}) with kernel "
                    f"{k[i]}, stride {s[i]}, padding {pads[i]}+{pads[i + nsp]} gives size {o}",
                    hint="use a smaller kernel, pool earlier less often, or feed a larger input")
            out.append(o)
        return [x.with_shape(x.shape[:2] + tuple(out))]
    return infer


_POOL_PARAMS = (
    Param("kernel", "ints", doc="window size (int or one per pooled dim)"),
    Param("stride", "ints", None, doc="defaults to kernel"),
    Param("padding", "padding", 0),
    Param("ceil_mode", "bool", False),
)


def _pool_cases(extra=None):
    cases = [
        Case((TensorType((2, 3, 8, 8)),), {"kernel": 2}),
        Case((TensorType((2, 3, 7, 7)),), {"kernel": 3, "stride": 2, "padding": 1}),
        Case((TensorType((1, 2, 7, 7)),), {"kernel": 2, "stride": 2, "ceil_mode": True}, "ceil mode"),
        Case((TensorType((1, 2, 5, 8)),), {"kernel": [2, 3], "stride": [1, 2], "padding": "same"}, "same"),
        Case((TensorType((2, 3, 8)),), {"kernel": 3, "stride": 2}, "1-D pooling"),
        Case((TensorType(("N", 4, 8, 8)),), {"kernel": 2}, "symbolic batch"),
    ]
    return cases + (extra or [])


# ---- numpy executor (dslc/ops/registry.py contract): window loops in dslc/kernels/pool.py -------------------
def _pool_geom(x, attrs):
    """(x as NCHW, geometry): 1-D pooling runs over [N, C, 1, W] with a 1 x k window."""
    k, s, pads = attrs["kernel"], attrs["stride"], attrs["pads"]
    if x.ndim == 3:
        x = x[:, :, None, :]
        k, s = (1, k[0]), (1, s[0])
        pads = None if pads is None else (0, pads[0], 0, pads[1])
    return x, KP.pool_geom(x.shape, k, s, pads, attrs["ceil_mode"])


def maxpool_forward(ctx, xs, ws, attrs):
    x = xs[0]
    x4, g = _pool_geom(x, attrs)
    y, arg = KP.maxpool2d(x4, g)
    return [y.reshape(y.shape[:2] + y.shape[3:]) if x.ndim == 3 else y], (g, y, arg)


def maxpool_vjp(ctx, gys, saved, xs, ws, attrs):
    g, y, arg = saved
    x = xs[0]
    x4 = x[:, :, None, :] if x.ndim == 3 else x
    gx = KP.maxpool2d_grad(gys[0].reshape(y.shape), x4, y, arg, g)
    return [gx.reshape(x.shape)], {}


def avgpool_forward(ctx, xs, ws, attrs):
    x = xs[0]
    x4, g = _pool_geom(x, attrs)
    y = KP.avgpool2d(x4, g, attrs["count_include_pad"])
    return [y.reshape(y.shape[:2] + y.shape[3:]) if x.ndim == 3 else y], g


def avgpool_vjp(ctx, gys, saved, xs, ws, attrs):
    g = saved
    gy = gys[0].reshape(g.N, g.C, g.OH, g.OW)
    return [KP.avgpool2d_grad(gy, g, attrs["count_include_pad"]).reshape(xs[0].shape)], {}


# ---- ONNX lowering: lower(ctx, node), see dslc/lowering/context.py ---------------------------------------
def _pool_lower(onnx_op):
    def lower(ctx, node):
        a = ctx.attrs(node)
        same = a["pads"] is None
        ctx.emit(onnx_op, [ctx.x(node)], ctx.out(node), kernel_shape=list(a["kernel"]), strides=list(a["stride"]),
                 pads=None if same or not any(a["pads"]) else list(a["pads"]),
                 auto_pad="SAME_UPPER" if same else None, ceil_mode=1 if a["ceil_mode"] else None,
                 count_include_pad=1 if a.get("count_include_pad") else None)
    return lower


maxpool_lower = _pool_lower("MaxPool")
avgpool_lower = _pool_lower("AveragePool")


def _pool_args(e, pad_value):
    """(input expression, padding) for F.*_pool: symmetric pads as `padding`, others as an explicit pad."""
    a, nsp = e.a, len(e.a["kernel"])
    x, pads = e.x(), a["pads"]
    if pads is None:
        pads_expr = f"{e.helper('same_pads')}({x}, {a['kernel']}, {a['stride']}, {(1,) * nsp})"
        return f"{e.helper('pad')}({x}, {pads_expr}, {pad_value})", (0,) * nsp
    if tuple(pads[:nsp]) == tuple(pads[nsp:]):
        return x, tuple(pads[:nsp])
    return f"{e.helper('pad')}({x}, {tuple(pads)}, {pad_value})", (0,) * nsp


def maxpool_torch(e):
    a, nsp = e.a, len(e.a["kernel"])
    x, padding = _pool_args(e, "float('-inf')")
    return (f"F.max_pool{nsp}d({x}, {a['kernel']}, {a['stride']}, {padding}, ceil_mode={a['ceil_mode']})")


MAXPOOL = register(Op(
    name="maxpool", inputs=("x",), infer=_pool_infer_for("maxpool"), prepare=_pool_prepare, params=_POOL_PARAMS,
    short="pool",
    doc="Max pooling over the last 1 or 2 dims: [N, C, H, W] -> [N, C, floor_or_ceil((H + pads - kernel) / "
        "stride) + 1, ...].",
    cases=_pool_cases(),
    lower=maxpool_lower, forward=maxpool_forward, vjp=maxpool_vjp, torch=maxpool_torch,
))

def avgpool_torch(e):
    a, nsp = e.a, len(e.a["kernel"])
    x, padding = _pool_args(e, "0.0")
    if x != e.x() and not a["count_include_pad"]:   # pads outside the count: the mean of the valid cells only
        ones = x.replace(e.x(), f"torch.ones_like({e.x()}[:1, :1])", 1)
        pool = f"F.avg_pool{nsp}d({{}}, {a['kernel']}, {a['stride']}, 0, ceil_mode={a['ceil_mode']})"
        return f"({pool.format(x)} / {pool.format(ones)})"
    return (f"F.avg_pool{nsp}d({x}, {a['kernel']}, {a['stride']}, {padding}, ceil_mode={a['ceil_mode']}, "
            f"count_include_pad={a['count_include_pad']})")


AVGPOOL = register(Op(
    name="avgpool", inputs=("x",), infer=_pool_infer_for("avgpool"), prepare=_pool_prepare,
    params=_POOL_PARAMS + (Param("count_include_pad", "bool", False),), short="pool",
    doc="Average pooling over the last 1 or 2 dims: [N, C, H, W] -> [N, C, floor_or_ceil((H + pads - kernel) / "
        "stride) + 1, ...]; padded cells are excluded from the mean unless count_include_pad.",
    cases=_pool_cases([Case((TensorType((1, 2, 6, 6)),), {"kernel": 3, "stride": 2, "padding": 1,
                                                          "count_include_pad": True}, "count_include_pad")]),
    lower=avgpool_lower, forward=avgpool_forward, vjp=avgpool_vjp, torch=avgpool_torch,
))


def global_pool_infer_for(name):
    """[N, C, *spatial] -> [N, C] (or [N, C, 1, ...] with keepdims): global_avgpool, global_maxpool."""
    def infer(ins, attrs):
        x = ins[0]
        if x.rank < 3:
            raise ShapeError(f"{name} expects [N, C, *spatial] (rank >= 3), got {shp(x)}")
        return [x.with_shape(x.shape[:2] + ((1,) * (x.rank - 2) if attrs["keepdims"] else ()))]
    return infer


_gap_infer = global_pool_infer_for("global_avgpool")


def global_avgpool_forward(ctx, xs, ws, attrs):
    x = xs[0]
    return [x.mean(axis=tuple(range(2, x.ndim)), keepdims=attrs["keepdims"])], None


def global_avgpool_vjp(ctx, gys, saved, xs, ws, attrs):
    x = xs[0]
    n = 1
    for d in x.shape[2:]:
        n *= d
    gx = np.empty_like(x)
    gx[...] = gys[0].reshape(x.shape[:2] + (1,) * (x.ndim - 2))
    gx *= 1.0 / n
    return [gx], {}


def global_pool_lower_for(global_op, reduce_op):
    """keepdims: GlobalAveragePool / GlobalMaxPool; else one ReduceMean / ReduceMax over the spatial axes
    (not the global pool + Flatten)."""
    def lower(ctx, node):
        x, t = ctx.x(node), ctx.in_types(node)[0]
        if ctx.attrs(node)["keepdims"]:
            ctx.emit(global_op, [x], ctx.out(node))
        else:
            ctx.reduce(reduce_op, x, range(2, t.rank), ctx.out(node), keepdims=False)
    return lower


global_avgpool_lower = global_pool_lower_for("GlobalAveragePool", "ReduceMean")


def global_pool_torch_for(method):
    """x.<method> over every spatial dim (mean: global_avgpool, amax: global_maxpool)."""
    def lower(e):
        dims = tuple(range(2, e.in_types[0].rank))
        return f"{e.x()}.{method}(dim={dims}, keepdim={e.a['keepdims']})"
    return lower


global_avgpool_torch = global_pool_torch_for("mean")


GLOBAL_AVGPOOL = register(Op(
    name="global_avgpool", inputs=("x",), infer=_gap_infer, params=(Param("keepdims", "bool", False),),
    short="gap",
    doc="Mean over all spatial dims: [N, C, *spatial] -> [N, C] (or [N, C, 1, ...] with keepdims).",
    cases=[
        Case((TensorType((2, 4, 4, 4)),)),
        Case((TensorType(("N", 3, 5, 5)),), {"keepdims": True}, "keepdims, symbolic batch"),
        Case((TensorType((2, 3, 8)),), note="1-D"),
    ],
    lower=global_avgpool_lower, forward=global_avgpool_forward, vjp=global_avgpool_vjp, torch=global_avgpool_torch,
))


def _adaptive_prepare(ins, attrs):
    attrs = dict(attrs)
    check_positive(attrs, "size")
    return attrs


def _adaptive_infer(ins, attrs):
    x = ins[0]
    require_rank(x, (4,), "adaptive_avgpool", layout="N, C, H, W")
    if not all(is_known(d) for d in x.shape[2:]):
        raise ShapeError(f"adaptive_avgpool needs a known height and width, got {shp(x)}",
                         hint="declare the input's spatial size as numbers, or use global_avgpool / avgpool")
    return [x.with_shape(x.shape[:2] + tuple(attrs["size"]))]


def adaptive_avgpool_forward(ctx, xs, ws, attrs):
    oh, ow = attrs["size"]
    return [KP.adaptive_avgpool2d(xs[0], oh, ow)], None


def adaptive_avgpool_vjp(ctx, gys, saved, xs, ws, attrs):
    H, W = xs[0].shape[2:]
    return [KP.adaptive_avgpool2d_grad(gys[0], H, W)], {}


def adaptive_avgpool_lower(ctx, node):
    """Same size: no node; sizes dividing H and W: GlobalAveragePool (1 x 1) or AveragePool with kernel = stride
    = H/oh, W/ow; otherwise exact as y = A_h x A_w^T: one MatMul by a constant averaging matrix per axis that
    changes size."""
    x, t = ctx.x(node), ctx.in_types(node)[0]
    H, W = t.shape[2:]
    oh, ow = ctx.attrs(node)["size"]
    if (oh, ow) == (H, W):
        ctx.alias(node, x)
    elif (oh, ow) == (1, 1):
        ctx.emit("GlobalAveragePool", [x], ctx.out(node))
    elif H % oh == 0 and W % ow == 0:
        k = [H // oh, W // ow]
        ctx.emit("AveragePool", [x], ctx.out(node), kernel_shape=k, strides=k)
    else:
        if ow != W:
            aw = ctx.const(KP.adaptive_matrix(W, ow, np.float32).T, hint="adaptive_w")
            x = ctx.emit("MatMul", [x, aw], ctx.out(node) if oh == H else None)
        if oh != H:
            ah = ctx.const(KP.adaptive_matrix(H, oh, np.float32), hint="adaptive_h")
            ctx.emit("MatMul", [ah, x], ctx.out(node))


def adaptive_avgpool_torch(e):
    return f"F.adaptive_avg_pool2d({e.x()}, {tuple(e.a['size'])})"


ADAPTIVE_AVGPOOL = register(Op(
    name="adaptive_avgpool", inputs=("x",), infer=_adaptive_infer, prepare=_adaptive_prepare,
    params=(Param("size", "int2", doc="output size (int or [oh, ow])"),), short="apool",
    doc="Adaptive average pooling (PyTorch's AdaptiveAvgPool2d): [N, C, H, W] -> [N, C, oh, ow], output cell i "
        "averages rows floor(i*H/oh) .. ceil((i+1)*H/oh) - 1 (likewise columns); H and W must be known.",
    cases=[
        Case((TensorType((2, 3, 8, 6)),), {"size": [4, 3]}, "divisible"),
        Case((TensorType((2, 3, 7, 5)),), {"size": [3, 2]}, "non-divisible 7->3, 5->2"),
        Case((TensorType((1, 2, 6, 6)),), {"size": 6}, "identity"),
        Case((TensorType((2, 2, 5, 5)),), {"size": 1}, "global"),
        Case((TensorType((1, 2, 6, 7)),), {"size": [3, 3]}, "mixed: H divisible, W not"),
        Case((TensorType((1, 2, 3, 4)),), {"size": [5, 4]}, "upsampling H, same W"),
        Case((TensorType(("N", 4, 7, 7)),), {"size": 3}, "symbolic batch"),
    ],
    lower=adaptive_avgpool_lower, forward=adaptive_avgpool_forward, vjp=adaptive_avgpool_vjp, torch=adaptive_avgpool_torch,
))


def _up_prepare(ins, attrs):
    attrs = dict(attrs)
    attrs["scale"] = ntuple(attrs["scale"], 2, "scale")
    check_positive(attrs, "scale")
    if attrs["align_corners"] and attrs["mode"] != "bilinear":
        raise TypeError('`align_corners` only applies to mode="bilinear"')
    return attrs


def _up_infer(ins, attrs):
    x = ins[0]
    require_rank(x, (4,), "upsample", layout="N, C, H, W")
    sh, sw = attrs["scale"]
    return [x.with_shape(x.shape[:2] + (dim_mul(x.shape[2], sh), dim_mul(x.shape[3], sw)))]


def upsample_forward(ctx, xs, ws, attrs):
    sh, sw = attrs["scale"]
    if attrs["mode"] == "nearest":
        return [KP.upsample_nearest(xs[0], sh, sw)], None
    return [KP.upsample_bilinear(xs[0], sh, sw, attrs["align_corners"])], None


def upsample_vjp(ctx, gys, saved, xs, ws, attrs):
    sh, sw = attrs["scale"]
    if attrs["mode"] == "nearest":
        return [KP.upsample_nearest_grad(gys[0], sh, sw)], {}
    return [KP.upsample_bilinear_grad(gys[0], sh, sw, attrs["align_corners"])], {}


def upsample_lower(ctx, node):
    """Resize by constant scales: nearest = torch's (asymmetric, floor); bilinear = half_pixel or align_corners."""
    a = ctx.attrs(node)
    sh, sw = a["scale"]
    scales = ctx.const([1.0, 1.0, float(sh), float(sw)], "float32", "scales")
    if a["mode"] == "nearest":
        kw = dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    else:
        kw = dict(mode="linear",
                  coordinate_transformation_mode="align_corners" if a["align_corners"] else "half_pixel")
    ctx.emit("Resize", [ctx.x(node), "", scales], ctx.out(node), **kw)


def upsample_torch(e):
    a = e.a
    scale = tuple(float(s) for s in a["scale"])
    if a["mode"] == "nearest":
        return f"F.interpolate({e.x()}, scale_factor={scale}, mode='nearest')"
    return f"F.interpolate({e.x()}, scale_factor={scale}, mode='bilinear', align_corners={a['align_corners']})"


UPSAMPLE = register(Op(
    name="upsample", inputs=("x",), infer=_up_infer, prepare=_up_prepare, short="up",
    params=(Param("scale", "int2", 2), Param("mode", "choice", "nearest", ("nearest", "bilinear")),
            Param("align_corners", "bool", False)),
    doc="Integer-factor resize: [N, C, H, W] -> [N, C, H*scale_h, W*scale_w] (nearest or bilinear).",
    cases=[
        Case((TensorType((1, 2, 4, 4)),)),
        Case((TensorType((2, 3, 3, 4)),), {"scale": [2, 3], "mode": "bilinear"}, "bilinear, per-dim scale"),
        Case((TensorType((1, 2, 3, 3)),), {"scale": 2, "mode": "bilinear", "align_corners": True}, "align_corners"),
        Case((TensorType(("N", 2, "H", 4)),), {"scale": 2}, "symbolic"),
    ],
    lower=upsample_lower, forward=upsample_forward, vjp=upsample_vjp, torch=upsample_torch,
))
