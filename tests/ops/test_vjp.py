"""Registry-driven numerics of every op's numpy forward / vjp (the training executor's contract).

check_op(op, case), tinygrad-style: in float64 the forward's output shapes equal the shape rule (symbolic dims
substituted), and every input and weight gradient matches central finite differences of
L = sum_j <y_j, gy_j> for a random upstream gradient gy; in float32 every output and gradient stays float32.
Below that, forwards are compared with independent formulas (naive loops) where that is easy.
"""
from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest

from dslc.kernels.context import ExecContext
from dslc.ops.registry import get, resolve_attrs
from dslc.ops.testing import all_cases
from dslc.types import NUMPY_DTYPE, TensorType

CASES = all_cases()


def _ids(cases):
    seen: dict = {}
    for op, _ in cases:
        seen[op.name] = seen.get(op.name, -1) + 1
        yield f"{op.name}-{seen[op.name]}"


IDS = list(_ids(CASES))
SYM_SIZES = {"N": 2}      # batch-like symbols; every other symbol (T, H, W, ...) becomes 3
SYM_DEFAULT = 3
FD_STEP = 1e-5
FD_RTOL = 1e-5
FD_MAX_ELEMS = 2048      # per tensor: all elements of small tensors, else a random subset + one random direction
TRAINING_OPS = {"batchnorm", "dropout", "drop_path"}  # checked in training mode (and eval mode below)


# ---- the check ---------------------------------------------------------------------------------------------
def concrete(shape, env) -> tuple[int, ...]:
    out = []
    for d in shape:
        if isinstance(d, int):
            out.append(d)
            continue
        ns = {"slice": lambda n, a, b, s: len(range(*slice(a, b, s).indices(n)))}
        for name in re.findall(r"[A-Za-z_]\w*", d):
            if name != "slice":
                ns[name] = env.setdefault(name, SYM_SIZES.get(name, SYM_DEFAULT))
        out.append(int(eval(d, {"__builtins__": {}}, ns)))  # dims are our own shape-rule expressions
    return tuple(out)


def make_inputs(op, case, dtype, rng, env):
    shapes = [concrete(t.shape, env) for t in case.inputs]
    xs = []
    for i, (t, shape) in enumerate(zip(case.inputs, shapes)):
        np_dt = np.dtype(NUMPY_DTYPE[t.dtype])
        if np_dt.kind in "iu":  # class indices
            n_cls = 3
            if op.name == "cross_entropy":  # sequence logits [N, T, V] with [N, T] targets: classes last
                n_cls = shapes[0][-1] if shape == shapes[0][:-1] else shapes[0][1]
            xs.append(rng.integers(0, n_cls, size=shape).astype(np_dt))
            continue
        if op.name == "maxpool":  # distinct values, spaced far beyond the FD step: no ties, no switching
            n = int(np.prod(shape))
            x = rng.permutation(n).reshape(shape) / n
        elif op.name in ("bce",) and i == 1:
            x = rng.random(shape)
        elif op.name == "cross_entropy" and i == 1:
            x = rng.random(shape)
            x /= x.sum(axis=1, keepdims=True)
        else:
            x = rng.standard_normal(shape)
            if op.name in ("relu", "leaky_relu"):  # keep away from the kink
                x += np.where(x >= 0, 0.05, -0.05)
            if op.name == "div" and i == 1:  # keep denominators away from 0
                x += np.where(x >= 0, 0.5, -0.5)
        xs.append(x.astype(dtype))
    return xs


def make_weights(node_weights, dtype, rng):
    ws = {}
    for key, spec in node_weights.items():
        if "var" in key:
            ws[key] = rng.uniform(0.5, 1.5, spec.shape).astype(dtype)
        else:
            ws[key] = (0.5 * rng.standard_normal(spec.shape)).astype(dtype)
    return ws


def prepare(op, case):
    ins = list(case.inputs)
    attrs = resolve_attrs(op, ins, dict(case.attrs))
    return attrs, op.infer(ins, attrs), op.weights(ins, attrs)


