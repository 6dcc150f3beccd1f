"""Optimiser steps against hand-written formulas; schedules; clipping; state round trips; determinism."""
from __future__ import annotations

import math

import numpy as np
import pytest

from dslc.train.optim import (SGD, Adam, AdamW, OptimizerError, clip_grad_norm, global_norm, make_optimizer,
                              make_schedule)


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {"a.weight": rng.standard_normal((3, 4)).astype(np.float32),
            "a.bias": rng.standard_normal(4).astype(np.float32)}


def _grads(seed):
    rng = np.random.default_rng(100 + seed)
    return {"a.weight": rng.standard_normal((3, 4)).astype(np.float32),
            "a.bias": rng.standard_normal(4).astype(np.float32)}


def _run(opt_cls, steps=4, lr=0.1, **kw):
    p = _params()
    ref = {k: v.astype(np.float64) for k, v in p.items()}
    opt = opt_cls(p, lr=lr, **kw)
    gs = [_grads(i) for i in range(steps)]
    for g in gs:
        opt.step(g)
    for k in p:
        assert p[k].dtype == np.float32
    return p, ref, gs


def test_sgd_plain():
    p, ref, gs = _run(SGD, lr=0.1)
    for g in gs:
        for k in ref:
            ref[k] = ref[k] - 0.1 * g[k]
    for k in p:
        np.testing.assert_allclose(p[k], ref[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_weight_decay(nesterov):
    mu, wd, lr = 0.9, 0.01, 0.05
    p, ref, gs = _run(SGD, lr=lr, momentum=mu, nesterov=nesterov, weight_decay=wd)
    buf = {}
    for g in gs:
        for k in ref:
            d = g[k] + wd * ref[k]
            buf[k] = d if k not in buf else mu * buf[k] + d
            step = d + mu * buf[k] if nesterov else buf[k]
            ref[k] = ref[k] - lr * step
    for k in p:
        np.testing.assert_allclose(p[k], ref[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls,wd", [(Adam, 0.0), (Adam, 0.1), (AdamW, 0.1)])
def test_adam_family(cls, wd):
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    p, ref, gs = _run(cls, lr=lr, weight_decay=wd)
    m = {k: 0.0 for k in ref}
    v = {k: 0.0 for k in ref}
    for t, g in enumerate(gs, 1):
        for k in ref:
            gk = g[k].astype(np.float64)
            if cls is Adam:
                gk = gk + wd * ref[k]
            else:
                ref[k] = ref[k] * (1 - lr * wd)
            m[k] = b1 * m[k] + (1 - b1) * gk
            v[k] = b2 * v[k] + (1 - b2) * gk * gk
            mhat = m[k] / (1 - b1 ** t)
            vhat = v[k] / (1 - b2 ** t)
            ref[k] = ref[k] - lr * mhat / (np.sqrt(vhat) + eps)
    for k in p:
        np.testing.assert_allclose(p[k], ref[k], rtol=1e-5, atol=1e-6)


def test_state_round_trip_continues_identically():
    p1, p2 = _params(), _params()
    o1, o2 = Adam(p1, lr=0.01), Adam(p2, lr=0.01)
    for i in range(3):
        o1.step(_grads(i))
        o2.step(_grads(i))
    arrays, meta = o1.state_dict()
    p3 = {k: v.copy() for k, v in p1.items()}
    o3 = Adam(p3, lr=0.01)
    o3.load_state_dict({k: v.copy() for k, v in arrays.items()}, meta)
    for i in range(3, 6):
        o2.step(_grads(i))
        o3.step(_grads(i))
    for k in p2:
        assert np.array_equal(p2[k], p3[k])


def test_determinism_bitwise():
    a, b = _params(), _params()
    oa, ob = make_optimizer({"name": "adamw", "lr": 3e-3}, a), make_optimizer({"name": "adamw", "lr": 3e-3}, b)
    for i in range(5):
        oa.step(_grads(i))
        ob.step(_grads(i))
    for k in a:
        assert np.array_equal(a[k], b[k])


def test_make_optimizer_errors():
    with pytest.raises(OptimizerError, match="unknown optimizer `rmsprop`"):
        make_optimizer({"name": "rmsprop"}, _params())
    with pytest.raises(OptimizerError, match="unknown argument `momentum`"):
        make_optimizer({"name": "adam", "momentum": 0.9}, _params())
    with pytest.raises(OptimizerError, match="positive"):
        make_optimizer({"name": "sgd", "lr": -1}, _params())
    opt = make_optimizer({"name": "sgd", "lr": 0.5, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0},
                         _params(), lr=0.01)
    assert opt.lr == 0.01


def test_schedules():
    spe, epochs, lr = 10, 5, 1.0
    const = make_schedule(None, lr, spe, epochs)
    assert const(0) == const(49) == 1.0
    step = make_schedule({"name": "step", "step_size": 2, "gamma": 0.5}, lr, spe, epochs)
    assert [step(s) for s in (0, 19, 20, 39, 40)] == [1.0, 1.0, 0.5, 0.5, 0.25]
    cos = make_schedule({"name": "cosine", "warmup": 1, "min_lr": 0.0}, lr, spe, epochs)
    assert cos(0) == pytest.approx(0.1) and cos(9) == pytest.approx(1.0)      # linear warm-up over epoch 1
    assert cos(10) == pytest.approx(1.0)
    assert cos(30) == pytest.approx(0.5)                                      # half way through the decay
    assert cos(49) == pytest.approx(0.5 * (1 + math.cos(math.pi * 39 / 40)))
    vals = [cos(s) for s in range(10, 50)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))
    with pytest.raises(OptimizerError, match="unknown schedule"):
        make_schedule({"name": "cyclic"}, lr, spe, epochs)


def test_clip_grad_norm():
    g = {"a": np.full((3,), 3.0, np.float32), "b": np.full((1,), 4.0, np.float32)}
    n = global_norm(g)
    assert n == pytest.approx(math.sqrt(27 + 16))
    before = clip_grad_norm(g, 1.0)
    assert before == pytest.approx(n)
    assert global_norm(g) == pytest.approx(1.0, rel=1e-5)
    assert g["a"].dtype == np.float32
    g2 = {"a": np.full((3,), 0.1, np.float32)}
    clip_grad_norm(g2, 1.0)
    assert np.allclose(g2["a"], 0.1)


@pytest.mark.parametrize("cls,kw", [(Adam, {}), (AdamW, {}), (SGD, {"momentum": 0.9, "nesterov": True})])
def test_two_threads_give_the_same_bits(cls, kw):
    """Large parameters are updated half by a helper thread: the result is bit-identical to one thread."""
    rng = np.random.default_rng(0)
    base = {"big": rng.standard_normal((300, 301)).astype(np.float32), "small": np.ones(5, np.float32)}
    a = {k: v.copy() for k, v in base.items()}
    b = {k: v.copy() for k, v in base.items()}
    oa, ob = cls(a, lr=0.01, threads=1, **kw), cls(b, lr=0.01, threads=2, **kw)
    assert len(ob._parts["big"]) == 2 and len(oa._parts["big"]) == 1
    oc = cls({k: v.copy() for k, v in base.items()}, lr=0.01, **kw)   # auto: times both, keeps one
    for i in range(40):
        oc.step({"big": np.zeros((300, 301), np.float32), "small": np.zeros(5, np.float32)})
    assert oc._mode in (("split", "whole") if oc.threads > 1 else ("whole",))
    for i in range(3):
        g = {"big": rng.standard_normal((300, 301)).astype(np.float32), "small": np.full(5, 0.1, np.float32)}
        oa.step(g)
        ob.step(g)
    for k in a:
        assert np.array_equal(a[k], b[k])


# The numpy formulation the compiled kernels replace (dslc/kernels/jit.py): float32 ufuncs, one pass each. The
# kernels must compute the same float32 operations in the same order, so the results are bit-identical.
def _numpy_sgd(p, g, st, t, lr, momentum, dampening, nesterov, wd):
    if wd:
        g = p * np.float32(wd) + g
    if momentum:
        buf = st.setdefault("buf", np.zeros_like(p))
        if t == 1:
            buf[...] = g
        else:
            buf *= momentum
            buf += (1.0 - dampening) * g if dampening else g
        g = buf * momentum + g if nesterov else buf
    p -= g * lr


def _numpy_adam(p, g, st, t, lr, b1, b2, eps, wd, decoupled):
    m = st.setdefault("m", np.zeros_like(p))
    v = st.setdefault("v", np.zeros_like(p))
    bc1, bc2 = 1.0 - b1 ** t, 1.0 - b2 ** t
    s = math.sqrt((1.0 - b2) / bc2)
    if wd and not decoupled:
        g = p * wd + g
    m *= b1
    m += g
    v *= b2
    v += g * g
    tmp = np.sqrt(v)
    tmp += eps / s
    tmp = m / tmp
    tmp *= lr * (1.0 - b1) / (bc1 * s)
    if wd and decoupled:
        p *= 1.0 - lr * wd
    p -= tmp


@pytest.mark.parametrize("name,kw", [
    ("sgd", {}), ("sgd", {"momentum": 0.9}), ("sgd", {"momentum": 0.9, "dampening": 0.1}),
    ("sgd", {"momentum": 0.8, "nesterov": True, "weight_decay": 0.01}),
    ("adam", {}), ("adam", {"weight_decay": 0.05}), ("adamw", {"weight_decay": 0.05}),
    ("adam", {"beta1": 0.5, "beta2": 0.9, "eps": 1e-3})])
def test_compiled_updates_equal_the_numpy_formulation_bit_for_bit(name, kw):
    rng = np.random.default_rng(3)
    p = {"w": rng.standard_normal(1001).astype(np.float32)}
    ref = p["w"].copy()
    lr = 0.01
    opt = make_optimizer({"name": name, **kw}, p, lr=lr)
    st: dict = {}
    for t in range(1, 6):
        g = rng.standard_normal(1001).astype(np.float32)
        opt.step({"w": g})
        if name == "sgd":
            _numpy_sgd(ref, g, st, t, lr, kw.get("momentum", 0.0), kw.get("dampening", 0.0),
                       kw.get("nesterov", False), kw.get("weight_decay", 0.0))
        else:
            _numpy_adam(ref, g, st, t, lr, kw.get("beta1", 0.9), kw.get("beta2", 0.999), kw.get("eps", 1e-8),
                        kw.get("weight_decay", 0.0 if name == "adam" else 0.01), name == "adamw")
        assert ref.dtype == np.float32
        np.testing.assert_array_equal(p["w"], ref, err_msg=f"step {t}")


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_column_major_parameters_update_like_row_major_ones(name):
    """The executor keeps linear weights column-major; updates must land in those arrays, element for element
    as for row-major ones, whatever the gradient's own memory order."""
    rng = np.random.default_rng(5)
    base = rng.standard_normal((7, 5)).astype(np.float32)
    pc, pf = {"w": base.copy()}, {"w": np.asfortranarray(base)}
    assert pf["w"].flags.f_contiguous and not pf["w"].flags.c_contiguous
    held = pf["w"]
    oc = make_optimizer({"name": name, "momentum": 0.9} if name == "sgd" else name, pc, lr=0.01)
    of = make_optimizer({"name": name, "momentum": 0.9} if name == "sgd" else name, pf, lr=0.01)
    for i in range(4):
        g = rng.standard_normal((7, 5)).astype(np.float32)
        oc.step({"w": g})
        of.step({"w": g if i % 2 else np.asfortranarray(g)})
    assert pf["w"] is held and not np.array_equal(held, base)
    np.testing.assert_array_equal(pf["w"], pc["w"])
