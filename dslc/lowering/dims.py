"""Binding symbolic dims to sizes (`--batch N`): a copy of the graph with every type's dims substituted and
dim expressions ("N*2", "(H+1)//2") evaluated where they become known."""
from __future__ import annotations

import ast
import copy
import re

import networkx as nx

from dslc.types import Dim, TensorType


def batch_symbol(g: nx.DiGraph) -> str | None:
    """The batch dim's name: the symbolic leading dim of the model's inputs (the first that has one)."""
    for n in g.graph["inputs"] + g.graph["targets"]:
        shape = g.nodes[n]["outputs"][0].shape
        if shape and isinstance(shape[0], str):
            return shape[0]
    return None


def eval_dim(d: Dim, values: dict[str, int]) -> Dim:
    if isinstance(d, int):
        return d
    if d in values:
        return values[d]
    try:
        tree = ast.parse(d, mode="eval")
        return int(_eval(tree.body, values))
    except (_Unknown, SyntaxError, ValueError, ZeroDivisionError):
        pass
    out = d
    for name, v in values.items():
        out = re.sub(rf"(?<![\w]){re.escape(name)}(?![\w])", str(v), out)
    return out


class _Unknown(Exception):
    pass


def _eval(node, values):
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in values:
            return values[node.id]
        raise _Unknown(node.id)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_eval(node.operand, values)
    if isinstance(node, ast.BinOp):
        a, b = _eval(node.left, values), _eval(node.right, values)
        if isinstance(node.op, ast.Add):
            return a + b
        if isinstance(node.op, ast.Sub):
            return a - b
        if isinstance(node.op, ast.Mult):
            return a * b
        if isinstance(node.op, ast.FloorDiv):
            return a // b
    raise _Unknown(ast.dump(node))


def bind_type(t: TensorType, values: dict[str, int]) -> TensorType:
    return t.with_shape(eval_dim(d, values) for d in t.shape)


def bind_dims(g: nx.DiGraph, values: dict[str, int]) -> nx.DiGraph:
    """A copy of `g` with the named symbolic dims bound to sizes (weights and attrs are shared)."""
    h = g.copy()
    h.graph = copy.deepcopy(g.graph)
    for n in h.nodes:
        d = dict(h.nodes[n])
        d["outputs"] = [bind_type(t, values) for t in d["outputs"]]
        h.nodes[n].update(d)
    for u, v in h.edges:
        e = h.edges[u, v]
        e["type"] = bind_type(e["type"], values)
    return h
