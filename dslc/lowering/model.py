"""Model assembly: the IR graph's model nodes -> one lean ONNX ModelProto.

Graph inputs and outputs keep their .net names and symbolic dims (as dim_param); initializers are named
`f"{node}.{key}"`; each node's doc_string is its .net source location; the model's metadata records the
source file (name and sha256), the dslc version and the network's train section (json).
"""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import numpy as np
import onnx
from onnx import helper, numpy_helper

from dslc import ir
from dslc.lowering.context import ONNX_DTYPE, LowerCtx
from dslc.lowering.errors import LoweringError
from dslc.lowering.serialize import is_big
from dslc.types import TensorType

DEFAULT_OPSET = 21
IR_VERSION = 10          # onnxruntime 1.31 reads ir_version <= 13; 10 is what opset 21 came with
MIN_OPSET, MAX_OPSET = 17, 23


@dataclass
class LowerInfo:
    """What validation needs to trace ONNX values and nodes back to the .net program."""
    g: nx.DiGraph
    value_types: dict[str, tuple[TensorType, str]] = field(default_factory=dict)  # tensor -> (type, dslc node)
    origin: dict[str, str] = field(default_factory=dict)                          # ONNX node -> dslc node
    weight_bytes: int = 0
    data: bytes | None = None       # the serialized model, once validation made it (reused when saving)
    arrays: dict = field(default_factory=dict)   # initializer name -> numpy array (the values, not copies)
    files: list = field(default_factory=list)    # what compile_graph(output=...) wrote

    def node_info(self, dslc_node: str | None):
        if dslc_node is None or dslc_node not in self.g:
            return None, None
        d = self.g.nodes[dslc_node]
        return d["op"], d.get("span")


def value_info(name: str, t: TensorType) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, ONNX_DTYPE[t.dtype], [d if isinstance(d, int) else str(d)
                                                                      for d in t.shape])


def lower_graph(g: nx.DiGraph, weights: dict[str, np.ndarray], opset: int = DEFAULT_OPSET,
                fold_bn: bool = True, materialize: bool = True,
                fold_in_place: bool = False) -> tuple[onnx.ModelProto, LowerInfo]:
    """Lower the model part of `g` (role == "model") with the given weights (all of them present).
    materialize=False leaves big float initializers dataless (values in info.arrays; see serialize.py).
    fold_in_place: the weights are the caller's to spend (fresh from initialisation or a file), so batchnorm
    folding may scale conv weights in place instead of allocating new arrays."""
    from dslc.lowering import passes
    from dslc.ops.registry import get

    ctx = LowerCtx(g, weights, opset=opset)
    info = LowerInfo(g)
    order = ir.model_nodes(g)
    graph_inputs = [value_info(n, g.nodes[n]["outputs"][0]) for n in g.graph["inputs"]
                    if g.nodes[n]["role"] == "model"]          # declaration order
    for n in order:
        d = g.nodes[n]
        if d["op"] == "input":
            ctx.values[(n, 0)] = n
            continue
        op = get(d["op"])
        ctx.current = n
        if op is None or op.lower is None:
            raise LoweringError(f"op `{d['op']}` has no ONNX lowering", n, d["op"], d.get("span"))
        try:
            op.lower(ctx, n)
        except LoweringError:
            raise
        except Exception as e:  # a bug in a lowering: name the op and the place
            raise LoweringError(f"{type(e).__name__}: {e}", n, d["op"], d.get("span")) from e
        for i in range(len(d["outputs"])):
            if (n, i) not in ctx.values:
                raise LoweringError(f"lowering did not produce output {i}", n, d["op"], d.get("span"))
    ctx.current = None

    # Graph outputs: the tensor must carry the declared name.
    outputs = []
    renames: dict[str, str] = {}
    produced = {o for nd in ctx.nodes for o in nd.output}
    claimed: set[str] = set()
    for oname, (n, idx) in g.graph["outputs"].items():
        t = ctx.values[(n, idx)]
        t = renames.get(t, t)
        if t != oname:
            if t in produced and t not in claimed and t not in g.graph["outputs"]:
                renames[t] = oname
                _rename(ctx.nodes, t, oname)
                for k, v in list(ctx.values.items()):
                    if v == t:
                        ctx.values[k] = oname
            else:
                ctx.current = n
                ctx.emit("Identity", [t], [oname])
                ctx.current = None
        claimed.add(oname)
        outputs.append(value_info(oname, g.nodes[n]["outputs"][idx]))

    keep = set(g.graph["outputs"])
    types = {t: g.nodes[n]["outputs"][i] for (n, i), t in ctx.values.items()}
    nodes, inits = passes.optimize(ctx.nodes, ctx.initializers, keep, fold_bn=fold_bn, types=types,
                                   fold_in_place=fold_in_place)

    # Trace every remaining value to the dslc node (and type) it stands for.
    live = {o for nd in nodes for o in nd.output} | set(g.graph["inputs"]) | keep
    for (n, idx), t in ctx.values.items():
        if t in live and t not in info.value_types:
            info.value_types[t] = (g.nodes[n]["outputs"][idx], n)
    info.origin = dict(ctx.origin)

    info.weight_bytes = sum(int(a.nbytes) for a in inits.values())
    info.arrays = inits
    # Built in place: make_graph / make_model would copy every initializer twice.
    model = onnx.ModelProto()
    model.ir_version = IR_VERSION
    model.producer_name = "dslc"
    model.producer_version = _version()
    model.opset_import.append(helper.make_opsetid("", opset))
    graph = model.graph
    graph.name = _graph_name(g)
    graph.doc_string = g.graph.get("doc") or ""
    graph.node.extend(nodes)
    graph.input.extend(graph_inputs)
    graph.output.extend(outputs)
    for name, a in inits.items():
        a = np.asarray(a)
        _fill_tensor(graph.initializer.add(), name, a, materialize or not is_big(a.dtype, a.size))
    _metadata(model, g)
    return model, info


def _fill_tensor(t: onnx.TensorProto, name: str, a: np.ndarray, with_data: bool = True) -> None:
    """Fill the (already appended) TensorProto in place; without data it stays dataless (serialize.py)."""
    if with_data and (a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and sys.byteorder == "big")):
        t.CopyFrom(numpy_helper.from_array(a, name))
        return
    t.name = name
    t.data_type = helper.np_dtype_to_tensor_dtype(a.dtype)
    t.dims.extend(a.shape)
    if with_data:
        t.raw_data = a.tobytes()


def _rename(nodes, old: str, new: str) -> None:
    for nd in nodes:
        for i, v in enumerate(nd.input):
            if v == old:
                nd.input[i] = new
        for i, v in enumerate(nd.output):
            if v == old:
                nd.output[i] = new


def _graph_name(g) -> str:
    return str(g.graph.get("name") or "network")


def _version() -> str:
    from dslc import __version__
    return __version__


def _metadata(model: onnx.ModelProto, g: nx.DiGraph) -> None:
    meta = {"dslc_version": _version(), "network": _graph_name(g)}
    src = g.graph.get("source")
    if src:
        meta["source_file"] = Path(src).name
        try:
            meta["source_sha256"] = hashlib.sha256(Path(src).read_bytes()).hexdigest()
        except OSError:
            pass
    if g.graph.get("train") is not None:
        meta["train"] = json.dumps(g.graph["train"], sort_keys=True, default=_jsonable)
    helper.set_model_props(model, meta)


def _jsonable(v):
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    if isinstance(v, (set, frozenset)):
        return sorted(v)
    if hasattr(v, "__dict__"):
        return {k: x for k, x in vars(v).items() if not k.startswith("_")}
    return str(v)
