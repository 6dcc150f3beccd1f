"""Shared helpers of the training tests: concrete sizes, random feeds and weights, onnxruntime sessions."""
from __future__ import annotations

import os

import numpy as np

from dslc.types import NUMPY_DTYPE


def concrete(shape, sizes: dict[str, int]):
    from dslc.lowering.dims import eval_dim
    return tuple(eval_dim(d, sizes) for d in shape)


def case_sizes(types) -> dict[str, int]:
    syms = sorted({d for t in types for d in t.shape if isinstance(d, str)})
    return {s: (3 if s == "N" else 5 + i) for i, s in enumerate(syms)}


def random_array(t, shape, rng, high: int = 3):
    dt = NUMPY_DTYPE[t.dtype]
    if dt.startswith("float"):
        return rng.standard_normal(shape).astype(dt)
    if dt == "bool":
        return rng.random(shape) > 0.5
    return rng.integers(0, high, shape).astype(dt)


def random_weights(g, seed: int = 1) -> dict[str, np.ndarray]:
    """Non-trivial weights (biases and running statistics too); variances positive."""
    from dslc import ir
    rng = np.random.default_rng(seed)
    out = {}
    for name, _n, spec in ir.weight_names(g):
        if "var" in name.rsplit(".", 1)[-1]:
            out[name] = rng.uniform(0.5, 1.5, spec.shape).astype(np.float32)
        else:
            out[name] = (0.5 * rng.standard_normal(spec.shape)).astype(np.float32)
    return out


def ort_session(model):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def mnist_dir():
    """The MNIST directory the tests use, or None."""
    from dslc.train.data import default_mnist_dir
    d = default_mnist_dir()
    ok = d.is_dir() and any((d / f).is_file() for f in ("t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte"))
    return d if ok else None


def full_run() -> bool:
    return os.environ.get("CI") == "true" or os.environ.get("DSLC_SLOW_TESTS") == "1"
