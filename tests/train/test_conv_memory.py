"""The convolution / batchnorm training path's memory and determinism: column matrices rebuilt in the backward
pass (ExecContext.keep_columns), reused work buffers, kernel-major conv weights, inputs not kept for vjps that
read only shapes."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import dslc
from dslc.train.executor import Executor
from dslc.train.optim import make_optimizer

NET = """
network small_cnn(x: f32[N, 3, 16, 16]) {
    a = x |> conv2d(16, 3, padding=1, bias=false) |> batchnorm |> relu
    b = a |> conv2d(16, 3, padding=1, bias=false) |> batchnorm
    c = (a + b) |> relu |> conv2d(32, 3, stride=2, padding=1) |> batchnorm |> relu
    logits = c |> global_avgpool |> linear(10)
    return logits
}

train {
    target label: i64[N]
    loss = cross_entropy(logits, label)
}
"""
BATCH = 16


@pytest.fixture(scope="module")
def graph():
    prog = dslc.load("small_cnn.net", text=NET)
    assert prog.ok, prog.diagnostics.render_all()
    return prog.graph


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((BATCH, 3, 16, 16), dtype=np.float32), rng.integers(0, 10, BATCH)


def _train(g, steps=3, keep_columns=False):
    exe = Executor(g, seed=0, workers=1)
    exe.train_ctx.keep_columns = keep_columns
    opt = make_optimizer({"name": "sgd", "lr": 0.05, "momentum": 0.9}, {k: exe.weights[k] for k in exe.trainable})
    losses = []
    for i in range(steps):
        x, y = _data(i)
        loss, _aux, grads = exe.loss_and_grads([x], [y])
        opt.step(grads)
        losses.append(loss)
    return exe, losses


def test_same_seed_same_bits_and_keep_columns_changes_nothing(graph):
    a, la = _train(graph)
    b, lb = _train(graph)
    c, lc = _train(graph, keep_columns=True)
    assert la == lb == lc
    assert la[-1] != la[0]   # it trained
    for k in a.weights:
        np.testing.assert_array_equal(a.weights[k], b.weights[k])
        np.testing.assert_array_equal(a.weights[k], c.weights[k])


def test_conv_weights_are_kernel_major_and_round_trip(graph):
    exe = Executor(graph, seed=0, workers=1)
    w = exe.weights["conv1.weight"]
    assert w.shape == (16, 3, 3, 3) and not w.flags.c_contiguous
    assert w.transpose(2, 3, 1, 0).flags.c_contiguous     # (KH, KW, C, O) memory order
    fresh = {k: np.ascontiguousarray(v) for k, v in exe.weights.items()}
    other = Executor(graph, weights=fresh, seed=0, workers=1)
    x, y = _data()
    assert exe.forward([x], [y])["loss"] == other.forward([x], [y])["loss"]


def _peak_bytes(exe, x, y) -> int:
    exe.loss_and_grads([x], [y])          # warm: work buffers and caches exist before measuring
    tracemalloc.start()
    try:
        exe.loss_and_grads([x], [y])
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_columns_are_not_kept_for_the_backward_pass(graph):
    x, y = _data()
    lean = Executor(graph, seed=0, workers=1)
    keep = Executor(graph, seed=0, workers=1)
    keep.train_ctx.keep_columns = True
    # the three convolutions' column matrices: 16*16*16 rows x 27, 16*16*16 x 144, 16*8*8 x 144 floats
    columns = 4 * (BATCH * 256 * 27 + BATCH * 256 * 144 + BATCH * 64 * 144)
    assert _peak_bytes(keep, x, y) - _peak_bytes(lean, x, y) > 0.8 * columns
