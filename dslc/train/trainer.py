"""The Trainer: one training loop for every engine (dslc/train/engines.py), with the epoch, the step and the
checkpoint as methods.

It owns what must be the same whichever engine runs the arithmetic: the settings, the data and its batch order
(dslc.train.data.epoch_order: a function of (seed, epoch) only), the learning-rate schedule, the progress bar,
the metrics log, the plot, the checkpoints (atomic .npz, dslc's optimiser-state format) and the ONNX export
(dslc's own lowering of the trained weights). Under torch.distributed every process runs the same Trainer on the
same global batches (the engine takes its shard); only rank 0 writes anything or prints.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable

from dslc.train import data as D
from dslc.train.engines import NonFiniteLoss, make_engine
from dslc.train.optim import OptimizerError, make_schedule
from dslc.train.second_order import SECOND_ORDER as FULL_BATCH_OPTIMIZERS


class Trainer:
    def __init__(self, g, settings, *, paths: dict, resume=False, quiet: bool = False, progress=None,
                 dataset=None, weights=None, export: bool = True, artefacts: bool = True,
                 log_every: int | None = None, stop_after_steps: int | None = None,
                 on_epoch: Callable[[dict], None] | None = None, fold_bn: bool = True, engine: str = "numpy",
                 device: str | None = None, amp: bool = False):
        from dslc.train import loop as L
        self.L = L
        s = settings
        self.g = g
        self.paths = dict(paths)
        self.metric = L.choose_metric(g, s.metric)
        self.ds = L.prepare_data(g, s, dataset)
        self.n_train = len(self.ds.train)
        if str(s.optimizer.get("name", "")).lower() in FULL_BATCH_OPTIMIZERS:
            if engine not in (None, "numpy"):
                raise L.TrainError(f"optimizer {s.optimizer.get('name')} (full-batch, second-order) runs on the "
                                   f"numpy engine only")
            s = dataclasses.replace(s, batch_size=self.n_train)   # one step over the whole split per epoch
        self.s = s
        self.spe = D.num_batches(self.n_train, s.batch_size)
        self.val_split = self.ds.val if self.ds.val is not None else self.ds.test
        self.val_name = "validation" if self.ds.val is not None else "test"

        def need_params(params):
            if not params:
                raise L.TrainError(f"network `{g.graph.get('name')}` has no trainable weights")
        self.engine = make_engine(engine, g, s, weights, device=device, amp=amp, params_check=need_params)
        self.writer = artefacts and self.engine.rank == 0     # under DDP only rank 0 writes
        self.export = export and self.engine.rank == 0
        self.prog = progress or L.Progress(quiet=quiet or self.engine.rank != 0)
        self.base_lr = self._base_lr()
        self.sched = make_schedule(s.schedule, self.base_lr, self.spe, s.epochs)
        self.log_every = log_every or max(self.spe // 20, 1)
        self.eval_batch = max(s.batch_size, 256)
        self.stop_after_steps = stop_after_steps
        self.on_epoch = on_epoch
        self.fold_bn = fold_bn
        # position and running sums
        self.epoch, self.next_batch, self.step_no = 0, 0, 0
        self.sums = L._new_sums()
        self.history: list[dict] = []
        self.fp = L._fingerprint(g, s, self.n_train)
        self.ckpt_path = Path(resume) if isinstance(resume, (str, Path)) else self.paths["checkpoint"]
        if resume:
            self.resume()
        elif self.writer:
            L.write_metrics_log(self.paths["metrics"], [])

    def _base_lr(self) -> float:
        return self.engine.lr

    # ------------------------------------------------------------------------------------------- checkpoints
    def resume(self) -> None:
        L = self.L
        w, o, meta = L.load_checkpoint(self.ckpt_path)
        if meta.get("fingerprint", {}) != self.fp:
            diff = [f"{k}: checkpoint {meta.get('fingerprint', {}).get(k)!r}, now {v!r}" for k, v in self.fp.items()
                    if meta.get("fingerprint", {}).get(k) != v]
            raise L.TrainError(f"checkpoint {self.ckpt_path} belongs to a different run ({'; '.join(diff)})")
        from dslc.weights import check_weights
        problems = check_weights(self.g, w)
        if problems:
            raise L.TrainError(f"checkpoint {self.ckpt_path} does not fit network `{self.g.graph.get('name')}`: "
                               + "; ".join(problems[:3]))
        self.engine.set_weights(w)
        try:
            self.engine.load_optimizer_state(o, meta["optimizer_state"])
        except OptimizerError as e:
            raise L.TrainError(f"checkpoint {self.ckpt_path}: {e}") from None
        same_engine = meta.get("engine", "numpy") == self.engine.name
        self.engine.load_rng_state(meta.get("rng") if same_engine else None, self.s.seed, meta["step"])
        self.epoch, self.next_batch, self.step_no = meta["epoch"], meta["batch"], meta["step"]
        self.sums = meta["sums"]
        self.history = meta["history"]
        if self.writer:
            L.write_metrics_log(self.paths["metrics"], self.history)
        self.prog.line(f"resuming from {self.ckpt_path}: epoch {self.epoch + 1}, batch {self.next_batch}, "
                       f"step {self.step_no}" + ("" if same_engine else
                                                 f" (a {meta.get('engine', 'numpy')} engine checkpoint)"))

    def checkpoint(self) -> None:
        if not self.writer:
            return
        meta = {"fingerprint": self.fp, "epoch": self.epoch, "batch": self.next_batch, "step": self.step_no,
                "sums": self.sums, "rng": self.engine.rng_state(), "history": self.history}
        if self.engine.name != "numpy":   # numpy checkpoints stay as they were
            meta["engine"] = self.engine.name
        self.L.save_checkpoint(self.ckpt_path, self.engine.weights(), _StateOf(self.engine), meta)

    def plot(self) -> None:
        self.L.write_plot(self.paths["plot"], self.history, self.metric.label, self.g.graph.get("name") or "",
                          self.val_name)

    def record(self, rec: dict) -> None:
        self.history.append(rec)
        if self.writer:
            self.L.append_metrics(self.paths["metrics"], rec)

    # ------------------------------------------------------------------------------------------- the step
    def train_step(self, xs, ys) -> None:
        lr = self.sched(self.step_no)
        try:
            loss, k, a, c = self.engine.step(xs, ys, lr, self.s.clip, self.metric)
        except NonFiniteLoss as e:
            self.prog.end_epoch()
            raise self.L.TrainError(f"the loss became {e.loss} at epoch {self.epoch + 1}, step {self.step_no + 1}; "
                                    f"try a smaller learning rate (now {lr:g}) or gradient clipping (clip = 1.0)")
        sums = self.sums
        self.step_no += 1
        sums["loss"] += loss * k
        sums["n"] += k
        if self.metric.label:
            sums["m"] += a
            sums["mc"] += c
        if self.step_no % self.log_every == 0:
            self.record({"kind": "step", "step": self.step_no, "epoch_f": self.epoch + self.next_batch / self.spe,
                         "loss": loss, "lr": lr})

    # ------------------------------------------------------------------------------------------- the epoch
    def run_epoch(self, intr) -> bool:
        """Train the rest of the current epoch; False when interrupted (checkpoint saved)."""
        s, sums, metric, prog = self.s, self.sums, self.metric, self.prog
        order = D.epoch_order(self.n_train, s.seed, self.epoch, s.shuffle)
        prog.start_epoch(self.epoch, s.epochs, self.spe, self.next_batch)
        t_epoch = time.perf_counter() - sums["time"]
        for b, xs, ys in D.batches(self.ds.train, order, s.batch_size, self.next_batch,
                                   augment_key=(s.seed, self.epoch)):
            self.next_batch = b + 1
            self.train_step(xs, ys)
            sums = self.sums
            elapsed = time.perf_counter() - t_epoch
            if prog.live:
                mv = metric.value(sums["m"], sums["mc"])
                prog.update(self.next_batch, f"loss {sums['loss'] / sums['n']:.4f}"
                            + (f" {metric.label} {metric.show(mv)}" if mv is not None else ""),
                            sums["n"] / max(elapsed, 1e-9))
            stop_now = intr.requested or (self.stop_after_steps is not None and self.step_no >= self.stop_after_steps)
            if (s.checkpoint_every and self.step_no % s.checkpoint_every == 0) or stop_now:
                sums["time"] = time.perf_counter() - t_epoch
                self.checkpoint()
            if stop_now:
                prog.end_epoch()
                return False
        prog.end_epoch()
        elapsed = time.perf_counter() - t_epoch
        rec = {"kind": "epoch", "epoch": self.epoch + 1, "step": self.step_no,
               "loss": sums["loss"] / max(sums["n"], 1), "time_s": elapsed,
               "samples_per_s": sums["n"] / max(elapsed, 1e-9), "lr": self.sched(max(self.step_no - 1, 0))}
        if metric.label:
            rec[metric.label] = metric.value(sums["m"], sums["mc"])
        if self.val_split is not None:
            ev = self.evaluate(self.val_split)
            self.last_eval = ev
            rec["val_loss"] = ev["loss"]
            if metric.label:
                rec["val_" + metric.label] = ev.get(metric.label)
        self.record(rec)
        prog.line(self.L._epoch_line(rec, s.epochs, metric, self.val_name if self.val_split is not None else None))
        if self.on_epoch is not None:
            self.on_epoch(rec)
        self.epoch += 1
        self.next_batch = 0
        self.sums = self.L._new_sums()
        return True

    def evaluate(self, split) -> dict:
        """Mean loss and metric over a split, in evaluation mode (as loop.evaluate, through the engine)."""
        if split is None or len(split) == 0:
            return {}
        total_loss, m_total, m_count, n = 0.0, 0.0, 0, len(split)
        import numpy as np
        for _b, xs, ys in D.batches(split, np.arange(n), self.eval_batch):
            loss, k, a, c = self.engine.evaluate(xs, ys, self.metric)
            total_loss += loss * k
            m_total += a
            m_count += c
        out = {"loss": total_loss / n}
        if self.metric.label:
            out[self.metric.label] = self.metric.value(m_total, m_count)
        return out

    # ------------------------------------------------------------------------------------------- the run
    def run(self):
        L, s, prog = self.L, self.s, self.prog
        extra = self.engine.describe()
        prog.line(f"training {self.g.graph.get('name')} on {self.ds.describe()} for {s.epochs} epoch(s), batch "
                  f"{s.batch_size}, {self.engine.opt_name} lr {self.base_lr:g}, seed {s.seed}"
                  + (f"; {extra}" if extra else ""))
        interrupted = False
        self.last_eval: dict = {}
        last_plot = time.perf_counter()
        try:
            with L._Interrupt() as intr:
                while self.epoch < s.epochs:
                    if not self.run_epoch(intr):
                        interrupted = True
                        break
                    self.checkpoint()
                    if self.writer:
                        now = time.perf_counter()
                        if self.epoch == s.epochs or now - last_plot > L.PLOT_EVERY_S:   # rendering: ~0.1 s
                            self.plot()
                            last_plot = now
            return self._finish(interrupted)
        finally:
            self.engine.close()

    def _finish(self, interrupted: bool):
        L, prog, ds = self.L, self.prog, self.ds
        test = None
        if interrupted:
            if self.writer and self.history:
                self.plot()
            prog.line(f"stopped at epoch {self.epoch + 1}, step {self.step_no}" + (
                f"; checkpoint saved to {self.ckpt_path} (continue with --resume)" if self.writer else ""))
        else:
            if ds.test is not None:   # without a validation split, the last epoch has just evaluated the test split
                test = (self.last_eval if ds.val is None else None) or self.evaluate(ds.test)
            if test:
                prog.line("test: " + L._figures(test, self.metric))
            if self.export and self.paths.get("onnx"):
                try:
                    L.export_onnx(self.g, self.engine.weights(), self.paths["onnx"], fold_bn=self.fold_bn,
                                  metadata=L.export_metadata(ds))
                except Exception as e:  # a lowering bug must not lose the trained weights: they are in the checkpoint
                    where = f"; the trained weights are in {self.ckpt_path}" if self.writer else ""
                    raise L.ExportError(f"training finished, but exporting {self.paths['onnx']} failed: "
                                        f"{type(e).__name__}: {e}{where}") from e
                prog.line(f"wrote {self.paths['onnx']}" + (
                    f", {self.paths['metrics']}, {self.paths['plot']}, {self.ckpt_path}" if self.writer else ""))
        final = next((r for r in reversed(self.history) if r.get("kind") == "epoch"), {})
        return L.TrainResult(weights=self.engine.weights(), history=self.history, final=final, test=test,
                             interrupted=interrupted, epochs_done=self.epoch, step=self.step_no,
                             paths={k: str(v) for k, v in self.paths.items()} | {"checkpoint": str(self.ckpt_path)},
                             settings=self.s, graph=self.g, dataset=ds)


class _StateOf:
    """save_checkpoint's view of an engine's optimiser (state_dict() in dslc's format)."""

    def __init__(self, engine):
        self.engine = engine

    def state_dict(self):
        return self.engine.optimizer_state()
