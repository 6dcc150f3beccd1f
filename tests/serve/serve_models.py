"""Small ONNX models for the serving tests and benchmark, built with onnx.helper.

Stand-ins until the dslc compiler lands: a LeNet-5-like conv net with a symbolic batch dim "N", and a
two-input / two-output model with an INT64 tensor.  Opset 21, ir_version 10 (onnxruntime 1.31 reads IR <= 13;
onnx 1.23 writes 14 unless told otherwise).
"""
from __future__ import annotations

import numpy as np

OPSET = 21
IR_VERSION = 10


def _init(name, arr):
    from onnx import numpy_helper
    return numpy_helper.from_array(np.ascontiguousarray(arr), name)


def lenet(seed: int = 0):
    """LeNet-5: x[N,1,28,28] -> logits[N,10]."""
    from onnx import TensorProto, helper
    rng = np.random.default_rng(seed)

    def w(*shape):
        fan_in = int(np.prod(shape[1:]))
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    def b(n):
        return (rng.standard_normal(n) * 0.05).astype(np.float32)

    inits = [
        _init("c1.w", w(6, 1, 5, 5)), _init("c1.b", b(6)),
        _init("c2.w", w(16, 6, 5, 5)), _init("c2.b", b(16)),
        _init("f1.w", w(120, 400)), _init("f1.b", b(120)),
        _init("f2.w", w(84, 120)), _init("f2.b", b(84)),
        _init("f3.w", w(10, 84)), _init("f3.b", b(10)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "c1.w", "c1.b"], ["c1"], kernel_shape=[5, 5], pads=[2, 2, 2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "c2.w", "c2.b"], ["c2"], kernel_shape=[5, 5]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p2"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "f1.w", "f1.b"], ["g1"], transB=1),
        helper.make_node("Relu", ["g1"], ["h1"]),
        helper.make_node("Gemm", ["h1", "f2.w", "f2.b"], ["g2"], transB=1),
        helper.make_node("Relu", ["g2"], ["h2"]),
        helper.make_node("Gemm", ["h2", "f3.w", "f3.b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "lenet",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="dslc-tests")
    model.ir_version = IR_VERSION
    return model


def two_io():
    """Two inputs, two outputs, one INT64 tensor each way.

    x[N,4] FP32, idx[N,3] INT64  ->  y[N,4] FP32 = 2x + 1,  total[N,1] INT64 = sum(idx, axis=1) * 3
    """
    from onnx import TensorProto, helper
    inits = [
        _init("two", np.array(2.0, np.float32)), _init("one", np.array(1.0, np.float32)),
        _init("axes", np.array([1], np.int64)), _init("three", np.array(3, np.int64)),
    ]
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["x2"]),
        helper.make_node("Add", ["x2", "one"], ["y"]),
        helper.make_node("ReduceSum", ["idx", "axes"], ["s"], keepdims=1),
        helper.make_node("Mul", ["s", "three"], ["total"]),
    ]
    graph = helper.make_graph(
        nodes, "two_io",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("idx", TensorProto.INT64, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("total", TensorProto.INT64, ["N", 1])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="dslc-tests")
    model.ir_version = IR_VERSION
    return model


def varlen():
    """A second variable dim: x[N,T] FP32 -> y[N,T] = 3x, s[N,1] = sum over T.  Requests with different T can
    only be batched with requests of the same T."""
    from onnx import TensorProto, helper
    inits = [_init("three", np.array(3.0, np.float32)), _init("axes", np.array([1], np.int64))]
    nodes = [helper.make_node("Mul", ["x", "three"], ["y"]),
             helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=1)]
    graph = helper.make_graph(
        nodes, "varlen",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "T"]),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, ["N", 1])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="dslc-tests")
    model.ir_version = IR_VERSION
    return model


def fixed_batch():
    """A model without a batch dim (fixed shape [2,3]): served with max_batch_size 0."""
    from onnx import TensorProto, helper
    nodes = [helper.make_node("Neg", ["a"], ["b"])]
    graph = helper.make_graph(
        nodes, "fixed",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="dslc-tests")
    model.ir_version = IR_VERSION
    return model


def save(model, path) -> str:
    import onnx
    onnx.save(model, str(path))
    return str(path)
