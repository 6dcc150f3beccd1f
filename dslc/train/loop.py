"""The training loop behind `dslc train` and `dslc.train(...)`.

settings (file's train section, overridden by arguments) -> data (loaded, fitted to the network, split) ->
executor + optimiser + schedule -> epochs of mini-batch steps with a progress bar -> per-epoch validation ->
metrics log (JSONL), loss/metric plot (PNG), checkpoints (.npz, atomic) -> the trained model as ONNX
(evaluation-mode graph, weights and batchnorm running statistics as initializers).

Resuming: a checkpoint holds the weights (running statistics included), the optimiser state, the position
(epoch, next batch, global step), the executor's random generator state, the epoch's running sums and the
history so far. Every epoch's sample order is a function of (seed, epoch) only, so a resumed run takes exactly
the steps the interrupted one would have taken, and ends with the same weights.
"""
from __future__ import annotations

import io
import json
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from dslc.train import data as D
from dslc.train.executor import Executor, ExecutorError
from dslc.train.optim import OptimizerError  # noqa: F401  (re-exported: callers catch it from here)
from dslc.train.second_order import SECOND_ORDER as FULL_BATCH_OPTIMIZERS
from dslc.weights import load_weights

CHECKPOINT_VERSION = 1
PLOT_EVERY_S = 10.0   # the loss/metric plot is redrawn at most this often during training, and at the end


class TrainError(Exception):
    """A problem that stops training before or while it runs (bad settings, data that does not fit, a
    checkpoint that belongs to another run); the message is meant for the user."""


class ExportError(TrainError):
    """Training finished but the ONNX export failed (a dslc bug: exit code 3)."""


@dataclass
class Settings:
    epochs: int
    batch_size: int
    optimizer: dict
    schedule: dict | None
    data: Any
    seed: int = 0
    clip: float | None = None
    val_split: float = 0.0
    metric: str | None = None
    shuffle: bool = True
    checkpoint_every: int = 0

    @classmethod
    def resolve(cls, g, **overrides) -> "Settings":
        base = dict(g.graph.get("train") or {})
        o = {k: v for k, v in overrides.items() if v is not None}
        opt = base.get("optimizer") or {"name": "adam", "lr": 1e-3}
        if isinstance(opt, str):
            opt = {"name": opt}
        opt = dict(opt)
        if "optimizer" in o:
            name = str(o.pop("optimizer")).lower()
            if name != opt.get("name"):
                # a first-order learning rate carries over; a second-order method's step length is its own
                keep_lr = "lr" in opt and name not in FULL_BATCH_OPTIMIZERS and opt.get("name") not in FULL_BATCH_OPTIMIZERS
                opt = {"name": name, **({"lr": opt["lr"]} if keep_lr else {})}
        if "lr" in o:
            opt["lr"] = float(o.pop("lr"))
        s = cls(epochs=int(o.get("epochs", base.get("epochs") or 10)),
                batch_size=int(o.get("batch_size", base.get("batch_size") or 32)),
                optimizer=opt, schedule=o.get("schedule", base.get("schedule")),
                data=o.get("data", base.get("data")),
                seed=int(o.get("seed", base.get("seed") or 0)),
                clip=o.get("clip", base.get("clip")),
                val_split=float(o.get("val_split", base.get("val_split") or 0.0)),
                metric=o.get("metric", base.get("metric")),
                shuffle=bool(o.get("shuffle", base.get("shuffle", True))),
                checkpoint_every=int(o.get("checkpoint_every", base.get("checkpoint_every") or 0)))
        if s.epochs < 1:
            raise TrainError(f"epochs must be a positive integer, got {s.epochs}")
        if s.batch_size < 1:
            raise TrainError(f"batch size must be a positive integer, got {s.batch_size}")
        if s.data is None:
            raise TrainError(f"no training data: the train section of network `{g.graph.get('name')}` has no "
                             f"`data = ...` and none was given (--data)")
        return s


@dataclass
class TrainResult:
    weights: dict[str, np.ndarray]
    history: list[dict]
    final: dict[str, float]                 # last epoch's record (train and validation figures)
    test: dict[str, float] | None           # figures on the data's test split, when it has one
    interrupted: bool = False
    epochs_done: int = 0
    step: int = 0
    paths: dict[str, str] = field(default_factory=dict)
    settings: Settings | None = None
    graph: Any = None
    dataset: D.Dataset | None = None


