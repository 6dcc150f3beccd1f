"""The numpy executor's forward (inference mode) and the exported ONNX model compute the same function:
for every model op's every case, onnxruntime's outputs equal the registry entry's `forward` on the same inputs
and weights (random weights, incl. non-trivial batchnorm running statistics)."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from dslc.kernels.context import ExecContext
from dslc.lowering.compile import compile_graph
from dslc.lowering.dims import eval_dim
from dslc.ops.testing import all_cases, one_node_graph
from dslc.types import NUMPY_DTYPE

CASES = [(op, c) for op, c in all_cases() if op.category != "loss"]


def _ids(cases):
    seen: dict = {}
    for op, _ in cases:
        seen[op.name] = seen.get(op.name, -1) + 1
        yield f"{op.name}-{seen[op.name]}"


@pytest.mark.parametrize("op,case", CASES, ids=list(_ids(CASES)))
def test_numpy_forward_matches_onnxruntime(op, case):
    g = one_node_graph(op, case)
    rng = np.random.default_rng(0)
    weights = {}
    for key, spec in g.nodes["node"]["weights"].items():
        lo = 0.5 if "var" in key else -1.0
        weights[f"node.{key}"] = rng.uniform(lo, 1.5, spec.shape).astype(np.float32)
    model, _ = compile_graph(g, weights, validate=False)
    syms = sorted({d for t in case.inputs for d in t.shape if isinstance(d, str)})
    sizes = {s: (3 if s == "N" else 5 + i) for i, s in enumerate(syms)}
    feeds = {}
    for i, t in enumerate(case.inputs):
        shape = [eval_dim(d, sizes) for d in t.shape]
        if t.dtype in ("i64", "i32"):  # token ids: in range for every case's table (embedding vocab >= 3)
            feeds[f"x{i}"] = rng.integers(0, 3, size=shape).astype(NUMPY_DTYPE[t.dtype])
        else:
            feeds[f"x{i}"] = rng.standard_normal(shape).astype(NUMPY_DTYPE[t.dtype])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, feeds)
    ws = {k.split(".", 1)[1]: v.copy() for k, v in weights.items()}
    ys, _ = op.forward(ExecContext(training=False), [feeds[f"x{i}"] for i in range(len(case.inputs))], ws,
                       g.nodes["node"]["attrs"])
    assert len(ys) == len(got)
    for y, r in zip(ys, got):
        y = np.asarray(y)
        assert y.dtype == r.dtype and y.shape == r.shape, (y.dtype, y.shape, r.dtype, r.shape)
        np.testing.assert_allclose(y, r, rtol=1e-4, atol=2e-5)
