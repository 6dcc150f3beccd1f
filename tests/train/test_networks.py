"""Every shipped network (networks/*.net): the executor's forward equals onnxruntime on the compiled model, and one
SGD step lowers the loss on a fixed batch (networks without a train section get an mse loss on their first
output for this)."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

import dslc
from dslc import ir
from dslc.train.executor import Executor
from dslc.train.optim import SGD
from dslc.types import TensorType
from dslc.weights import init_weights

from train_helpers import concrete, ort_session, random_array

NETWORKS = sorted(Path(__file__).resolve().parents[2].joinpath("networks").glob("*.net"))


def _load(path):
    prog = dslc.load(str(path))
    assert prog.ok, prog.diagnostics.render_all()
    return prog.graph


def _batch(g) -> int:
    big = any(int(np.prod([d for d in g.nodes[n]["outputs"][0].shape if isinstance(d, int)])) > 50_000
              for n in g.graph["inputs"])
    return 1 if big else 2


def _weights(g, seed=0):
    """Seeded initialisation, with biases and batchnorm statistics moved off their trivial values."""
    w = init_weights(g, seed)
    rng = np.random.default_rng(seed + 1)
    for k, v in w.items():
        key = k.rsplit(".", 1)[-1]
        if "var" in key:
            v[...] = rng.uniform(0.5, 1.5, v.shape)
        elif "mean" in key or key == "bias":
            v += (0.1 * rng.standard_normal(v.shape)).astype(np.float32)
    return w


def _feeds(g, n, seed=0, names=None):
    rng = np.random.default_rng(seed)
    sizes = {"N": n}
    out = {}
    for name in names if names is not None else g.graph["inputs"]:
        t = g.nodes[name]["outputs"][0]
        for d in t.shape:   # a symbolic sequence length (tokens: i64[N, T]): long enough for a text CNN's widths
            if isinstance(d, str) and d.isidentifier():
                sizes.setdefault(d, 6)
        out[name] = random_array(t, concrete(t.shape, sizes), rng)
    return out


@pytest.mark.parametrize("path", NETWORKS, ids=[p.stem for p in NETWORKS])
def test_forward_matches_onnxruntime(path):
    from dslc.lowering.compile import compile_graph
    g = _load(path)
    n = _batch(g)
    w = _weights(g)
    model, _ = compile_graph(g, weights=w, validate=False)
    feeds = _feeds(g, n)
    want = ort_session(model).run(None, feeds)
    got = Executor(g, weights=w).forward(feeds)
    for (name, _src), ref in zip(g.graph["outputs"].items(), want):
        y = got[name]
        assert y.shape == ref.shape and y.dtype == ref.dtype
        scale = max(float(np.abs(ref).max()), 1.0)
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4 * scale, err_msg=f"output {name}")


def with_mse_loss(g):
    """A copy of g with a target like its first output and an mse loss (for networks without a train section)."""
    h = g.copy()
    h.graph = copy.deepcopy(g.graph)
    name, (src, idx) = next(iter(g.graph["outputs"].items()))
    t = g.nodes[src]["outputs"][idx]
    ir.add_input(h, "target", t, role="target")
    ir.add_node(h, "mse", "loss.mse", [(src, idx), ("target", 0)], {}, [TensorType((), t.dtype)], role="loss")
    h.graph["loss"] = ("loss.mse", 0)
    return h


@pytest.mark.parametrize("path", NETWORKS, ids=[p.stem for p in NETWORKS])
def test_one_sgd_step_lowers_the_loss(path):
    g = _load(path)
    if g.graph.get("loss") is None:
        g = with_mse_loss(g)
    n = _batch(g)
    exe = Executor(g, weights=_weights(g))
    feeds = _feeds(g, n, seed=2)
    targets = _feeds(g, n, seed=3, names=g.graph["targets"])
    loss_node = g.nodes[g.graph["loss"][0]]
    if loss_node["op"] == "cross_entropy":        # valid class indices
        logits = g.nodes[loss_node["inputs"][0][0]]["outputs"][loss_node["inputs"][0][1]]
        for k, v in targets.items():
            if v.dtype.kind == "i":
                targets[k] = np.random.default_rng(4).integers(0, logits.shape[1], v.shape)
    if loss_node["op"] == "bce":
        targets = {k: (v > 0).astype(v.dtype) for k, v in targets.items()}
    state = exe.rng.bit_generator.state           # the same dropout masks for both evaluations
    loss0, _aux, grads = exe.loss_and_grads(feeds, targets)
    assert all(v.dtype == np.float32 for v in grads.values())
    g2 = sum(float(np.vdot(v, v)) for v in grads.values())
    assert g2 > 0
    # a step whose first-order decrease lr * |g|^2 is 1 % of the loss: the loss must fall, by at least a
    # quarter of that prediction (a wrong gradient would not give the predicted decrease)
    lr = 0.01 * loss0 / g2
    opt = SGD({k: exe.weights[k] for k in exe.trainable}, lr=lr)
    opt.step(grads)
    exe.rng.bit_generator.state = state
    loss1 = float(exe.forward(feeds, targets, training=True)["loss"])   # same mode and masks, no backward
    assert loss1 < loss0, (loss0, loss1)
    assert loss0 - loss1 > 0.25 * lr * g2, (loss0, loss1, lr * g2)
