"""std.transformer's causal decoder: position t of the output depends on positions 0..t of the input only,
and the whole block compiles to ONNX that onnxruntime runs to the executor's numbers."""
from __future__ import annotations

import numpy as np

import dslc
from dslc.lowering.compile import compile_graph
from dslc.train.executor import Executor
from dslc.weights import init_weights

SRC = """import std.transformer

network gpt_body(x: f32[N, T, 16]) {
    y = x |> decoder(2, 4, 32)
    return y
}
"""


def _graph(tmp_path):
    prog = dslc.load(tmp_path / "body.net", text=SRC)
    assert prog.ok, prog.diagnostics.render_all()
    return prog.graph


def test_decoder_is_causal(tmp_path):
    g = _graph(tmp_path)
    exe = Executor(g, weights=init_weights(g, 0))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 7, 16)).astype(np.float32)
    y = exe.forward([x])["y"]
    later = x.copy()
    later[:, 4:] = rng.standard_normal((2, 3, 16))
    y2 = exe.forward([later])["y"]
    np.testing.assert_allclose(y2[:, :4], y[:, :4], rtol=1e-5, atol=1e-6)   # the past ignores the future
    assert np.abs(y2[:, 4:] - y[:, 4:]).max() > 1e-3                       # and the future sees itself
    earlier = x.copy()
    earlier[:, 0] = rng.standard_normal((2, 16))   # (a constant shift would vanish in the layernorm)
    assert np.abs(exe.forward([earlier])["y"][:, 6] - y[:, 6]).max() > 1e-3   # the last position sees the first


def test_decoder_matches_onnxruntime_at_two_lengths(tmp_path):
    import onnxruntime as ort
    g = _graph(tmp_path)
    w = init_weights(g, 1)
    model, _ = compile_graph(g, weights=w)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    exe = Executor(g, weights=w)
    for t in (3, 9):
        x = np.random.default_rng(t).standard_normal((2, t, 16)).astype(np.float32)
        np.testing.assert_allclose(sess.run(None, {"x": x})[0], exe.forward([x])["y"], rtol=1e-4, atol=1e-5)
