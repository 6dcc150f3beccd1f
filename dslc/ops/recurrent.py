"""Recurrent layers lstm / gru / rnn: batch-first [N, T, D] -> [N, T, H * dirs] (or [N, H * dirs], the last
step, with return_sequences=false), zero initial state, one layer (stack layers with `repeat`).

Weights are PyTorch's nn.LSTM / nn.GRU / nn.RNN, gate blocks in PyTorch's order, both biases:
    PyTorch state_dict          dslc weight (node `lstm1`)
    weight_ih_l0                lstm1.weight_ih            [G*H, D]   G = 4 (lstm: i f g o), 3 (gru: r z n), 1 (rnn)
    weight_hh_l0                lstm1.weight_hh            [G*H, H]
    bias_ih_l0, bias_hh_l0      lstm1.bias_ih, lstm1.bias_hh  [G*H]
    *_l0_reverse                lstm1.*_reverse            (bidirectional)
so parameter counts and state_dicts match PyTorch one to one, initialised U(-1/sqrt(H), 1/sqrt(H)) as PyTorch.
GRU is PyTorch's variant n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), i.e. ONNX linear_before_reset=1.
ONNX: one LSTM / GRU / RNN node, gate blocks reordered to ONNX's (LSTM i o f c, GRU z r h) in derived
initializers. Variable-length batches (sequence_lens) are not supported yet: every sequence has length T.
"""
import math

import numpy as np

from dslc.kernels import nn as K
from dslc.ops.common import check_positive, numel1, require_known, shp
from dslc.ops.registry import Case, Op, Param, ShapeError, WeightSpec, register
from dslc.types import TensorType

GATES = {"lstm": 4, "gru": 3, "rnn": 1}
# ONNX block order as indices into PyTorch's blocks: LSTM iofc <- ifgo, GRU zrh <- rzn
ONNX_BLOCKS = {"lstm": (0, 3, 1, 2), "gru": (1, 0, 2), "rnn": (0,)}
WEIGHT_KEYS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _dirs(attrs):
    return ("", "_reverse") if attrs["bidirectional"] else ("",)


def _infer_for(kind):
    def infer(ins, attrs):
        x = ins[0]
        if x.rank != 3:
            raise ShapeError(f"{kind} expects a batch-first sequence [N, T, D], got {shp(x)}",
                             "add a feature dim (reshape) or an embedding in front")
        require_known(x.shape[2], f"{kind}: the input's feature dim D", x)
        h = attrs["hidden"] * len(_dirs(attrs))
        return [x.with_shape((x.shape[0], x.shape[1], h) if attrs["return_sequences"] else (x.shape[0], h))]
    return infer


def _prepare(ins, attrs):
    check_positive(attrs, "hidden")
    return attrs


def _weights_for(kind):
    def weights(ins, attrs):
        d, h, g = ins[0].shape[2], attrs["hidden"], GATES[kind]
        init = f"uniform:{1.0 / math.sqrt(h)!r}"
        out = {}
        for sfx in _dirs(attrs):
            out[f"weight_ih{sfx}"] = WeightSpec((g * h, d), init, fan_in=d, fan_out=h)
            out[f"weight_hh{sfx}"] = WeightSpec((g * h, h), init, fan_in=h, fan_out=h)
            out[f"bias_ih{sfx}"] = WeightSpec((g * h,), init)
            out[f"bias_hh{sfx}"] = WeightSpec((g * h,), init)
        return out
    return weights


def _macs_for(kind):
    def macs(ins, outs, attrs):
        d, h = ins[0].shape[2], attrs["hidden"]
        return numel1(ins[0].shape[:2]) * GATES[kind] * h * (d + h) * len(_dirs(attrs))
    return macs


# ---- numpy cells: step(a_x, h, c, w_hh, b_hh, attrs) -> (h, c, cache);
#      back(dh, dc, cache) -> (da_x, da_h, dc_prev, dh_direct)
# a_x = the step's input projection x_t W_ih^T + b_ih [N, G*H]; da_h is the gradient of h W_hh^T + b_hh;
# dh_direct the part of h_prev's gradient that bypasses W_hh (GRU's z * h_prev).
def _lstm_step(ax, h, c, w_hh, b_hh, attrs):
    a = ax + h @ w_hh.T + b_hh
    i, f, g, o = np.split(a, 4, axis=1)
    i, f, o, g = K.sigmoid(i), K.sigmoid(f), K.sigmoid(o), np.tanh(g)
    c_new = f * c + i * g
    tc = np.tanh(c_new)
    return o * tc, c_new, (i, f, g, o, c, tc)


def _lstm_back(dh, dc, cache):
    i, f, g, o, c_prev, tc = cache
    dc = dc + dh * o * (1 - tc * tc)
    da = np.concatenate([dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - g * g),
                         dh * tc * o * (1 - o)], axis=1)
    return da, da, dc * f, 0.0


