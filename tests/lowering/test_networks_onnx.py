"""Every networks/*.net compiles to a valid model (checker, strict shape inference agreeing with dslc,
onnxruntime session) and runs in onnxruntime at batch 1 and 3 with the shapes dslc says."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from dslc import ir
from dslc.lowering.compile import compile_graph, load_program
from dslc.lowering.dims import batch_symbol, eval_dim
from dslc.types import NUMPY_DTYPE

ROOT = Path(__file__).resolve().parents[2]
NETWORKS = sorted((ROOT / "networks").glob("*.net"))


def _inputs(g, sizes, rng):
    feeds = {}
    for n in g.graph["inputs"]:
        t = g.nodes[n]["outputs"][0]
        shape = [eval_dim(d, sizes) for d in t.shape]
        assert all(isinstance(d, int) for d in shape), f"input {n} {t}: no size for {shape}"
        dt = NUMPY_DTYPE[t.dtype]
        feeds[n] = rng.standard_normal(shape).astype(dt) if dt.startswith("float") else \
            rng.integers(0, 2, shape).astype(dt)
    return feeds


def test_there_are_networks():
    assert NETWORKS


@pytest.mark.parametrize("path", NETWORKS, ids=[p.stem for p in NETWORKS])
def test_network_compiles_validates_and_runs(path):
    _prog, g = load_program(path)
    weights = None
    if ir.trainable_params(g) > 20_000_000:  # big nets: skip the slow seeded init (tested on the others)
        weights = {name: np.full(spec.shape, 1e-3, np.float32) for name, _n, spec in ir.weight_names(g)}
    model, info = compile_graph(g, weights=weights)   # validation inside; raises on any failure
    assert model.graph.node
    assert [i.name for i in model.graph.input] == list(g.graph["inputs"])
    assert [o.name for o in model.graph.output] == list(g.graph["outputs"])
    assert not any(n.op_type in ("Identity", "Dropout") for n in model.graph.node)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.add_session_config_entry("session.disable_prepacking", "1")
    sess = ort.InferenceSession(info.data, so, providers=["CPUExecutionProvider"])
    sym = batch_symbol(g)
    rng = np.random.default_rng(0)
    lengths = sorted({d for n in g.graph["inputs"] for d in g.nodes[n]["outputs"][0].shape
                      if isinstance(d, str) and d.isidentifier() and d != sym})
    for batch, length in ((1, 6), (3, 9)):   # two batch sizes and, where symbolic, two sequence lengths
        sizes = {sym: batch} if sym else {}
        sizes.update({s: length for s in lengths})
        feeds = _inputs(g, sizes, rng)
        outs = sess.run(None, feeds)
        for (oname, (n, idx)), y in zip(g.graph["outputs"].items(), outs):
            want = tuple(eval_dim(d, sizes) for d in g.nodes[n]["outputs"][idx].shape)
            assert y.shape == want, f"{oname}: onnxruntime {y.shape}, dslc {want}"
            assert np.isfinite(y).all(), oname
        if sym is None and not lengths:
            break  # a fixed-shape network has one input shape


def test_fixed_batch_compile():
    path = ROOT / "networks" / "lenet5.net"
    _prog, g = load_program(path)
    model, _ = compile_graph(g, batch=3, fold_bn=True, opset=18)
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][0] == 3


# ONNX node counts torch 2.13's default exporter (torch.onnx.export, dynamo) writes for the same architectures,
# measured by benchmarks/bench_compile.py (BENCHMARKS.md); the target is to write no more.
TORCH_DYNAMO_NODES = {"resnet18.net": 49, "resnet50.net": 122}


@pytest.mark.parametrize("name", sorted(TORCH_DYNAMO_NODES))
def test_default_compile_is_no_larger_than_torch_onnx_export(name):
    _prog, g = load_program(ROOT / "networks" / name)
    model, _ = compile_graph(g, validate=False)
    ops = [n.op_type for n in model.graph.node]
    assert len(ops) <= TORCH_DYNAMO_NODES[name], (len(ops), sorted(set(ops)))
    assert not {"BatchNormalization", "Identity", "Dropout"} & set(ops)
    plain, _ = compile_graph(g, validate=False, fold_bn=False)
    assert [n.op_type for n in plain.graph.node].count("BatchNormalization") == ops.count("Conv")
