"""The numpy executor: every op (and loss) against onnxruntime, gradient summing at fan-out, float32 gradients,
train/eval modes, planning, errors."""
from __future__ import annotations

import numpy as np
import pytest

import dslc
from dslc import ir
from dslc.ops.registry import get
from dslc.ops.testing import all_cases, one_node_graph
from dslc.train.executor import Executor, ExecutorError
from dslc.types import TensorType
from dslc.weights import init_weights

from loss_references import loss_model
from train_helpers import case_sizes, concrete, ort_session, random_array, random_weights

CASES = all_cases()


def _id(pc):
    op, c = pc
    return f"{op.name}-{c.note or ','.join(f'{k}={v}' for k, v in c.attrs.items()) or 'default'}".replace(" ", "_")


def _feeds(g, case, sizes, seed=0):
    rng = np.random.default_rng(seed)
    return {f"x{i}": random_array(t, concrete(t.shape, sizes), rng) for i, t in enumerate(case.inputs)}


# ---- every op vs onnxruntime ---------------------------------------------------------------------------------
def _loss_model(op, case, g, sizes):
    """A hand-built ONNX model of a training loss (losses are not lowered: they are training-only)."""
    shapes = [concrete(t.shape, sizes) for t in case.inputs]
    return loss_model(op.name, g.nodes["node"]["attrs"], shapes, case.inputs[1].dtype == "i64")


@pytest.mark.parametrize("op,case", CASES, ids=[_id(pc) for pc in CASES])
def test_forward_matches_onnxruntime(op, case):
    g = one_node_graph(op, case)
    sizes = case_sizes(case.inputs)
    feeds = _feeds(g, case, sizes)
    if op.category == "loss":
        if case.inputs[1].dtype == "i64":   # class indices must be valid for the logits
            logits = concrete(case.inputs[0].shape, sizes)
            C = logits[-1] if g.nodes["node"]["attrs"].get("class_last") else logits[1]
            feeds["x1"] = np.random.default_rng(1).integers(0, C, feeds["x1"].shape).astype(np.int64)
        elif op.name == "cross_entropy":     # probability targets
            p = np.random.default_rng(1).random(feeds["x1"].shape).astype(np.float32)
            feeds["x1"] = p / p.sum(axis=1, keepdims=True)
        elif op.name == "bce":
            feeds["x1"] = (np.random.default_rng(1).random(feeds["x1"].shape) > 0.5).astype(np.float32)
        model = _loss_model(op, case, g, sizes)
        weights = {}
    else:
        from dslc.lowering.compile import compile_graph
        weights = random_weights(g)
        model, _ = compile_graph(g, weights=weights, validate=False)
    want = ort_session(model).run(None, feeds)
    exe = Executor(g, weights=weights)
    got = exe.forward([feeds[f"x{i}"] for i in range(len(case.inputs))])
    for j, w in enumerate(want):
        y = got[f"y{j}"]
        assert y.shape == w.shape
        assert y.dtype == w.dtype
        scale = max(float(np.abs(w).max()) if w.size else 1.0, 1.0)
        np.testing.assert_allclose(y, w, rtol=1e-5, atol=1e-5 * scale)


# ---- gradients through the graph -----------------------------------------------------------------------------
FANOUT = """
network skip(x: f32[N, 4]) {
    h = x |> linear(4) as fc1
    a = h |> tanh
    b = h |> sigmoid
    y = (a + b + h) |> linear(3) as fc2
    return y
}
train {
    target t: f32[N, 3]
    loss = mse(y, t)
    data = sinxsiny()
}
"""


def _graph(src):
    prog = dslc.load("t.net", text=src)
    assert prog.ok, prog.diagnostics.render_all()
    return prog.graph


