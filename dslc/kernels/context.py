"""The execution context every op's numpy `forward` / `vjp` receives (see dslc/ops/registry.py)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


class Scratch:
    """Work buffers reused across the calls of one execution context, one per role (e.g. a convolution's column
    matrix), grown to the largest size asked for.

    A training step builds and drops the same large temporaries every step (ResNet-18 at 32x32, batch 32: a
    75 MB column matrix per early convolution, forward and backward). Above glibc's mmap threshold each fresh
    one is new pages that the kernel zero-fills (measured: an im2col into fresh memory 50-65 ms, into a reused
    buffer 31-38 ms). A buffer from here is valid until the next `get` of the same role in the same context:
    a kernel uses it within one call and never returns it or keeps it for the backward pass. Each context
    (and each thread of a batch-parallel step, which has its own context) has its own buffers."""

    def __init__(self):
        self._bufs: dict[tuple[str, np.dtype], np.ndarray] = {}

    def get(self, role: str, shape: tuple, dtype) -> np.ndarray:
        """A C-contiguous array of `shape` (uninitialised) from the role's buffer."""
        n = 1
        for d in shape:
            n *= int(d)
        key = (role, np.dtype(dtype))
        buf = self._bufs.get(key)
        if buf is None or buf.size < n:
            buf = self._bufs[key] = np.empty(n, dtype)
        return buf[:n].reshape(shape)


@dataclass
class ExecContext:
    """training: batchnorm uses (and updates) batch statistics, dropout is active; rng: the only source of
    randomness. needs_input_grad: set by the executor around each vjp call -- per input slot, whether that
    input's gradient is wanted (None = all); a vjp may skip (return None for) the unwanted ones, asking
    dslc.kernels.nn.wants(ctx, i). lanes: None, or a dslc.train.lanes.Lane (set by the executor during a
    training step): large linear layers then run their GEMMs in two lane-owned halves on two threads
    (dslc/kernels/split_dense.py). scratch: this context's reusable work buffers (Scratch). keep_columns: the
    memory/compute switch of convolutions -- False (default) rebuilds a convolution's column matrix in the
    backward pass instead of keeping it from the forward (ResNet-18 at 32x32, batch 32: ~560 MB less peak
    memory for ~one im2col more per layer); True keeps them."""
    training: bool = False
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    needs_input_grad: tuple | None = None
    lanes: Any = None
    scratch: Scratch = field(default_factory=Scratch)
    keep_columns: bool = False


def scratch_of(ctx) -> Scratch | None:
    """ctx's Scratch, or None for a context without one (kernels then allocate)."""
    return getattr(ctx, "scratch", None)


__all__ = ["ExecContext", "Scratch", "scratch_of"]
