"""The IR: one `networkx.DiGraph` per network. Every phase after elaboration reads this graph.

Node id = the node's hierarchical name (`stage2.block1.conv1`), unique per graph. Node attributes:
    op       registry op name ("conv2d"), or "input" for graph inputs / training targets
    attrs    normalised arguments (defaults filled, kernel as a tuple, padding as explicit pads, ...)
    inputs   ordered list of (producer node id, producer output index): the op's operands, in slot order
    outputs  list[TensorType], one per output of the op
    weights  dict key -> WeightSpec; ONNX initializer / checkpoint name is f"{node id}.{key}"
    span     Span of the .net source that made it (None for synthetic nodes)
    scope    tuple of block-instance names enclosing it, outermost first (for summaries and pictures)
    role     "model" (exported to ONNX), "target" (training-only input), "loss" (training-only op)
Edge (u, v) attributes: `slots` = list of (input slot of v, output index of u) -- a list because one tensor
can feed several slots of the same op (x + x); `type` = the TensorType of the first such tensor.
Graph attributes (g.graph): name, doc, source (file path), inputs (list of input node ids, in declaration
order), outputs (dict output name -> (node id, output index), in declaration order), targets (list of target
node ids), loss ((node id, 0) or None), train (dict from the `train { }` section or None), params (dict of the
network's compile-time parameters), blocks (dict scope path "layer1.block1" -> BlockCall: one entry per block
call the elaborator inlined, for the PyTorch generator's one class per block).
"""
from __future__ import annotations

import math

import networkx as nx

from dataclasses import dataclass

from dslc.diagnostics import Span
from dslc.types import TensorType


@dataclass(frozen=True)
class BlockCall:
    """One inlined block call: its nodes are those whose scope starts with `path`. `params` lists the block's
    parameters in declaration order with their values: a tensor as its (node id, output index), a list of
    tensors as a list of those, a compile-time value as itself; `returns` the returned values likewise."""
    block: str
    path: tuple[str, ...]
    definition: Span | None = None
    call: Span | None = None
    params: tuple = ()
    returns: tuple = ()


def new_graph(name: str, doc: str = "", source: str | None = None) -> nx.DiGraph:
    g = nx.DiGraph()
    g.graph.update(name=name, doc=doc, source=source, inputs=[], outputs={}, targets=[], loss=None,
                   train=None, params={}, blocks={})
    return g


def add_input(g: nx.DiGraph, name: str, ttype: TensorType, span: Span | None = None,
              role: str = "model") -> str:
    g.add_node(name, op="input", attrs={"name": name}, inputs=[], outputs=[ttype], weights={}, span=span,
               scope=(), role=role)
    (g.graph["targets"] if role == "target" else g.graph["inputs"]).append(name)
    return name


def add_node(g: nx.DiGraph, op: str, name: str, inputs: list[tuple[str, int]], attrs: dict,
             outputs: list[TensorType], weights: dict | None = None, span: Span | None = None,
             scope: tuple[str, ...] = (), role: str = "model") -> str:
    assert name not in g, name
    g.add_node(name, op=op, attrs=attrs, inputs=list(inputs), outputs=list(outputs), weights=dict(weights or {}),
               span=span, scope=scope, role=role)
    for slot, (src, idx) in enumerate(inputs):
        if g.has_edge(src, name):
            g.edges[src, name]["slots"].append((slot, idx))
        else:
            g.add_edge(src, name, slots=[(slot, idx)], type=g.nodes[src]["outputs"][idx])
    return name


def input_types(g: nx.DiGraph, node: str) -> list[TensorType]:
    return [g.nodes[src]["outputs"][idx] for src, idx in g.nodes[node]["inputs"]]


def model_nodes(g: nx.DiGraph) -> list[str]:
    """Nodes of the inference model in topological order (no targets, no loss)."""
    return [n for n in nx.topological_sort(g) if g.nodes[n]["role"] == "model"]


def weight_names(g: nx.DiGraph) -> list[tuple[str, str, object]]:
    """(initializer name, node id, WeightSpec) for every weight, in topological order."""
    out = []
    for n in nx.topological_sort(g):
        for key, spec in g.nodes[n]["weights"].items():
            out.append((f"{n}.{key}", n, spec))
    return out


def trainable_params(g: nx.DiGraph) -> int:
    return sum(math.prod(spec.shape) for _, _, spec in weight_names(g) if spec.trainable)
