"""Engine parity through the real code generator (dslc.torchgen) for the MLP, LeNet-5 and ResNet-18 (32x32,
train-mode batchnorm), from the same initial weights, batches and optimiser (the file's own train section).

Lockstep: before every step the torch engine takes the numpy engine's whole state (weights, running statistics,
optimiser state in dslc's format), then both take the step on the same batch. Per step, the losses agree to
1e-5 relative, the running statistics batchnorm leaves behind agree to 1e-5, and the weight gradients (and the
optimiser state they move) agree to float32 round-off (1e-4 relative L2 per tensor) -- except in a step where
some ReLU input lies within round-off of 0 and the two engines' float32 sums put it on different sides of the
kink: that unit's gradient then differs in whole (measured: up to 1.2e-2 relative L2 in ResNet-18's worst
tensor, in 4 of 10 steps), so every step is held to 5e-2 and most steps to 1e-4. The optimiser's arithmetic is
held bit for bit on equal gradients in test_torch_engine.py.

Why not free-running trajectories compared at 1e-5 for 20 steps: such a tie, or an Adam update of a gradient
near eps (1e-8) that is the small difference of large terms, turns float32 round-off into a different
trajectory. Measured on this test's data: the numpy engine fed float64-exact gradients (rounded to float32)
leaves its own float32 trajectory by 2e-5 relative loss at step 3 (MLP, Adam) and 1e-4 at step 2 (ResNet-18,
SGD), so no correct float32 engine pair meets that bound on every network. LeNet-5 meets it here and is kept
free-running (a tie could break it without any bug)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("dslc.torchgen")

import dslc  # noqa: E402
from dslc.train import data as D  # noqa: E402
from dslc.train.engines import make_engine  # noqa: E402
from dslc.train.loop import Settings, load_graph, run_training  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
# network file, batch, steps (ResNet-18 at 32x32: ~0.3 s a numpy step at batch 4 on this 2-core machine)
CASES = {"mlp": ("networks/mlp_mnist.net", 8, 20), "lenet5": ("networks/lenet5.net", 8, 20),
         "resnet18": ("benchmarks/nets/resnet18_32.net", 4, 10)}
RTOL = 1e-5
GRAD_ROUNDOFF, GRAD_TIE = 1e-4, 5e-2


def _dataset(g, batch: int, steps: int, seed: int = 0) -> D.Dataset:
    t = g.nodes[g.graph["inputs"][0]]["outputs"][0]
    shape = tuple(d for d in t.shape[1:])
    rng = np.random.default_rng(seed)
    n = batch * steps
    x = rng.standard_normal((n, *shape)).astype(np.float32)
    logits = g.graph["outputs"][next(iter(g.graph["outputs"]))]
    classes = int(g.nodes[logits[0]]["outputs"][logits[1]].shape[-1])
    y = rng.integers(0, classes, n).astype(np.int64)
    return D.Dataset("random", D.Split([x], [y]), task="classification", num_classes=classes)


def _setup(name):
    path, batch, steps = CASES[name]
    g = load_graph(dslc.load(str(ROOT / path)))
    ds = _dataset(g, batch, steps)
    return g, ds, Settings.resolve(g, data="random", epochs=1, batch_size=batch, seed=3), batch, steps


def _rel_l2(a, b) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


class _NoMetric:
    label = None


@pytest.mark.parametrize("name", list(CASES))
def test_each_step_gives_the_same_loss_gradients_and_running_stats_on_both_engines(name):
    g, ds, s, batch, steps = _setup(name)
    ne = make_engine("numpy", g, s)
    te = make_engine("torch", g, s, device="cpu")
    grads: dict = {}
    numpy_step = ne.opt.step

    def keep_grads(gr, lr=None):   # the numpy engine's gradients, as its optimiser receives them
        grads.update({k: v.copy() for k, v in gr.items()})
        return numpy_step(gr, lr)
    ne.opt.step = keep_grads
    stats = [k for k in ne.weights() if k not in ne.exe.trainable]
    worst_grad = []
    order = D.epoch_order(len(ds.train), s.seed, 0)
    losses = []
    for b, xs, ys in D.batches(ds.train, order, batch):
        te.set_weights(ne.weights())
        te.load_optimizer_state(*ne.optimizer_state())
        ln = ne.step(xs, ys, ne.lr, 0, _NoMetric)[0]
        lt = te.step(xs, ys, te.lr, 0, _NoMetric)[0]
        losses.append(ln)
        assert abs(lt - ln) <= RTOL * abs(ln), f"{name} step {b + 1}: loss {lt} (torch) vs {ln} (numpy)"
        wn, wt = ne.weights(), te.weights()
        for k in stats:
            np.testing.assert_allclose(wt[k], wn[k], rtol=RTOL, atol=RTOL * np.abs(wn[k]).max(),
                                       err_msg=f"{name} step {b + 1}: {k}")
        (an, mn), (at, mt) = ne.optimizer_state(), te.optimizer_state()
        assert mt == mn and set(at) == set(an)
        worst = max([(_rel_l2(te.params[k].grad.numpy(), grads[k]), k) for k in grads]
                    + [(_rel_l2(at[k], an[k]), k) for k in an])   # the optimiser's state moves with them
        assert worst[0] <= GRAD_TIE, f"{name} step {b + 1}: gradient of {worst[1]} differs by {worst[0]:.1e}"
        worst_grad.append(worst[0])
    assert len(losses) == steps and losses[-1] != losses[0]
    close = sum(w <= GRAD_ROUNDOFF for w in worst_grad)
    assert close >= len(worst_grad) / 2, f"{name}: gradients agree to round-off in only {close} of " \
                                         f"{len(worst_grad)} steps: {['%.1e' % w for w in worst_grad]}"


def test_lenet5_trajectories_agree_for_20_steps():
    g, ds, s, _batch, steps = _setup("lenet5")
    losses = {}
    for engine in ("numpy", "torch"):
        r = run_training(g, s, dataset=ds, quiet=True, export=False, artefacts=False, log_every=1, engine=engine,
                         device="cpu")
        losses[engine] = np.array([h["loss"] for h in r.history if h["kind"] == "step"])
    assert len(losses["numpy"]) == steps
    rel = np.abs(losses["torch"] - losses["numpy"]) / np.abs(losses["numpy"])
    assert rel.max() <= RTOL, f"worst relative loss difference {rel.max():.2e} at step {rel.argmax() + 1}"
    assert losses["numpy"][-1] != losses["numpy"][0]