# ------------------------------------------------------------------------------------------- metrics
class Metric:
    """Accumulates a per-batch figure from (the loss's first operand, its target)."""

    def __init__(self, kind: str, class_axis: int = 1, ignore_index: int | None = None):
        self.kind = kind  # "accuracy_ce" | "accuracy_bce" | "mse" | "rmse" | "none"
        self.label = {"accuracy_ce": "acc", "accuracy_bce": "acc", "mse": "mse", "rmse": "rmse"}.get(kind)
        self.class_axis = class_axis          # -1 for sequence logits [N, T, V]
        self.ignore_index = ignore_index      # positions cross_entropy leaves out do not count

    def batch(self, pred: np.ndarray, target: np.ndarray) -> tuple[float, int]:
        k = self.kind
        if k == "accuracy_ce":
            p = pred.argmax(axis=self.class_axis)
            t = target.argmax(axis=self.class_axis) if target.ndim == pred.ndim else target
            if self.ignore_index is not None and target.ndim < pred.ndim:
                keep = t != self.ignore_index
                return float(np.count_nonzero((p == t) & keep)), int(np.count_nonzero(keep))
            return float(np.count_nonzero(p == t)), int(p.size)
        if k == "accuracy_bce":
            return float(np.count_nonzero((pred > 0) == (target > 0.5))), int(pred.size)
        if k in ("mse", "rmse"):
            d = pred.astype(np.float64) - target
            return float(np.dot(d.reshape(-1), d.reshape(-1))), int(d.size)
        return 0.0, 0

    def value(self, total: float, count: int) -> float | None:
        if self.label is None or count == 0:
            return None
        v = total / count
        return math.sqrt(v) if self.kind == "rmse" else v

    def show(self, v: float | None) -> str:
        if v is None:
            return ""
        return f"{100 * v:.2f}%" if self.kind.startswith("accuracy") else f"{v:.4g}"


def choose_metric(g, requested: str | None) -> Metric:
    loss = g.graph.get("loss")
    op = g.nodes[loss[0]]["op"] if loss else None
    if requested == "none":
        return Metric("none")
    if requested in ("mse", "rmse"):
        return Metric(requested)
    if requested == "accuracy" or requested is None:
        if op == "cross_entropy":
            attrs = g.nodes[loss[0]].get("attrs") or {}
            return Metric("accuracy_ce", -1 if attrs.get("class_last") else 1, attrs.get("ignore_index"))
        if op == "bce":
            return Metric("accuracy_bce")
        if requested == "accuracy":
            raise TrainError(f"metric \"accuracy\" needs a classification loss (cross_entropy or bce), the loss "
                             f"is {op}")
        return Metric("rmse" if op in ("mse",) else "none")
    raise TrainError(f"unknown metric `{requested}` (known: accuracy, mse, rmse, none)")