def _gru_step(ax, h, c, w_hh, b_hh, attrs):
    ah = h @ w_hh.T + b_hh
    xr, xz, xn = np.split(ax, 3, axis=1)
    hr, hz, hn = np.split(ah, 3, axis=1)
    r, z = K.sigmoid(xr + hr), K.sigmoid(xz + hz)
    n = np.tanh(xn + r * hn)
    return (1 - z) * n + z * h, None, (r, z, n, hn, h)


def _gru_back(dh, dc, cache):
    r, z, n, hn, h_prev = cache
    dan = dh * (1 - z) * (1 - n * n)
    dar = dan * hn * r * (1 - r)
    daz = dh * (h_prev - n) * z * (1 - z)
    return np.concatenate([dar, daz, dan], axis=1), np.concatenate([dar, daz, dan * r], axis=1), None, dh * z


def _rnn_step(ax, h, c, w_hh, b_hh, attrs):
    a = ax + h @ w_hh.T + b_hh
    y = np.tanh(a) if attrs["activation"] == "tanh" else np.maximum(a, 0)
    return y, None, (y, attrs["activation"])


def _rnn_back(dh, dc, cache):
    y, act = cache
    da = dh * (1 - y * y) if act == "tanh" else dh * (y > 0)
    return da, da, None, 0.0


CELLS = {"lstm": (_lstm_step, _lstm_back), "gru": (_gru_step, _gru_back), "rnn": (_rnn_step, _rnn_back)}


def _order(T, sfx):
    return range(T - 1, -1, -1) if sfx else range(T)


def _forward_for(kind):
    step = CELLS[kind][0]

    def forward(ctx, xs, ws, attrs):
        x = xs[0]
        n, T, _ = x.shape
        H = attrs["hidden"]
        outs, saved = [], []
        for sfx in _dirs(attrs):
            w_hh, b_hh = ws[f"weight_hh{sfx}"], ws[f"bias_hh{sfx}"]
            ax = x @ ws[f"weight_ih{sfx}"].T + ws[f"bias_ih{sfx}"]          # all steps in one GEMM
            h = np.zeros((n, H), x.dtype)
            c = np.zeros((n, H), x.dtype) if kind == "lstm" else None
            ys = np.empty((n, T, H), x.dtype)
            caches, hs = [None] * T, [None] * T
            for t in _order(T, sfx):
                hs[t] = h
                h, c, caches[t] = step(ax[:, t], h, c, w_hh, b_hh, attrs)
                ys[:, t] = h
            outs.append(ys if attrs["return_sequences"] else h)
            saved.append((caches, hs))
        return [np.concatenate(outs, axis=-1) if len(outs) > 1 else outs[0]], saved
    return forward


def _vjp_for(kind):
    back = CELLS[kind][1]

    def vjp(ctx, gys, saved, xs, ws, attrs):
        x = xs[0]
        n, T, D = x.shape
        H = attrs["hidden"]
        gx = np.zeros_like(x, dtype=gys[0].dtype)
        gws = {}
        for k, sfx in enumerate(_dirs(attrs)):
            caches, hs = saved[k]
            gy = gys[0][..., k * H:(k + 1) * H]
            w_hh = ws[f"weight_hh{sfx}"]
            dax = np.empty((n, T, GATES[kind] * H), gy.dtype)
            gw_hh = np.zeros_like(w_hh, dtype=gy.dtype)
            gb_hh = np.zeros(w_hh.shape[0], gy.dtype)
            dh = np.zeros((n, H), gy.dtype)
            dc = np.zeros((n, H), gy.dtype) if kind == "lstm" else None
            order = list(_order(T, sfx))
            if not attrs["return_sequences"]:
                dh = dh + gy
            for t in reversed(order):                                        # backpropagation through time
                if attrs["return_sequences"]:
                    dh = dh + gy[:, t]
                da_x, da_h, dc, dh_carry = back(dh, dc, caches[t])
                dax[:, t] = da_x
                gw_hh += da_h.T @ hs[t]
                gb_hh += da_h.sum(axis=0)
                dh = da_h @ w_hh + dh_carry
            dax2 = dax.reshape(-1, dax.shape[-1])
            gws[f"weight_ih{sfx}"] = dax2.T @ x.reshape(-1, D)
            gws[f"bias_ih{sfx}"] = dax2.sum(axis=0)
            gws[f"weight_hh{sfx}"] = gw_hh
            gws[f"bias_hh{sfx}"] = gb_hh
            gx += (dax2 @ ws[f"weight_ih{sfx}"]).reshape(x.shape)
        return [gx], gws
    return vjp


# ---- ONNX lowering: one LSTM / GRU / RNN node over [T, N, D] ------------------------------------------------
def _blocks(w, kind):
    """PyTorch's gate blocks (rows of W, R or a bias) in ONNX's order."""
    parts = np.split(w, GATES[kind], axis=0)
    return np.concatenate([parts[j] for j in ONNX_BLOCKS[kind]], axis=0)


