"""Full-batch second-order optimisers: the per-sample Jacobian (against float64 formulas and finite differences),
L-BFGS against torch.optim.LBFGS, Levenberg-Marquardt on least squares, refusals, checkpoints and resume."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import dslc
from dslc.train import data as D
from dslc.train.executor import Executor
from dslc.train.optim import OptimizerError, make_optimizer
from dslc.train.second_order import LBFGS, LevenbergMarquardt, Objective

ROOT = Path(__file__).resolve().parents[2]
NET = ROOT / "networks" / "mlp_rosenbrock.net"


def _graph(n=3):
    prog = dslc.load(NET, params={"n": n})
    assert prog.ok, prog.diagnostics.render_all()
    return prog.graph


def _tanh_net64(w: dict, x: np.ndarray, n: int):
    """The 2-n-1 tanh network in float64, and its Jacobian d pred_i / d (W1, b1, W2, b2) by hand."""
    (k1, k2, k3, k4) = sorted(w)   # fc1.bias, fc1.weight, fc2.bias, fc2.weight (names sort this way)
    b1, W1, b2, W2 = (np.asarray(w[k], np.float64) for k in (k1, k2, k3, k4))
    h = np.tanh(x @ W1.T + b1)
    pred = h @ W2.T + b2
    d = (1 - h ** 2) * W2[0]                                    # N, n
    jac = {k2: (d[:, :, None] * x[:, None, :]).reshape(len(x), -1), k1: d, k4: h, k3: np.ones((len(x), 1))}
    return pred[:, 0], jac


def test_prediction_jacobian_matches_float64_formula_and_finite_differences():
    g = _graph(3)
    exe = Executor(g, seed=1)
    ds = D.sinxsiny(n=12)
    x, y = ds.train.xs[0], ds.train.ys[0]
    pred, target, jac = exe.prediction_jacobian([x], [y])
    w64 = {k: exe.weights[k].astype(np.float64) for k in exe.trainable}
    ref_pred, ref_jac = _tanh_net64(w64, x.astype(np.float64), 3)
    ref = np.concatenate([ref_jac[k] for k in exe.trainable], axis=1)
    assert jac.shape == (12, 13)
    np.testing.assert_allclose(pred, ref_pred, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(target, y[:, 0])
    np.testing.assert_allclose(jac, ref, rtol=1e-4, atol=1e-6)
    # the float64 reference itself, against central differences
    eps = 1e-6
    for k in exe.trainable:
        for j in range(w64[k].size):
            wp = {kk: v.copy() for kk, v in w64.items()}
            wm = {kk: v.copy() for kk, v in w64.items()}
            wp[k].reshape(-1)[j] += eps
            wm[k].reshape(-1)[j] -= eps
            fd = (_tanh_net64(wp, x, 3)[0] - _tanh_net64(wm, x, 3)[0]) / (2 * eps)
            np.testing.assert_allclose(ref_jac[k][:, j], fd, rtol=1e-6, atol=1e-8)


def test_jacobian_gives_the_mse_gradient():
    g = _graph(4)
    exe = Executor(g, seed=2)
    ds = D.rosenbrock(n=20)
    obj = Objective(exe, ds.train.xs, ds.train.ys)
    w = obj.get()
    r, jac = obj.residuals_jacobian(w)
    loss, grad = obj.loss_grad(w)
    assert loss == pytest.approx(float(r @ r) / len(r), rel=1e-5)
    np.testing.assert_allclose(grad, 2.0 / len(r) * jac.T @ r, rtol=1e-4, atol=1e-6)


def _linear_problem(tmp_path):
    src = tmp_path / "lin.net"
    src.write_text("network lin(x: f32[N, 3]) {\n    y = x |> linear(1)\n    return y\n}\n"
                   "train {\n    target t: f32[N, 1]\n    loss = mse(y, t)\n}\n")
    prog = dslc.load(src)
    assert prog.ok, prog.diagnostics.render_all()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 3)).astype(np.float32)
    t = (x @ np.array([[1.5], [-2.0], [0.5]]) + 0.3 + 0.1 * rng.standard_normal((50, 1))).astype(np.float32)
    return prog.graph, x, t


@pytest.mark.parametrize("cls", [LevenbergMarquardt, LBFGS])
def test_least_squares_solution(cls, tmp_path):
    g, x, t = _linear_problem(tmp_path)
    exe = Executor(g, seed=0)
    opt = cls({k: exe.weights[k] for k in exe.trainable})
    obj = Objective(exe, [x], [t])
    for _ in range(5):
        loss = opt.step_full(obj)
    a = np.hstack([x, np.ones((50, 1))]).astype(np.float64)
    coef, *_ = np.linalg.lstsq(a, t.astype(np.float64), rcond=None)
    best = float(np.mean((a @ coef - t) ** 2))
    assert loss == pytest.approx(best, rel=1e-4)
    w = exe.weights
    np.testing.assert_allclose(w["fc1.weight"].reshape(-1), coef[:3, 0], rtol=1e-3, atol=1e-4)


class _TorchObjective:
    """The same interface as second_order.Objective, evaluated by torch in float64: isolates the algorithm."""

    def __init__(self, torch, loss_fn, params):
        self.torch, self.loss_fn, self.params = torch, loss_fn, params

    def get(self):
        return np.concatenate([p.detach().numpy().reshape(-1) for p in self.params])

    def set(self, w):
        at = 0
        with self.torch.no_grad():
            for p in self.params:
                p.copy_(self.torch.from_numpy(w[at:at + p.numel()].reshape(p.shape)))
                at += p.numel()

    def loss_grad(self, w):
        self.set(w)
        for p in self.params:
            p.grad = None
        loss = self.loss_fn()
        loss.backward()
        return loss.item(), np.concatenate([p.grad.numpy().reshape(-1) for p in self.params])


def test_lbfgs_is_torchs_algorithm():
    """Same function (float64 torch), same start: our L-BFGS steps land where torch.optim.LBFGS's do."""
    torch = pytest.importorskip("torch")
    ds = D.sinxsiny(n=64)
    xt, yt = (torch.tensor(a, dtype=torch.float64) for a in (ds.train.xs[0], ds.train.ys[0]))
    gen = torch.Generator().manual_seed(0)

    def make():
        ps = [torch.randn(3, 2, generator=gen, dtype=torch.float64), torch.zeros(3, dtype=torch.float64),
              torch.randn(1, 3, generator=gen, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)]
        return [p.requires_grad_() for p in ps]

    def loss_of(ps):
        return lambda: (((torch.tanh(xt @ ps[0].T + ps[1]) @ ps[2].T + ps[3]) - yt) ** 2).mean()

    theirs_p = make()
    ours_p = [p.detach().clone().requires_grad_() for p in theirs_p]
    topt = torch.optim.LBFGS(theirs_p, lr=1, max_iter=20, history_size=100, line_search_fn="strong_wolfe")
    f_theirs = loss_of(theirs_p)

    def closure():
        topt.zero_grad()
        loss = f_theirs()
        loss.backward()
        return loss

    opt = LBFGS({})
    obj = _TorchObjective(torch, loss_of(ours_p), ours_p)
    for _ in range(4):
        topt.step(closure)
        ours = opt.step_full(obj)
        with torch.no_grad():
            assert ours == pytest.approx(float(f_theirs()), rel=1e-9)
    np.testing.assert_allclose(obj.get(), np.concatenate([p.detach().numpy().reshape(-1) for p in theirs_p]),
                               rtol=1e-8, atol=1e-10)


