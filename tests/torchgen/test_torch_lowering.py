"""Registry-driven: for every op case, the generated PyTorch module computes what the numpy forward computes
(float64 on both sides, 1e-5), and torch autograd's gradients of <y, gy> equal dslc's VJPs for every float
input and trainable weight. An op without a torch lowering fails here (so the next op added gets one)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ops"))
from test_vjp import CASES, IDS, make_inputs, make_weights, prepare, run_forward  # noqa: E402

from dslc.ops.testing import one_node_graph  # noqa: E402
from dslc.torchgen import build_module  # noqa: E402

RTOL = 1e-5
STOCHASTIC = {"dropout": "element", "drop_path": "sample"}   # what one draw of the mask keeps or drops


@pytest.mark.parametrize("op,case", CASES, ids=IDS)
def test_torch_lowering_matches_forward_and_vjp(op, case):
    assert op.torch is not None, f"op `{op.name}` has no PyTorch lowering (Op.torch in its registry entry)"
    rng = np.random.default_rng(0)
    attrs, outs, wspecs = prepare(op, case)
    env: dict = {}
    xs = make_inputs(op, case, np.float64, rng, env)
    ws = make_weights(wspecs, np.float64, rng)
    # dropout's and drop_path's masks come from different generators: compare them in evaluation mode (identity),
    # like ONNX; test_stochastic_ops_in_training_mode checks their training-mode masks
    training = op.name not in STOCHASTIC
    ys, saved, ctx = run_forward(op, xs, ws, attrs, training)

    m = build_module(one_node_graph(op, case)).double()
    m.train(training)
    with torch.no_grad():
        for key, v in ws.items():
            getattr(m.node, key).copy_(torch.from_numpy(v))
    txs = [torch.tensor(x, requires_grad=x.dtype.kind == "f") for x in xs]
    out = m(*txs)
    tys = [out] if isinstance(out, torch.Tensor) else list(out)
    assert len(tys) == len(ys)
    for y, ty in zip(ys, tys):
        assert tuple(ty.shape) == y.shape, (op.name, tuple(ty.shape), y.shape)
        scale = max(float(np.max(np.abs(y))) if y.size else 0.0, 1.0)
        np.testing.assert_allclose(ty.detach().numpy(), y, rtol=RTOL, atol=RTOL * scale, err_msg=op.name)
    if op.name == "batchnorm" and training:   # the running statistics move the same way
        run_ws = {k: v.copy() for k, v in ws.items()}
        from dslc.kernels.context import ExecContext
        op.forward(ExecContext(training=True, rng=np.random.default_rng(7)), list(xs), run_ws, attrs)
        for key in ("running_mean", "running_var"):
            np.testing.assert_allclose(getattr(m.node, key).numpy(), run_ws[key], rtol=RTOL)

    if op.vjp is None or not any(t.requires_grad for t in txs) and not any(s.trainable for s in wspecs.values()):
        return
    gys = [rng.standard_normal(y.shape) if y.dtype.kind == "f" else None for y in ys]
    total = sum((ty * torch.from_numpy(g)).sum() for ty, g in zip(tys, gys) if g is not None)
    if not isinstance(total, torch.Tensor) or not total.requires_grad:
        return
    total.backward()
    gxs, gws = op.vjp(ctx, [None if g is None else g.copy() for g in gys], saved, list(xs), ws, attrs)
    for i, (tx, gx) in enumerate(zip(txs, gxs)):
        if tx.requires_grad and gx is not None:
            want = tx.grad.numpy() if tx.grad is not None else np.zeros(tx.shape)
            np.testing.assert_allclose(gx, want, rtol=RTOL, atol=RTOL * max(np.abs(want).max(initial=0), 1.0),
                                       err_msg=f"{op.name}: input {i}")
    for key, spec in wspecs.items():
        if spec.trainable:
            p = getattr(m.node, key)
            want = p.grad.numpy() if p.grad is not None else np.zeros(p.shape)
            np.testing.assert_allclose(gws[key], want, rtol=RTOL, atol=RTOL * max(np.abs(want).max(initial=0), 1.0),
                                       err_msg=f"{op.name}: weight {key}")


@pytest.mark.parametrize("name", sorted(STOCHASTIC))
def test_stochastic_ops_in_training_mode(name):
    """In training mode the torch lowering drops what the numpy forward drops (single elements for dropout, whole
    samples for drop_path) at rate p, scales the kept ones by 1 / (1 - p) and routes the gradient through the
    same mask; in evaluation mode it is the identity."""
    from dslc.ops.registry import Case, get
    from dslc.types import TensorType
    p = 0.3
    op = get(name)
    case = Case((TensorType((400, 3, 5)),), {"p": p})
    m = build_module(one_node_graph(op, case)).double()
    torch.manual_seed(0)
    x = torch.rand(400, 3, 5, dtype=torch.float64) + 0.5            # no zeros: the mask is y / x
    x.requires_grad_(True)
    m.train(True)
    y = m(x)
    ratio = (y / x).detach()
    kept = ratio != 0
    np.testing.assert_allclose(ratio[kept].numpy(), 1.0 / (1.0 - p), rtol=1e-12)
    if STOCHASTIC[name] == "sample":
        assert bool((kept == kept[:, :1, :1]).all()), "drop_path must keep or drop whole samples"
        frac = kept[:, 0, 0].double().mean().item()
    else:
        mixed = (kept != kept[:, :1, :1]).any(dim=2).any(dim=1).double().mean().item()
        assert mixed > 0.9, "dropout draws one mask value per element"
        frac = kept.double().mean().item()
    assert abs(frac - (1.0 - p)) < 0.08, frac
    gy = torch.randn_like(y)
    (y * gy).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), (gy * ratio).numpy(), rtol=1e-12)
    m.eval()
    assert torch.equal(m(x), x)


def test_cross_entropy_of_a_batch_of_padding_only_is_zero_as_in_dslc():
    from dslc.kernels.context import ExecContext
    from dslc.ops.registry import Case, get, resolve_attrs
    from dslc.types import TensorType
    op = get("cross_entropy")
    case = Case((TensorType((2, 3, 4)), TensorType((2, 3), "i64")), {"ignore_index": 0, "label_smoothing": 0.1})
    m = build_module(one_node_graph(op, case)).double()
    z = np.random.default_rng(0).standard_normal((2, 3, 4))
    for t in (np.zeros((2, 3), np.int64), np.array([[0, 1, 2], [3, 0, 0]])):
        attrs = resolve_attrs(op, list(case.inputs), dict(case.attrs))
        want = float(op.forward(ExecContext(training=True, rng=None), [z, t], {}, attrs)[0][0])
        got = float(m(torch.from_numpy(z), torch.from_numpy(t)))
        assert got == pytest.approx(want, rel=1e-12, abs=1e-12)
