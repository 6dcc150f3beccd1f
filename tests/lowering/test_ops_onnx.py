"""Registry-driven ONNX tests: every (model) op's every case lowers to a valid model (checker, strict shape
inference agreeing with dslc, onnxruntime session -- all inside compile_graph), onnxruntime's output shapes
equal dslc's shape rule (symbolic dims made concrete) and its values equal onnx.reference's."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from dslc.lowering.compile import compile_graph
from dslc.lowering.dims import eval_dim
from dslc.ops.testing import all_cases, one_node_graph
from dslc.types import NUMPY_DTYPE

CASES = [(op, c) for op, c in all_cases() if op.category != "loss"]  # losses are training-only


def _id(pc):
    op, c = pc
    return f"{op.name}-{c.note or ','.join(f'{k}={v}' for k, v in c.attrs.items()) or 'default'}".replace(" ", "_")


def concrete_sizes(case) -> dict[str, int]:
    syms = sorted({d for t in case.inputs for d in t.shape if isinstance(d, str)})
    return {s: (3 if s == "N" else 5 + i) for i, s in enumerate(syms)}


def random_inputs(case, sizes, seed=0):
    rng = np.random.default_rng(seed)
    feeds = {}
    for i, t in enumerate(case.inputs):
        shape = [eval_dim(d, sizes) for d in t.shape]
        dt = NUMPY_DTYPE[t.dtype]
        if dt.startswith("float"):
            feeds[f"x{i}"] = rng.standard_normal(shape).astype(dt)
        elif dt == "bool":
            feeds[f"x{i}"] = rng.random(shape) > 0.5
        else:
            feeds[f"x{i}"] = rng.integers(0, 3, shape).astype(dt)
    return feeds


def reference_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnx.reference mis-handles grouped ConvTranspose: split those into one ConvTranspose per group."""
    if not any(n.op_type == "ConvTranspose" and any(a.name == "group" and a.i > 1 for a in n.attribute)
               for n in model.graph.node):
        return model
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    nodes = []
    for n in m.graph.node:
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        if n.op_type != "ConvTranspose" or group == 1:
            nodes.append(n)
            continue
        w = inits[n.input[1]]
        b = inits[n.input[2]] if len(n.input) > 2 and n.input[2] else None
        cin_g = w.shape[0] // group
        parts = [f"{n.name}/x{g}" for g in range(group)]
        nodes.append(helper.make_node("Split", [n.input[0]], parts, axis=1, num_outputs=group))
        outs = []
        for g in range(group):
            wn = f"{n.name}/w{g}"
            m.graph.initializer.append(numpy_helper.from_array(w[g * cin_g:(g + 1) * cin_g], wn))
            ins = [parts[g], wn]
            if b is not None:
                bn = f"{n.name}/b{g}"
                co_g = b.shape[0] // group
                m.graph.initializer.append(numpy_helper.from_array(b[g * co_g:(g + 1) * co_g], bn))
                ins.append(bn)
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute if a.name != "group"}
            outs.append(f"{n.name}/y{g}")
            nodes.append(helper.make_node("ConvTranspose", ins, [outs[-1]], **attrs))
        nodes.append(helper.make_node("Concat", outs, list(n.output), axis=1))
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    return m


def _reference_lacks(model: onnx.ModelProto) -> bool:
    """Whether the model uses a form onnx.reference does not implement (an RNN with a non-tanh activation)."""
    return any(n.op_type == "RNN" and any(a.name == "activations" and any(v not in (b"Tanh", b"tanh")
                                                                           for v in a.strings) for a in n.attribute)
               for n in model.graph.node)


