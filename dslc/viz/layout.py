"""A layered (Sugiyama-style) top-to-bottom layout in pure Python -- no Graphviz needed.

1. layers: longest path from the inputs (sources that are not inputs, like `param`, sit just above their
   first consumer); 2. long edges get dummy nodes, one per layer crossed, so skip connections run in their own
   thin lanes beside the main column; 3. order within layers: barycenter sweeps, keeping the ordering with the
   fewest crossings; 4. x: per layer, the positions closest (least squares) to the mean of the neighbours'
   that keep the order and the spacing (isotonic regression, pool-adjacent-violators), alternating sweeps;
   5. y: per layer, with room between layers for the block boxes that end or start there.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from dslc.viz.display import Display

TITLE_PX, DETAIL_PX = 12, 11
NODE_H = 38
TERMINAL_H = 34
H_GAP = 26
DUMMY_W = 10
EDGE_GAP = 26           # vertical room for the arrows between two layers
GROUP_LABEL = 18        # room for a block's label above its first layer
GROUP_PAD_X = 12
GROUP_PAD_BOTTOM = 8


def text_width(s: str, px: float, mono: bool = False, bold: bool = False) -> float:
    if mono:
        return len(s) * px * 0.62
    w = 0.0
    for ch in s:
        if ch in "il.,:;|!'·()[] ":
            w += 0.32
        elif ch in "mwMW@":
            w += 0.9
        elif ch.isupper() or ch.isdigit():
            w += 0.66
        else:
            w += 0.56
    return w * px * (1.1 if bold else 1.0)


@dataclass
class Box:
    x: float        # centre
    y: float        # top
    w: float
    h: float


@dataclass
class GroupBox:
    path: tuple[str, ...]
    x0: float
    y0: float
    x1: float
    y1: float


@dataclass
class Layout:
    boxes: dict[str, Box] = field(default_factory=dict)
    edges: list[tuple[str, str, str, list[tuple[float, float]]]] = field(default_factory=list)
    groups: list[GroupBox] = field(default_factory=list)
    layers: dict[str, int] = field(default_factory=dict)
    width: float = 0.0
    height: float = 0.0


def node_size(n) -> tuple[float, float]:
    w = max(text_width(n.title, TITLE_PX, bold=True), text_width(n.detail, DETAIL_PX, mono=True)) + 22
    h = TERMINAL_H if n.kind in ("input", "output") else NODE_H
    return max(w, 64.0), float(h)


def layout(d: Display, sweeps: int = 8) -> Layout:
    g = nx.DiGraph()
    for nid in d.nodes:
        g.add_node(nid)
    for u, v, _t in d.edges:
        g.add_edge(u, v)
    order0 = {n: i for i, n in enumerate(d.nodes)}

    # 1. layers
    layer: dict[str, int] = {}
    for n in nx.topological_sort(g):
        preds = list(g.predecessors(n))
        layer[n] = max((layer[p] + 1 for p in preds), default=0)
    for n in sorted(g, key=lambda n: -order0[n]):
        if g.in_degree(n) == 0 and d.nodes[n].kind != "input" and g.out_degree(n):
            layer[n] = max(min(layer[s] for s in g.successors(n)) - 1, 0)

    _separate_blocks(d, g, layer)

    # 2. dummies for long edges
    chains: list[tuple[str, str, str, list[str]]] = []
    lg = nx.DiGraph()
    lg.add_nodes_from(g)
    size = {n: node_size(d.nodes[n]) for n in g}
    dummy_count = 0
    for u, v, t in d.edges:
        path = [u]
        for k in range(layer[u] + 1, layer[v]):
            dummy_count += 1
            dn = f"\0dummy{dummy_count}"
            layer[dn] = k
            size[dn] = (DUMMY_W, 0.0)
            order0[dn] = order0[u] + 0.5
            lg.add_node(dn)
            path.append(dn)
        path.append(v)
        for a, b in zip(path, path[1:]):
            lg.add_edge(a, b)
        chains.append((u, v, t, path[1:-1]))

    n_layers = max(layer.values(), default=0) + 1
    rows: list[list[str]] = [[] for _ in range(n_layers)]
    for n in sorted(lg, key=lambda n: (_dfs_rank(n, lg, order0))):
        rows[layer[n]].append(n)

    # 3. ordering
    rows = _order(rows, lg, sweeps)

    # 4. x coordinates
    x = {}
    for row in rows:
        cur = 0.0
        for n in row:
            w = size[n][0]
            x[n] = cur + w / 2
            cur += w + H_GAP
        shift = cur / 2
        for n in row:
            x[n] -= shift
    for it in range(24):
        down = it % 2 == 0
        seq = range(1, n_layers) if down else range(n_layers - 2, -1, -1)
        if it >= 16:  # last sweeps: both sides at once
            seq = range(n_layers)
        for i in seq:
            row = rows[i]
            want = []
            for n in row:
                if it >= 16:
                    nb = list(lg.predecessors(n)) + list(lg.successors(n))
                else:
                    nb = list(lg.predecessors(n)) if down else list(lg.successors(n))
                want.append(sum(x[m] for m in nb) / len(nb) if nb else x[n])
            seps = [(size[a][0] + size[b][0]) / 2 + (H_GAP if size[a][1] and size[b][1] else H_GAP / 2)
                    for a, b in zip(row, row[1:])]
            for n, v in zip(row, _isotonic_place(want, seps)):
                x[n] = v

    _straighten_lanes(chains, rows, x, size)

    # 5. y coordinates, with room for block boxes
    gpaths = _group_paths(d)
    first, last = {}, {}
    for n, dn in d.nodes.items():
        for k in range(1, len(dn.group) + 1):
            p = dn.group[:k]
            first[p] = min(first.get(p, n_layers), layer[n])
            last[p] = max(last.get(p, -1), layer[n])
    top_pad, bottom_pad, side_pad = {}, {}, {}
    for p in sorted(gpaths, key=len, reverse=True):
        kids = [q for q in gpaths if len(q) == len(p) + 1 and q[:len(p)] == p]
        top_pad[p] = GROUP_LABEL + max((top_pad[q] for q in kids if first[q] == first[p]), default=0)
        bottom_pad[p] = GROUP_PAD_BOTTOM + max((bottom_pad[q] for q in kids if last[q] == last[p]), default=0)
        side_pad[p] = GROUP_PAD_X + max((side_pad[q] for q in kids), default=0)
    row_h = [max((size[n][1] for n in row), default=0) or 8.0 for row in rows]
    y_top = []
    y = 56.0 + max((top_pad[p] for p in gpaths if first[p] == 0), default=0)
    for i in range(n_layers):
        y_top.append(y)
        if i + 1 < n_layers:
            below = max((bottom_pad[p] for p in gpaths if last[p] == i), default=0)
            above = max((top_pad[p] for p in gpaths if first[p] == i + 1), default=0)
            y += row_h[i] + EDGE_GAP + below + above
    height = y_top[-1] + row_h[-1] + max((bottom_pad[p] for p in gpaths if last[p] == n_layers - 1), default=0) + 24

    out = Layout(layers={n: layer[n] for n in d.nodes})
    for n in d.nodes:
        w, h = size[n]
        out.boxes[n] = Box(x[n], y_top[layer[n]] + (row_h[layer[n]] - h) / 2, w, h)

    # edges: ports spread along the boxes' bottom / top edges, through the dummies' lanes
    outs: dict[str, list] = {}
    ins: dict[str, list] = {}
    for idx, (u, v, t, dummies) in enumerate(chains):
        nxt = x[dummies[0]] if dummies else x[v]
        prv = x[dummies[-1]] if dummies else x[u]
        outs.setdefault(u, []).append((nxt, idx))
        ins.setdefault(v, []).append((prv, idx))
    port_out, port_in = {}, {}
    for n, lst in outs.items():
        _ports(lst, out.boxes[n], port_out)
    for n, lst in ins.items():
        _ports(lst, out.boxes[n], port_in)
    for idx, (u, v, t, dummies) in enumerate(chains):
        bu, bv = out.boxes[u], out.boxes[v]
        pts = [(port_out[idx], bu.y + bu.h)]
        for dn in dummies:
            yt = y_top[layer[dn]]
            pts.append((x[dn], yt))
            pts.append((x[dn], yt + row_h[layer[dn]]))
        pts.append((port_in[idx], bv.y))
        out.edges.append((u, v, t, pts))

    # block boxes
    for p in sorted(gpaths, key=len):
        members = [n for n, dn in d.nodes.items() if dn.group[:len(p)] == p]
        if not members:
            continue
        x0 = min(out.boxes[n].x - out.boxes[n].w / 2 for n in members) - side_pad[p]
        x1 = max(out.boxes[n].x + out.boxes[n].w / 2 for n in members) + side_pad[p]
        y0 = y_top[first[p]] - top_pad[p]
        y1 = y_top[last[p]] + row_h[last[p]] + bottom_pad[p]
        out.groups.append(GroupBox(p, x0, y0, x1, y1))

    # normalise to a positive canvas
    xs = [b.x - b.w / 2 for b in out.boxes.values()] + [gb.x0 for gb in out.groups] + \
         [px for e in out.edges for px, _ in e[3]]
    xe = [b.x + b.w / 2 for b in out.boxes.values()] + [gb.x1 for gb in out.groups] + \
         [px for e in out.edges for px, _ in e[3]]
    dx = 24 - min(xs, default=0)
    for b in out.boxes.values():
        b.x += dx
    for gb in out.groups:
        gb.x0 += dx
        gb.x1 += dx
    out.edges = [(u, v, t, [(px + dx, py) for px, py in pts]) for u, v, t, pts in out.edges]
    out.width = max(xe, default=0) + dx + 24
    out.height = height
    return out


def _unit(path: tuple, nid: str, k: int):
    """What a node counts as at nesting level k: its block there, or itself when it is not that deep."""
    return ("group",) + path[:k + 1] if len(path) > k else ("node", nid)


def _separate_blocks(d: Display, g: nx.DiGraph, layer: dict) -> None:
    """A block that consumes what a sibling block (or a sibling top-level layer) makes starts below all of
    it: boxes of consecutive blocks never share a layer. Pushes the consumer (and all it feeds) down."""
    for _ in range(4 * len(layer) + 4):
        moved = False
        for u, v in g.edges:
            pu, pv = d.nodes[u].group, d.nodes[v].group
            k = 0
            while k < len(pu) and k < len(pv) and pu[k] == pv[k]:
                k += 1
            a_unit, b_unit = _unit(pu, u, k), _unit(pv, v, k)
            if a_unit == b_unit or (a_unit[0] == "node" and b_unit[0] == "node"):
                continue
            a_nodes = [n for n in d.nodes if _unit(d.nodes[n].group, n, k) == a_unit
                       and d.nodes[n].group[:k] == pu[:k]]
            b_nodes = [n for n in d.nodes if _unit(d.nodes[n].group, n, k) == b_unit
                       and d.nodes[n].group[:k] == pv[:k]]
            last_a = max(layer[n] for n in a_nodes)
            first_b = min(layer[n] for n in b_nodes)
            if first_b > last_a:
                continue
            if any(n in nx.descendants(g, m) for m in b_nodes for n in a_nodes):
                continue  # the two depend on each other both ways: nothing to gain
            shift = last_a - first_b + 1
            todo = set(b_nodes)
            for m in b_nodes:
                todo |= nx.descendants(g, m)
            for n in todo:
                layer[n] += shift
            moved = True
            break
        if not moved:
            return


def _straighten_lanes(chains, rows, x, size) -> None:
    """Give each long edge's dummies one common x where the rows leave room: straight skip lanes."""
    where = {n: (i, k) for i, row in enumerate(rows) for k, n in enumerate(row)}
    for _u, _v, _t, dummies in chains:
        if len(dummies) < 2:
            continue
        xs = sorted(x[dn] for dn in dummies)
        for cand in (xs[len(xs) // 2], sum(xs) / len(xs), xs[0], xs[-1]):
            ok = True
            for dn in dummies:
                i, k = where[dn]
                row = rows[i]
                half = size[dn][0] / 2
                if k > 0:
                    left = row[k - 1]
                    if x[left] + size[left][0] / 2 + H_GAP / 2 > cand - half:
                        ok = False
                        break
                if k + 1 < len(row):
                    right = row[k + 1]
                    if x[right] - size[right][0] / 2 - H_GAP / 2 < cand + half:
                        ok = False
                        break
            if ok:
                for dn in dummies:
                    x[dn] = cand
                break


def _dfs_rank(n, lg, order0):
    return order0.get(n, 0)


def _group_paths(d: Display) -> set[tuple[str, ...]]:
    paths = set()
    for dn in d.nodes.values():
        for k in range(1, len(dn.group) + 1):
            paths.add(dn.group[:k])
    return paths


def _ports(lst, box: Box, port: dict) -> None:
    lst.sort()
    m = len(lst)
    step = min(14.0, (box.w - 16) / max(m - 1, 1)) if m > 1 else 0
    for k, (_xv, idx) in enumerate(lst):
        port[idx] = box.x + (k - (m - 1) / 2) * step


def _isotonic_place(want: list[float], seps: list[float]) -> list[float]:
    """Positions minimising sum (x_i - want_i)^2 subject to x_{i+1} - x_i >= seps_i."""
    n = len(want)
    if n == 0:
        return []
    offs = [0.0]
    for s in seps:
        offs.append(offs[-1] + s)
    target = [w - o for w, o in zip(want, offs)]
    blocks: list[list[float]] = []   # [mean, count]
    for t in target:
        blocks.append([t, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, c2 = blocks.pop()
            m1, c1 = blocks.pop()
            blocks.append([(m1 * c1 + m2 * c2) / (c1 + c2), c1 + c2])
    ys = []
    for m, c in blocks:
        ys.extend([m] * int(c))
    return [y + o for y, o in zip(ys, offs)]


def _crossings(rows, lg, pos) -> int:
    total = 0
    for i in range(len(rows) - 1):
        es = [(pos[u], pos[v]) for u in rows[i] for v in lg.successors(u)]
        es.sort()
        for a in range(len(es)):
            for b in range(a + 1, len(es)):
                if es[a][0] < es[b][0] and es[a][1] > es[b][1]:
                    total += 1
    return total


def _order(rows, lg, sweeps):
    def positions(rs):
        return {n: i for r in rs for i, n in enumerate(r)}
    best = [list(r) for r in rows]
    pos = positions(best)
    best_c = _crossings(best, lg, pos)
    cur = [list(r) for r in rows]
    for s in range(sweeps):
        down = s % 2 == 0
        seq = range(1, len(cur)) if down else range(len(cur) - 2, -1, -1)
        for i in seq:
            pos = positions(cur)

            def key(n, i=i):
                nb = list(lg.predecessors(n)) if down else list(lg.successors(n))
                if not nb:
                    return pos[n]
                return sum(pos[m] for m in nb) / len(nb)
            cur[i] = sorted(cur[i], key=lambda n: (key(n), pos[n]))
        pos = positions(cur)
        c = _crossings(cur, lg, pos)
        if c < best_c:
            best, best_c = [list(r) for r in cur], c
        if best_c == 0:
            break
    return best
