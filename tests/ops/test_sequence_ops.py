"""Behaviour of the sequence-model ops beyond the registry-driven checks: PyTorch parity of lstm / gru / rnn
(weights loaded from nn.LSTM & co's state_dict), embedding ids (repeats accumulate, out of range is an error,
i64 inputs through check / compile / onnxruntime), drop_path's per-sample mask, the tensor `max` / `sum`
beside the compile-time builtin, and the new activations against torch.nn.functional."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from dslc.api import load
from dslc.kernels.context import ExecContext
from dslc.lowering.compile import compile_graph
from dslc.ops.registry import get, resolve_attrs
from dslc.train.executor import Executor, ExecutorError
from dslc.types import TensorType
from dslc.weights import init_weights


def run_op(name, xs, ws, training=False, seed=0, **given):
    op = get(name)
    ins = [TensorType(x.shape, {"float32": "f32", "float64": "f64", "int64": "i64"}[str(x.dtype)]) for x in xs]
    attrs = resolve_attrs(op, ins, given)
    ys, saved = op.forward(ExecContext(training=training, rng=np.random.default_rng(seed)), xs, ws, attrs)
    return op, attrs, ys, saved


# ---- recurrent layers == PyTorch -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,extra", [("lstm", {}), ("gru", {}), ("rnn", {}), ("rnn", {"activation": "relu"})])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_recurrent_matches_pytorch(kind, extra, bidirectional):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[kind]
    kw = {"nonlinearity": extra["activation"]} if extra else {}
    m = cls(4, 5, batch_first=True, bidirectional=bidirectional, **kw).double()
    # dslc's names are PyTorch's without the layer suffix `_l0` (the node is the layer)
    ws = {k.replace("_l0", ""): v.detach().numpy().copy() for k, v in m.state_dict().items()}
    x = np.random.default_rng(1).standard_normal((3, 6, 4))
    want_seq, want_h = m(torch.from_numpy(x))
    if kind == "lstm":
        want_h = want_h[0]
    want_last = want_h.permute(1, 0, 2).reshape(3, -1).detach().numpy()
    op, attrs, (seq,), saved = run_op(kind, [x], ws, hidden=5, bidirectional=bidirectional, **extra)
    assert set(ws) == set(op.weights([TensorType(x.shape, "f64")], attrs))       # same parameters, one to one
    np.testing.assert_allclose(seq, want_seq.detach().numpy(), rtol=1e-10, atol=1e-12)
    _, _, (last,), _ = run_op(kind, [x], ws, hidden=5, bidirectional=bidirectional, return_sequences=False, **extra)
    np.testing.assert_allclose(last, want_last, rtol=1e-10, atol=1e-12)
    # backpropagation through time == autograd
    gy = np.random.default_rng(2).standard_normal(seq.shape)
    xt = torch.from_numpy(x).requires_grad_(True)
    (m(xt)[0] * torch.from_numpy(gy)).sum().backward()
    gxs, gws = op.vjp(ExecContext(training=True), [gy], saved, [x], ws, attrs)
    np.testing.assert_allclose(gxs[0], xt.grad.numpy(), rtol=1e-9, atol=1e-12)
    for k, p in m.named_parameters():
        np.testing.assert_allclose(gws[k.replace("_l0", "")], p.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=k)


def test_recurrent_parameter_counts_match_pytorch():
    torch = pytest.importorskip("torch")
    for kind, cls in (("lstm", torch.nn.LSTM), ("gru", torch.nn.GRU), ("rnn", torch.nn.RNN)):
        for bi in (False, True):
            op = get(kind)
            attrs = resolve_attrs(op, [TensorType(("N", "T", 7))], {"hidden": 9, "bidirectional": bi})
            n = sum(int(np.prod(s.shape)) for s in op.weights([TensorType(("N", "T", 7))], attrs).values())
            assert n == sum(p.numel() for p in cls(7, 9, bidirectional=bi).parameters()), (kind, bi)


# ---- embedding -------------------------------------------------------------------------------------------------
def test_embedding_repeated_ids_accumulate():
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    ids = np.array([[1, 1, 3], [1, 0, 3]])
    op, attrs, (y,), saved = run_op("embedding", [ids], {"weight": w}, vocab=4, dim=3)
    np.testing.assert_array_equal(y, w[ids])
    gy = np.ones(y.shape, np.float32)
    gxs, gws = op.vjp(ExecContext(training=True), [gy], saved, [ids], {"weight": w}, attrs)
    assert gxs == [None]
    np.testing.assert_array_equal(gws["weight"][:, 0], [1, 3, 0, 2])   # row 1 looked up three times


@pytest.mark.parametrize("bad", [4, -1])
def test_embedding_out_of_range_id_is_a_clear_executor_error(bad):
    with pytest.raises(ExecutorError, match=rf"token id {bad} is out of range for a vocabulary of 4"):
        run_op("embedding", [np.array([[0, bad]])], {"weight": np.zeros((4, 2), np.float32)}, vocab=4, dim=2)


LM = """
network lm(tokens: i64[N, T], vocab = 11) {
    h = tokens |> embedding(vocab, 6) |> gru(8, bidirectional=true) |> drop_path(0.3)
    pooled = max(h, axis=1) + sum(h, axis=1) |> silu
    logits = pooled |> linear(max(vocab, 2))
    return logits
}
"""


def test_token_program_checks_compiles_and_runs_in_onnxruntime(tmp_path):
    prog = load(tmp_path / "lm.net", text=LM)
    assert prog.ok, prog.diagnostics.render_all()
    g = prog.graph
    weights = init_weights(g, seed=0)
    model, _ = compile_graph(g, weights)
    ops = [n.op_type for n in model.graph.node]
    assert {"Gather", "GRU", "ReduceMax", "ReduceSum"} <= set(ops)
    assert "Dropout" not in ops and not any("dpath" in n.name for n in model.graph.node)  # drop_path: no node
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ex = Executor(g, weights)
    for n, t in ((2, 3), (5, 8)):
        ids = np.random.default_rng(t).integers(0, 11, (n, t))
        got = sess.run(None, {"tokens": ids})[0]
        assert got.shape == (n, 11)
        want = ex.forward([ids])
        np.testing.assert_allclose(next(iter(want.values())), got, rtol=1e-4, atol=1e-5)
    with pytest.raises(ExecutorError, match="out of range"):
        ex.forward([np.array([[0, 11]])])


def test_onnxruntime_gather_behaviour_for_out_of_range_ids_is_as_documented(tmp_path):
    """docs/language.md: the exported model's Gather (CPU provider) fails for ids outside [-vocab, vocab) and
    reads a negative id inside that range from the end of the table -- unlike the executor, which refuses it."""
    prog = load(tmp_path / "emb.net", text="network emb(tokens: i64[N, T]) {\n    y = tokens |> embedding(5, 3)\n"
                                           "    return y\n}\n")
    weights = init_weights(prog.graph, seed=0)
    model, _ = compile_graph(prog.graph, weights)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    table = next(v for k, v in weights.items() if k.endswith(".weight"))
    got = sess.run(None, {"tokens": np.array([[-1, -5, 4]])})[0]
    np.testing.assert_array_equal(got[0], table[[4, 0, 4]])
    for bad in (5, -6):
        with pytest.raises(Exception, match="out of data bounds"):
            sess.run(None, {"tokens": np.array([[0, bad]])})


# ---- drop_path ----------------------------------------------------------------------------------------------------
def test_drop_path_drops_whole_samples_while_training_only():
    x = np.ones((64, 3, 4), np.float32)
    _, _, (y,), _ = run_op("drop_path", [x], {}, training=True, p=0.25)
    per_sample = y.reshape(64, -1)
    assert set(np.unique(per_sample)) <= {0.0, np.float32(1 / 0.75)}
    assert np.all(per_sample.min(axis=1) == per_sample.max(axis=1))       # one decision per sample
    assert 0 < (per_sample[:, 0] == 0).sum() < 64
    _, _, (y_eval,), _ = run_op("drop_path", [x], {}, training=False, p=0.25)
    assert y_eval is x


def test_builtin_max_stays_compile_time_for_numbers(tmp_path):
    text = "network n(x: f32[N, 4]) {\n    y = x |> linear(max(3, 5))\n    return y\n}\n"
    prog = load(tmp_path / "m.net", text=text)
    assert prog.ok, prog.diagnostics.render_all()
    (node,) = [n for n, d in prog.graph.nodes(data=True) if d.get("op") == "linear"]
    assert prog.graph.nodes[node]["attrs"]["out"] == 5


# ---- activations == torch.nn.functional ---------------------------------------------------------------------------
@pytest.mark.parametrize("name,attrs,torch_fn", [
    ("relu6", {}, "relu6"), ("silu", {}, "silu"), ("hardswish", {}, "hardswish"),
    ("hardsigmoid", {}, "hardsigmoid"), ("softplus", {}, "softplus"), ("elu", {"alpha": 0.7}, "elu"),
    ("mish", {}, "mish"), ("clip", {"min": -0.5, "max": 2.0}, "hardtanh"),
])
def test_activation_matches_torch(name, attrs, torch_fn):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = np.linspace(-8, 8, 1001)
    _, _, (y,), _ = run_op(name, [x], {}, **attrs)
    targs = {"elu": {"alpha": 0.7}, "hardtanh": {"min_val": -0.5, "max_val": 2.0}}.get(torch_fn, {})
    np.testing.assert_allclose(y, getattr(F, torch_fn)(torch.from_numpy(x), **targs).numpy(), rtol=1e-12, atol=1e-12)


# ---- losses == torch.nn.functional ------------------------------------------------------------------------------
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_sequence_cross_entropy_with_ignore_index_matches_torch(eps):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    z = rng.standard_normal((2, 5, 7))                      # [N, T, V]
    t = rng.integers(0, 7, (2, 5))
    t[0, 3:] = -100                                         # padding
    op, attrs, (loss,), saved = run_op("cross_entropy", [z, t], {}, label_smoothing=eps)
    zt = torch.from_numpy(z).requires_grad_(True)
    want = torch.nn.functional.cross_entropy(zt.permute(0, 2, 1), torch.from_numpy(t), ignore_index=-100,
                                             label_smoothing=eps)
    want.backward()
    np.testing.assert_allclose(loss, want.item(), rtol=1e-12)
    (gz, _), _ = op.vjp(ExecContext(training=True), [np.asarray(1.0)], saved, [z, t], {}, attrs)
    np.testing.assert_allclose(gz, zt.grad.numpy(), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name,attrs,torch_fn,targs", [
    ("l1", {}, "l1_loss", {}), ("smooth_l1", {"beta": 0.5}, "smooth_l1_loss", {"beta": 0.5})])
def test_regression_losses_match_torch(name, attrs, torch_fn, targs):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((6, 3)), rng.standard_normal((6, 3))
    _, _, (loss,), _ = run_op(name, [a, b], {}, **attrs)
    want = getattr(torch.nn.functional, torch_fn)(torch.from_numpy(a), torch.from_numpy(b), **targs)
    np.testing.assert_allclose(loss, want.item(), rtol=1e-12)


def test_dice_is_zero_for_a_perfect_mask_and_one_minus_overlap_otherwise():
    mask = np.zeros((2, 1, 4, 4))
    mask[:, :, 1:3, 1:3] = 1.0
    confident = np.where(mask > 0, 40.0, -40.0)            # sigmoid ~ the mask itself
    _, _, (perfect,), _ = run_op("dice", [confident, mask], {}, smooth=0.0)
    _, _, (opposite,), _ = run_op("dice", [-confident, mask], {}, smooth=0.0)
    assert perfect < 1e-12 and abs(opposite - 1.0) < 1e-12


CHAR_LM = """
network char_lm(tokens: i64[N, T], vocab = 9) {
    logits = tokens |> embedding(vocab, 8) |> lstm(12) |> linear(vocab)
    return logits
}
train {
    target next: i64[N, T]
    loss = cross_entropy(logits, next, ignore_index=0)
}
"""


def test_sequence_loss_trains_through_the_executor(tmp_path):
    prog = load(tmp_path / "lm.net", text=CHAR_LM)
    assert prog.ok, prog.diagnostics.render_all()
    ex = Executor(prog.graph, init_weights(prog.graph, seed=0))
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 9, (4, 6))
    nxt = np.roll(ids, -1, axis=1)
    nxt[:, -1] = 0                                   # ignored: no next token
    loss, _aux, grads = ex.loss_and_grads([ids], [nxt])
    assert np.isfinite(loss) and abs(loss - np.log(9)) < 0.6
    assert {k for k in grads if k.startswith("lstm1.")} == {"lstm1.weight_ih", "lstm1.weight_hh", "lstm1.bias_ih",
                                                            "lstm1.bias_hh"}
    assert all(np.abs(g).sum() > 0 for g in grads.values())
