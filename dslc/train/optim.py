"""Optimisers (SGD with momentum / Nesterov / weight decay, Adam, AdamW), learning-rate schedules and global-norm
gradient clipping.

Everything is float32 and in place: `step(grads, lr)` updates the parameter arrays it was given (the executor's
weights) and its own state in one compiled pass per parameter (dslc.kernels.jit: Adam's ten numpy passes over
every weight took 3.4x as long), so a training step allocates nothing here. The kernels give, bit for bit, what
that numpy formulation gave (tests/train/test_optim.py keeps it as their oracle).
No randomness: the same gradients give the same weights, bit for bit. State (moments, step count) round-trips
through `state_dict()` / `load_state_dict()` as plain arrays and numbers (checkpoints, allow_pickle=False).
"""
from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from dslc.train.parallel import halves_cut, helper

F32 = np.float32
_EMPTY = np.empty(0, F32)   # "no momentum buffer" for the SGD kernel


class OptimizerError(ValueError):
    """Bad optimiser / schedule settings (unknown name, bad value); the message is meant for the user."""


def _flat(a: np.ndarray) -> np.ndarray:
    """A 1-D view (never a copy: the updates must land in `a`) of a dense array (C, F or kernel-major), in memory
    order."""
    return a.ravel(order="K")


def _flat_like(g: np.ndarray, p: np.ndarray) -> np.ndarray:
    """g flattened in the memory order of parameter p (a column-major or kernel-major p pairs with a gradient
    in its layout: a view; any other gradient is copied into p's layout)."""
    if p.flags.c_contiguous:
        return g.reshape(-1)
    if g.strides != p.strides:
        g = _copy_like(g, p)
    return g.ravel(order="K")


def _copy_like(g: np.ndarray, p: np.ndarray) -> np.ndarray:
    out = np.empty_like(p)   # p's memory order
    np.copyto(out, g)
    return out


def _dense(a: np.ndarray) -> bool:
    """Whether a's elements fill its memory without gaps in some order of its axes (so ravel("K") is a view)."""
    expected = a.itemsize
    for stride, n in sorted((s, n) for s, n in zip(a.strides, a.shape) if n != 1):
        if stride != expected:
            return False
        expected *= n
    return True


def _thread_budget() -> int:
    from dslc.train.parallel import thread_budget
    return thread_budget()


TRIAL_STEPS = 8       # steps timed each way (one thread / two) before the optimiser keeps the faster