def _lower_for(kind):
    onnx_op = kind.upper()

    def lower(ctx, node):
        a = ctx.attrs(node)
        dirs = _dirs(a)
        get = lambda key, sfx: _blocks(ctx.weight_array(node, f"{key}{sfx}"), kind)  # noqa: E731
        w = ctx.derived(node, "onnx_W", np.stack([get("weight_ih", s) for s in dirs]))
        r = ctx.derived(node, "onnx_R", np.stack([get("weight_hh", s) for s in dirs]))
        b = ctx.derived(node, "onnx_B", np.stack([np.concatenate([get("bias_ih", s), get("bias_hh", s)])
                                                  for s in dirs]))
        extra = {"linear_before_reset": 1} if kind == "gru" else {}
        if kind == "rnn":
            extra["activations"] = ["Tanh" if a["activation"] == "tanh" else "Relu"] * len(dirs)
        xt = ctx.emit("Transpose", [ctx.x(node)], perm=[1, 0, 2])            # ONNX's default layout is [T, N, D]
        outs = ctx.emit(onnx_op, [xt, w, r, b], n_outputs=3 if kind == "lstm" else 2, hidden_size=a["hidden"],
                        direction="bidirectional" if len(dirs) == 2 else "forward", **extra)
        y, y_h = outs[0], outs[1]
        if a["return_sequences"]:   # Y [T, dirs, N, H] -> [N, T, dirs * H]
            yt = ctx.emit("Transpose", [y], perm=[2, 0, 1, 3])
            ctx.emit("Reshape", [yt, ctx.ints([0, 0, -1])], ctx.out(node))
        else:                       # Y_h [dirs, N, H] -> [N, dirs * H] (forward's last step, reverse's first)
            ht = ctx.emit("Transpose", [y_h], perm=[1, 0, 2])
            ctx.emit("Reshape", [ht, ctx.ints([0, -1])], ctx.out(node))
    return lower


# ---- PyTorch lowering: the kernels nn.LSTM / nn.GRU / nn.RNN run, on the node's own (dslc-named) weights ------
def _torch_for(kind):
    def lower(e):
        a = e.a
        fn = f"rnn_{a['activation']}" if kind == "rnn" else kind
        ws = ", ".join(e.w(f"{key}{sfx}") for sfx in _dirs(a) for key in WEIGHT_KEYS)
        return (f"{e.helper('recurrent')}({fn!r}, {e.x()}, [{ws}], {a['hidden']}, {a['bidirectional']}, "
                f"{a['return_sequences']})")
    return lower


def _register(kind, doc, extra_params=(), extra_cases=()):
    return register(Op(
        name=kind, inputs=("x",), infer=_infer_for(kind), prepare=_prepare, weights=_weights_for(kind),
        macs=_macs_for(kind),
        params=(Param("hidden", "int", doc="hidden (and cell) state size H"),
                Param("bidirectional", "bool", False, doc="also run right to left; outputs concatenated"),
                Param("return_sequences", "bool", True, doc="every step's output, or only the last"))
        + tuple(extra_params),
        doc=doc,
        cases=[
            Case((TensorType((2, 3, 4)),), {"hidden": 3}),
            Case((TensorType((2, 4, 3)),), {"hidden": 2, "bidirectional": True}, "bidirectional"),
            Case((TensorType(("N", "T", 3)),), {"hidden": 3, "return_sequences": False},
                 "last step, symbolic batch and length"),
            Case((TensorType((3, 2, 2)),), {"hidden": 2, "bidirectional": True, "return_sequences": False},
                 "bidirectional last step"),
        ] + list(extra_cases),
        lower=_lower_for(kind), forward=_forward_for(kind), vjp=_vjp_for(kind), torch=_torch_for(kind),
    ))


LSTM = _register("lstm", "Long short-term memory layer (nn.LSTM, batch_first): [N, T, D] -> [N, T, H*dirs] "
                         "or [N, H*dirs] (last step); PyTorch's weights and gate order (i, f, g, o). "
                         "Every sequence of a batch runs all T steps (variable lengths: not yet).")
GRU = _register("gru", "Gated recurrent unit layer (nn.GRU, batch_first): [N, T, D] -> [N, T, H*dirs] "
                       "or [N, H*dirs]; PyTorch's weights and gate order (r, z, n). "
                       "Every sequence runs all T steps.")
RNN = _register("rnn", "Elman RNN layer (nn.RNN, batch_first): h = act(W_ih x + b_ih + W_hh h + b_hh); "
                       "[N, T, D] -> [N, T, H*dirs] or [N, H*dirs]. Every sequence runs all T steps.",
                (Param("activation", "choice", "tanh", choices=("tanh", "relu")),),
                (Case((TensorType((2, 3, 4)),), {"hidden": 3, "activation": "relu"}, "relu"),))