def test_gradients_sum_at_fan_out():
    """h feeds three consumers: its gradient is the sum of theirs. Checked against finite differences (float64
    arithmetic on the loss) and against a hand-written backward pass."""
    g = _graph(FANOUT)
    exe = Executor(g, seed=3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    t = rng.standard_normal((5, 3)).astype(np.float32)
    loss, _aux, grads = exe.loss_and_grads([x], [t])
    for v in grads.values():
        assert v.dtype == np.float32
    W1, b1 = (exe.weights[k].astype(np.float64) for k in ("fc1.weight", "fc1.bias"))
    W2, b2 = (exe.weights[k].astype(np.float64) for k in ("fc2.weight", "fc2.bias"))
    xd, td = x.astype(np.float64), t.astype(np.float64)
    h = xd @ W1.T + b1
    a, s = np.tanh(h), 1 / (1 + np.exp(-h))
    u = a + s + h
    y = u @ W2.T + b2
    assert loss == pytest.approx(np.mean((y - td) ** 2), rel=1e-5)
    gy = 2 * (y - td) / y.size
    gu = gy @ W2
    gh = gu * (1 - a ** 2) + gu * s * (1 - s) + gu        # the three paths, summed
    np.testing.assert_allclose(grads["fc2.weight"], gy.T @ u, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grads["fc1.weight"], gh.T @ xd, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grads["fc1.bias"], gh.sum(0), rtol=1e-4, atol=1e-6)


def test_same_tensor_twice_in_one_op():
    """x + x: one tensor in two slots of the same node gets both gradients."""
    g = _graph("""
network d(x: f32[N, 3]) {
    h = x |> linear(3) as fc
    y = h + h
    return y
}
train { target t: f32[N, 3]; loss = mse(y, t); data = sinxsiny() }
""")
    exe = Executor(g, seed=0)
    x = np.ones((2, 3), np.float32)
    t = np.zeros((2, 3), np.float32)
    _loss, _aux, grads = exe.loss_and_grads([x], [t])
    W, b = exe.weights["fc.weight"].astype(np.float64), exe.weights["fc.bias"].astype(np.float64)
    y = 2 * (x @ W.T + b)
    gh = 2 * (2 * (y - t) / y.size)
    np.testing.assert_allclose(grads["fc.bias"], gh.sum(0), rtol=1e-5)


def test_plan_is_built_once_and_reused():
    g = _graph(FANOUT)
    exe = Executor(g, seed=0)
    x, t = np.zeros((2, 4), np.float32), np.zeros((2, 3), np.float32)
    exe.loss_and_grads([x], [t])
    plan = exe.plan("train")
    exe.loss_and_grads([np.zeros((7, 4), np.float32)], [np.zeros((7, 3), np.float32)])
    assert exe.plan("train") is plan
    assert [s.node for s in plan.steps][-1].startswith("loss")
    # a plan step is plain data: functions, slots, weight arrays shared with exe.weights
    st = next(s for s in plan.steps if s.node == "fc1")
    assert st.ws["weight"] is exe.weights["fc1.weight"]


def test_weights_in_place_and_set_weights():
    g = _graph(FANOUT)
    exe = Executor(g, seed=0)
    w = exe.weights["fc1.weight"]
    new = {k: np.full_like(v, 0.5) for k, v in exe.weights.items()}
    exe.set_weights(new)
    assert exe.weights["fc1.weight"] is w and np.all(w == 0.5)


def test_linear_weights_are_column_major_with_unchanged_values():
    """The executor stores linear weights column-major (fast BLAS cases); shape and values are the caller's."""
    g = _graph(FANOUT)
    w0 = init_weights(g, 0)
    exe = Executor(g, weights={k: v.copy() for k, v in w0.items()})
    lin = [k for k in exe.weights if k.endswith(".weight") and g.nodes[k.rsplit(".", 1)[0]]["op"] == "linear"]
    assert lin
    for k in lin:
        w = exe.weights[k]
        assert w.flags.f_contiguous and not w.flags.c_contiguous and w.shape == w0[k].shape
        np.testing.assert_array_equal(w, w0[k])


def test_only_needed_steps_run_and_eval_mode():
    """Dropout: identity in evaluation mode, random in training mode, reproducible from the seed."""
    g = _graph("""
network dr(x: f32[N, 8]) {
    y = x |> linear(8) as fc |> dropout(0.5)
    return y
}
train { target t: f32[N, 8]; loss = mse(y, t); data = sinxsiny() }
""")
    x = np.ones((4, 8), np.float32)
    e1, e2 = Executor(g, seed=5), Executor(g, seed=5)
    ev = e1.forward([x])["y"]
    assert np.array_equal(ev, e1.forward([x])["y"])
    tr1 = e1.forward([x], training=True)["y"]
    tr2 = e2.forward([x], training=True)["y"]
    assert np.array_equal(tr1, tr2)                      # same seed, same mask
    assert np.count_nonzero(tr1 == 0) > 0 and not np.array_equal(tr1, ev)
    out = e1.forward([x], [np.zeros((4, 8), np.float32)])
    assert "loss" in out


def test_batchnorm_running_stats_update_in_training_only():
    g = _graph("""
network bn(x: f32[N, 3, 4, 4]) {
    y = x |> conv2d(2, 1) as conv |> batchnorm as bn
    return y
}
train { target t: f32[N, 2, 4, 4]; loss = mse(y, t); data = sinxsiny() }
""")
    exe = Executor(g, seed=0)
    names = [k for k in exe.weights if k.startswith("bn.") and ("mean" in k or "var" in k)]
    assert names, list(exe.weights)
    before = {k: exe.weights[k].copy() for k in names}
    x = np.random.default_rng(0).standard_normal((4, 3, 4, 4)).astype(np.float32) + 2
    exe.forward([x])
    assert all(np.array_equal(before[k], exe.weights[k]) for k in names)
    exe.loss_and_grads([x], [np.zeros((4, 2, 4, 4), np.float32)])
    assert any(not np.array_equal(before[k], exe.weights[k]) for k in names)
    assert set(exe.trainable).isdisjoint(names)


def test_errors():
    g = _graph(FANOUT)
    exe = Executor(g, seed=0)
    with pytest.raises(ExecutorError, match=r"input `x` expects shape \[N, 4\], got \[2, 5\]"):
        exe.forward([np.zeros((2, 5), np.float32)])
    with pytest.raises(ExecutorError, match="expected 1 target"):
        exe.loss_and_grads([np.zeros((2, 4), np.float32)], [])
    with pytest.raises(ExecutorError, match="do not fit"):
        Executor(g, weights={"fc1.weight": np.zeros((4, 4), np.float32)})
    noloss = ir.new_graph("n")
    ir.add_input(noloss, "x", TensorType(("N", 2)))
    ir.add_node(noloss, "relu", "r", [("x", 0)], {}, [TensorType(("N", 2))])
    noloss.graph["outputs"]["y"] = ("r", 0)
    with pytest.raises(ExecutorError, match="has no loss"):
        Executor(noloss).loss_and_grads([np.zeros((1, 2), np.float32)], [])
    assert get("relu").forward is not None


def test_batch_parallel_step_equals_the_whole_batch():
    """Two halves on two threads (graphs whose ops never mix samples): same loss, gradients and metrics'
    inputs as the whole batch in one piece, up to float rounding; float32; deterministic."""
    from pathlib import Path
    from dslc.train.executor import batch_separable
    root = Path(__file__).resolve().parents[2] / "networks"
    g = dslc.load(str(root / "lenet5.net")).graph
    assert batch_separable(g)
    assert not batch_separable(dslc.load(str(root / "resnet18.net")).graph)       # batchnorm
    assert not batch_separable(_graph(FANOUT.replace("|> sigmoid", "|> dropout(0.5)")))
    rng = np.random.default_rng(0)
    x = rng.random((40, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 40)
    one = Executor(g, seed=0, workers=1)
    two = Executor(g, seed=0, workers=2)
    if two.workers < 2:
        pytest.skip("BLAS thread count cannot be controlled here: no batch-parallel mode")
    l1, a1, g1 = one.loss_and_grads([x], [y])
    l2, a2, g2 = two.loss_and_grads([x], [y])
    assert two._split_ok
    assert l2 == pytest.approx(l1, rel=1e-6)
    np.testing.assert_allclose(a2[0], a1[0], rtol=1e-5, atol=1e-6)
    assert np.array_equal(a2[1], a1[1])
    for k in g1:
        assert g2[k].dtype == np.float32
        np.testing.assert_allclose(g2[k], g1[k], rtol=1e-4, atol=1e-6)
    l3, _a3, g3 = Executor(g, seed=0, workers=2).loss_and_grads([x], [y])
    assert l3 == l2 and all(np.array_equal(g3[k], g2[k]) for k in g2)
    lo, _ao, go = one.loss_and_grads([x[:37]], [y[:37]])          # unequal halves: weighted average
    lt, at, gt = two.loss_and_grads([x[:37]], [y[:37]])
    assert lt == pytest.approx(lo, rel=1e-6) and at[0].shape == (37, 10)
    for k in go:
        np.testing.assert_allclose(gt[k], go[k], rtol=1e-4, atol=1e-6)