# ------------------------------------------------------------------------------------------- progress
class Progress:
    """A rich progress bar per epoch (loss, metric, samples/s, ETA) on stderr, and end-of-epoch lines on stdout.
    quiet: nothing at all; plain (not a terminal): only the end-of-epoch lines."""

    def __init__(self, quiet: bool = False, stream=None):
        self.quiet = quiet
        self.stream = stream or sys.stdout
        self._bar = None
        self._task = None
        self._last = 0.0
        self.live = not quiet and sys.stderr.isatty()

    def start_epoch(self, epoch: int, epochs: int, total: int, done: int) -> None:
        if not self.live:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as RP, TextColumn, TimeRemainingColumn
        self._bar = RP(TextColumn("epoch {task.fields[ep]}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[stats]}"), TextColumn("{task.fields[rate]}"),
                       TimeRemainingColumn(), transient=True, refresh_per_second=5)
        self._bar.start()
        self._task = self._bar.add_task("", total=total, completed=done, ep=f"{epoch + 1}/{epochs}", stats="",
                                        rate="")

    def update(self, done: int, stats: str, rate: float, force: bool = False) -> None:
        if self._bar is None:
            return
        now = time.perf_counter()
        if force or now - self._last > 0.1:
            self._last = now
            self._bar.update(self._task, completed=done, stats=stats, rate=f"{rate:,.0f} samples/s")

    def end_epoch(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def line(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.stream, flush=True)


# ------------------------------------------------------------------------------------------- checkpoints
def _json_bytes(obj) -> np.ndarray:
    return np.frombuffer(json.dumps(obj, sort_keys=True).encode(), dtype=np.uint8)


def save_checkpoint(path, weights: dict, opt, meta: dict) -> None:
    from dslc.weights import atomic_write_bytes
    arrays = {f"w/{k}": v for k, v in weights.items()}
    opt_arrays, opt_meta = opt.state_dict()
    arrays.update({f"opt/{k}": v for k, v in opt_arrays.items()})
    meta = dict(meta, optimizer_state=opt_meta, version=CHECKPOINT_VERSION)
    arrays["__meta__"] = _json_bytes(meta)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path) -> tuple[dict, dict, dict]:
    """(weights, optimiser arrays, meta) from a checkpoint written by save_checkpoint."""
    try:
        files = load_weights(path)  # any .npz, read without pickle
    except FileNotFoundError:
        raise TrainError(f"no checkpoint at {path} to resume from") from None
    except (OSError, ValueError) as e:
        raise TrainError(f"cannot read checkpoint {path}: {e}") from None
    if "__meta__" not in files:
        raise TrainError(f"{path} is not a dslc training checkpoint")
    meta = json.loads(files.pop("__meta__").tobytes().decode())
    if meta.get("version") != CHECKPOINT_VERSION:
        raise TrainError(f"checkpoint {path} has version {meta.get('version')}, this dslc reads {CHECKPOINT_VERSION}")
    weights = {k[2:]: v for k, v in files.items() if k.startswith("w/")}
    opt = {k[4:]: v for k, v in files.items() if k.startswith("opt/")}
    return weights, opt, meta


def _new_sums() -> dict:
    """An epoch's running sums (loss and metric totals, samples, seconds), as checkpoints save them."""
    return {"loss": 0.0, "m": 0.0, "mc": 0, "n": 0, "time": 0.0}


def _fingerprint(g, s: Settings, n_train: int) -> dict:
    return {"network": g.graph.get("name"), "batch_size": s.batch_size, "seed": s.seed,
            "optimizer": s.optimizer.get("name"), "n_train": n_train, "shuffle": s.shuffle}


# ------------------------------------------------------------------------------------------- artefacts
def write_metrics_log(path, history: list[dict]) -> None:
    from dslc.weights import atomic_write_bytes
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in history).encode())


