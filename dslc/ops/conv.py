"""Convolutions: conv1d (NCW), conv2d (NCHW), conv_transpose2d (NCHW).

prepare() normalises kernel/stride/dilation to tuples and padding to explicit ONNX pads
(begin..., end...) stored as attrs["pads"]. padding="same" gives output ceil(in / stride) with the extra pad at
the end (ONNX SAME_UPPER); when that needs a symbolic spatial size (stride > 1 over a symbolic dim) attrs["pads"]
is None and attrs["auto_pad"] is "SAME_UPPER" -- compute pads at run time with common.same_pads.
"""
from dslc.ops.common import (check_positive, dim_ceildiv, dim_offset, explicit_pads, ntuple, numel1, require_known, require_rank, same_pads, shp,
                             window_out)
from dslc.ops.registry import Case, Op, Param, ShapeError, WeightSpec, register
from dslc.types import TensorType, dim_mul, is_known
from dslc.kernels import conv as KC
from dslc.kernels.context import scratch_of
from dslc.kernels.nn import wants


def _conv_prepare_n(nsp):
    def prepare(ins, attrs):
        attrs = dict(attrs)
        for k in ("kernel", "stride", "dilation"):
            attrs[k] = ntuple(attrs[k], nsp, k)
        check_positive(attrs, "kernel", "stride", "dilation", "out", "groups")
        attrs["auto_pad"] = "NOTSET"
        if attrs["padding"] == "same":
            x = ins[0] if ins else None
            sizes = x.shape[2:] if x is not None and x.rank == nsp + 2 else ("?",) * nsp
            attrs["pads"] = same_pads(sizes, attrs["kernel"], attrs["stride"], attrs["dilation"])
            if attrs["pads"] is None:
                attrs["auto_pad"] = "SAME_UPPER"
        else:
            attrs["pads"] = explicit_pads(attrs["padding"], nsp)
        return attrs
    return prepare


def _check_channels(x, attrs, name, out_key="out"):
    cin = require_known(x.shape[1], f"{name}: the input channels (dim 1)", x)
    g = attrs["groups"]
    if cin % g:
        raise ShapeError(f"{name}: input channels {cin} of {shp(x)} are not divisible by groups={g}",
                         hint="groups must divide both the input and the output channels")
    if attrs[out_key] % g:
        raise ShapeError(f"{name}: out={attrs[out_key]} is not divisible by groups={g}",
                         hint="groups must divide both the input and the output channels")
    return cin


def _conv_infer_n(nsp, name, layout):
    def infer(ins, attrs):
        x = ins[0]
        require_rank(x, (nsp + 2,), name, layout=layout)
        _check_channels(x, attrs, name)
        k, s, d = attrs["kernel"], attrs["stride"], attrs["dilation"]
        pads = attrs["pads"]
        out = []
        for i, n in enumerate(x.shape[2:]):
            if pads is None:  # symbolic "same" with stride > 1: ceil(n / s)
                o = dim_ceildiv(n, s[i])
            else:
                o = window_out(n, k[i], s[i], d[i], pads[i], pads[i + nsp])
            if is_known(o) and o <= 0:
                pad_txt = f"{pads[i]}+{pads[i + nsp]}" if pads is not None else "same"
                raise ShapeError(
                    f"spatial size shrinks to 0: {name} over input size {n} (dim {i + 2} of {shp(x)}) with "
                    f"kernel {k[i]}, stride {s[i]}, padding {pad_txt}, dilation {d[i]} gives size {o}",
                    hint="use a smaller kernel or stride, add padding (e.g. padding=\"same\"), or feed a larger input")
            out.append(o)
        return [x.with_shape((x.shape[0], attrs["out"], *out))]
    return infer


