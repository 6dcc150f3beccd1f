"""SVG and Graphviz dot writers for the network picture."""
from __future__ import annotations

from xml.sax.saxutils import escape

from dslc.viz.display import Display
from dslc.viz.layout import DETAIL_PX, TITLE_PX, Layout

FILL = {
    "conv": ("#dbeafe", "#3b82f6"), "dense": ("#e0e7ff", "#6366f1"), "attention": ("#fce7f3", "#db2777"),
    "norm": ("#dcfce7", "#16a34a"), "act": ("#fef9c3", "#ca8a04"), "pool": ("#ede9fe", "#7c3aed"),
    "math": ("#ffedd5", "#ea580c"), "shape": ("#f1f5f9", "#64748b"), "source": ("#f5f5f4", "#78716c"),
    "io": ("#ecfdf5", "#059669"), "block": ("#ffffff", "#334155"),
}
GROUP_FILL = ["#f8fafc", "#f1f5f9", "#e2e8f0", "#f8fafc"]
FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"
MONO = "DejaVu Sans Mono, Menlo, Consolas, monospace"


def _a(s) -> str:
    return escape(str(s), {'"': "&quot;"})


def render_svg(d: Display, lay: Layout) -> str:
    from dslc.viz.layout import text_width
    w = max(lay.width, 48 + text_width(d.caption, 11), 48 + text_width(f"network {d.name}", 16, bold=True))
    h = lay.height
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0f}" height="{h:.0f}" '
           f'viewBox="0 0 {w:.0f} {h:.0f}" font-family="{FONT}">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#475569"/></marker></defs>',
           '<rect width="100%" height="100%" fill="#ffffff"/>',
           f'<text x="24" y="26" font-size="16" font-weight="bold" fill="#0f172a">network {_a(d.name)}</text>',
           f'<text x="24" y="44" font-size="11" fill="#475569">{_a(d.caption)}</text>']
    for gb in lay.groups:
        fill = GROUP_FILL[(len(gb.path) - 1) % len(GROUP_FILL)]
        out.append(f'<rect class="block" x="{gb.x0:.1f}" y="{gb.y0:.1f}" width="{gb.x1 - gb.x0:.1f}" '
                   f'height="{gb.y1 - gb.y0:.1f}" rx="8" fill="{fill}" stroke="#94a3b8" stroke-width="1" '
                   f'stroke-dasharray="5,3"><title>{_a(".".join(gb.path))}</title></rect>')
    for u, v, t, pts in lay.edges:
        tip = f"{_a(u)} → {_a(v.removeprefix('output:'))}: {_a(t)}"
        out.append(f'<path d="{_curve(pts)}" fill="none" stroke="#475569" stroke-width="1.3" '
                   f'marker-end="url(#arrow)"><title>{tip}</title></path>')
    for gb in lay.groups:  # labels above the edges, with a halo
        fill = GROUP_FILL[(len(gb.path) - 1) % len(GROUP_FILL)]
        out.append(f'<text x="{gb.x0 + 8:.1f}" y="{gb.y0 + 13:.1f}" font-size="11" font-weight="bold" '
                   f'fill="#475569" stroke="{fill}" stroke-width="4" paint-order="stroke">{_a(gb.path[-1])}</text>')
    for nid, b in lay.boxes.items():
        n = d.nodes[nid]
        fill, stroke = FILL.get(n.category, FILL["shape"])
        x0, y0 = b.x - b.w / 2, b.y
        rx = b.h / 2 if n.kind in ("input", "output") else 5
        sw = 2.2 if n.kind == "block" else 1.2
        out.append(f'<g class="{n.kind}"><title>{_a(n.tooltip or n.title)}</title>'
                   f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{b.w:.1f}" height="{b.h:.1f}" rx="{rx:.1f}" '
                   f'fill="{fill}" stroke="{stroke}" stroke-width="{sw}"/>')
        title_y = y0 + (15 if n.detail else b.h / 2 + 4)
        weight = "bold" if n.kind != "op" else "600"
        out.append(f'<text x="{b.x:.1f}" y="{title_y:.1f}" font-size="{TITLE_PX}" font-weight="{weight}" '
                   f'text-anchor="middle" fill="#0f172a">{_a(n.title)}</text>')
        if n.detail:
            out.append(f'<text x="{b.x:.1f}" y="{y0 + b.h - 8:.1f}" font-size="{DETAIL_PX}" font-family="{MONO}" '
                       f'text-anchor="middle" fill="#334155">{_a(n.detail)}</text>')
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _curve(pts) -> str:
    """Vertical-tangent cubic segments between consecutive points (straight where a lane runs)."""
    (x0, y0) = pts[0]
    parts = [f"M{x0:.1f},{y0:.1f}"]
    for (xa, ya), (xb, yb) in zip(pts, pts[1:]):
        if abs(xa - xb) < 0.5:
            parts.append(f"L{xb:.1f},{yb:.1f}")
        else:
            dy = (yb - ya) / 2
            parts.append(f"C{xa:.1f},{ya + dy:.1f} {xb:.1f},{yb - dy:.1f} {xb:.1f},{yb:.1f}")
    return " ".join(parts)


def _q(s) -> str:
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def render_dot(d: Display) -> str:
    """Graphviz dot with one cluster per block (nested), for `dot -Tsvg` users."""
    lines = [f"digraph {_q(d.name)} {{", "  rankdir=TB;", f"  label={_q(d.caption)}; labelloc=t; fontsize=11;",
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11];',
             '  edge [color="#475569", arrowsize=0.7];']
    tree: dict = {}
    for nid, n in d.nodes.items():
        t = tree
        for part in n.group:
            t = t.setdefault(part, {})
        t.setdefault("\0nodes", []).append(nid)
    counter = [0]

    def emit(t, indent, path):
        for nid in t.get("\0nodes", []):
            n = d.nodes[nid]
            fill, stroke = FILL.get(n.category, FILL["shape"])
            label = n.title + (f"\\n{n.detail}" if n.detail else "")
            shape = ', shape=ellipse' if n.kind in ("input", "output") else ""
            pen = ", penwidth=2" if n.kind == "block" else ""
            lines.append(f'{indent}{_q(nid)} [label="{_dot_label(label)}", fillcolor="{fill}", '
                         f'color="{stroke}"{shape}{pen}, tooltip={_q(n.tooltip)}];')
        for part, sub in t.items():
            if part == "\0nodes":
                continue
            counter[0] += 1
            lines.append(f"{indent}subgraph cluster_{counter[0]} {{")
            lines.append(f'{indent}  label={_q(part)}; style="rounded,dashed"; color="#94a3b8"; fontsize=11;')
            emit(sub, indent + "  ", path + (part,))
            lines.append(f"{indent}}}")
    emit(tree, "  ", ())
    for u, v, t in d.edges:
        lines.append(f"  {_q(u)} -> {_q(v)} [tooltip={_q(t)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_label(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\\\\n", "\\n")
