"""A structural diff of two elaborated networks (the IR graphs of dslc/ir.py), for `dslc diff`.

Layers are paired in three steps (docs/tools.md says the same for users):
1. renamed blocks: a scope (a name prefix such as `layer3` or `layer3.block2`) whose layers all exist on one
   side only pairs with such a scope of the other side that has the same structure -- the same ops,
   attributes, output types, weight shapes and internal wiring, layer by layer in elaboration order --
   outermost scopes first; their layers pair in order;
2. renumbered layers and block calls: from the top down, the unpaired children of each block are aligned
   (difflib), because the elaborator numbers unnamed layers per op (`relu2`) and unnamed calls per block
   (`unit3`), and an inserted one renumbers those after it;
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
        renames.append({"kind": "block", "from": s, "to": t, "layers": len(sa[s]), "same_structure": True})
    return mapping, renames


def _items(g: nx.DiGraph, facts: dict, free: list[str], scope: str) -> list[tuple[tuple, tuple, str]]:
    """The direct children of `scope` among the unpaired layers `free`, in order, as (kind, structure, name):
    the kind is a layer's op or a block call's block, with the name where it was given with `as` (an unnamed
    one is the op's short name or the block's name and a counter per block: `relu2`, `unit3`); the structure
    adds the attributes, types and weights (a block call's `_structure`)."""
    prefix = scope + "." if scope else ""
    members: dict[str, list[str]] = {}
    for n in free:
        if n.startswith(prefix):
            members.setdefault(prefix + n[len(prefix):].partition(".")[0], []).append(n)
    out = []
    for name, ns in members.items():
        head = name[len(prefix):]
        if ns != [name]:  # a block call
            call = g.graph["blocks"].get(name)
            base = call.block if call is not None else None
            kind = ("block", base, None if base and _numbered(head, base) else head)
            out.append((kind, _structure(g, ns, facts), name))
        else:
            op = registry.get(facts[name]["op"])
            kind = (facts[name]["op"], None if op is not None and _numbered(head, op.short) else head)
            out.append((kind, _structure(g, ns, facts)[0][:4], name))
    return out


def _numbered(name: str, base: str) -> bool:
    return name.startswith(base) and name[len(base):].isdigit()


def _align_layers(ga, gb, la, lb, fa, fb, mapping) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Pairs of layers that names would pair wrongly. The elaborator numbers unnamed layers and block calls per
    op or block within their block, so inserting a `relu` renumbers the relus after it. So, from the top block
    down, the unpaired children of each pair of blocks are aligned as sequences (difflib): first by kind and
    structure, then, between the runs that aligned, by kind alone (a layer's op, a block call's block, and the
    name where it was given with `as`). Aligned layers pair; aligned block calls are aligned in turn. Where the
    alignment replaces a run of layers by as many others, those whose facts are identical but for the name
    (`as fc` -> `as head`) pair as renames. Returns the layer pairs and the renumbered block calls."""
    taken = set(mapping.values())
    free_a = [n for n in la if n not in mapping]
    free_b = [n for n in lb if n not in taken]
    out: dict[str, str] = {}
    calls: list[tuple[str, str]] = []
    todo = [("", "")]
    while todo:
        scope_a, scope_b = todo.pop()
        xs, ys = _items(ga, fa, free_a, scope_a), _items(gb, fb, free_b, scope_b)
        for tag, i1, i2, j1, j2 in _opcodes([x[:2] for x in xs], [y[:2] for y in ys]):
            if tag == "equal" or (i2 - i1 == j2 - j1):
                for x, y in zip(xs[i1:i2], ys[j1:j2]):
                    a, b = x[2], y[2]
                    if tag == "equal" and a not in fa:
                        todo.append((a, b))  # two calls of one block: align what is inside them
                        if a != b and not any(a.startswith(c + ".") for c, _ in calls):
                            calls.append((a, b))
                    elif a in fa and b in fb and (tag == "equal" or x[1] == y[1]):
                        out[a] = b
    return out, calls


def _opcodes(ka: list, kb: list):
    """difflib opcodes over (kind, structure) pairs: structure first, then kind alone between its matches."""
    from difflib import SequenceMatcher
    for tag, i1, i2, j1, j2 in SequenceMatcher(None, ka, kb, autojunk=False).get_opcodes():
        if tag in ("equal", "delete", "insert"):
            yield tag, i1, i2, j1, j2
            continue
        coarse = SequenceMatcher(None, [k for k, _ in ka[i1:i2]], [k for k, _ in kb[j1:j2]], autojunk=False)
        for t, p1, p2, q1, q2 in coarse.get_opcodes():
            yield t, i1 + p1, i1 + p2, j1 + q1, j1 + q2


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
    aligned, calls = _align_layers(ga, gb, la, lb, fa, fb, mapping)
    mapping.update(aligned)
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
    for a, b in calls:  # renumbered block calls (`unit2` -> `unit3`), their structure changed or not
        n = sum(1 for x in aligned if x.startswith(a + "."))
        renames.append({"kind": "block", "from": a, "to": b, "layers": n, "same_structure": False})
    in_block = tuple(r["from"] + "." for r in renames)
    renames += [{"kind": "layer", "from": a, "to": b, "layers": 1, "same_structure": fa[a] == fb[b]}
                for a, b in mapping.items()
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
