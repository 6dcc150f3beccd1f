"""A structural diff of two elaborated networks (the IR graphs of dslc/ir.py), for `dslc diff`.

Layers are paired in three steps (docs/tools.md says the same for users):
1. renamed blocks: a scope (a name prefix such as `layer3` or `layer3.block2`) whose layers all exist on one
   side only pairs with such a scope of the other side that has the same structure -- the same ops,
   attributes, output types, weight shapes and internal wiring, layer by layer in elaboration order --
   outermost scopes first; their layers pair in order;
2. renumbered layers: within each block, the layers still unpaired are aligned as op sequences, because the
   elaborator numbers unnamed layers per op (`relu2`) and an inserted layer renumbers those after it;
3. everything else pairs by name; a name on one side only is an added or a removed layer.

`diff_graphs(a, b)` returns a plain dict (the `--json` shape, documented in docs/tools.md) so the command, the
tests and other tools read one thing.
"""
from __future__ import annotations

import math

import networkx as nx

from dslc.ops import registry
from dslc.summary import node_macs, summarize

JSON_VERSION = 1


def _plain(v):
    """JSON-ready and comparable: tuples become lists, unknown objects their text."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


def _layers(g: nx.DiGraph) -> list[str]:
    """The inference model's nodes (inputs included), in elaboration order: the order the .net file made them,
    which a rename leaves alone (a topological sort would break ties by name)."""
    return [n for n in g.nodes if g.nodes[n]["role"] == "model"]


def _facts(g: nx.DiGraph, n: str) -> dict:
    d = g.nodes[n]
    return {"op": d["op"], "attrs": _plain(d["attrs"]), "outputs": [str(t) for t in d["outputs"]],
            "weights": {k: list(w.shape) for k, w in d["weights"].items()},
            "params": sum(math.prod(w.shape) for w in d["weights"].values() if w.trainable),
            "macs": 0 if d["op"] == "input" else node_macs(g, n)}


def _scopes(names: list[str]) -> dict[str, list[str]]:
    """Scope prefix -> its layers in order, for every proper prefix of a dotted name."""
    out: dict[str, list[str]] = {}
    for n in names:
        parts = n.split(".")
        for k in range(1, len(parts)):
            out.setdefault(".".join(parts[:k]), []).append(n)
    return out


def _structure(g: nx.DiGraph, layers: list[str], facts: dict) -> tuple:
    """What a rename keeps: per layer its op, attributes, types and weight shapes, and where each input comes
    from (a layer of the scope by position, or the k-th distinct tensor from outside it)."""
    index = {n: i for i, n in enumerate(layers)}
    outside: dict = {}
    sig = []
    for n in layers:
        f = facts[n]
        wires = tuple(("in", index[src], i) if src in index else ("out", outside.setdefault((src, i), len(outside)))
                      for src, i in g.nodes[n]["inputs"])
        sig.append((f["op"], repr(f["attrs"]), tuple(f["outputs"]), repr(f["weights"]), wires))
    return tuple(sig)


def _match_renames(ga, gb, la, lb, fa, fb) -> tuple[dict[str, str], list[dict]]:
    """Pairs of scopes present on one side only with the same structure: (layer mapping a -> b, renames)."""
    only_a = set(la) - set(lb)
    only_b = set(lb) - set(la)
    sa = {s: ls for s, ls in _scopes(la).items() if all(n in only_a for n in ls)}
    sb = {s: ls for s, ls in _scopes(lb).items() if all(n in only_b for n in ls)}
    if not sa or not sb:
        return {}, []
    struct_b: dict[tuple, list[str]] = {}
    for s, ls in sb.items():
        struct_b.setdefault(_structure(gb, ls, fb), []).append(s)
    mapping: dict[str, str] = {}
    taken_b: set[str] = set()
    renames = []
    pos_a = {n: i for i, n in enumerate(la)}
    pos_b = {n: i for i, n in enumerate(lb)}
    for s in sorted(sa, key=lambda s: (s.count("."), pos_a[sa[s][0]])):  # outermost first, in order
        if any(n in mapping for n in sa[s]):
            continue  # inside a scope already paired
        candidates = [t for t in struct_b.get(_structure(ga, sa[s], fa), ())
                      if not any(n in taken_b for n in sb[t])]
        if not candidates:
            continue
        # the same depth and parent scope first (layer3 -> stage3, not -> stage3.block1), then the first in order
        parent = s.rpartition(".")[0]
        t = min(candidates, key=lambda t: (t.count(".") != s.count("."), t.rpartition(".")[0] != parent,
                                          pos_b[sb[t][0]]))
        mapping.update(zip(sa[s], sb[t]))
        taken_b.update(sb[t])
        renames.append({"kind": "block", "from": s, "to": t, "layers": len(sa[s])})
    return mapping, renames


def _auto_named(g: nx.DiGraph, n: str) -> bool:
    """Named by the elaborator (`relu2`: the op's short name and a counter per block), not with `as`."""
    op = registry.get(g.nodes[n]["op"])
    leaf = n.rpartition(".")[2]
    return op is not None and leaf.startswith(op.short) and leaf[len(op.short):].isdigit()


def _align_layers(ga, gb, la, lb, fa, fb, mapping) -> dict[str, str]:
    """Pairs of layers that names would pair wrongly. The elaborator numbers unnamed layers per op within their
    block, so inserting a `relu` renumbers the relus after it: within each block, the layers not yet paired are
    aligned as sequences of ops (difflib), an unnamed layer standing for its op and a named one for its op and
    name. Aligned runs pair in order; where the alignment replaces a run by one as long, layers whose facts are
    identical but for the name (`as fc` -> `as head`) pair as renames. The rest is left to the names."""
    from difflib import SequenceMatcher
    taken = set(mapping.values())
    by_block: dict[str, tuple[list, list]] = {}
    for n in la:
        if n not in mapping:
            by_block.setdefault(n.rpartition(".")[0], ([], []))[0].append(n)
    for n in lb:
        if n not in taken:
            by_block.setdefault(n.rpartition(".")[0], ([], []))[1].append(n)
    out: dict[str, str] = {}
    for xs, ys in by_block.values():
        if not xs or not ys:
            continue
        ka = [(fa[n]["op"], None if _auto_named(ga, n) else n.rpartition(".")[2]) for n in xs]
        kb = [(fb[n]["op"], None if _auto_named(gb, n) else n.rpartition(".")[2]) for n in ys]
        for tag, i1, i2, j1, j2 in SequenceMatcher(None, ka, kb, autojunk=False).get_opcodes():
            if tag == "equal":
                out.update(zip(xs[i1:i2], ys[j1:j2]))
            elif tag == "replace" and i2 - i1 == j2 - j1:
                same = ("op", "attrs", "outputs", "weights")
                out.update((a, b) for a, b in zip(xs[i1:i2], ys[j1:j2])
                           if all(fa[a][k] == fb[b][k] for k in same))
    return out


def _changes(ga, gb, a, b, fa, fb, mapping) -> dict:
    x, y = fa[a], fb[b]
    out: dict = {}
    if x["op"] != y["op"]:
        out["op"] = [x["op"], y["op"]]
    for key in ("attrs", "outputs", "weights"):
        if x[key] != y[key]:
            out[key] = _differ(x[key], y[key]) if key != "outputs" else [x[key], y[key]]
    ins_a = [[src, i] for src, i in ga.nodes[a]["inputs"]]
    ins_b = [[src, i] for src, i in gb.nodes[b]["inputs"]]
    if [[mapping.get(s, s), i] for s, i in ins_a] != ins_b:  # rewired (a renamed producer is no change)
        out["inputs"] = [ins_a, ins_b]
    return out


def _what(f: dict) -> dict:
    """The layer as it is (the new side; the old one for a removed layer)."""
    return {"op": f["op"], "attrs": f["attrs"], "outputs": f["outputs"]}


def _differ(x: dict, y: dict) -> dict:
    """key -> [old, new] where two dicts differ (None where a key is missing)."""
    return {k: [x.get(k), y.get(k)] for k in dict.fromkeys([*x, *y]) if x.get(k) != y.get(k)}


def _delta(a: int, b: int) -> dict:
    return {"a": a, "b": b, "delta": b - a}


def block_of(name: str, depth: int) -> str:
    """The block a layer counts towards: its first `depth` name parts (a top-level layer is its own block)."""
    parts = name.split(".")
    return ".".join(parts[:depth]) if len(parts) > depth else name


def diff_graphs(ga: nx.DiGraph, gb: nx.DiGraph, depth: int = 1) -> dict:
    """The structural diff of network `ga` (old) and `gb` (new); `depth` is the name depth of the blocks whose
    parameter and MAC deltas are summed (1: `layer3`, 2: `layer3.block1`)."""
    depth = max(depth, 1)
    la, lb = _layers(ga), _layers(gb)
    fa = {n: _facts(ga, n) for n in la}
    fb = {n: _facts(gb, n) for n in lb}
    mapping, renames = _match_renames(ga, gb, la, lb, fa, fb)
    mapping.update(_align_layers(ga, gb, la, lb, fa, fb, mapping))
    matched_b = set(mapping.values())
    set_b = set(lb)
    for n in la:
        if n not in mapping and n in set_b and n not in matched_b:
            mapping[n] = n
            matched_b.add(n)

    layers, blocks = [], {}

    def block(key: str, was: str | None) -> dict:
        r = blocks.setdefault(key, {"name": key, "from": None, "added": 0, "removed": 0, "changed": 0,
                                    "renamed": 0, "params": [0, 0], "macs": [0, 0]})
        if was is not None and was != key:
            r["from"] = was
        return r

    sides = [*mapping.items(), *((a, None) for a in la if a not in mapping),
             *((None, b) for b in lb if b not in matched_b)]
    for a, b in sides:
        x, y = fa.get(a), fb.get(b)
        ch = _changes(ga, gb, a, b, fa, fb, mapping) if x and y else {}
        status = "changed" if ch else "removed" if y is None else "added" if x is None else None
        renamed = bool(x and y) and a != b
        r = block(block_of(b or a, depth), block_of(a, depth) if renamed else None)
        params = _delta(x["params"] if x else 0, y["params"] if y else 0)
        macs = _delta(x["macs"] if x else 0, y["macs"] if y else 0)
        for key, fig in (("params", params), ("macs", macs)):
            r[key][0] += fig["a"]
            r[key][1] += fig["b"]
        r["renamed"] += renamed
        if status:
            r[status] += 1
            layers.append({"status": status, "name": b or a, "from": a if renamed else None, **_what(y or x),
                           "changes": ch, "params": params, "macs": macs})
    place = _places(la, lb, mapping)
    layers.sort(key=lambda r: place[r["status"] == "removed", r["name"]])
    first: dict[str, float] = {}  # blocks in the order of their first layer
    for side, names in ((False, lb), (True, [n for n in la if n not in mapping])):
        for n in names:
            key = block_of(n, depth)
            first[key] = min(first.get(key, math.inf), place[side, n])

    rows = []
    for r in sorted(blocks.values(), key=lambda r: first[r["name"]]):
        if r["added"] or r["removed"] or r["changed"] or r["renamed"]:
            r["params"], r["macs"] = _delta(*r["params"]), _delta(*r["macs"])
            rows.append(r)
    sa, sb = summarize(ga), summarize(gb)
    outputs = {k: [_out_type(ga, k), _out_type(gb, k)] for k in dict.fromkeys([*ga.graph["outputs"],
                                                                                *gb.graph["outputs"]])}
    outputs = {k: v for k, v in outputs.items() if v[0] != v[1]}
    net_params = _differ(_plain(ga.graph["params"]), _plain(gb.graph["params"]))
    counts = {s: sum(1 for r in layers if r["status"] == s) for s in ("added", "removed", "changed")}
    counts["renamed"] = sum(1 for a, b in mapping.items() if a != b)
    in_block = tuple(r["from"] + "." for r in renames)
    renames += [{"kind": "layer", "from": a, "to": b, "layers": 1} for a, b in mapping.items()
                if a != b and not a.startswith(in_block)]
    counts["unchanged"] = len(mapping) - counts["changed"]
    return {
        "version": JSON_VERSION,
        "identical": not (layers or renames or outputs),   # a renamed layer renames its weights
        "totals": {"params": _delta(sa.trainable_params, sb.trainable_params), "macs": _delta(sa.macs, sb.macs),
                   "layers": counts},
        "renamed": renames,
        "layers": layers,
        "blocks": rows,
        "outputs": outputs,
        "network_params": net_params,
    }


def _places(la: list[str], lb: list[str], mapping: dict) -> dict:
    """(old side?, name) -> where it goes in the new network's order; a removed layer just after its nearest
    predecessor that is still there."""
    out = {(False, n): float(i) for i, n in enumerate(lb)}
    last = -0.5
    for n in la:
        if n in mapping:
            last = out[False, mapping[n]]
        else:
            out[True, n] = last + 0.5
    return out


def _out_type(g: nx.DiGraph, name: str) -> str | None:
    if name not in g.graph["outputs"]:
        return None
    node, i = g.graph["outputs"][name]
    return str(g.nodes[node]["outputs"][i])
