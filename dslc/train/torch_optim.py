"""dslc's optimisers (dslc/train/optim.py) on torch tensors, with the same arithmetic and the same state.

Not torch.optim: its Adam keeps unscaled moments and computes the step in another order, and its SGD applies
weight decay and Nesterov with a different rounding, so losses would drift from the numpy engine's in the last
bits and checkpoints would need a conversion that is exact only up to rounding. Here the state IS dslc's
(SGD: momentum buffers; Adam/AdamW: the scaled moments m / (1 - beta1), v / (1 - beta2), and the step count t),
so a checkpoint moves between engines unchanged, and each update repeats the numba kernel's float32 operations
(dslc/kernels/jit.py sgd_update / adam_update) in the same order. The scalars of a step come from a dslc
optimiser object itself (`ref`): its validation of the train section's settings and its step constants are
reused, not rewritten.
"""
from __future__ import annotations

import numpy as np

F32 = np.float32


class TorchOptimizer:
    def __init__(self, spec, params: dict):
        """params: dslc weight name -> torch Parameter (float32)."""
        import torch
        from dslc.train.optim import make_optimizer
        self.torch = torch
        # a dslc optimiser over 1-element stand-ins: the settings' checks, the hyperparameters and the step
        # constants, exactly as the numpy engine has them
        self.ref = make_optimizer(spec, {k: np.zeros(1, F32) for k in params}, )
        if getattr(self.ref, "full_batch", False):
            raise ValueError(f"optimizer {self.ref.name} (full-batch, second-order) runs on the numpy engine only")
        self.name, self.lr = self.ref.name, self.ref.lr
        self.params = params
        self.state = {k: {s: torch.zeros_like(p, memory_format=torch.contiguous_format) for s in self.ref.state_keys}
                      for k, p in params.items()}

    @property
    def t(self) -> int:
        return self.ref.t

    def step(self, lr: float) -> None:
        """Update every parameter from its .grad (a parameter without one gets a zero gradient, as the numpy
        executor gives every trainable weight a gradient each step)."""
        torch = self.torch
        ref = self.ref
        ref.t += 1
        ref._prepare_step(lr)
        with torch.no_grad():
            if ref.name == "sgd":
                lr32, mom, keep, wd = (float(F32(v)) for v in (lr, ref.momentum, 1.0 - ref.dampening,
                                                               ref.weight_decay))
                for k, p in self.params.items():
                    self._sgd(p, self._grad(p), self.state[k].get("momentum"), lr32, mom, keep, wd, ref.t == 1,
                              ref.nesterov)
            else:
                b1, b2, scale, eps_s, l2, decay = (float(v) for v in ref.kernel_scalars(lr))
                for k, p in self.params.items():
                    st = self.state[k]
                    self._adam(p, self._grad(p), st["m"], st["v"], b1, b2, scale, eps_s, l2, decay)

    def _grad(self, p):
        return p.grad if p.grad is not None else self.torch.zeros_like(p)

    @staticmethod
    def _sgd(p, g, buf, lr, momentum, keep, wd, first, nesterov):
        d = g
        if wd != 0:
            d = p * wd + d
        if buf is not None:
            if first:
                b = d
            elif keep != 1:
                b = buf * momentum + d * keep
            else:
                b = buf * momentum + d
            buf.copy_(b)
            d = b * momentum + d if nesterov else b
        p.sub_(d * lr)

    def _adam(self, p, g, m, v, b1, b2, scale, eps_s, l2, decay):
        if l2 != 0:
            g = p * l2 + g
        m.mul_(b1).add_(g)
        v.mul_(b2).add_(g * g)
        u = m / (self.torch.sqrt(v) + eps_s) * scale
        if decay != 1:
            p.mul_(decay)
        p.sub_(u)

    # --------------------------------------------------------------------------- dslc's checkpoint format
    def state_dict(self):
        arrays = {f"{s}/{k}": st[s].detach().cpu().numpy() for k, st in self.state.items() for s in st}
        meta = {"name": self.name, "t": self.ref.t}
        if self.name in ("adam", "adamw"):
            meta["moments"] = "m / (1 - beta1), v / (1 - beta2)"
        return arrays, meta

    def load_state_dict(self, arrays, meta) -> None:
        from dslc.train.optim import OptimizerError
        if meta.get("name") != self.name:
            raise OptimizerError(f"the checkpoint's optimiser is {meta.get('name')}, this run uses {self.name}")
        for k, st in self.state.items():
            for s, tensor in st.items():
                key = f"{s}/{k}"
                if key not in arrays:
                    raise OptimizerError(f"the checkpoint has no optimiser state `{key}`")
                tensor.copy_(self.torch.from_numpy(np.ascontiguousarray(arrays[key], F32)).reshape(tensor.shape))
        self.ref.t = int(meta["t"])
