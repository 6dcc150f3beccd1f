"""The lowering context handed to every registry entry's `lower(ctx, node)`.

A lowering reads its operands with `ctx.inputs(node)` (ONNX tensor names in slot order), its weights with
`ctx.weight(node, key)` (the initializer `f"{node}.{key}"`), emits ONNX nodes with `ctx.emit(...)` and
produces each of the dslc node's outputs either by writing to `ctx.out(node, i)` or, when the op is the
identity in inference (dropout), with `ctx.alias(node, tensor)` -- no ONNX node at all. Small constants
(shapes, axes) go through `ctx.const(...)` (deduplicated initializers). Every emitted node carries the dslc
node's source location in its doc_string and a name derived from the dslc node id, so that a validation
failure can be traced back to the op and the .net line.

Example (conv with bias):

    def conv2d_lower(ctx, node):
        a = ctx.attrs(node)
        ins = [ctx.x(node), ctx.weight(node, "weight")] + ([ctx.weight(node, "bias")] if a["bias"] else [])
        ctx.emit("Conv", ins, [ctx.out(node)], kernel_shape=list(a["kernel"]), pads=list(a["pads"]), ...)
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from dslc.types import TensorType

ONNX_DTYPE = {"f32": TensorProto.FLOAT, "f64": TensorProto.DOUBLE, "i64": TensorProto.INT64,
              "i32": TensorProto.INT32, "bool": TensorProto.BOOL}
DSLC_DTYPE = {v: k for k, v in ONNX_DTYPE.items()}


class LowerCtx:
    def __init__(self, g, weights: dict[str, np.ndarray], opset: int = 21, training: bool = False):
        self.g = g
        self.opset = opset
        self.training = training
        self.weights = weights
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, np.ndarray] = {}
        self.values: dict[tuple[str, int], str] = {}      # (dslc node, output index) -> ONNX tensor name
        self.origin: dict[str, str] = {}                   # ONNX node name -> dslc node id
        self.current: str | None = None
        self._taken: set[str] = set()
        self._node_names: set[str] = set()
        self._consts: dict[tuple, str] = {}
        self._out_names: dict[tuple[str, int], str] = {}
        # Reserve graph input and output names: they are the model's interface.
        for name in g.graph["inputs"]:
            self._taken.add(name)
        for oname, ref in g.graph["outputs"].items():
            self._taken.add(oname)
            self._out_names.setdefault(tuple(ref), oname)

    # ---- reading the dslc node ---------------------------------------------------------------------------
    def attrs(self, node: str) -> dict:
        return self.g.nodes[node]["attrs"]

    def in_types(self, node: str) -> list[TensorType]:
        return [self.g.nodes[s]["outputs"][i] for s, i in self.g.nodes[node]["inputs"]]

    def out_types(self, node: str) -> list[TensorType]:
        return self.g.nodes[node]["outputs"]

    def inputs(self, node: str) -> list[str]:
        out = []
        for src, idx in self.g.nodes[node]["inputs"]:
            try:
                out.append(self.values[(src, idx)])
            except KeyError:
                raise AssertionError(f"operand {src}:{idx} of {node} was not lowered") from None
        return out

    def x(self, node: str, slot: int = 0) -> str:
        return self.inputs(node)[slot]

    # ---- names -----------------------------------------------------------------------------------------
    def unique(self, base: str) -> str:
        name, k = base, 1
        while name in self._taken:
            k += 1
            name = f"{base}_{k}"
        self._taken.add(name)
        return name

    def tmp(self, hint: str = "t") -> str:
        """A fresh intermediate tensor name, under the current node's name."""
        return self.unique(f"{self.current}/{hint}" if self.current else hint)

    def out(self, node: str, idx: int = 0) -> str:
        """The tensor name output `idx` of `node` must be written to (the graph output's name if it is one)."""
        key = (node, idx)
        if key in self.values:
            return self.values[key]
        name = self._out_names.get(key)
        if name is None:
            name = self.unique(node if idx == 0 else f"{node}:{idx}")
        self.values[key] = name
        return name

    def alias(self, node: str, tensor: str, idx: int = 0) -> None:
        """Output `idx` of `node` is `tensor` itself (an op that is the identity here): no ONNX node."""
        self.values[(node, idx)] = tensor

    # ---- weights and constants -------------------------------------------------------------------------
    def weight(self, node: str, key: str) -> str:
        name = f"{node}.{key}"
        if name not in self.initializers:
            if name not in self.weights:
                raise KeyError(f"no value for weight `{name}`")
            self.initializers[name] = np.asarray(self.weights[name])
            self._taken.add(name)
        return name

    def weight_array(self, node: str, key: str) -> np.ndarray:
        return np.asarray(self.weights[f"{node}.{key}"])

    def derived(self, node: str, key: str, value) -> str:
        """An initializer computed from the node's weights at compile time (a transposed matrix), named
        `f"{node}.{key}"` (e.g. `fc.weight.T`) so it is never mistaken for the weight itself."""
        name = f"{node}.{key}"
        if name not in self.initializers:
            self.initializers[name] = np.array(value, dtype=np.float32, order="C")
            self._taken.add(name)
        return name

    def const(self, value, dtype=None, hint: str = "const") -> str:
        """An initializer holding `value` (deduplicated across the model by dtype, shape and content)."""
        arr = np.asarray(value, dtype=dtype)
        if arr.dtype == np.float64 and dtype is None:
            arr = arr.astype(np.float32)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key in self._consts:
            return self._consts[key]
        name = self.unique(f"const.{hint}")
        self.initializers[name] = arr
        self._consts[key] = name
        return name

    def ints(self, values, hint: str = "shape") -> str:
        """An int64 1-D initializer (shapes, axes, starts/ends)."""
        return self.const(np.asarray(list(values), dtype=np.int64).reshape(-1), hint=hint)

    def reduce(self, op_type: str, x: str, axes, out=None, keepdims: bool = True) -> str:
        """ReduceMean & co: axes as an input from opset 18 (ReduceSum from 13), as an attribute before."""
        axes = [int(a) for a in axes]
        if self.opset >= (13 if op_type == "ReduceSum" else 18):
            return self.emit(op_type, [x, self.ints(axes, "axes")], out, keepdims=int(keepdims))
        return self.emit(op_type, [x], out, axes=axes, keepdims=int(keepdims))

    # ---- emitting nodes --------------------------------------------------------------------------------
    def emit(self, op_type: str, inputs, outputs=None, n_outputs: int = 1, domain: str = "",
             name: str | None = None, **attrs):
        """Append an ONNX node. `outputs` None -> fresh tensor names. Returns the output name (one output)
        or the list of names. Attributes with value None are left out; "" stands for an omitted input."""
        if outputs is None:
            outputs = [self.tmp(op_type.lower()) for _ in range(n_outputs)]
        elif isinstance(outputs, str):
            outputs = [outputs]
        base = name or self.current or op_type
        if base in self._node_names:
            base = f"{self.current}/{op_type}" if self.current else op_type
        nname, k = base, 1
        while nname in self._node_names:
            k += 1
            nname = f"{base}_{k}"
        self._node_names.add(nname)
        span = self.g.nodes[self.current].get("span") if self.current in self.g else None
        attrs = {k: v for k, v in attrs.items() if v is not None}
        n = helper.make_node(op_type, list(inputs), list(outputs), name=nname, domain=domain or None,
                             doc_string=str(span) if span else "", **attrs)
        self.nodes.append(n)
        if self.current is not None:
            self.origin[nname] = self.current
        return outputs[0] if len(outputs) == 1 else list(outputs)