def run_forward(op, xs, ws, attrs, training, seed=7):
    ctx = ExecContext(training=training, rng=np.random.default_rng(seed))
    ws = {k: v.copy() for k, v in ws.items()}  # batchnorm updates running stats in place
    ys, saved = op.forward(ctx, list(xs), ws, attrs)
    return [np.asarray(y) for y in ys], saved, ctx


def _fd_compare(what, an, fd):
    an, fd = np.asarray(an, np.float64), np.asarray(fd, np.float64)
    err = np.max(np.abs(an - fd)) if an.size else 0.0
    scale = max(np.max(np.abs(fd)) if fd.size else 0.0, 1e-6)
    assert err <= FD_RTOL * scale or err < 1e-9, f"{what}: analytic vs numeric gradient, max err {err:.3g} " \
                                                 f"(scale {scale:.3g})\nanalytic {an}\nnumeric {fd}"


def check_op(op, case, training=True, seed=0):
    rng = np.random.default_rng(seed)
    attrs, outs, wspecs = prepare(op, case)
    env: dict = {}
    xs = make_inputs(op, case, np.float64, rng, env)
    ws = make_weights(wspecs, np.float64, rng)

    # forward: shapes follow the shape rule
    ys, saved, ctx = run_forward(op, xs, ws, attrs, training)
    assert len(ys) == len(outs)
    for y, t in zip(ys, outs):
        assert y.shape == concrete(t.shape, env), (op.name, y.shape, t.shape, env)
    gys = [rng.standard_normal(y.shape) if y.dtype.kind == "f" else None for y in ys]

    def loss(xs_, ws_):
        ys_, _, _ = run_forward(op, xs_, ws_, attrs, training)
        return sum(float(np.sum(y * g)) for y, g in zip(ys_, gys) if g is not None)

    gxs, gws = op.vjp(ctx, [None if g is None else g.copy() for g in gys], saved, list(xs), ws, attrs)
    assert len(gxs) == len(xs), op.name
    trainable = {k for k, s in wspecs.items() if s.trainable}
    assert set(gws) <= set(wspecs), (op.name, set(gws))
    assert trainable <= set(gws), (op.name, trainable - set(gws))

    def fd_check(what, arr, an, evaluate):
        an = np.zeros(arr.shape) if an is None else np.asarray(an)
        assert an.shape == arr.shape, (what, an.shape, arr.shape)
        flat = arr.reshape(-1)
        idx = range(flat.size) if flat.size <= FD_MAX_ELEMS else rng.choice(flat.size, FD_MAX_ELEMS, replace=False)
        fd = []
        for i in idx:
            old = flat[i]
            flat[i] = old + FD_STEP
            lp = evaluate()
            flat[i] = old - FD_STEP
            lm = evaluate()
            flat[i] = old
            fd.append((lp - lm) / (2 * FD_STEP))
        _fd_compare(f"{op.name} {what}", an.reshape(-1)[list(idx)], fd)
        if flat.size > FD_MAX_ELEMS:  # one random direction covers every element at once
            v = rng.standard_normal(arr.shape)
            old = arr.copy()
            arr += FD_STEP * v
            lp = evaluate()
            arr[...] = old - FD_STEP * v
            lm = evaluate()
            arr[...] = old
            _fd_compare(f"{op.name} {what} (direction)", [np.sum(an * v)], [(lp - lm) / (2 * FD_STEP)])

    for i, x in enumerate(xs):
        if x.dtype.kind != "f":
            assert gxs[i] is None, f"{op.name}: integer input {i} must get no gradient"
            continue
        fd_check(f"input {i}", x, gxs[i], lambda: loss(xs, ws))
    for key in sorted(trainable):
        fd_check(f"weight {key}", ws[key], gws[key], lambda: loss(xs, ws))


