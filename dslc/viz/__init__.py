"""`dslc graph`: pictures of networks (SVG with a pure-Python layered layout, or Graphviz dot)."""


def render(g, fmt: str = "svg", depth: int | None = None) -> str:
    """The picture of network graph `g` as SVG or dot text; blocks nested deeper than `depth` collapse."""
    from dslc.viz.display import build_display
    from dslc.viz.svg import render_dot, render_svg
    d = build_display(g, depth)
    if fmt == "dot":
        return render_dot(d)
    from dslc.viz.layout import layout
    return render_svg(d, layout(d))
