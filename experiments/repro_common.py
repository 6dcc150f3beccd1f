"""What the reproduction scripts share: a report section, loading a network, training quietly, loss curves."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import dslc
from dslc.train.executor import Executor


@dataclass
class Section:
    title: str
    lines: list[str] = field(default_factory=list)

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def table(self, header: list[str], rows: list[list]) -> None:
        self.lines.append("| " + " | ".join(header) + " |")
        self.lines.append("|" + "|".join("---" for _ in header) + "|")
        for r in rows:
            self.lines.append("| " + " | ".join(str(c) for c in r) + " |")
        self.lines.append("")


def graph(path: Path, **params):
    prog = dslc.load(path, params=params or None)
    if not prog.ok:
        raise SystemExit(prog.diagnostics.render_all())
    return prog.graph


def fit(g, ds, *, epochs, lr=None, batch_size=None, seed=0, optimizer=None):
    return dslc.train(g, data=ds, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, optimizer=optimizer,
                      quiet=True)


def predict(g, weights, x: np.ndarray, batch: int = 500) -> np.ndarray:
    exe = Executor(g, weights=weights)
    out_name = next(iter(g.graph["outputs"]))
    return np.concatenate([exe.forward([x[i:i + batch]])[out_name] for i in range(0, len(x), batch)])


def epoch_losses(r) -> list[float]:
    """Training loss at the end of each epoch (the history also holds per-step records)."""
    return [h["loss"] for h in r.history if h.get("kind", "epoch") == "epoch"]


def sci(v: float) -> str:
    return f"{v:.2e}"


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _plot_curves(path: Path, curves: dict, ylabel: str, log: bool = False) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, ys in curves.items():
        ax.plot(range(1, len(ys) + 1), ys, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
