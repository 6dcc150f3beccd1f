"""How far free-running float32 trajectories part: the numpy engine, the torch engine, and the numpy engine whose
gradients each step are float64-exact (the generated torch module in double precision at the same weights),
rounded to float32. Same data, initial weights and optimiser as tests/train/test_torch_parity.py.

    .venv/bin/python experiments/engine_divergence.py mlp|lenet5|resnet18

Prints, per step, the relative loss difference of each run against the numpy engine and against the torch
engine. If the float64-exact run parts from numpy's own trajectory as early as torch does, the parting is
float32 round-off (ReLU ties, Adam near eps), not a difference between the engines' arithmetic.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "train"))

from test_torch_parity import CASES, _dataset  # noqa: E402

import dslc  # noqa: E402
from dslc.torchgen import build_module, loss_module  # noqa: E402
from dslc.train import engines as E  # noqa: E402
from dslc.train.loop import Settings, load_graph, run_training  # noqa: E402


def main(name: str) -> None:
    path, batch, steps = CASES[name]
    g = load_graph(dslc.load(str(ROOT / path)))
    ds = _dataset(g, batch, steps)
    s = Settings.resolve(g, data="random", epochs=1, batch_size=batch, seed=3)
    net64 = build_module(g).double()
    loss64 = loss_module(net64, g)

    def exact_grads(weights, xs, ys):
        net64.load_state_dict({k: torch.from_numpy(np.asarray(v, np.float64)) for k, v in weights.items()})
        net64.train()
        net64.zero_grad()
        loss, _, _ = loss64([torch.from_numpy(x.astype(np.float64)) for x in xs], [torch.from_numpy(y) for y in ys])
        loss.backward()
        return {k: p.grad.numpy() for k, p in net64.named_parameters() if p.grad is not None}

    own_step = E.NumpyEngine.step

    def exact_step(self, xs, ys, lr, clip, metric):
        before = {k: v.copy() for k, v in self.exe.weights.items()}
        loss, aux, grads = self.exe.loss_and_grads(xs, ys)
        for k, gk in exact_grads(before, xs, ys).items():
            grads[k][...] = gk.astype(np.float32)
        self.opt.step(grads, lr)
        return (loss, len(xs[0]), *E.metric_counts(metric, aux))

    out = {}
    for tag, step, engine in [("numpy", own_step, "numpy"), ("numpy, float64 grads", exact_step, "numpy"),
                              ("torch", own_step, "torch")]:
        E.NumpyEngine.step = step
        try:
            r = run_training(g, s, dataset=ds, quiet=True, export=False, artefacts=False, log_every=1,
                             engine=engine, device="cpu")
        finally:
            E.NumpyEngine.step = own_step
        out[tag] = np.array([h["loss"] for h in r.history if h["kind"] == "step"])
    for ref in ("numpy", "torch"):
        for tag, losses in out.items():
            rel = np.abs(losses - out[ref]) / np.abs(out[ref])
            print(f"vs {ref:5s} {tag:22s}", " ".join(f"{v:.0e}" for v in rel))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "mlp")
