"""Full-batch second-order optimisers: L-BFGS (strong-Wolfe line search) and Levenberg-Marquardt.

Both minimise a deterministic function of the weights over the whole training split, so they see the network
through an `Objective`: the flat vector of trainable weights (float64 here; written back into the executor's
float32 arrays for every evaluation), the loss and its gradient, and for Levenberg-Marquardt the residuals
pred - target and their per-sample Jacobian. One `step` is one epoch of the training loop:

- `lbfgs`: up to `max_iter` L-BFGS iterations (default 20, as one call of torch.optim.LBFGS.step), the same
  algorithm as PyTorch's (two-loop recursion over `history` curvature pairs, initial step min(1, 1/|g|_1) * lr on
  the first iteration, then lr; strong-Wolfe line search with cubic interpolation, c1 = 1e-4, c2 = 0.9; stops on
  tolerance_grad / tolerance_change).
- `levenberg_marquardt`: MATLAB trainlm's rule (mu = 1e-3, x0.1 after a step that lowered the error, x10 and
  retry after one that did not, stop when mu exceeds mu_max): solve (J^T J + mu I) dw = -J^T r. Least-squares
  losses only (mse).

The network is evaluated in inference mode throughout (the minimised function must not change between calls),
so graphs with dropout or batchnorm are refused with a message rather than optimised wrongly.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from dslc.train.optim import OptimizerError

F32 = np.float32
_STOCHASTIC_OPS = {"dropout", "batchnorm", "drop_path"}


class Objective:
    """The network's full-batch training loss as a function of its flat trainable weights."""

    def __init__(self, exe, inputs, targets):
        self.exe, self.inputs, self.targets = exe, inputs, targets
        self.names = list(exe.trainable)
        self.arrays = [exe.weights[k] for k in self.names]
        self.evaluations = 0

    def get(self) -> np.ndarray:
        return np.concatenate([a.reshape(-1).astype(np.float64) for a in self.arrays])

    def set(self, w: np.ndarray) -> None:
        at = 0
        for a in self.arrays:
            np.copyto(a, w[at:at + a.size].reshape(a.shape).astype(F32))
            at += a.size

    def loss_grad(self, w: np.ndarray) -> tuple[float, np.ndarray]:
        self.set(w)
        self.evaluations += 1
        loss, _aux, grads = self.exe.loss_and_grads(self.inputs, self.targets, training=False)
        return loss, np.concatenate([grads[k].reshape(-1).astype(np.float64) for k in self.names])

    def residuals(self, w: np.ndarray) -> np.ndarray:
        self.set(w)
        self.evaluations += 1
        loss, (pred, target) = self.exe.evaluate(self.inputs, self.targets)
        return (np.asarray(pred, np.float64) - np.asarray(target, np.float64)).reshape(-1)

    def residuals_jacobian(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.set(w)
        self.evaluations += 1
        pred, target, jac = self.exe.prediction_jacobian(self.inputs, self.targets)
        return pred.astype(np.float64) - target.astype(np.float64), jac.astype(np.float64)

    def aux(self):
        """The loss node's operands at the current weights (for the loop's metrics)."""
        return self.exe.evaluate(self.inputs, self.targets)


class FullBatchOptimizer:
    """Base of the second-order optimisers: the loop hands them an Objective instead of gradients."""
    full_batch = True
    name = "full_batch"

    def __init__(self, params: dict[str, np.ndarray], lr: float = 1.0):
        if not lr > 0:
            raise OptimizerError(f"the learning rate must be positive, got {lr}")
        self.params = params
        self.lr = float(lr)
        self.t = 0
        self.converged = False

    def check_graph(self, g) -> None:
        bad = sorted({g.nodes[n]["op"] for n in g if g.nodes[n]["op"] in _STOCHASTIC_OPS})
        if bad:
            raise OptimizerError(f"{self.name} minimises a deterministic full-batch loss; this network uses "
                                 f"{', '.join(bad)}: train it with sgd, adam or adamw")

    def step_full(self, obj: Objective, lr: float | None = None) -> float:
        """One epoch's work; returns the loss at the new weights (already written into the executor)."""
        raise NotImplementedError

    # checkpoints: plain arrays and numbers, as optim.Optimizer
    def state_dict(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return {}, {"name": self.name, "t": self.t, "converged": self.converged}

    def load_state_dict(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        if meta.get("name") != self.name:
            raise OptimizerError(f"the checkpoint's optimiser is {meta.get('name')}, this run uses {self.name}")
        self.t = int(meta["t"])
        self.converged = bool(meta.get("converged", False))


class LevenbergMarquardt(FullBatchOptimizer):
    """Levenberg-Marquardt for least squares, with trainlm's damping schedule (see the module docstring)."""
    name = "levenberg_marquardt"

    def __init__(self, params, lr: float = 1.0, mu: float = 1e-3, mu_dec: float = 0.1, mu_inc: float = 10.0,
                 mu_max: float = 1e10, min_grad: float = 1e-10):
        super().__init__(params, lr)
        if not mu > 0 or not 0 < mu_dec < 1 or not mu_inc > 1 or not mu_max > mu:
            raise OptimizerError("levenberg_marquardt needs mu > 0, 0 < mu_dec < 1, mu_inc > 1 and mu_max > mu")
        self.mu, self.mu_dec, self.mu_inc, self.mu_max, self.min_grad = (
            float(mu), float(mu_dec), float(mu_inc), float(mu_max), float(min_grad))

    def check_graph(self, g) -> None:
        super().check_graph(g)
        loss = g.graph.get("loss")
        if loss is None or g.nodes[loss[0]]["op"] != "mse":
            op = g.nodes[loss[0]]["op"] if loss else "none"
            raise OptimizerError(f"levenberg_marquardt fits least-squares losses (mse); this loss is {op}: use "
                                 f"lbfgs, sgd or adam")

    def step_full(self, obj, lr=None):
        w = obj.get()
        if self.converged:   # later epochs only report the loss
            r = obj.residuals(w)
            return float(r @ r) / len(r)
        r, jac = obj.residuals_jacobian(w)
        err = float(r @ r)
        m = len(r)
        self.t += 1
        grad = jac.T @ r
        if np.max(np.abs(grad)) * 2 / m < self.min_grad:
            self.converged = True
            return err / m
        hess = jac.T @ jac
        eye = np.eye(len(w))
        while True:
            try:
                dw = np.linalg.solve(hess + self.mu * eye, -grad)
            except np.linalg.LinAlgError:
                dw = None
            if dw is not None and np.all(np.isfinite(dw)):
                w_new = w + (self.lr if lr is None else lr) * dw
                r_new = obj.residuals(w_new)
                err_new = float(r_new @ r_new)
                if err_new < err:
                    self.mu = max(self.mu * self.mu_dec, 1e-20)
                    return err_new / m
            self.mu *= self.mu_inc
            if self.mu > self.mu_max:   # no step lowers the error: a minimum (to float32 precision)
                self.converged = True
                obj.set(w)
                return err / m

    def state_dict(self):
        arrays, meta = super().state_dict()
        return arrays, dict(meta, mu=self.mu)

    def load_state_dict(self, arrays, meta):
        super().load_state_dict(arrays, meta)
        self.mu = float(meta["mu"])


class LBFGS(FullBatchOptimizer):
    """L-BFGS with a strong-Wolfe line search: torch.optim.LBFGS's algorithm (see the module docstring)."""
    name = "lbfgs"

    def __init__(self, params, lr: float = 1.0, max_iter: int = 20, max_eval: int | None = None,
                 tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9, history: int = 100,
                 line_search: str = "strong_wolfe"):
        super().__init__(params, lr)
        if max_iter < 1 or history < 1:
            raise OptimizerError("lbfgs needs max_iter >= 1 and history >= 1")
        if line_search not in ("strong_wolfe", "none"):
            raise OptimizerError(f'lbfgs: line_search must be "strong_wolfe" or "none", got "{line_search}"')
        self.max_iter, self.history, self.line_search = int(max_iter), int(history), line_search
        self.max_eval = int(max_eval) if max_eval is not None else self.max_iter * 5 // 4
        self.tolerance_grad, self.tolerance_change = float(tolerance_grad), float(tolerance_change)
        self.old_dirs: list[np.ndarray] = []
        self.old_stps: list[np.ndarray] = []
        self.h_diag = 1.0
        self.n_iter = 0

    def step_full(self, obj, lr=None):
        lr = self.lr if lr is None else float(lr)
        x = obj.get()
        loss, g = obj.loss_grad(x)
        if self.converged or np.max(np.abs(g)) <= self.tolerance_grad:
            self.converged = True
            return loss
        self.t += 1
        evals, prev_loss = 1, loss
        d = t = None
        for it in range(self.max_iter):
            self.n_iter += 1
            d = self._direction(g) if self.n_iter > 1 else -g
            t = min(1.0, 1.0 / np.abs(g).sum()) * lr if self.n_iter == 1 else lr
            gtd = float(g @ d)
            if gtd > -self.tolerance_change:
                break
            if self.line_search == "strong_wolfe":
                loss_new, g_new, t, ls_evals = strong_wolfe(obj.loss_grad, x, t, d, loss, g, gtd)
                x_new = x + t * d
            else:
                x_new = x + t * d
                loss_new, g_new = obj.loss_grad(x_new)
                ls_evals = 1
            evals += ls_evals
            self._remember(g_new - g, t * d)
            x, prev_loss, loss, g = x_new, loss, loss_new, g_new
            if np.max(np.abs(g)) <= self.tolerance_grad:
                self.converged = True
                break
            if np.max(np.abs(t * d)) <= self.tolerance_change or abs(loss - prev_loss) < self.tolerance_change:
                break   # no progress this call (torch's break); the next epoch tries again from here
            if evals >= self.max_eval:
                break
        obj.set(x)
        return loss

    def _remember(self, y: np.ndarray, s: np.ndarray) -> None:
        ys = float(y @ s)
        if ys > 1e-10:   # keep only pairs with positive curvature (as torch)
            if len(self.old_dirs) == self.history:
                self.old_dirs.pop(0)
                self.old_stps.pop(0)
            self.old_dirs.append(y)
            self.old_stps.append(s)
            self.h_diag = ys / float(y @ y)

    def _direction(self, g: np.ndarray) -> np.ndarray:
        """The two-loop recursion: -H g with H the L-BFGS inverse-Hessian estimate."""
        q = -g.copy()
        ro = [1.0 / float(y @ s) for y, s in zip(self.old_dirs, self.old_stps)]
        al = [0.0] * len(self.old_dirs)
        for i in range(len(self.old_dirs) - 1, -1, -1):
            al[i] = float(self.old_stps[i] @ q) * ro[i]
            q -= al[i] * self.old_dirs[i]
        r = q * self.h_diag
        for i in range(len(self.old_dirs)):
            be = float(self.old_dirs[i] @ r) * ro[i]
            r += self.old_stps[i] * (al[i] - be)
        return r

    def state_dict(self):
        arrays, meta = super().state_dict()
        for i, (y, s) in enumerate(zip(self.old_dirs, self.old_stps)):
            arrays[f"y/{i}"], arrays[f"s/{i}"] = y, s
        return arrays, dict(meta, pairs=len(self.old_dirs), h_diag=self.h_diag, n_iter=self.n_iter)

    def load_state_dict(self, arrays, meta):
        super().load_state_dict(arrays, meta)
        n = int(meta["pairs"])
        try:
            self.old_dirs = [np.asarray(arrays[f"y/{i}"], np.float64) for i in range(n)]
            self.old_stps = [np.asarray(arrays[f"s/{i}"], np.float64) for i in range(n)]
        except KeyError as e:
            raise OptimizerError(f"the checkpoint has no lbfgs state {e}") from None
        self.h_diag, self.n_iter = float(meta["h_diag"]), int(meta["n_iter"])


# ------------------------------------------------------------------------------ strong-Wolfe line search
def _cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None) -> float:
    """Minimiser of the cubic through (x1, f1, g1) and (x2, f2, g2), clamped to bounds (torch's formula)."""
    lo, hi = bounds if bounds is not None else ((x1, x2) if x1 <= x2 else (x2, x1))
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1 * d1 - g1 * g2
    if d2_square >= 0:
        d2 = math.sqrt(d2_square)
        if x1 <= x2:
            pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
        return min(max(pos, lo), hi)
    return (lo + hi) / 2.0


def strong_wolfe(fg, x, t, d, f, g, gtd, c1=1e-4, c2=0.9, tolerance_change=1e-9, max_ls=25):
    """Line search along d from x for a step t meeting the strong Wolfe conditions (bracket, then zoom), as
    torch.optim.lbfgs._strong_wolfe. fg(x) -> (loss, gradient). Returns (f_new, g_new, t, evaluations)."""
    d_norm = np.max(np.abs(d))
    f_new, g_new = fg(x + t * d)
    evals = 1
    gtd_new = float(g_new @ d)
    t_prev, f_prev, g_prev, gtd_prev = 0.0, f, g, gtd
    done = False
    ls_iter = 0
    while ls_iter < max_ls:
        if f_new > f + c1 * t * gtd or (ls_iter > 1 and f_new >= f_prev):
            bracket, bracket_f, bracket_g, bracket_gtd = [t_prev, t], [f_prev, f_new], [g_prev, g_new], \
                [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f, bracket_g, bracket_gtd = [t_prev, t], [f_prev, f_new], [g_prev, g_new], \
                [gtd_prev, gtd_new]
            break
        min_step, max_step = t + 0.01 * (t - t_prev), t * 10
        tmp = t
        t = _cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(min_step, max_step))
        t_prev, f_prev, g_prev, gtd_prev = tmp, f_new, g_new, gtd_new
        f_new, g_new = fg(x + t * d)
        evals += 1
        gtd_new = float(g_new @ d)
        ls_iter += 1
    else:
        bracket, bracket_f, bracket_g = [0.0, t], [f, f_new], [g, g_new]
        bracket_gtd = [gtd, gtd_new]

    insuf_progress = False
    if not done and len(bracket) == 2:
        low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
        while not done and ls_iter < max_ls:
            if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
                break
            t = _cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0], bracket[1], bracket_f[1],
                                   bracket_gtd[1])
            eps = 0.1 * (max(bracket) - min(bracket))
            if min(max(bracket) - t, t - min(bracket)) < eps:
                if insuf_progress or t >= max(bracket) or t <= min(bracket):
                    t = max(bracket) - eps if abs(t - max(bracket)) < abs(t - min(bracket)) else min(bracket) + eps
                    insuf_progress = False
                else:
                    insuf_progress = True
            else:
                insuf_progress = False
            f_new, g_new = fg(x + t * d)
            evals += 1
            gtd_new = float(g_new @ d)
            ls_iter += 1
            if f_new > f + c1 * t * gtd or f_new >= bracket_f[low_pos]:
                bracket[high_pos], bracket_f[high_pos], bracket_g[high_pos] = t, f_new, g_new
                bracket_gtd[high_pos] = gtd_new
                low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
            else:
                if abs(gtd_new) <= -c2 * gtd:
                    done = True
                elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:
                    bracket[high_pos], bracket_f[high_pos] = bracket[low_pos], bracket_f[low_pos]
                    bracket_g[high_pos], bracket_gtd[high_pos] = bracket_g[low_pos], bracket_gtd[low_pos]
                bracket[low_pos], bracket_f[low_pos], bracket_g[low_pos] = t, f_new, g_new
                bracket_gtd[low_pos] = gtd_new
        t = bracket[low_pos]
        f_new, g_new = bracket_f[low_pos], bracket_g[low_pos]
    return f_new, g_new, t, evals


SECOND_ORDER = {"lbfgs": LBFGS, "levenberg_marquardt": LevenbergMarquardt}
SECOND_ORDER_KEYS = {
    "lbfgs": {"lr", "max_iter", "max_eval", "tolerance_grad", "tolerance_change", "history", "line_search"},
    "levenberg_marquardt": {"lr", "mu", "mu_dec", "mu_inc", "mu_max", "min_grad"},
}
