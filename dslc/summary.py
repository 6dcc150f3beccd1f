"""The summary table of `dslc check`: hierarchical name, op, output shape, params, MACs; totals."""
from __future__ import annotations

import math
from dataclasses import dataclass

import networkx as nx

from dslc import ir
from dslc.ops import registry


@dataclass
class Row:
    name: str
    op: str
    shape: str
    params: int
    macs: int
    depth: int


@dataclass
class Summary:
    rows: list[Row]
    trainable_params: int
    total_params: int
    macs: int
    param_bytes: int
    inputs: dict
    outputs: dict


def node_macs(g: nx.DiGraph, n: str) -> int:
    data = g.nodes[n]
    op = registry.get(data["op"])
    if op is None:
        return 0
    try:
        return int(op.macs(ir.input_types(g, n), data["outputs"], data["attrs"]))
    except Exception:  # a MAC count is informative only; never fail a check over it
        return 0


def summarize(g: nx.DiGraph, depth: int | None = None) -> Summary:
    rows: list[Row] = []
    groups: dict[str, Row] = {}
    trainable = total = macs = 0
    for n in nx.topological_sort(g):
        data = g.nodes[n]
        if data["role"] != "model" or data["op"] == "input":
            continue
        p_train = sum(math.prod(s.shape) for s in data["weights"].values() if s.trainable)
        p_all = sum(math.prod(s.shape) for s in data["weights"].values())
        m = node_macs(g, n)
        trainable += p_train
        total += p_all
        macs += m
        shape = ", ".join(o.shape_str() for o in data["outputs"])
        parts = n.split(".")
        if depth is not None and len(parts) > max(depth, 1):  # depth N shows N levels of names
            key = ".".join(parts[: max(depth, 1)])
            if key not in groups:
                groups[key] = Row(key, "block", shape, 0, 0, max(depth, 1) - 1)
                rows.append(groups[key])
            r = groups[key]
            r.shape, r.params, r.macs = shape, r.params + p_train, r.macs + m
            continue
        rows.append(Row(n, data["op"], shape, p_train, m, len(parts) - 1))
    inputs = {i: g.nodes[i]["outputs"][0] for i in g.graph["inputs"]}
    outputs = {name: g.nodes[node]["outputs"][idx] for name, (node, idx) in g.graph["outputs"].items()}
    return Summary(rows, trainable, total, macs, total * 4, inputs, outputs)


def human(n: float) -> str:
    for unit, k in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= k:
            return f"{n / k:.2f}{unit}"
    return str(int(n))


def human_bytes(n: int) -> str:
    for unit, k in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= k:
            return f"{n / k:.1f} {unit}"
    return f"{n} B"
