"""The execution context every op's numpy `forward` / `vjp` receives (see dslc/ops/registry.py)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class ExecContext:
    """training: batchnorm uses (and updates) batch statistics, dropout is active; rng: the only source of
    randomness. needs_input_grad: set by the executor around each vjp call -- per input slot, whether that
    input's gradient is wanted (None = all); a vjp may skip (return None for) the unwanted ones, asking
    dslc.kernels.nn.wants(ctx, i). lanes: None, or a dslc.train.lanes.Lane (set by the executor during a
    training step): large linear layers then run their GEMMs in two lane-owned halves on two threads
    (dslc/kernels/split_dense.py)."""
    training: bool = False
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    needs_input_grad: tuple | None = None
    lanes: Any = None


__all__ = ["ExecContext"]