def _conv_weights(ins, attrs):
    cin, g, co, k = ins[0].shape[1], attrs["groups"], attrs["out"], attrs["kernel"]
    kprod = 1
    for v in k:
        kprod *= v
    w = {"weight": WeightSpec((co, cin // g, *k), "fan_in", fan_in=cin // g * kprod, fan_out=co * kprod // g)}
    if attrs["bias"]:
        w["bias"] = WeightSpec((co,), "zeros")
    return w


def _conv_macs(ins, outs, attrs):
    kprod = 1
    for v in attrs["kernel"]:
        kprod *= v
    return numel1(outs[0].shape) * (ins[0].shape[1] // attrs["groups"]) * kprod


def _conv_params(kind):
    return (
        Param("out", "int", doc="output channels"),
        Param("kernel", kind, doc="kernel size"),
        Param("stride", kind, 1),
        Param("padding", "padding", 0, doc='int, per-dim list, explicit pads (begin..., end...), "same" or "valid"'),
        Param("dilation", kind, 1),
        Param("groups", "int", 1),
        Param("bias", "bool", True),
    )


# ---- numpy executor (dslc/ops/registry.py contract): im2col + GEMM kernels in dslc/kernels/conv.py --------
def _conv_geom(x, w, attrs):
    """(x, w, geometry) as 2-D NCHW: conv1d runs as a conv2d over [N, C, 1, W] with a [O, Cg, 1, K] kernel."""
    if x.ndim == 3:
        pads = attrs["pads"]
        x, w = x[:, :, None, :], w[:, :, None, :]
        g = KC.geom(x.shape, w.shape, (1, attrs["stride"][0]), None if pads is None else (0, pads[0], 0, pads[1]),
                    (1, attrs["dilation"][0]), attrs["groups"])
    else:
        g = KC.geom(x.shape, w.shape, attrs["stride"], attrs["pads"], attrs["dilation"], attrs["groups"])
    return x, w, g


def conv_forward(ctx, xs, ws, attrs):
    """conv1d / conv2d. The column matrix is built in the context's scratch buffers and rebuilt by the vjp,
    unless ctx.keep_columns (dslc/kernels/context.py) asks to keep it (more memory, one im2col less)."""
    x = xs[0]
    x4, w4, g = _conv_geom(x, ws["weight"], attrs)
    scratch = None if getattr(ctx, "keep_columns", True) else scratch_of(ctx)
    y, col = KC.conv2d(x4, w4, g, ws["bias"] if attrs["bias"] else None, scratch)
    return [y[:, :, 0, :] if x.ndim == 3 else y], (g, col)


def conv_vjp(ctx, gys, saved, xs, ws, attrs):
    x, w, gy = xs[0], ws["weight"], gys[0]
    g, col = saved
    scratch = scratch_of(ctx)
    x4, w4 = (x[:, :, None, :], w[:, :, None, :]) if x.ndim == 3 else (x, w)
    gy4 = gy[:, :, None, :] if x.ndim == 3 else gy
    gw, gx = KC.conv2d_grads(x4, gy4, w4, g, col, scratch, need_input=wants(ctx, 0))
    gws = {"weight": gw.reshape(w.shape)}
    if attrs["bias"]:
        gws["bias"] = gy4.sum(axis=(0, 2, 3))
    return [None if gx is None else gx.reshape(x.shape)], gws


def conv_transpose2d_forward(ctx, xs, ws, attrs):
    x, w = xs[0], ws["weight"]
    g = KC.transpose_geom(x.shape, w.shape, attrs["stride"], attrs["pads"], attrs["dilation"], attrs["groups"],
                          attrs["output_padding"])
    return [KC.conv_transpose2d(x, w, g, ws["bias"] if attrs["bias"] else None)], g


def conv_transpose2d_vjp(ctx, gys, saved, xs, ws, attrs):
    gy = gys[0]
    gx, gw = KC.conv_transpose2d_grads(gy, xs[0], ws["weight"], saved, need_input=wants(ctx, 0))
    gws = {"weight": gw}
    if attrs["bias"]:
        gws["bias"] = gy.sum(axis=(0, 2, 3))
    return [gx], gws


# ---- ONNX lowering: lower(ctx, node), see dslc/lowering/context.py ---------------------------------------
def conv_lower(ctx, node):
    """conv1d / conv2d: one Conv with its bias; symbolic "same" with stride > 1 as auto_pad SAME_UPPER."""
    a = ctx.attrs(node)
    ins = [ctx.x(node), ctx.weight(node, "weight")] + ([ctx.weight(node, "bias")] if a["bias"] else [])
    same = a["pads"] is None
    ctx.emit("Conv", ins, ctx.out(node), kernel_shape=list(a["kernel"]), strides=list(a["stride"]),
             dilations=list(a["dilation"]), group=a["groups"],
             pads=None if same else list(a["pads"]), auto_pad="SAME_UPPER" if same else None)


def conv_torch(e):
    """F.conv1d / F.conv2d; explicit pads that are not symmetric (or "same" over symbolic dims) become an F.pad."""
    a, nsp = e.a, len(e.a["kernel"])
    x = e.x()
    pads = a["pads"]
    if pads is None:
        x = f"{e.helper('pad')}({x}, {e.helper('same_pads')}({x}, {a['kernel']}, {a['stride']}, {a['dilation']}))"
        padding = (0,) * nsp
    elif tuple(pads[:nsp]) == tuple(pads[nsp:]):
        padding = tuple(pads[:nsp])
    else:
        x, padding = f"{e.helper('pad')}({x}, {tuple(pads)})", (0,) * nsp
    bias = e.w("bias") if a["bias"] else None
    extra = (f", dilation={a['dilation']}" if any(d != 1 for d in a["dilation"]) else "") + \
        (f", groups={a['groups']}" if a["groups"] != 1 else "")
    return f"F.conv{nsp}d({x}, {e.w('weight')}, {bias}, stride={a['stride']}, padding={padding}{extra})"


CONV1D = register(Op(
    name="conv1d", inputs=("x",), infer=_conv_infer_n(1, "conv1d", "N, C, W"), prepare=_conv_prepare_n(1),
    weights=_conv_weights, macs=_conv_macs, short="conv", params=_conv_params("ints"),
    doc="1-D convolution [N, Cin, W] -> [N, out, floor((W + pads - dilation*(kernel-1) - 1) / stride) + 1]; "
        "\"same\" gives ceil(W / stride).",
    cases=[
        Case((TensorType((2, 3, 8)),), {"out": 4, "kernel": 3}),
        Case((TensorType((2, 4, 8)),), {"out": 4, "kernel": 3, "stride": 2, "padding": "same"}, "same, stride 2"),
        Case((TensorType((2, 4, 8)),), {"out": 6, "kernel": 3, "padding": 2, "dilation": 2, "groups": 2,
                                        "bias": False}, "dilated, grouped"),
        Case((TensorType(("N", 2, "W")),), {"out": 3, "kernel": 3, "padding": "same"}, "symbolic batch and width"),
    ],
    lower=conv_lower, forward=conv_forward, vjp=conv_vjp, torch=conv_torch,
))

CONV2D = register(Op(
    name="conv2d", inputs=("x",), infer=_conv_infer_n(2, "conv2d", "N, C, H, W"), prepare=_conv_prepare_n(2),
    weights=_conv_weights, macs=_conv_macs, short="conv", params=_conv_params("int2"),
    doc="2-D convolution [N, Cin, H, W] -> [N, out, H', W'] with H' = floor((H + pads - dilation*(k-1) - 1) / "
        "stride) + 1; \"same\" gives ceil(H / stride) (extra pad at the end, ONNX SAME_UPPER).",
    cases=[
        Case((TensorType((2, 3, 8, 8)),), {"out": 4, "kernel": 3}),
        Case((TensorType((2, 3, 8, 8)),), {"out": 4, "kernel": 3, "padding": 1}, "padding 1 keeps size"),
        Case((TensorType((2, 3, 7, 8)),), {"out": 4, "kernel": 3, "stride": 2, "padding": "same"},
             "same with stride 2 on an odd size"),
        Case((TensorType((1, 2, 8, 8)),), {"out": 4, "kernel": 2, "stride": 2, "padding": "valid"}),
        Case((TensorType((2, 4, 8, 8)),), {"out": 4, "kernel": 3, "padding": 2, "dilation": 2, "groups": 4,
                                           "bias": False}, "depthwise, dilated"),
        Case((TensorType((2, 3, 9, 9)),), {"out": 4, "kernel": 3, "dilation": [2, 3]}, "dilated rows and columns"),
        Case((TensorType((1, 2, 6, 8)),), {"out": 2, "kernel": [1, 3], "stride": [1, 2], "padding": [0, 1, 0, 2]},
             "rectangular kernel, explicit asymmetric pads"),
        Case((TensorType(("N", 3, 8, 8)),), {"out": 4, "kernel": 1}, "symbolic batch, 1x1"),
        Case((TensorType(("N", 3, "H", "W")),), {"out": 2, "kernel": 3, "stride": 2, "padding": 1},
             "symbolic spatial dims"),
    ],
    lower=conv_lower, forward=conv_forward, vjp=conv_vjp, torch=conv_torch,
))


def _deconv_prepare(ins, attrs):
    attrs = dict(attrs)
    for k in ("kernel", "stride", "dilation", "output_padding"):
        attrs[k] = ntuple(attrs[k], 2, k)
    check_positive(attrs, "kernel", "stride", "dilation", "out", "groups")
    if attrs["padding"] == "same":
        raise TypeError('conv_transpose2d does not support padding="same"; give explicit padding')
    attrs["pads"] = explicit_pads(attrs["padding"], 2)
    for op_, s, d in zip(attrs["output_padding"], attrs["stride"], attrs["dilation"]):
        if op_ < 0 or op_ >= max(s, d):
            raise TypeError(f"`output_padding` must be non-negative and smaller than stride or dilation, got "
                            f"{list(attrs['output_padding'])} with stride {list(attrs['stride'])}")
    return attrs


def _deconv_infer(ins, attrs):
    x = ins[0]
    require_rank(x, (4,), "conv_transpose2d", layout="N, C, H, W")
    _check_channels(x, attrs, "conv_transpose2d")
    k, s, d, op_, pads = attrs["kernel"], attrs["stride"], attrs["dilation"], attrs["output_padding"], attrs["pads"]
    out = []
    for i, n in enumerate(x.shape[2:]):
        c = d[i] * (k[i] - 1) + op_[i] + 1 - pads[i] - pads[i + 2]
        o = dim_offset(dim_mul(dim_offset(n, -1), s[i]), c)
        if is_known(o) and o <= 0:
            raise ShapeError(f"spatial size shrinks to 0: conv_transpose2d over input size {n} (dim {i + 2} of "
                             f"{shp(x)}) with kernel {k[i]}, stride {s[i]}, padding {pads[i]}+{pads[i + 2]} "
                             f"gives size {o}", hint="reduce the padding")
        out.append(o)
    return [x.with_shape((x.shape[0], attrs["out"], *out))]


def _deconv_weights(ins, attrs):
    cin, g, co, (kh, kw) = ins[0].shape[1], attrs["groups"], attrs["out"], attrs["kernel"]
    # fans as torch computes them for the [in, out/groups, kh, kw] weight
    w = {"weight": WeightSpec((cin, co // g, kh, kw), "fan_in", fan_in=co // g * kh * kw, fan_out=cin * kh * kw)}
    if attrs["bias"]:
        w["bias"] = WeightSpec((co,), "zeros")
    return w


def _deconv_macs(ins, outs, attrs):
    kh, kw = attrs["kernel"]
    return numel1(ins[0].shape) * (attrs["out"] // attrs["groups"]) * kh * kw


def conv_transpose2d_lower(ctx, node):
    a = ctx.attrs(node)
    ins = [ctx.x(node), ctx.weight(node, "weight")] + ([ctx.weight(node, "bias")] if a["bias"] else [])
    ctx.emit("ConvTranspose", ins, ctx.out(node), kernel_shape=list(a["kernel"]), strides=list(a["stride"]),
             dilations=list(a["dilation"]), group=a["groups"], pads=list(a["pads"]),
             output_padding=list(a["output_padding"]) if any(a["output_padding"]) else None)


def deconv_torch(e):
    """F.conv_transpose2d. dslc's pads are what it crops from the full output: symmetric pads map onto `padding`;
    asymmetric ones crop the unpadded output (the bias is the same everywhere, so cropping after it is exact)."""
    a = e.a
    pads = tuple(a["pads"])
    bias = e.w("bias") if a["bias"] else None
    sym = pads[:2] == pads[2:]
    call = (f"F.conv_transpose2d({e.x()}, {e.w('weight')}, {bias}, stride={a['stride']}, "
            f"padding={pads[:2] if sym else (0, 0)}, output_padding={a['output_padding']}, groups={a['groups']}, "
            f"dilation={a['dilation']})")
    if sym:
        return call
    crop = ", ".join(f"{b}:{-e_ if e_ else None}" for b, e_ in zip(pads[:2], pads[2:]))
    return f"{call}[:, :, {crop}]"


CONV_TRANSPOSE2D = register(Op(
    name="conv_transpose2d", inputs=("x",), infer=_deconv_infer, prepare=_deconv_prepare, weights=_deconv_weights,
    macs=_deconv_macs, short="deconv",
    params=_conv_params("int2")[:3]
    + (Param("padding", "padding", 0, doc='int, per-dim list or explicit pads (begin..., end...); "same" is not '
             'supported (the output size of a transposed conv is set by stride and output_padding)'),
       Param("output_padding", "int2", 0))
    + _conv_params("int2")[4:],
    doc="2-D transposed convolution [N, Cin, H, W] -> [N, out, H', W'] with H' = (H-1)*stride - pad_begin - "
        "pad_end + dilation*(kernel-1) + output_padding + 1.",
    cases=[
        Case((TensorType((2, 4, 4, 4)),), {"out": 3, "kernel": 2, "stride": 2}, "2x upsampling"),
        Case((TensorType((1, 2, 3, 4)),), {"out": 2, "kernel": 3, "stride": 2, "padding": 1, "output_padding": 1},
             "output_padding"),
        Case((TensorType((1, 4, 4, 4)),), {"out": 2, "kernel": 3, "groups": 2, "dilation": 2, "bias": False},
             "grouped, dilated"),
        Case((TensorType(("N", 3, 4, 4)),), {"out": 2, "kernel": 4, "stride": 2, "padding": 1}, "symbolic batch"),
        Case((TensorType((1, 2, 3, 3)),), {"out": 2, "kernel": 3, "stride": 2, "padding": [0, 1, 1, 2],
                                          "output_padding": 1}, "asymmetric pads"),
    ],
    lower=conv_transpose2d_lower, forward=conv_transpose2d_forward, vjp=conv_transpose2d_vjp, torch=deconv_torch,
))
