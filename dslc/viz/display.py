"""The picture's graph: IR model nodes (or whole blocks collapsed below --depth) as boxes, tensors as edges,
graph inputs and outputs as terminals. Shared by the SVG and the dot writers."""
from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

CATEGORY = {
    "conv1d": "conv", "conv2d": "conv", "conv_transpose2d": "conv",
    "linear": "dense", "matmul": "dense", "attention": "attention",
    "batchnorm": "norm", "layernorm": "norm", "dropout": "norm",
    "relu": "act", "leaky_relu": "act", "sigmoid": "act", "tanh": "act", "gelu": "act", "softmax": "act",
    "log_softmax": "act",
    "maxpool": "pool", "avgpool": "pool", "global_avgpool": "pool", "adaptive_avgpool": "pool",
    "upsample": "pool",
    "add": "math", "sub": "math", "mul": "math", "div": "math",
    "param": "source", "constant": "source",
}


@dataclass
class DNode:
    id: str
    kind: str                      # input | output | op | block
    title: str                     # first line
    detail: str                    # second line: output shape(s)
    group: tuple[str, ...]         # enclosing (drawn) blocks, outermost first
    category: str = "shape"
    tooltip: str = ""
    members: int = 1               # layers inside a collapsed block


@dataclass
class Display:
    name: str
    nodes: dict[str, DNode] = field(default_factory=dict)
    edges: list[tuple[str, str, str]] = field(default_factory=list)   # (src, dst, tensor type text)
    caption: str = ""


def _dims(t) -> str:
    return "[" + ", ".join(str(d) for d in t.shape) + "]"


def _pair(v) -> str:
    v = tuple(v) if isinstance(v, (list, tuple)) else (v,)
    if len(set(v)) == 1:
        return f"{v[0]}×{v[0]}" if len(v) == 2 else str(v[0])
    return "×".join(str(x) for x in v)


def op_summary(op: str, a: dict) -> str:
    """A few words on the op's arguments: `3×3 /2`, `→ 1000`, `p=0.5`."""
    try:
        if op in ("conv1d", "conv2d", "conv_transpose2d"):
            s = _pair(a["kernel"])
            if any(x != 1 for x in a["stride"]):
                s += f" /{_pair(a['stride']).split('×')[0] if len(set(a['stride'])) == 1 else _pair(a['stride'])}"
            if a.get("groups", 1) != 1:
                s += f" g{a['groups']}"
            return s
        if op in ("maxpool", "avgpool"):
            s = _pair(a["kernel"])
            if tuple(a["stride"]) != tuple(a["kernel"]):
                s += f" /{a['stride'][0] if len(set(a['stride'])) == 1 else _pair(a['stride'])}"
            return s
        if op == "linear":
            return f"→ {a['out']}"
        if op == "adaptive_avgpool":
            return f"→ {_pair(a['size'])}"
        if op == "attention":
            return f"{a['heads']} heads" + (" causal" if a.get("causal") else "")
        if op == "dropout":
            return f"p={a['p']:g}"
        if op == "upsample":
            return f"×{_pair(a['scale'])} {a['mode']}"
        if op == "leaky_relu":
            return f"α={a['alpha']:g}"
        if op in ("concat", "softmax", "log_softmax", "split"):
            return f"axis {a['axis']}"
        if op == "transpose":
            return "(" + ",".join(str(p) for p in a["perm"]) + ")"
        if op == "reshape":
            return _dims_list(a["shape"])
        if op == "mean":
            return "axis " + ",".join(str(x) for x in a["axis"])
    except (KeyError, TypeError, ValueError):
        pass
    return ""


def _dims_list(v) -> str:
    return "[" + ", ".join(str(x) for x in v) + "]"


def build_display(g: nx.DiGraph, depth: int | None = None) -> Display:
    """Model nodes of `g`; blocks nested deeper than `depth` levels collapse into one box each."""
    from dslc import ir
    d = Display(str(g.graph.get("name") or "network"))
    rep: dict[str, str] = {}            # IR node -> display node
    collapsed: dict[str, list[str]] = {}
    order = ir.model_nodes(g)
    for n in order:
        data = g.nodes[n]
        scope = tuple(data.get("scope") or ())
        if data["op"] == "input":
            t = data["outputs"][0]
            d.nodes[n] = DNode(n, "input", n, f"{t.dtype}{_dims(t)}", (), "io", tooltip=f"input {n}: {t}")
            rep[n] = n
            continue
        if depth is not None and len(scope) > depth:
            key = ".".join(scope[:depth + 1])
            did = f"block:{key}"
            rep[n] = did
            collapsed.setdefault(did, []).append(n)
            if did not in d.nodes:
                d.nodes[did] = DNode(did, "block", key, "", scope[:depth], "block")
            continue
        short = n[len(".".join(scope)) + 1:] if scope and n.startswith(".".join(scope) + ".") else n
        summary = op_summary(data["op"], data.get("attrs") or {})
        title = f"{short} · {data['op']}" if short != data["op"] else data["op"]
        if summary:
            title += f" {summary}"
        outs = data["outputs"]
        detail = "  ".join(_dims(t) for t in outs)
        span = data.get("span")
        tip = f"{n}: {data['op']} -> {', '.join(str(t) for t in outs)}" + (f"\n{span}" if span else "")
        d.nodes[n] = DNode(n, "op", title, detail, scope if depth is None else scope[:depth],
                           CATEGORY.get(data["op"], "shape"), tooltip=tip)
        rep[n] = n
    # edges between display nodes (one per pair, in source order)
    seen = set()
    leaving: dict[str, list] = {}
    for n in order:
        for src, idx in g.nodes[n]["inputs"]:
            if src not in rep:
                continue
            u, v = rep[src], rep[n]
            t = g.nodes[src]["outputs"][idx]
            if u == v:
                continue
            if u in collapsed:
                leaving.setdefault(u, [])
                if t not in leaving[u]:
                    leaving[u].append(t)
            if (u, v) not in seen:
                seen.add((u, v))
                d.edges.append((u, v, str(t)))
    for oname, (n, idx) in g.graph["outputs"].items():
        if n not in rep:
            continue
        t = g.nodes[n]["outputs"][idx]
        oid = f"output:{oname}"
        d.nodes[oid] = DNode(oid, "output", oname, f"{t.dtype}{_dims(t)}", (), "io", tooltip=f"output {oname}: {t}")
        d.edges.append((rep[n], oid, str(t)))
        if rep[n] in collapsed:
            leaving.setdefault(rep[n], [])
            if t not in leaving[rep[n]]:
                leaving[rep[n]].append(t)
    for did, members in collapsed.items():
        node = d.nodes[did]
        node.members = len(members)
        ops = {}
        for m in members:
            ops[g.nodes[m]["op"]] = ops.get(g.nodes[m]["op"], 0) + 1
        node.title = f"{node.title} ({len(members)} layers)"
        outs = leaving.get(did, [])
        node.detail = "  ".join(_dims(t) for t in outs[:2]) + (" …" if len(outs) > 2 else "")
        node.tooltip = f"block {did[6:]}: " + ", ".join(f"{k}×{v}" for k, v in ops.items())
    ins = ", ".join(f"{n}: {g.nodes[n]['outputs'][0]}" for n in g.graph["inputs"])
    outs = ", ".join(f"{k}: {g.nodes[n]['outputs'][i]}" for k, (n, i) in g.graph["outputs"].items())
    params = ir.trainable_params(g)
    d.caption = f"{ins}  →  {outs}   ·   {params:,} trainable parameters"
    return d
