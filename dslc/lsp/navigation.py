"""Go to definition, find references and the outline (document symbols) of one buffer.

A bound name is resolved as elaboration resolved it (the facts record each reference's binding), so scoping
is exactly the compiler's; blocks through the module's import table (also into `std`), networks by name."""
from __future__ import annotations

from lsprotocol import types as T

from dslc.diagnostics import UserError
from dslc.frontend import ast as A
from dslc.lsp import describe as D
from dslc.lsp.analysis import Analysis
from dslc.lsp.convert import contains, path_to_uri, span_range
from dslc.lsp.index import word_at


def _loc(an: Analysis, span) -> T.Location:
    return T.Location(path_to_uri(span.file), span_range(span, an.lines if an.in_buffer(span) else None))


def _name_span(an: Analysis, key):
    """The name token of a definition key (a statement's span narrowed to its target)."""
    span, name = key
    t = next((t for t in an.index.targets if t[1] == span and t[2] == name), None) if an.index else None
    return t[0] if t is not None else span


def _call_at(an: Analysis, line0: int, char0: int) -> A.Call | None:
    return next((c for c in an.index.calls if contains(c.func_span, line0, char0)), None)


def definition(an: Analysis, line0: int, char0: int) -> list[T.Location]:
    if an.index is None:
        return []
    imp = next((i for i in an.index.imports if contains(i.span, line0, char0)), None)
    if imp is not None:
        try:
            target = an.modules._resolve(imp, an.path)
        except UserError:
            return []
        return [T.Location(path_to_uri(target), T.Range(T.Position(0, 0), T.Position(0, 0)))]
    call = _call_at(an, line0, char0)
    w = word_at(an.lines, line0, char0)
    name = call.func if call is not None else (w[0] if w else None)
    if call is None:
        key = an.ref_at(line0, char0)
        if key is not None:
            return [_loc(an, _name_span(an, key))]
        t = an.target_at(line0, char0)
        if t is not None:
            return [_loc(an, t[0])]
    if name is None:
        return []
    block = an.modules.find_block(an.module, name)
    if block is not None and block.span is not None:
        return [_loc(an, block.span)]
    d = an.index.find(name)
    return [_loc(an, d.name_span)] if d is not None else []


def references(an: Analysis, line0: int, char0: int, include_declaration: bool) -> list[T.Location]:
    if an.index is None:
        return []
    call = _call_at(an, line0, char0)
    w = word_at(an.lines, line0, char0)
    if w is None:
        return []
    key = None if call is not None else an.ref_at(line0, char0)
    if key is None and call is None:
        t = an.target_at(line0, char0)
        key = (t[1], t[2]) if t is not None else None
    if key is not None:
        spans = [s for s, k in an.facts.refs.items() if k == key and an.in_buffer(s)]
        if include_declaration:
            spans.insert(0, _name_span(an, key))
        return [_loc(an, s) for s in sorted(set(spans), key=lambda s: (s.line, s.col))]
    name = call.func if call is not None else w[0]
    spans = [c.func_span for c in an.index.calls if c.func == name and c.func_span is not None]
    if include_declaration:
        block = an.modules.find_block(an.module, name)
        d = an.index.find(name)
        decl = block.span if block is not None else (d.name_span if d is not None else None)
        if decl is not None:
            spans.insert(0, decl)
    return [_loc(an, s) for s in spans]


KINDS = {"network": T.SymbolKind.Class, "block": T.SymbolKind.Function, "train": T.SymbolKind.Namespace}


def symbols(an: Analysis) -> list[T.DocumentSymbol]:
    if an.index is None:
        return []
    out = []
    for d in an.index.definitions:
        rng = T.Range(T.Position(*d.start), T.Position(*d.end))
        children = []
        for name_span, def_span, name, node in an.index.targets:
            if not (d.holds(name_span.line - 1, name_span.col - 1)):
                continue
            values = an.facts.defs.get((def_span, name), [])
            kind = T.SymbolKind.TypeParameter if isinstance(node, A.Param) else T.SymbolKind.Variable
            r = span_range(name_span, an.lines)
            children.append(T.DocumentSymbol(name, kind, r, r, detail=", ".join(D.distinct(values, 2)) or None))
        detail = D.block_signature(d.node) if isinstance(d.node, A.BlockDef) else None
        sel = span_range(d.name_span, an.lines)
        out.append(T.DocumentSymbol(d.name if d.kind != "train" else f"train {d.node.network or ''}".strip(),
                                    KINDS[d.kind], rng, sel, detail=detail, children=children))
    return out