def append_metrics(path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def write_plot(path, history: list[dict], metric_label: str | None, title: str = "",
               val_name: str = "validation") -> None:
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from dslc.weights import atomic_write_bytes

    steps = [r for r in history if r.get("kind") == "step"]
    epochs = [r for r in history if r.get("kind") == "epoch"]
    ncols = 2 if metric_label else 1
    mk_t, mk_v = ("o-", "s-") if len(epochs) <= 30 else ("-", "-")
    fig, axes = plt.subplots(1, ncols, figsize=(5.5 * ncols, 4), squeeze=False)
    ax = axes[0][0]
    if steps:
        ax.plot([r["epoch_f"] for r in steps], [r["loss"] for r in steps], color="tab:blue", alpha=0.35, lw=1,
                label="train (batches)")
    if epochs:
        ax.plot([r["epoch"] for r in epochs], [r["loss"] for r in epochs], mk_t, color="tab:blue", label="train")
        if any(r.get("val_loss") is not None for r in epochs):
            ax.plot([r["epoch"] for r in epochs if r.get("val_loss") is not None],
                    [r["val_loss"] for r in epochs if r.get("val_loss") is not None], mk_v, color="tab:orange",
                    label=val_name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    if all(r["loss"] > 0 for r in steps + epochs) and (steps or epochs):
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"{title} loss".strip())
    if metric_label:
        ax = axes[0][1]
        if epochs:
            tr = [(r["epoch"], r.get(metric_label)) for r in epochs if r.get(metric_label) is not None]
            va = [(r["epoch"], r.get("val_" + metric_label)) for r in epochs
                  if r.get("val_" + metric_label) is not None]
            if tr:
                ax.plot(*zip(*tr), mk_t, color="tab:blue", label="train")
            if va:
                ax.plot(*zip(*va), mk_v, color="tab:orange", label=val_name)
        ax.set_xlabel("epoch")
        ax.set_ylabel({"acc": "accuracy"}.get(metric_label, metric_label))
        ax.grid(alpha=0.3)
        if epochs:
            ax.legend()
        ax.set_title(f"{title} {({'acc': 'accuracy'}).get(metric_label, metric_label)}".strip())
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def export_onnx(g, weights: dict, path, fold_bn: bool = True, metadata: dict[str, str] | None = None) -> None:
    """The trained model as ONNX (lowering: evaluation-mode graph, weights as initializers; each batchnorm's
    running statistics are folded into the conv before it, or kept in a BatchNormalization node where there is
    none or with fold_bn=False), as `dslc compile --weights` would write it. `metadata`: extra metadata_props
    (the text vocabulary, for `dslc generate`)."""
    from dslc.lowering.compile import compile_graph
    from dslc.lowering.save import save_model
    model, _info = compile_graph(g, weights=weights, fold_bn=fold_bn)
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    save_model(model, str(path))


def export_metadata(ds: D.Dataset) -> dict[str, str]:
    """What the exported model must carry from its data to be used: a text source's vocabulary."""
    from dslc.train.sequence_data import VOCAB_KEY
    return {VOCAB_KEY: ds.info["vocab"]} if ds.info.get("vocab") else {}


# ------------------------------------------------------------------------------------------- evaluation
def evaluate(exe: Executor, split: D.Split, metric: Metric, batch_size: int = 256) -> dict:
    """Mean loss and metric over a split, in evaluation mode."""
    if split is None or len(split) == 0:
        return {}
    total_loss, m_total, m_count, n = 0.0, 0.0, 0, len(split)
    order = np.arange(n)
    for _b, xs, ys in D.batches(split, order, batch_size):
        loss, aux = exe.evaluate(xs, ys)
        k = len(xs[0])
        total_loss += loss * k
        if metric.label:
            a, c = metric.batch(aux[0], aux[1])
            m_total += a
            m_count += c
    out = {"loss": total_loss / n}
    if metric.label:
        out[metric.label] = metric.value(m_total, m_count)
    return out


# ------------------------------------------------------------------------------------------- the loop
class _Interrupt:
    """First SIGINT: ask the loop to stop after the current step (it saves a checkpoint); second: abort."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


def default_paths(output: str | Path | None, g) -> dict[str, Path]:
    out = Path(output) if output else Path(f"{g.graph.get('name') or 'model'}_trained.onnx")
    stem = out.with_suffix("") if out.suffix == ".onnx" else out
    return {"onnx": out, "metrics": Path(f"{stem}.metrics.jsonl"), "plot": Path(f"{stem}.png"),
            "checkpoint": Path(f"{stem}.ckpt.npz")}


def prepare_data(g, s: Settings, dataset: D.Dataset | None = None) -> D.Dataset:
    ds = dataset if dataset is not None else D.load_data(s.data)
    ds = D.fit_to_graph(ds, g)
    if s.val_split:
        ds = D.split_validation(ds, s.val_split, s.seed)
    fixed = ds.info.get("fixed_batch") or {}
    for name, b in fixed.items():
        if b != s.batch_size:
            raise D.DataError(f"input `{name}` has a fixed batch size {b}; train with batch_size = {b} or declare "
                              f"the input with a symbolic batch dim (e.g. [N, ...])")
    if len(ds.train) == 0:
        raise D.DataError(f"the data `{ds.name}` has no training samples")
    return ds


def run_training(g, settings: Settings, *, output=None, paths: dict | None = None, resume: bool | str = False,
                 quiet: bool = False, progress: Progress | None = None, dataset: D.Dataset | None = None,
                 weights: dict | None = None, export: bool = True, artefacts: bool = True,
                 log_every: int | None = None, stop_after_steps: int | None = None,
                 on_epoch: Callable[[dict], None] | None = None, fold_bn: bool = True, engine: str = "numpy",
                 device: str | None = None, amp: bool = False) -> TrainResult:
    """Train graph g on `engine` ("numpy" or "torch": dslc/train/engines.py) with the Trainer
    (dslc/train/trainer.py). Raises TrainError / DataError / OptimizerError / ExecutorError for the user's
    mistakes, EngineUnavailable when the engine cannot run here."""
    from dslc.train.trainer import Trainer
    trainer = Trainer(g, settings, paths=paths or default_paths(output, g), resume=resume, quiet=quiet,
                      progress=progress, dataset=dataset, weights=weights, export=export, artefacts=artefacts,
                      log_every=log_every, stop_after_steps=stop_after_steps, on_epoch=on_epoch, fold_bn=fold_bn,
                      engine=engine, device=device, amp=amp)
    return trainer.run()


def _figures(ev: dict, metric: Metric) -> str:
    parts = [f"loss {ev['loss']:.4f}"]
    if metric.label and ev.get(metric.label) is not None:
        parts.append(f"{metric.label} {metric.show(ev[metric.label])}")
    return "  ".join(parts)


def _epoch_line(rec: dict, epochs: int, metric: Metric, val_name: str | None) -> str:
    w = len(str(epochs))
    parts = [f"epoch {rec['epoch']:>{w}}/{epochs}", f"loss {rec['loss']:.4f}"]
    if metric.label and rec.get(metric.label) is not None:
        parts.append(f"{metric.label} {metric.show(rec[metric.label])}")
    if val_name and rec.get("val_loss") is not None:
        v = "val" if val_name == "validation" else "test"
        parts.append(f"{v}_loss {rec['val_loss']:.4f}")
        if metric.label and rec.get("val_" + metric.label) is not None:
            parts.append(f"{v}_{metric.label} {metric.show(rec['val_' + metric.label])}")
    parts.append(f"{rec['samples_per_s']:,.0f} samples/s")
    parts.append(f"{rec['time_s']:.1f}s")
    return "  ".join(parts)


# ------------------------------------------------------------------------------------------- entry point
def load_graph(source, network: str | None = None):
    """A graph from a path, a Program or a graph. Raises TrainError for programs with errors."""
    import networkx as nx
    if isinstance(source, nx.DiGraph):
        return source
    if hasattr(source, "networks") and hasattr(source, "diagnostics"):
        program = source
    else:
        import dslc
        program = dslc.load(str(source), network=network)
    if not program.ok:
        raise TrainError(program.diagnostics.render_all())
    if network is not None and network in program.networks:
        return program.networks[network]
    return program.graph


def train(source, *, data=None, epochs: int | None = None, batch_size: int | None = None, lr: float | None = None,
          optimizer: str | None = None, seed: int | None = None, schedule=None, clip: float | None = None,
          val_split: float | None = None, metric: str | None = None, checkpoint_every: int | None = None,
          resume: bool | str = False, output=None, network: str | None = None, quiet: bool = True,
          export: bool | None = None, artefacts: bool | None = None, weights: dict | None = None,
          **kw) -> TrainResult:
    """Train a network (a .net path, a Program or a graph) as `dslc train` does; returns a TrainResult.

    Settings default to the file's train section; the keyword arguments override them. `data` is a spec dict, a
    --data string or a `Dataset`. Without `output`, nothing is written (no ONNX model, metrics log, plot or
    checkpoints) unless `export` / `artefacts` say so."""
    g = load_graph(source, network)
    dataset = data if isinstance(data, D.Dataset) else None
    s = Settings.resolve(g, data=(data if dataset is None else (data.name)), epochs=epochs, batch_size=batch_size,
                         lr=lr, optimizer=optimizer, seed=seed, schedule=schedule, clip=clip, val_split=val_split,
                         metric=metric, checkpoint_every=checkpoint_every)
    if export is None:
        export = output is not None
    if artefacts is None:
        artefacts = output is not None
    return run_training(g, s, output=output, resume=resume, quiet=quiet, dataset=dataset, export=export,
                        artefacts=artefacts, weights=weights, **kw)


__all__ = ["train", "run_training", "Settings", "TrainResult", "TrainError", "evaluate", "save_checkpoint",
           "load_checkpoint", "ExecutorError"]
