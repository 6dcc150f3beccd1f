"""The block structure of a graph for the generated module: which nodes each inlined block call (ir.BlockCall)
owns, what flows in and out of it, in what order its statements and nested calls run, and which calls share
one class.

A call's *unit* holds the nodes whose innermost enclosing block call it is, and its nested calls. Two calls
share a class when the class text written for them is the same: the same forward statements and the same
weights up to their sizes (channel counts), which become constructor arguments (`Unit.dims`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx


@dataclass(eq=False)
class Unit:
    path: tuple[str, ...]                  # () for the network itself
    call: object = None                    # ir.BlockCall (None for the network)
    nodes: list[str] = field(default_factory=list)        # own nodes, in the graph's order
    children: list["Unit"] = field(default_factory=list)
    parent: "Unit | None" = None
    inputs: list[tuple[str, int]] = field(default_factory=list)    # values from outside, in argument order
    arg_names: list[str] = field(default_factory=list)
    outputs: list[tuple[str, int]] = field(default_factory=list)   # values used outside, in return order
    body: list = field(default_factory=list)    # own nodes (str) and children (Unit), in execution order
    cls: object = None                          # the ClassSpec it is an instance of (codegen)
    all_nodes: set = field(default_factory=set)

    def rel(self, dotted: str) -> str:
        """A node id or a descendant's path relative to this unit (`layer1.block1.conv1` in `layer1` ->
        `block1.conv1`)."""
        return dotted[len(".".join(self.path)) + 1:] if self.path else dotted

    @property
    def dotted(self) -> str:
        return ".".join(self.path)

    def same(self, other: "Unit", node: str) -> str:
        """The node of this unit at the place `node` has in `other` (an instance of the same class)."""
        rel = other.rel(node)
        return f"{self.dotted}.{rel}" if self.path else rel

    def child(self, rel: str) -> "Unit":
        full = f"{self.dotted}.{rel}" if self.path else rel
        return next(c for c in self.children if c.dotted == full)


def _flat(values):
    for v in values:
        if isinstance(v, list):
            yield from _flat(v)
        elif isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str):
            yield v


def build_units(g: nx.DiGraph, nodes: list[str]) -> Unit:
    """The unit tree over `nodes` (model nodes in the graph's order); the root is the network."""
    pos = {n: i for i, n in enumerate(nodes)}
    calls = {tuple(c.path): c for c in (g.graph.get("blocks") or {}).values()}
    owner: dict[str, tuple] = {}
    for n in nodes:
        scope = tuple(g.nodes[n].get("scope") or ())
        owner[n] = next((scope[:k] for k in range(len(scope), 0, -1) if scope[:k] in calls), ())
    used = {()}
    for path in set(owner.values()):
        used.update(path[:k] for k in range(1, len(path) + 1) if path[:k] in calls)
    units = {p: Unit(p, calls.get(p)) for p in used}
    for p, u in units.items():
        if p:
            u.parent = units[next(p[:k] for k in range(len(p) - 1, -1, -1) if p[:k] in units)]
    for n in nodes:
        units[owner[n]].nodes.append(n)
    for p in sorted(units, key=lambda p: min((pos[n] for n in nodes if owner[n][:len(p)] == p), default=0)):
        if p:
            units[p].parent.children.append(units[p])
    root = units[()]
    _collect(root)
    outside_users = _outside_uses(g)
    for u in units.values():
        if u.path:
            _boundary(g, u, pos, outside_users)
    for u in units.values():
        _order(g, u, pos)
    return root


def _collect(u: Unit) -> set:
    u.all_nodes = set(u.nodes)
    for c in u.children:
        u.all_nodes |= _collect(c)
    return u.all_nodes


def _outside_uses(g) -> set:
    """Values the network hands out: its outputs and the loss's operands."""
    used = set(tuple(v) for v in (g.graph.get("outputs") or {}).values())
    return used


def _boundary(g, u: Unit, pos, handed_out) -> None:
    params = [(name, v) for name, v in (u.call.params if u.call else ())]
    inputs = []
    for n in sorted(u.all_nodes, key=pos.get):
        for src, idx in g.nodes[n]["inputs"]:
            if src not in u.all_nodes and (src, idx) not in inputs:
                inputs.append((src, idx))
    names: dict = {}
    for name, v in params:
        tensors = list(_flat([v]))
        for i, t in enumerate(tensors):
            names.setdefault(t, name if len(tensors) == 1 and not isinstance(v, list) else f"{name}{i}")
    order = {t: i for i, t in enumerate(names)}
    u.inputs = sorted(inputs, key=lambda t: (order.get(t, len(order)), inputs.index(t)))
    u.arg_names = [names.get(t, f"x{i}") for i, t in enumerate(u.inputs)]
    outs = []
    for n in sorted(u.all_nodes, key=pos.get):
        for idx in range(len(g.nodes[n]["outputs"])):
            users = [v for v in g.successors(n) if v not in u.all_nodes
                     and any(i == idx for _s, i in g.edges[n, v]["slots"])]
            if users or (n, idx) in handed_out:
                outs.append((n, idx))
    ret = {t: i for i, t in enumerate(_flat(u.call.returns if u.call else ()))}
    u.outputs = sorted(outs, key=lambda t: (ret.get(t, len(ret)), outs.index(t)))


def _order(g, u: Unit, pos) -> None:
    """Own nodes and nested calls in an order that respects the data flow, otherwise the graph's."""
    items: dict = {n: n for n in u.nodes}
    member = {n: n for n in u.nodes}
    for c in u.children:
        items[c.dotted] = c
        member.update({n: c.dotted for n in c.all_nodes})
    first = {k: (pos[v] if isinstance(v, str) else min(pos[n] for n in v.all_nodes)) for k, v in items.items()}
    dag = nx.DiGraph()
    dag.add_nodes_from(items)
    for k, v in items.items():
        for n in ([v] if isinstance(v, str) else v.all_nodes):
            for src, _idx in g.nodes[n]["inputs"]:
                m = member.get(src)
                if m is not None and m != k:
                    dag.add_edge(m, k)
    u.body = [items[k] for k in nx.lexicographical_topological_sort(dag, key=first.get)]
