"""Engine parity through the real code generator (dslc.torchgen): from the same initial weights, batches and
optimiser (the file's own train section), the numpy and torch engines give the same loss per step (<= 1e-5
relative) for the MLP, LeNet-5 and ResNet-18 (32x32, train-mode batchnorm). Small random inputs and batches keep
it fast; ResNet-18 takes fewer steps (measured: see the STEPS table)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("dslc.torchgen")

import dslc  # noqa: E402
from dslc.train import data as D  # noqa: E402
from dslc.train.loop import Settings, load_graph, run_training  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
# network file, batch, steps (ResNet-18 at 32x32: ~0.3 s a numpy step at batch 4 on this 2-core machine)
CASES = {"mlp": ("networks/mlp_mnist.net", 8, 20), "lenet5": ("networks/lenet5.net", 8, 20),
         "resnet18": ("benchmarks/nets/resnet18_32.net", 4, 10)}


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


@pytest.mark.parametrize("name", list(CASES))
def test_numpy_and_torch_engines_give_the_same_loss_per_step(name):
    path, batch, steps = CASES[name]
    g = load_graph(dslc.load(str(ROOT / path)))
    ds = _dataset(g, batch, steps)
    s = Settings.resolve(g, data="random", epochs=1, batch_size=batch, seed=3)
    losses = {}
    for engine in ("numpy", "torch"):
        r = run_training(g, s, dataset=ds, quiet=True, export=False, artefacts=False, log_every=1, engine=engine,
                         device="cpu")
        losses[engine] = np.array([h["loss"] for h in r.history if h["kind"] == "step"])
    assert len(losses["numpy"]) == steps
    rel = np.abs(losses["torch"] - losses["numpy"]) / np.abs(losses["numpy"])
    assert rel.max() <= 1e-5, f"{name}: worst relative loss difference {rel.max():.2e} at step {rel.argmax() + 1}"
    assert losses["numpy"][-1] != losses["numpy"][0]