def check_float32(op, case, training=True):
    rng = np.random.default_rng(1)
    attrs, outs, wspecs = prepare(op, case)
    env: dict = {}
    xs = make_inputs(op, case, np.float32, rng, env)
    ws = make_weights(wspecs, np.float32, rng)
    xs0, ws0 = [x.copy() for x in xs], {k: v.copy() for k, v in ws.items()}
    ys, saved, ctx = run_forward(op, xs, ws, attrs, training)
    for y, t in zip(ys, outs):
        assert y.dtype == np.dtype(NUMPY_DTYPE[t.dtype]), (op.name, y.dtype, t.dtype)
        assert y.shape == concrete(t.shape, env)
    gys = [rng.standard_normal(y.shape).astype(np.float32) if y.dtype.kind == "f" else None for y in ys]
    gys0 = [None if g is None else g.copy() for g in gys]
    gxs, gws = op.vjp(ctx, gys, saved, xs, ws, attrs)
    # nothing writes into its inputs: values, weights and gradients are shared (views) by the executor
    for a, b in zip(xs + [g for g in gys if g is not None] + [ws[k] for k in sorted(ws)],
                    xs0 + [g for g in gys0 if g is not None] + [ws0[k] for k in sorted(ws0)]):
        np.testing.assert_array_equal(a, b, err_msg=f"{op.name} modified an input, upstream gradient or weight")
    for i, (x, g) in enumerate(zip(xs, gxs)):
        if g is not None:
            assert g.dtype == np.float32, (op.name, "input", i, g.dtype)
            assert g.shape == x.shape, (op.name, "input", i, g.shape, x.shape)
        elif x.dtype.kind == "f" and not (op.name == "expand_batch" and i == 1):
            pytest.fail(f"{op.name}: float input {i} got no gradient")
    for k, g in gws.items():
        assert g.dtype == np.float32, (op.name, k, g.dtype)
        assert g.shape == ws[k].shape, (op.name, k)


# ---- registry-driven ---------------------------------------------------------------------------------------
def test_every_op_has_forward_and_vjp():
    missing = sorted({op.name for op, _ in CASES if op.forward is None or op.vjp is None})
    assert not missing, f"ops without numpy forward/vjp: {missing}"


@pytest.mark.parametrize("op,case", CASES, ids=IDS)
def test_gradients_float64(op, case):
    check_op(op, case, training=True)


@pytest.mark.parametrize("op,case", [(o, c) for o, c in CASES if o.name in TRAINING_OPS],
                         ids=[i for (o, _), i in zip(CASES, IDS) if o.name in TRAINING_OPS])
def test_gradients_float64_eval_mode(op, case):
    check_op(op, case, training=False)


@pytest.mark.parametrize("op,case", CASES, ids=IDS)
def test_float32_stays_float32(op, case):
    check_float32(op, case, training=True)
    if op.name in TRAINING_OPS:
        check_float32(op, case, training=False)


STAND_IN_CASES = [(o, c) for o, c in CASES if not o.vjp_reads_inputs]


def test_some_ops_free_their_inputs():
    assert {"relu", "add"} <= {o.name for o, _ in STAND_IN_CASES}


@pytest.mark.parametrize("op,case", STAND_IN_CASES, ids=[f"{o.name}-{i}" for i, (o, _) in enumerate(STAND_IN_CASES)])
def test_vjp_reads_only_shapes_where_declared(op, case):
    """An op with vjp_reads_inputs=False gives the same gradients from the executor's shape-only stand-ins."""
    from dslc.ops.registry import stand_in
    rng = np.random.default_rng(3)
    attrs, _, wspecs = prepare(op, case)
    xs = make_inputs(op, case, np.float32, rng, {})
    ws = make_weights(wspecs, np.float32, rng)
    ys, saved, ctx = run_forward(op, xs, ws, attrs, True)
    gys = [rng.standard_normal(y.shape).astype(np.float32) for y in ys]
    want, _ = op.vjp(ctx, [g.copy() for g in gys], saved, list(xs), ws, attrs)
    got, _ = op.vjp(ctx, [g.copy() for g in gys], saved, [stand_in(x) for x in xs], ws, attrs)
    for a, b in zip(want, got):
        np.testing.assert_array_equal(a, b)


