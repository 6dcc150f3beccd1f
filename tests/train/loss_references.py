"""Hand-built ONNX models of the training losses (losses are training-only, so dslc never lowers them): an
independent second implementation that the executor's numpy forward is checked against. Each builder returns
the node list computing the scalar "y0" from "x0" (prediction / logits) and "x1" (target)."""
from __future__ import annotations

from onnx import TensorProto, helper


def _const(name, value, dtype=TensorProto.FLOAT, dims=()):
    vals = list(value) if isinstance(value, (list, tuple)) else [value]
    return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, dtype, list(dims), vals))


def _mean_of(per, out="y0"):
    return [helper.make_node("ReduceMean", [per], [out], keepdims=0)]


def _mse(attrs, shapes):
    return [helper.make_node("Sub", ["x0", "x1"], ["d"]), helper.make_node("Mul", ["d", "d"], ["d2"]),
            *_mean_of("d2")]


def _bce(attrs, shapes):  # max(x, 0) - x t + log(1 + exp(-|x|))
    return [_const("zero", 0.0), _const("one", 1.0), helper.make_node("Max", ["x0", "zero"], ["m"]),
            helper.make_node("Mul", ["x0", "x1"], ["xt"]), helper.make_node("Abs", ["x0"], ["ax"]),
            helper.make_node("Neg", ["ax"], ["nax"]), helper.make_node("Exp", ["nax"], ["e"]),
            helper.make_node("Add", ["one", "e"], ["ope"]), helper.make_node("Log", ["ope"], ["l"]),
            helper.make_node("Sub", ["m", "xt"], ["s"]), helper.make_node("Add", ["s", "l"], ["el"]),
            *_mean_of("el")]


def _l1(attrs, shapes):
    return [helper.make_node("Sub", ["x0", "x1"], ["d"]), helper.make_node("Abs", ["d"], ["a"]), *_mean_of("a")]


def _smooth_l1(attrs, shapes):
    """where(|d| < beta, 0.5 d^2 / beta, |d| - 0.5 beta)"""
    beta = float(attrs["beta"])
    return [helper.make_node("Sub", ["x0", "x1"], ["d"]), helper.make_node("Abs", ["d"], ["a"]),
            _const("beta", beta), _const("half_over_beta", 0.5 / beta), _const("half_beta", 0.5 * beta),
            helper.make_node("Less", ["a", "beta"], ["small"]), helper.make_node("Mul", ["d", "d"], ["d2"]),
            helper.make_node("Mul", ["d2", "half_over_beta"], ["quad"]),
            helper.make_node("Sub", ["a", "half_beta"], ["lin"]),
            helper.make_node("Where", ["small", "quad", "lin"], ["per"]), *_mean_of("per")]


def _dice(attrs, shapes):
    """1 - mean_c (2 sum p t + s) / (sum p + sum t + s), p = sigmoid(x), sums over every axis but the channel."""
    rank = len(shapes[0])
    axes = [0] + list(range(2, rank))
    s = float(attrs["smooth"])
    return [_const("axes", axes, TensorProto.INT64, [len(axes)]), _const("s", s), _const("two", 2.0),
            _const("one", 1.0), helper.make_node("Sigmoid", ["x0"], ["p"]),
            helper.make_node("Mul", ["p", "x1"], ["pt"]),
            helper.make_node("ReduceSum", ["pt", "axes"], ["inter"], keepdims=0),
            helper.make_node("ReduceSum", ["p", "axes"], ["sp"], keepdims=0),
            helper.make_node("ReduceSum", ["x1", "axes"], ["st"], keepdims=0),
            helper.make_node("Mul", ["inter", "two"], ["i2"]), helper.make_node("Add", ["i2", "s"], ["num"]),
            helper.make_node("Add", ["sp", "st"], ["den0"]), helper.make_node("Add", ["den0", "s"], ["den"]),
            helper.make_node("Div", ["num", "den"], ["dice"]),
            helper.make_node("ReduceMean", ["dice"], ["md"], keepdims=0),
            helper.make_node("Sub", ["one", "md"], ["y0"])]


