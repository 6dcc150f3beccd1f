"""textDocument/inlayHint: the shape at the end of each assignment, as elaboration computed it (`features =
... ` shows `[N, 2048, 7, 7]`). A statement inside a block runs once per call: its distinct shapes are joined
with ` | ` (at most MAX_SHAPES)."""
from __future__ import annotations

from lsprotocol import types as T

from dslc.frontend import ast as A
from dslc.frontend.values import Tensor
from dslc.lsp.analysis import Analysis

MAX_SHAPES = 3


def _shapes(values) -> str | None:
    out: list[str] = []
    for v in values:
        parts = v if isinstance(v, tuple) else (v,)
        if not parts or not all(isinstance(x, Tensor) for x in parts):
            continue
        s = ", ".join(x.type.shape_str() if x.type.dtype == "f32" else str(x.type) for x in parts)
        if s not in out:
            out.append(s)
    if not out:
        return None
    more = len(out) - MAX_SHAPES
    return " | ".join(out[:MAX_SHAPES]) + (f" | +{more}" if more > 0 else "")


def inlay_hints(an: Analysis, first_line0: int, last_line0: int) -> list[T.InlayHint]:
    if an.index is None:
        return []
    by_stmt: dict[int, list] = {}
    for _name_span, def_span, name, node in an.index.targets:
        if isinstance(node, A.Assign):
            by_stmt.setdefault(id(node), [node]).append(name)
    hints = []
    for node, *names in by_stmt.values():
        span = node.span
        end_line0 = (span.end_line or span.line) - 1
        if not first_line0 <= end_line0 <= last_line0:
            continue
        labels = []
        for name in names:
            s = _shapes(an.facts.defs.get((span, name), []))
            if s is not None:
                labels.append(s if len(names) == 1 else f"{name}: {s}")
        if labels:
            pos = T.Position(end_line0, (span.end_col or span.col) - 1)
            hints.append(T.InlayHint(pos, "  ".join(labels), kind=T.InlayHintKind.Type, padding_left=True))
    return hints