# ---- independent formulas ----------------------------------------------------------------------------------
def fwd(name, xs, ws=None, training=False, seed=7, **given):
    op = get(name)
    ins = [TensorType(x.shape, {np.dtype("float64"): "f64", np.dtype("float32"): "f32",
                                np.dtype("int64"): "i64"}[x.dtype]) for x in xs]
    attrs = resolve_attrs(op, ins, given)
    ys, _, _ = run_forward(op, xs, ws or {}, attrs, training, seed)
    return ys[0] if len(ys) == 1 else ys


def naive_conv2d(x, w, b, stride, pads, dil, groups):
    N, C, H, W = x.shape
    O, Cg, KH, KW = w.shape
    pt, pl, pb, pr = pads
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    OH = (H + pt + pb - dil[0] * (KH - 1) - 1) // stride[0] + 1
    OW = (W + pl + pr - dil[1] * (KW - 1) - 1) // stride[1] + 1
    y = np.zeros((N, O, OH, OW))
    Og = O // groups
    for n, o, i, j in itertools.product(range(N), range(O), range(OH), range(OW)):
        gi = o // Og
        acc = 0.0 if b is None else b[o]
        for c, u, v in itertools.product(range(Cg), range(KH), range(KW)):
            acc += xp[n, gi * Cg + c, i * stride[0] + u * dil[0], j * stride[1] + v * dil[1]] * w[o, c, u, v]
        y[n, o, i, j] = acc
    return y


CONV_CONFIGS = [  # (C, O, groups, kernel, stride, padding, dilation, H, W)
    (3, 4, 1, (3, 3), (1, 1), 1, (1, 1), 6, 5),
    (4, 6, 2, (3, 2), (2, 1), [0, 1, 2, 0], (1, 2), 7, 6),
    (4, 4, 4, (3, 3), (2, 2), 1, (1, 1), 6, 6),          # depthwise
    (2, 6, 2, (2, 3), (1, 2), [1, 0, 0, 1], (2, 1), 6, 7),
    (3, 6, 3, (3, 3), (1, 1), 2, (2, 2), 6, 6),          # depthwise, multiplier 2
    (2, 3, 1, (3, 3), (2, 2), "same", (1, 1), 7, 6),
]


@pytest.mark.parametrize("cfg", CONV_CONFIGS)
def test_conv2d_matches_naive_loop(cfg):
    C, O, G, k, s, pad, d, H, W = cfg
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, C, H, W))
    w = rng.standard_normal((O, C // G) + k)
    b = rng.standard_normal(O)
    op = get("conv2d")
    attrs = resolve_attrs(op, [TensorType(x.shape, "f64")], dict(out=O, kernel=list(k), stride=list(s),
                                                                   padding=pad, dilation=list(d), groups=G))
    y, _, _ = run_forward(op, [x], {"weight": w, "bias": b}, attrs, False)
    np.testing.assert_allclose(y[0], naive_conv2d(x, w, b, s, attrs["pads"], d, G), rtol=1e-10, atol=1e-10)


def test_conv2d_symbolic_same_pads_at_run_time():
    rng = np.random.default_rng(0)
    op = get("conv2d")
    attrs = resolve_attrs(op, [TensorType(("N", 2, "H", "W"), "f64")],
                          dict(out=3, kernel=3, stride=2, padding="same"))
    assert attrs["pads"] is None
    x = rng.standard_normal((2, 2, 7, 6))
    w = rng.standard_normal((3, 2, 3, 3))
    y, _, _ = run_forward(op, [x], {"weight": w, "bias": np.zeros(3)}, attrs, False)
    assert y[0].shape == (2, 3, 4, 3)
    np.testing.assert_allclose(y[0], naive_conv2d(x, w, None, (2, 2), (1, 0, 1, 1), (1, 1), 1), atol=1e-10)


def test_conv1d_matches_naive_loop():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 9))
    w = rng.standard_normal((6, 2, 3))
    y = fwd("conv1d", [x], {"weight": w}, out=6, kernel=3, stride=2, padding=2, dilation=2, groups=2, bias=False)
    ref = naive_conv2d(x[:, :, None], w[:, :, None], None, (1, 2), (0, 2, 0, 2), (1, 2), 2)[:, :, 0]
    np.testing.assert_allclose(y, ref, atol=1e-10)


