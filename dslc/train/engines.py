"""Training engines: what runs a step. The Trainer (dslc/train/trainer.py) owns the loop, the data order, the
schedule, progress, metrics and checkpoints; an engine owns the weights, the optimiser and the arithmetic.

    engine.step(xs, ys, lr, clip, metric) -> (loss, samples, metric total, metric count)   one optimiser step
    engine.evaluate(xs, ys, metric)       -> (loss, samples, metric total, metric count)   evaluation mode
    engine.weights()                      -> {dslc weight name: float32 numpy array}       (running stats too)
    engine.set_weights(w) ; engine.optimizer_state() -> (arrays, meta) ; engine.load_optimizer_state(arrays, meta)
    engine.rng_state() -> JSON-able ; engine.load_rng_state(state_or_None, seed, step)

Optimiser state crosses engines in dslc's own format (dslc/train/optim.py: SGD's momentum buffers, Adam's
scaled moments and step count), so a checkpoint written by one engine resumes on the other.

`numpy` (this file) is the embedded executor; `torch` (dslc/train/torch_engine.py, imported only when asked for)
runs the network as a PyTorch module on CPU or CUDA, optionally under DistributedDataParallel.
"""
from __future__ import annotations

import math

import numpy as np

ENGINES = ("numpy", "torch")
TORCH_INSTALL_HINT = "the torch engine needs PyTorch: pip install 'dslc[torch]' (pins torch==2.13.0)"


class EngineUnavailable(Exception):
    """The engine asked for cannot run here (PyTorch missing, no CUDA device); a usage error (exit 2)."""


class NonFiniteLoss(Exception):
    """The step's loss is inf or nan; raised before the optimiser applies the step."""

    def __init__(self, loss: float):
        super().__init__(str(loss))
        self.loss = loss


def metric_counts(metric, aux) -> tuple[float, int]:
    if not metric.label:
        return 0.0, 0
    return metric.batch(aux[0], aux[1])


class NumpyEngine:
    """The numpy executor (dslc/train/executor.py) and dslc's optimisers, first- and second-order."""
    name = "numpy"
    rank, world = 0, 1

    def __init__(self, g, settings, weights=None, params_check=None):
        from dslc.train.executor import Executor
        from dslc.train.optim import make_optimizer
        self.exe = Executor(g, weights=weights, seed=settings.seed)
        params = {k: self.exe.weights[k] for k in self.exe.trainable}
        if params_check is not None:
            params_check(params)
        self.opt = make_optimizer(settings.optimizer, params, paired=self.exe.paired_updates())
        self.full_batch = getattr(self.opt, "full_batch", False)
        if self.full_batch:
            self.opt.check_graph(g)
        self.lr, self.opt_name = self.opt.lr, self.opt.name

    def describe(self) -> str:
        return ""

    def step(self, xs, ys, lr, clip, metric):
        from dslc.train.optim import clip_grad_norm
        if self.full_batch:   # the optimiser evaluates the loss (and Jacobians) itself
            from dslc.train.second_order import Objective
            loss = self.opt.step_full(Objective(self.exe, xs, ys), lr)
            aux = self.exe.evaluate(xs, ys)[1]
            if not math.isfinite(loss):
                raise NonFiniteLoss(loss)
        else:
            loss, aux, grads = self.exe.loss_and_grads(xs, ys)
            if not math.isfinite(loss):
                raise NonFiniteLoss(loss)
            if clip:
                clip_grad_norm(grads, clip)
            self.opt.step(grads, lr)
        return (loss, len(xs[0]), *metric_counts(metric, aux))

    def evaluate(self, xs, ys, metric):
        loss, aux = self.exe.evaluate(xs, ys)
        return (loss, len(xs[0]), *metric_counts(metric, aux))

    def weights(self) -> dict[str, np.ndarray]:
        return self.exe.weights

    def set_weights(self, w) -> None:
        self.exe.set_weights(w)

    def optimizer_state(self):
        return self.opt.state_dict()

    def load_optimizer_state(self, arrays, meta) -> None:
        self.opt.load_state_dict(arrays, meta)

    def rng_state(self):
        return self.exe.rng.bit_generator.state

    def load_rng_state(self, state, seed: int, step: int) -> None:
        """The generator's saved state (a numpy checkpoint), or, from another engine's checkpoint, a generator
        seeded by (seed, step): dropout masks then differ from an uninterrupted run, nothing else does."""
        if state is not None:
            self.exe.rng.bit_generator.state = state
        else:
            self.exe.rng.bit_generator.state = np.random.default_rng([int(seed), 2000 + int(step)]).bit_generator.state

    def close(self) -> None:
        pass


def make_engine(name: str, g, settings, weights=None, device: str | None = None, amp: bool = False,
                params_check=None):
    """The engine `name` ("numpy" | "torch"). Raises EngineUnavailable (PyTorch not installed, no CUDA)."""
    if name in (None, "numpy"):
        if device not in (None, "cpu") or amp:
            raise EngineUnavailable("--device and --amp are options of the torch engine (--engine torch); the "
                                    "numpy engine runs on the CPU")
        return NumpyEngine(g, settings, weights, params_check)
    if name != "torch":
        raise EngineUnavailable(f"unknown engine `{name}` (known: {', '.join(ENGINES)})")
    try:
        import torch  # noqa: F401
    except ImportError:
        raise EngineUnavailable(TORCH_INSTALL_HINT) from None
    from dslc.train.torch_engine import TorchEngine
    return TorchEngine(g, settings, weights, device=device or "auto", amp=amp, params_check=params_check)