class Optimizer(ABC):
    """Base: parameters (float32 arrays, updated in place) and per-parameter state arrays.

    The update of one parameter is one compiled elementwise kernel over flat views (`_apply`, its float32
    scalars from `kernel_scalars`); large parameters may be cut into two halves updated concurrently, which is
    bit-for-bit the same as one pass. Who runs the halves: a `paired` updater given by the caller
    (`use_paired_updates(fn)`, fn(optimizer, half0, grad0, half1, grad1, lr) -> bool, True when it ran both;
    the executor offers one where it has a cheaper hand-off than a Python thread), else a Python helper thread
    (20-50 us per hand-off): whether that pays depends on how busy the machine is, so unless `threads` is given
    the first steps are timed both ways and the faster is kept."""
    name = "optimizer"
    state_keys: tuple[str, ...] = ()

    def __init__(self, params: dict[str, np.ndarray], lr: float = 1e-3, weight_decay: float = 0.0,
                 threads: int | None = None):
        if not lr > 0:
            raise OptimizerError(f"the learning rate must be positive, got {lr}")
        if weight_decay < 0:
            raise OptimizerError(f"weight_decay must not be negative, got {weight_decay}")
        for k, p in params.items():
            if p.dtype != F32:
                raise OptimizerError(f"parameter `{k}` is {p.dtype}, expected float32")
            if not _dense(p):
                raise OptimizerError(f"parameter `{k}` is not a contiguous array")
        self.params = params
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.t = 0
        self.state: dict[str, dict[str, np.ndarray]] = {
            k: {s: np.zeros_like(p) for s in self.state_keys} for k, p in params.items()}
        self.threads = _thread_budget() if threads is None else max(1, int(threads))
        # per parameter: [(slice, views)] whole, and cut in two halves where it is large enough
        self._whole: dict[str, list[tuple[slice, dict[str, np.ndarray]]]] = {}
        self._split: dict[str, list[tuple[slice, dict[str, np.ndarray]]]] = {}
        for k, p in params.items():
            arrays = {"p": _flat(p), **{s: _flat(a) for s, a in self.state[k].items()}}
            n = p.size
            self._whole[k] = [(slice(0, n), arrays)]
            cut = halves_cut(p)
            self._split[k] = self._whole[k] if cut is None else [
                (sl, {a: v[sl] for a, v in arrays.items()}) for sl in (slice(0, cut), slice(cut, n))]
        self._can_split = self.threads >= 2 and any(len(v) > 1 for v in self._split.values())
        self._paired = None
        self._mode = "split" if self._can_split and threads is not None else ("auto" if self._can_split else "whole")
        self._trial: dict[str, list[float]] = {"whole": [], "split": []}

    def use_paired_updates(self, paired) -> None:
        """Run the two halves of large parameters with `paired` (see the class docstring); a hand-off that costs
        a few microseconds always pays, so the halves are then always used (with two threads)."""
        self._paired = paired
        if paired is not None and self._can_split:
            self._mode = "split"

    @property
    def _parts(self):
        return self._split if self._mode == "split" else self._whole

    def step(self, grads: dict[str, np.ndarray], lr: float | None = None) -> None:
        self.t += 1
        lr = self.lr if lr is None else float(lr)
        self._prepare_step(lr)
        mode = self._mode
        if mode == "auto":
            mode = "split" if self.t % 2 else "whole"
            t0 = time.perf_counter()
        parts_of = self._split if mode == "split" else self._whole
        later = []
        futures = []
        for k in self.params:
            g = grads.get(k)
            if g is None:
                continue
            g = _flat_like(g, self.params[k])
            parts = parts_of[k]
            if len(parts) > 1:
                (sl0, v0), (sl1, v1) = parts
                if self._paired is None or not self._paired(self, v0, g[sl0], v1, g[sl1], lr):
                    futures.append(helper().submit(self._apply, v0, g[sl0], lr))
                    later.append((v1, g[sl1]))
            else:
                later.append((parts[0][1], g))
        try:
            for views, g in later:
                self._apply(views, g, lr)
        finally:
            for f in futures:
                f.result()
        if self._mode == "auto":
            trial = self._trial[mode]
            trial.append(time.perf_counter() - t0)
            if self.t > 4 and min(len(v) for v in self._trial.values()) >= TRIAL_STEPS:
                med = {m: sorted(v)[len(v) // 2] for m, v in self._trial.items()}
                self._mode = "split" if med["split"] < med["whole"] else "whole"

    def _prepare_step(self, lr: float) -> None:
        """Scalars shared by every parameter's update this step."""

    kernel = ""   # the compiled elementwise update (dslc.kernels.jit) `_apply` runs: "sgd" or "adam"

    def kernel_scalars(self, lr) -> np.ndarray:
        """The float32 scalars of this step's compiled update (after _prepare_step)."""
        raise NotImplementedError

    @abstractmethod
    def _apply(self, a: dict[str, np.ndarray], g: np.ndarray, lr: float) -> None:
        """Update one parameter (or half of one) in place: `a` holds flat views of "p" and the state arrays;
        `g` is the matching flat gradient."""

    # checkpoints
    def state_dict(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {f"{s}/{k}": st[s] for k, st in self.state.items() for s in self.state_keys}
        return arrays, {"name": self.name, "t": self.t}

    def load_state_dict(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        if meta.get("name") != self.name:
            raise OptimizerError(f"the checkpoint's optimiser is {meta.get('name')}, this run uses {self.name}")
        self.t = int(meta["t"])
        for k, st in self.state.items():
            for s in self.state_keys:
                key = f"{s}/{k}"
                if key not in arrays:
                    raise OptimizerError(f"the checkpoint has no optimiser state `{key}`")
                np.copyto(st[s], arrays[key])


class SGD(Optimizer):
    """p -= lr * v with v = momentum * v + (g + wd * p); Nesterov uses g + momentum * v as the step."""
    name = "sgd"
    kernel = "sgd"

    def __init__(self, params, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0, dampening=0.0,
                 threads=None):
        if momentum < 0:
            raise OptimizerError(f"momentum must not be negative, got {momentum}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise OptimizerError("Nesterov momentum needs momentum > 0 and no dampening")
        self.state_keys = ("momentum",) if momentum else ()
        super().__init__(params, lr, weight_decay, threads)
        self.momentum, self.nesterov, self.dampening = float(momentum), bool(nesterov), float(dampening)

    def kernel_scalars(self, lr) -> np.ndarray:
        """sgd_update's scalars, float32: lr, momentum, 1 - dampening, weight decay."""
        return np.array([lr, self.momentum, 1.0 - self.dampening, self.weight_decay], F32)

    def _apply(self, a, g, lr):
        from dslc.kernels.jit import sgd_update
        sgd_update(a["p"], a.get("momentum", _EMPTY), g, *self.kernel_scalars(lr), self.t == 1, self.nesterov)


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction; `weight_decay` adds wd * p to the gradient (L2, like torch).

    Internally the moments are kept scaled, m' = m / (1 - beta1) and v' = v / (1 - beta2), which makes their
    updates m' = beta1 m' + g and v' = beta2 v' + g^2 (two multiplies fewer per weight), and folds every
    constant of the step into one scalar:
        p -= lr / bc1 * m / (sqrt(v / bc2) + eps) = c * m' / (sqrt(v') + eps / s)
    with s = sqrt((1 - beta2) / bc2), c = lr (1 - beta1) / (bc1 s). Checkpoints hold the scaled moments."""
    name = "adam"
    state_keys = ("m", "v")
    decoupled = False
    kernel = "adam"

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, betas=None,
                 threads=None):
        if betas is not None:
            beta1, beta2 = betas
        for nm, b in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= b < 1.0:
                raise OptimizerError(f"{nm} must be in [0, 1), got {b}")
        if not eps > 0:
            raise OptimizerError(f"eps must be positive, got {eps}")
        super().__init__(params, lr, weight_decay, threads)
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)

    def _prepare_step(self, lr):
        t = self.t
        bc1 = 1.0 - self.beta1 ** t
        bc2 = 1.0 - self.beta2 ** t
        s = math.sqrt((1.0 - self.beta2) / bc2)
        self._eps_s = self.eps / s
        self._step_scale = lr * (1.0 - self.beta1) / (bc1 * s)

    def kernel_scalars(self, lr) -> np.ndarray:
        """adam_update's six scalars, float32: beta1, beta2, step_scale, eps_s, l2, decay."""
        l2 = 0.0 if self.decoupled else self.weight_decay
        decay = 1.0 - lr * self.weight_decay if self.decoupled else 1.0
        return np.array([self.beta1, self.beta2, self._step_scale, self._eps_s, l2, decay], F32)

    def _apply(self, a, g, lr):
        from dslc.kernels.jit import adam_update
        adam_update(a["p"], a["m"], a["v"], g, *self.kernel_scalars(lr))

    def state_dict(self):
        arrays, meta = super().state_dict()   # the scaled moments, exactly (a resumed run must be bit-identical)
        return arrays, dict(meta, moments="m / (1 - beta1), v / (1 - beta2)")


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): p *= 1 - lr * wd before the Adam step."""
    name = "adamw"
    decoupled = True

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, betas=None,
                 threads=None):
        super().__init__(params, lr, beta1, beta2, eps, weight_decay, betas, threads)


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}
_OPT_KEYS = {
    "sgd": {"lr", "momentum", "nesterov", "weight_decay", "dampening"},
    "adam": {"lr", "beta1", "beta2", "betas", "eps", "weight_decay"},
    "adamw": {"lr", "beta1", "beta2", "betas", "eps", "weight_decay"},
}


def make_optimizer(spec: dict | str, params: dict[str, np.ndarray], lr: float | None = None,
                   paired=None) -> Optimizer:
    """From a train-section spec {"name": "adam", "lr": 1e-3, ...}; `lr` (the --lr flag) overrides; `paired`:
    a two-halves updater (Optimizer.use_paired_updates), e.g. Executor.paired_updates()."""
    if isinstance(spec, str):
        spec = {"name": spec}
    spec = dict(spec)
    from dslc.train.second_order import SECOND_ORDER, SECOND_ORDER_KEYS   # full-batch: lbfgs, levenberg_marquardt
    table, keys = {**OPTIMIZERS, **SECOND_ORDER}, {**_OPT_KEYS, **SECOND_ORDER_KEYS}
    name = str(spec.pop("name", "sgd")).lower()
    if name not in table:
        raise OptimizerError(f"unknown optimizer `{name}` (known: {', '.join(table)})")
    unknown = set(spec) - keys[name]
    if unknown:
        raise OptimizerError(f"optimizer {name}: unknown argument `{sorted(unknown)[0]}` "
                             f"(known: {', '.join(sorted(keys[name]))})")
    if lr is not None:
        spec["lr"] = lr
    try:
        opt = table[name](params, **spec)
    except TypeError as e:  # a list where a number was expected, ...
        raise OptimizerError(f"optimizer {name}: {e}") from None
    if paired is not None and isinstance(opt, Optimizer):
        opt.use_paired_updates(paired)
    return opt


# ---------------------------------------------------------------------------------------------- schedules
class Schedule:
    """lr(step) for step = 0, 1, ... (the step about to be taken). Epoch-valued settings are converted with the
    number of steps per epoch. Optional linear warm-up from lr/warmup-steps to lr, then the decay."""
    name = "constant"

    def __init__(self, lr: float, steps_per_epoch: int, epochs: int, warmup: float = 0.0,
                 warmup_steps: int | None = None):
        if warmup < 0:
            raise OptimizerError(f"warmup must not be negative, got {warmup}")
        self.base = float(lr)
        self.spe = max(int(steps_per_epoch), 1)
        self.total = max(self.spe * int(epochs), 1)
        self.warm = int(warmup_steps) if warmup_steps is not None else int(round(warmup * self.spe))

    def __call__(self, step: int) -> float:
        if step < self.warm:
            return self.base * (step + 1) / self.warm
        return self.decay(step)

    def decay(self, step: int) -> float:
        return self.base


class StepSchedule(Schedule):
    """Multiply by gamma every `step_size` epochs (or `step_steps` steps)."""
    name = "step"

    def __init__(self, lr, steps_per_epoch, epochs, step_size: float = 1, gamma: float = 0.1, step_steps=None,
                 **kw):
        super().__init__(lr, steps_per_epoch, epochs, **kw)
        self.every = int(step_steps) if step_steps else max(int(round(step_size * self.spe)), 1)
        self.gamma = float(gamma)

    def decay(self, step):
        return self.base * self.gamma ** (step // self.every)


class CosineSchedule(Schedule):
    """Half a cosine from lr down to min_lr over the steps after the warm-up."""
    name = "cosine"

    def __init__(self, lr, steps_per_epoch, epochs, min_lr: float = 0.0, **kw):
        super().__init__(lr, steps_per_epoch, epochs, **kw)
        self.min_lr = float(min_lr)

    def decay(self, step):
        span = max(self.total - self.warm, 1)
        t = min(max(step - self.warm, 0) / span, 1.0)
        return self.min_lr + (self.base - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


class ExponentialSchedule(Schedule):
    """Multiply by gamma every epoch (smoothly, per step)."""
    name = "exponential"

    def __init__(self, lr, steps_per_epoch, epochs, gamma: float = 0.9, **kw):
        super().__init__(lr, steps_per_epoch, epochs, **kw)
        self.gamma = float(gamma)

    def decay(self, step):
        return self.base * self.gamma ** ((step - self.warm) / self.spe)


SCHEDULES = {"constant": Schedule, "warmup": Schedule, "step": StepSchedule, "cosine": CosineSchedule,
             "exponential": ExponentialSchedule}
_SCHED_KEYS = {"warmup", "warmup_steps"}
_SCHED_EXTRA = {"constant": set(), "warmup": set(), "step": {"step_size", "gamma", "step_steps"},
                "cosine": {"min_lr"}, "exponential": {"gamma"}}


def make_schedule(spec: dict | str | None, lr: float, steps_per_epoch: int, epochs: int) -> Schedule:
    if spec is None:
        return Schedule(lr, steps_per_epoch, epochs)
    if isinstance(spec, str):
        spec = {"name": spec}
    spec = dict(spec)
    name = str(spec.pop("name", "constant")).lower()
    if name not in SCHEDULES:
        raise OptimizerError(f"unknown schedule `{name}` (known: {', '.join(SCHEDULES)})")
    if name == "warmup" and "epochs" in spec:  # warmup(epochs=2)
        spec["warmup"] = spec.pop("epochs")
    allowed = _SCHED_KEYS | _SCHED_EXTRA[name]
    unknown = set(spec) - allowed
    if unknown:
        raise OptimizerError(f"schedule {name}: unknown argument `{sorted(unknown)[0]}` "
                             f"(known: {', '.join(sorted(allowed))})")
    try:
        return SCHEDULES[name](lr, steps_per_epoch, epochs, **spec)
    except TypeError as e:
        raise OptimizerError(f"schedule {name}: {e}") from None


# ---------------------------------------------------------------------------------------------- clipping
def global_norm(grads: dict[str, np.ndarray]) -> float:
    total = 0.0
    for g in grads.values():
        f = g.reshape(-1)
        total += float(np.dot(f, f))
    return math.sqrt(total)


def clip_grad_norm(grads: dict[str, np.ndarray], max_norm: float) -> float:
    """Scale all gradients in place so their global L2 norm is at most max_norm; returns the norm before."""
    norm = global_norm(grads)
    if max_norm > 0 and norm > max_norm:
        scale = max_norm / (norm + 1e-6)
        for g in grads.values():
            g *= scale
    return norm