@pytest.mark.parametrize("C,O,G,k,s,pad,opad,d", [(2, 3, 1, 3, 2, 1, 1, 1), (4, 2, 2, 3, 1, 0, 0, 2),
                                                  (3, 2, 1, 2, 2, 0, 0, 1)])
def test_conv_transpose2d_matches_scatter_loop(C, O, G, k, s, pad, opad, d):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, C, 3, 4))
    w = rng.standard_normal((C, O // G, k, k))
    b = rng.standard_normal(O)
    y = fwd("conv_transpose2d", [x], {"weight": w, "bias": b}, out=O, kernel=k, stride=s, padding=pad,
            output_padding=opad, dilation=d, groups=G)
    N, _, H, W = x.shape
    OH = (H - 1) * s - 2 * pad + d * (k - 1) + opad + 1
    OW = (W - 1) * s - 2 * pad + d * (k - 1) + opad + 1
    full = np.zeros((N, O, OH + 2 * pad + k * d, OW + 2 * pad + k * d))
    Cg, Og = C // G, O // G
    for n, c, i, j, u, v, o in itertools.product(range(N), range(C), range(H), range(W), range(k), range(k),
                                                 range(Og)):
        full[n, (c // Cg) * Og + o, i * s + u * d, j * s + v * d] += x[n, c, i, j] * w[c, o, u, v]
    ref = full[:, :, pad:pad + OH, pad:pad + OW] + b[None, :, None, None]
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, atol=1e-10)


def naive_pool(x, k, s, pads, ceil_mode, kind, count_include_pad=False):
    N, C, H, W = x.shape
    pt, pl, pb, pr = pads

    def out(n, k_, s_, a, b):
        num = n + a + b - k_
        o = (-(-num // s_) if ceil_mode else num // s_) + 1
        if ceil_mode and (o - 1) * s_ >= n + a:
            o -= 1
        return o
    OH, OW = out(H, k[0], s[0], pt, pb), out(W, k[1], s[1], pl, pr)
    y = np.zeros((N, C, OH, OW))
    for i, j in itertools.product(range(OH), range(OW)):
        h0, w0 = i * s[0] - pt, j * s[1] - pl
        h1, w1 = min(h0 + k[0], H + pb), min(w0 + k[1], W + pr)
        hs, ws_ = max(h0, 0), max(w0, 0)
        he, we = min(h1, H), min(w1, W)
        win = x[:, :, hs:he, ws_:we]
        if kind == "max":
            y[:, :, i, j] = win.max(axis=(2, 3))
        else:
            div = (h1 - h0) * (w1 - w0) if count_include_pad else (he - hs) * (we - ws_)
            y[:, :, i, j] = win.sum(axis=(2, 3)) / div
    return y


POOL_CONFIGS = [  # kernel, stride, padding, ceil_mode, count_include_pad
    ((2, 2), (2, 2), 0, False, False),
    ((3, 3), (2, 2), 1, False, False),
    ((3, 3), (2, 2), 1, False, True),
    ((2, 2), (2, 2), 0, True, False),
    ((3, 2), (2, 1), [1, 0, 1, 1], True, True),
    ((3, 3), (3, 3), 1, True, False),
]


@pytest.mark.parametrize("k,s,pad,ceil,cip", POOL_CONFIGS)
def test_pools_match_naive_loops(k, s, pad, ceil, cip):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 7, 8))
    pads = (pad,) * 4 if isinstance(pad, int) else tuple(pad)
    y = fwd("maxpool", [x], kernel=list(k), stride=list(s), padding=pad, ceil_mode=ceil)
    np.testing.assert_allclose(y, naive_pool(x, k, s, pads, ceil, "max"), atol=1e-12)
    y = fwd("avgpool", [x], kernel=list(k), stride=list(s), padding=pad, ceil_mode=ceil, count_include_pad=cip)
    np.testing.assert_allclose(y, naive_pool(x, k, s, pads, ceil, "avg", cip), atol=1e-12)


def test_maxpool_ties_route_gradient_to_one_element():
    x = np.ones((1, 1, 4, 4))
    op = get("maxpool")
    attrs = resolve_attrs(op, [TensorType(x.shape, "f64")], {"kernel": 2})
    ys, saved, ctx = run_forward(op, [x], {}, attrs, False)
    gx = op.vjp(ctx, [np.ones((1, 1, 2, 2))], saved, [x], {}, attrs)[0][0]
    assert gx.sum() == 4 and gx.max() == 1


def test_attention_matches_per_head_loops():
    rng = np.random.default_rng(0)
    N, T, D, H = 2, 5, 8, 2
    x = rng.standard_normal((N, T, D))
    ws = {"in_weight": rng.standard_normal((3 * D, D)), "in_bias": rng.standard_normal(3 * D),
          "out_weight": rng.standard_normal((D, D)), "out_bias": rng.standard_normal(D)}
    for causal in (False, True):
        y = fwd("attention", [x], ws, heads=H, causal=causal)
        dh = D // H
        ref = np.zeros_like(x)
        for n in range(N):
            q = x[n] @ ws["in_weight"][:D].T + ws["in_bias"][:D]
            k = x[n] @ ws["in_weight"][D:2 * D].T + ws["in_bias"][D:2 * D]
            v = x[n] @ ws["in_weight"][2 * D:].T + ws["in_bias"][2 * D:]
            heads = []
            for h in range(H):
                sl = slice(h * dh, (h + 1) * dh)
                out = np.zeros((T, dh))
                for t in range(T):
                    ts = range(t + 1) if causal else range(T)
                    sc = np.array([q[t, sl] @ k[u, sl] / math.sqrt(dh) for u in ts])
                    p = np.exp(sc - sc.max())
                    p /= p.sum()
                    out[t] = sum(p[i] * v[u, sl] for i, u in enumerate(ts))
                heads.append(out)
            ref[n] = np.concatenate(heads, axis=1) @ ws["out_weight"].T + ws["out_bias"]
        np.testing.assert_allclose(y, ref, atol=1e-10)


def test_batchnorm_training_updates_running_stats_pytorch_style():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 2, 2)).astype(np.float32) * 2 + 1
    op = get("batchnorm")
    attrs = resolve_attrs(op, [TensorType(x.shape)], {"momentum": 0.1})
    ws = {"weight": np.ones(3, np.float32), "bias": np.zeros(3, np.float32),
          "running_mean": np.zeros(3, np.float32), "running_var": np.ones(3, np.float32)}
    rm, rv = ws["running_mean"], ws["running_var"]
    ys, _ = op.forward(ExecContext(training=True), [x], ws, attrs)
    assert ws["running_mean"] is rm and ws["running_var"] is rv  # updated in place
    xd = x.astype(np.float64)
    np.testing.assert_allclose(rm, 0.1 * xd.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(rv, 0.9 + 0.1 * xd.var(axis=(0, 2, 3), ddof=1), rtol=1e-5)
    assert rm.dtype == rv.dtype == np.float32
    mu, var = xd.mean(axis=(0, 2, 3), keepdims=True), xd.var(axis=(0, 2, 3), keepdims=True)
    np.testing.assert_allclose(ys[0], (xd - mu) / np.sqrt(var + 1e-5), rtol=1e-4, atol=1e-5)
    ys_eval, _ = op.forward(ExecContext(training=False), [x], ws, attrs)  # eval: running stats, no update
    np.testing.assert_allclose(ys_eval[0], (xd - rm.reshape(1, 3, 1, 1)) / np.sqrt(rv.reshape(1, 3, 1, 1) + 1e-5),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rm, 0.1 * xd.mean(axis=(0, 2, 3)), rtol=1e-5)


def test_cross_entropy_formula_smoothing_and_onehot():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((5, 4))
    t = rng.integers(0, 4, 5)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    assert np.isclose(fwd("cross_entropy", [z, t]), -logp[np.arange(5), t].mean())
    onehot = np.eye(4)[t]
    assert np.isclose(fwd("cross_entropy", [z, onehot]), -logp[np.arange(5), t].mean())
    eps = 0.1
    ref = ((1 - eps) * -logp[np.arange(5), t] + eps * -logp.mean(1)).mean()
    assert np.isclose(fwd("cross_entropy", [z, t], label_smoothing=eps), ref)
    assert np.isclose(fwd("cross_entropy", [z, onehot], label_smoothing=eps), ref)
    # segmentation: mean over N and the spatial positions
    z4 = rng.standard_normal((2, 3, 2, 2))
    t4 = rng.integers(0, 3, (2, 2, 2))
    lp4 = z4 - np.log(np.exp(z4).sum(1, keepdims=True))
    ref4 = -np.take_along_axis(lp4, t4[:, None], 1).mean()
    assert np.isclose(fwd("cross_entropy", [z4, t4]), ref4)
    with pytest.raises(ValueError, match="class index"):
        fwd("cross_entropy", [z, np.full(5, 4)])


def test_losses_are_stable_for_huge_logits():
    z = np.array([[1000.0, -1000.0, 0.0]], np.float32)
    assert np.isfinite(fwd("cross_entropy", [z, np.array([1])]))
    assert np.isclose(fwd("cross_entropy", [z, np.array([1])]), 2000.0)
    ls = fwd("log_softmax", [z])
    assert np.all(np.isfinite(ls)) and ls.dtype == np.float32
    x = np.array([[800.0, -800.0, 0.0]], np.float32)
    y = np.array([[0.0, 1.0, 1.0]], np.float32)
    b = fwd("bce", [x, y])
    assert b.dtype == np.float32 and np.isclose(b, (800 + 800 + math.log(2)) / 3, rtol=1e-5)
    s = fwd("sigmoid", [x])
    assert np.all(np.isfinite(s)) and s[0, 0] == 1 and s[0, 1] == 0


def test_dropout_train_and_eval():
    x = np.ones((200, 50), np.float32)
    assert fwd("dropout", [x], p=0.3, training=False) is x or np.array_equal(fwd("dropout", [x], p=0.3), x)
    y = fwd("dropout", [x], p=0.3, training=True, seed=3)
    assert y.dtype == np.float32
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.02
    np.testing.assert_allclose(y[kept], 1 / 0.7, rtol=1e-6)
    np.testing.assert_array_equal(y, fwd("dropout", [x], p=0.3, training=True, seed=3))
    assert not np.array_equal(y, fwd("dropout", [x], p=0.3, training=True, seed=4))


def test_gelu_exact_erf_form():
    x = np.linspace(-6, 6, 101)
    ref = np.array([v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x])
    np.testing.assert_allclose(fwd("gelu", [x]), ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(fwd("gelu", [x.astype(np.float32)]), ref, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("align", [False, True])
def test_bilinear_upsample_matches_pytorch_formula(align):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 3, 4))
    sh, sw = 2, 3
    y = fwd("upsample", [x], scale=[sh, sw], mode="bilinear", align_corners=align)
    H, W = 3, 4
    OH, OW = H * sh, W * sw

    def src(o, n_in, n_out, s):
        if align:
            return o * (n_in - 1) / (n_out - 1)
        return max((o + 0.5) / s - 0.5, 0.0)
    ref = np.zeros((1, 2, OH, OW))
    for i, j in itertools.product(range(OH), range(OW)):
        fy, fx = src(i, H, OH, sh), src(j, W, OW, sw)
        y0, x0 = min(int(fy), H - 1), min(int(fx), W - 1)
        y1, x1 = min(y0 + 1, H - 1), min(x0 + 1, W - 1)
        ly, lx = fy - y0, fx - x0
        ref[..., i, j] = ((1 - ly) * ((1 - lx) * x[..., y0, x0] + lx * x[..., y0, x1])
                          + ly * ((1 - lx) * x[..., y1, x0] + lx * x[..., y1, x1]))
    np.testing.assert_allclose(y, ref, atol=1e-12)
    yn = fwd("upsample", [x], scale=[sh, sw])
    np.testing.assert_array_equal(yn, x.repeat(sh, 2).repeat(sw, 3))


@pytest.mark.parametrize("hw,size", [((7, 5), [3, 2]), ((8, 6), [4, 3]), ((6, 6), [6, 6]), ((3, 4), [5, 4]),
                                     ((5, 7), [1, 1]), ((13, 13), [6, 6])])
def test_adaptive_avgpool_matches_pytorch_windows(hw, size):
    """PyTorch's AdaptiveAvgPool2d: output (i, j) is the mean of rows floor(i*H/oh) .. ceil((i+1)*H/oh) - 1
    and the same columns for W / ow."""
    rng = np.random.default_rng(0)
    H, W = hw
    x = rng.standard_normal((2, 3, H, W))
    oh, ow = size
    y = fwd("adaptive_avgpool", [x], size=size)
    ref = np.zeros((2, 3, oh, ow))
    for i, j in itertools.product(range(oh), range(ow)):
        h0, h1 = (i * H) // oh, math.ceil((i + 1) * H / oh)
        w0, w1 = (j * W) // ow, math.ceil((j + 1) * W / ow)
        ref[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    np.testing.assert_allclose(y, ref, atol=1e-12)


@pytest.mark.parametrize("name,shape,attrs", [
    ("conv2d", (2, 3, 16, 17), {"out": 4, "kernel": 3, "padding": 1}),                   # per-sample GEMMs
    ("conv2d", (1, 4, 18, 18), {"out": 4, "kernel": 3, "groups": 2, "dilation": 2}),
    ("conv1d", (2, 3, 300), {"out": 2, "kernel": 5, "padding": "same"}),
    ("conv_transpose2d", (1, 3, 16, 16), {"out": 2, "kernel": 3, "padding": 1}),
    ("maxpool", (1, 2, 20, 20), {"kernel": 3, "stride": 2, "padding": 1}),
], ids=lambda v: v if isinstance(v, str) else None)
def test_gradients_large_feature_maps(name, shape, attrs):
    """The kernels switch strategy on large maps (conv: per-sample GEMMs from OH*OW >= 256)."""
    from dslc.ops.registry import Case
    case = Case((TensorType(shape),), attrs)
    check_op(get(name), case)
    check_float32(get(name), case)


def test_pool_symbolic_same_pads_at_run_time():
    rng = np.random.default_rng(0)
    for name, kind in (("maxpool", "max"), ("avgpool", "avg")):
        op = get(name)
        attrs = resolve_attrs(op, [TensorType(("N", 2, "H", "W"), "f64")], dict(kernel=3, stride=2, padding="same"))
        assert attrs["pads"] is None
        x = rng.standard_normal((2, 2, 7, 6))
        y, _, _ = run_forward(op, [x], {}, attrs, False)
        assert y[0].shape == (2, 2, 4, 3)
        np.testing.assert_allclose(y[0], naive_pool(x, (3, 3), (2, 2), (1, 0, 1, 1), False, kind), atol=1e-12)