def _cross_entropy(attrs, shapes, target_is_index):
    """-sum_c t'_c log_softmax(z)_c averaged over the positions that are not ignore_index, t' = (1 - eps) t +
    eps / C; logits read class-last ([N, T, V]) when class_last."""
    rank = len(shapes[0])
    eps = float(attrs.get("label_smoothing", 0.0))
    nodes = [_const("axes1", [1], TensorProto.INT64, [1])]
    z = "x0"
    if attrs.get("class_last"):
        nodes.append(helper.make_node("Transpose", ["x0"], ["z"], perm=[0, rank - 1, *range(1, rank - 1)]))
        z = "z"
    c = shapes[0][-1] if attrs.get("class_last") else shapes[0][1]
    nodes.append(helper.make_node("LogSoftmax", [z], ["lp"], axis=1))
    if not target_is_index:
        target = "x1"
        if attrs.get("class_last"):
            nodes.append(helper.make_node("Transpose", ["x1"], ["t"], perm=[0, rank - 1, *range(1, rank - 1)]))
            target = "t"
        if eps:
            nodes += [_const("k1", 1.0 - eps), _const("k2", eps / c), helper.make_node("Mul", [target, "k1"], ["ts"]),
                      helper.make_node("Add", ["ts", "k2"], ["tsm"])]
            target = "tsm"
        return nodes + [helper.make_node("Mul", [target, "lp"], ["tl"]),
                        helper.make_node("ReduceSum", ["tl", "axes1"], ["s"], keepdims=0),
                        helper.make_node("ReduceMean", ["s"], ["ms"], keepdims=0),
                        helper.make_node("Neg", ["ms"], ["y0"])]
    # integer targets: mask the ignored positions, one-hot the rest
    nodes += [_const("ii", int(attrs.get("ignore_index", -100)), TensorProto.INT64),
              _const("zero_i", 0, TensorProto.INT64), _const("depth", c, TensorProto.INT64),
              _const("vals", [0.0, 1.0], TensorProto.FLOAT, [2]), _const("one", 1.0),
              helper.make_node("Equal", ["x1", "ii"], ["ign"]), helper.make_node("Not", ["ign"], ["keep"]),
              helper.make_node("Cast", ["keep"], ["keepf"], to=TensorProto.FLOAT),
              helper.make_node("Where", ["keep", "x1", "zero_i"], ["tt"]),
              helper.make_node("OneHot", ["tt", "depth", "vals"], ["oh"], axis=1),
              helper.make_node("Mul", ["oh", "lp"], ["ohlp"]),
              helper.make_node("ReduceSum", ["ohlp", "axes1"], ["picked"], keepdims=0),
              helper.make_node("Neg", ["picked"], ["per0"])]
    per = "per0"
    if eps:
        nodes += [_const("k1", 1.0 - eps), _const("k2", eps / c),
                  helper.make_node("ReduceSum", ["lp", "axes1"], ["slp"], keepdims=0),
                  helper.make_node("Mul", ["per0", "k1"], ["a"]), helper.make_node("Mul", ["slp", "k2"], ["b"]),
                  helper.make_node("Sub", ["a", "b"], ["per1"])]
        per = "per1"
    return nodes + [helper.make_node("Mul", [per, "keepf"], ["kept"]),
                    helper.make_node("ReduceSum", ["kept"], ["total"], keepdims=0),
                    helper.make_node("ReduceSum", ["keepf"], ["count0"], keepdims=0),
                    helper.make_node("Max", ["count0", "one"], ["count"]),
                    helper.make_node("Div", ["total", "count"], ["y0"])]


BUILDERS = {"mse": _mse, "bce": _bce, "l1": _l1, "smooth_l1": _smooth_l1, "dice": _dice}


def loss_model(name: str, attrs: dict, shapes: list[list[int]], target_is_index: bool):
    """The ONNX model (opset 18, IR 10) of loss `name` for concrete input shapes."""
    if name == "cross_entropy":
        nodes = _cross_entropy(attrs, shapes, target_is_index)
    elif name in BUILDERS:
        nodes = BUILDERS[name](attrs, shapes)
    else:
        raise AssertionError(f"no ONNX reference for loss {name}: add one to tests/train/loss_references.py")
    x0 = helper.make_tensor_value_info("x0", TensorProto.FLOAT, shapes[0])
    x1 = helper.make_tensor_value_info("x1", TensorProto.INT64 if target_is_index else TensorProto.FLOAT, shapes[1])
    y = helper.make_tensor_value_info("y0", TensorProto.FLOAT, [])
    model = helper.make_model(helper.make_graph(nodes, "loss", [x0, x1], [y]),
                              opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    return model