@pytest.mark.parametrize("op,case", CASES, ids=[_id(pc) for pc in CASES])
def test_op_lowers_and_matches_reference(op, case):
    g = one_node_graph(op, case)
    model, _info = compile_graph(g, seed=0)          # checker + strict shape inference + session inside
    assert model.ir_version == 10
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)
    sizes = concrete_sizes(case)
    feeds = random_inputs(case, sizes)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, feeds)
    if _reference_lacks(model):
        pytest.skip("onnx.reference's RNN knows only the Tanh and Affine activations; onnxruntime against the "
                    "numpy forward is checked for this case in tests/train/test_executor.py")
    ref = ReferenceEvaluator(reference_model(model)).run(None, feeds)
    outs = g.nodes["node"]["outputs"]
    assert [o.name for o in sess.get_outputs()] == [f"y{j}" for j in range(len(outs))]
    for j, (y, r) in enumerate(zip(got, ref)):
        expected = tuple(eval_dim(d, sizes) for d in outs[j].shape)
        assert y.shape == expected, f"output {j}: onnxruntime {y.shape}, dslc {expected}"
        assert y.dtype == np.dtype(NUMPY_DTYPE[outs[j].dtype])
        np.testing.assert_allclose(y, r, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("op,case", CASES, ids=[_id(pc) for pc in CASES])
def test_opset17_lowers_and_agrees(op, case):
    """Opset 17 (no native Gelu, ReduceMean axes as an attribute) validates and agrees with opset 21."""
    g = one_node_graph(op, case)
    m17, _ = compile_graph(g, opset=17)
    m21, _ = compile_graph(g, opset=21)
    feeds = random_inputs(case, concrete_sizes(case))
    a = ort.InferenceSession(m17.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    b = ort.InferenceSession(m21.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_every_model_op_has_a_lowering():
    from dslc.ops.registry import all_ops
    missing = [n for n, op in all_ops().items() if op.category != "loss" and op.lower is None]
    assert not missing


@pytest.mark.parametrize("op,case", CASES, ids=[_id(pc) for pc in CASES])
def test_onnx_agrees_with_the_numpy_executor(op, case):
    """The lowering means what the op means: onnxruntime's output equals the registry entry's own numpy
    forward (inference mode) on the same inputs and weights."""
    from dslc.kernels.context import ExecContext
    from dslc.weights import init_weights
    if op.forward is None:
        pytest.skip(f"{op.name} has no numpy forward yet")
    g = one_node_graph(op, case)
    rng = np.random.default_rng(3)
    weights = {k: (v + rng.standard_normal(v.shape).astype(np.float32) * 0.5).astype(np.float32)
               for k, v in init_weights(g, 0).items()}
    for k in weights:
        if k.endswith("running_var"):
            weights[k] = np.abs(weights[k]) + 0.5
    model, _info = compile_graph(g, weights=weights)
    feeds = random_inputs(case, concrete_sizes(case), seed=4)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    ws = {k.split(".", 1)[1]: v for k, v in weights.items()}
    attrs = g.nodes["node"]["attrs"]
    want, _saved = op.forward(ExecContext(training=False), [feeds[f"x{i}"] for i in range(len(case.inputs))],
                              ws, attrs)
    for y, w in zip(got, want):
        np.testing.assert_allclose(y, np.asarray(w), rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("hw,size,ops", [
    ((6, 6), 6, []),                                   # the identity: no node
    ((5, 7), 1, ["GlobalAveragePool"]),
    ((8, 6), [4, 3], ["AveragePool"]),                 # sizes divide: kernel = stride = 2
    ((7, 5), [3, 2], ["MatMul", "MatMul"]),            # exact: one averaging matrix per axis
    ((6, 7), [6, 3], ["MatMul"]),                      # H keeps its size: only W's matrix
])
def test_adaptive_avgpool_lowers_lean(hw, size, ops):
    from dslc.ops.registry import Case, get
    from dslc.types import TensorType
    g = one_node_graph(get("adaptive_avgpool"), Case((TensorType((1, 2) + hw),), {"size": size}))
    model, _ = compile_graph(g, seed=0)
    assert [n.op_type for n in model.graph.node if n.op_type != "Identity"] == ops