def test_lbfgs_on_the_float32_network_lowers_the_loss():
    g = _graph(3)
    exe = Executor(g, seed=3)
    ds = D.sinxsiny(n=64)
    opt = LBFGS({k: exe.weights[k] for k in exe.trainable})
    obj = Objective(exe, ds.train.xs, ds.train.ys)
    start = obj.loss_grad(obj.get())[0]
    losses = [opt.step_full(obj) for _ in range(3)]
    assert losses[0] < start and losses[2] <= losses[0] and obj.evaluations > 20


def test_levenberg_marquardt_fits_the_half_period_surface():
    g = _graph(4)
    r = dslc.train(g, data=D.sinxsiny(n=200, extent=math.pi / 2), epochs=60, seed=0,
                   optimizer="levenberg_marquardt", quiet=True)
    losses = [h["loss"] for h in r.history if h.get("kind") == "epoch"]
    assert losses[-1] < 2e-3 < losses[0]
    assert all(b <= a * (1 + 1e-6) for a, b in zip(losses, losses[1:]))   # LM never accepts a worse step


def test_refusals(tmp_path):
    src = tmp_path / "cls.net"
    src.write_text("network cls(x: f32[N, 2]) {\n    logits = x |> linear(8) |> dropout(0.1) |> linear(2)\n"
                   "    return logits\n}\ntrain {\n    target label: i64[N]\n    loss = cross_entropy(logits, label)\n"
                   "    data = nonseparable2d()\n}\n")
    g = dslc.load(src).graph
    plain = dslc.load(tmp_path / "plain.net", text=src.read_text().replace(" |> dropout(0.1)", "")).graph
    with pytest.raises(OptimizerError, match="least-squares"):
        dslc.train(plain, epochs=1, optimizer="levenberg_marquardt", quiet=True)
    with pytest.raises(OptimizerError, match="dropout"):
        dslc.train(g, epochs=1, optimizer="lbfgs", quiet=True)
    with pytest.raises(OptimizerError, match="unknown argument `momentum`"):
        make_optimizer({"name": "lbfgs", "momentum": 0.9}, {})


@pytest.mark.parametrize("name", ["levenberg_marquardt", "lbfgs"])
def test_resume_is_bit_identical(name, tmp_path):
    g = _graph(3)
    ds = D.sinxsiny(n=100)
    full = dslc.train(g, data=ds, epochs=6, seed=0, optimizer=name, output=tmp_path / "a" / "m.onnx", quiet=True)
    dslc.train(g, data=ds, epochs=6, seed=0, optimizer=name, output=tmp_path / "b" / "m.onnx", quiet=True,
               stop_after_steps=3)
    resumed = dslc.train(g, data=ds, epochs=6, seed=0, optimizer=name, output=tmp_path / "b" / "m.onnx",
                         quiet=True, resume=True)
    for k, v in full.weights.items():
        np.testing.assert_array_equal(resumed.weights[k], v)


def test_train_section_and_cli(tmp_path):
    from dslc.cli import main
    src = tmp_path / "fit.net"
    src.write_text(NET.read_text().replace("optimizer = adam(lr=1e-2)", "optimizer = lbfgs(history=20)")
                   .replace("data = rosenbrock()", "data = sinxsiny(n=100, extent=1.5)")
                   .replace("epochs = 200", "epochs = 4"))
    assert main(["train", str(src), "-o", str(tmp_path / "fit.onnx"), "--quiet"]) == 0
    assert (tmp_path / "fit.onnx").is_file()
