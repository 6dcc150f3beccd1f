"""Where things are in one parsed buffer: definitions with their full extent (the AST keeps only the name's
span), assignment targets by name, every name use and call, and the word under the cursor. Built from the
AST of the real parser and the tokens of dslc/frontend/syntax.py's light tokeniser, once per analysis."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from dslc.diagnostics import Span
from dslc.frontend import ast as A
from dslc.frontend.syntax import OPENERS, tokenize

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def word_at(lines: list[str], line0: int, char0: int) -> tuple[str, int, int] | None:
    """The identifier under (or just before) a 0-based position: (word, start char, end char)."""
    if not 0 <= line0 < len(lines):
        return None
    for m in _WORD.finditer(lines[line0]):
        if m.start() <= char0 <= m.end():
            return m.group(), m.start(), m.end()
    return None


@dataclass
class Definition:
    kind: str  # network | block | train
    name: str
    node: object  # BlockDef or TrainDef
    name_span: Span
    start: tuple[int, int]  # 0-based (line, char) of the keyword
    end: tuple[int, int]  # 0-based, just after the closing brace

    def holds(self, line0: int, char0: int) -> bool:
        return self.start <= (line0, char0) <= self.end


@dataclass
class Index:
    definitions: list[Definition] = field(default_factory=list)
    targets: list[tuple[Span, Span, str, object]] = field(default_factory=list)  # (name span, def span, name, stmt)
    names: list[A.Name] = field(default_factory=list)
    calls: list[A.Call] = field(default_factory=list)
    imports: list[A.Import] = field(default_factory=list)

    def definition_at(self, line0: int, char0: int) -> Definition | None:
        return next((d for d in self.definitions if d.holds(line0, char0)), None)

    def find(self, name: str, kinds=("network", "block")) -> Definition | None:
        return next((d for d in self.definitions if d.name == name and d.kind in kinds), None)


def statements(body):
    """Every statement of a body, also those inside `if` branches, in source order."""
    for s in body or []:
        yield s
        if isinstance(s, A.If):
            for _, b in s.branches:
                yield from statements(b)
            if s.orelse:
                yield from statements(s.orelse)


def nodes(root):
    """Every AST node below `root` (iteratively: pipelines may be thousands of stages long)."""
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, (list, tuple)):
            stack.extend(reversed(node))
        elif isinstance(node, A.Node):
            yield node
            for name in node.__dataclass_fields__:
                if name not in ("span", "module", "func_span"):
                    value = getattr(node, name)
                    if isinstance(value, (A.Node, list, tuple)):
                        stack.append(value)


def build(text: str, module: A.Module) -> Index:
    toks = tokenize(text)
    at = {(t.line, t.col): i for i, t in enumerate(toks)}
    idx = Index(imports=list(module.imports))
    for d in module.networks + module.blocks + module.trains:
        name = d.name if isinstance(d, A.BlockDef) else (d.network or "train")
        kind = d.kind if isinstance(d, A.BlockDef) else "train"
        span = d.span
        first = at.get((span.line, span.col))
        if first is None:
            continue
        keyword = first - 1 if isinstance(d, A.BlockDef) and first > 0 else first
        end = _closing_brace(toks, first)
        idx.definitions.append(Definition(kind, name, d, span if isinstance(d, A.BlockDef) else _tok_span(
            toks[first], span.file), (toks[keyword].line - 1, toks[keyword].col - 1), end))
        if isinstance(d, A.BlockDef):
            for p in d.params:
                idx.targets.append((p.span, p.span, p.name, p))
        for s in statements(d.body):
            if isinstance(s, A.Assign):
                i = at.get((s.span.line, s.span.col))
                for k, target in enumerate(s.targets):
                    if i is not None and i + 2 * k < len(toks) and toks[i + 2 * k].text == target:
                        idx.targets.append((_tok_span(toks[i + 2 * k], span.file), s.span, target, s))
            elif isinstance(s, A.TargetDecl):
                idx.targets.append((s.span, s.span, s.name, s))
        for n in nodes(d.body):
            if isinstance(n, A.Name):
                idx.names.append(n)
            elif isinstance(n, A.Call):
                idx.calls.append(n)
            elif isinstance(n, A.Repeat) and n.index and n.span is not None:
                i = at.get((n.span.line, n.span.col))  # `repeat i in ...`: the index is the second token
                if i is not None and i + 1 < len(toks) and toks[i + 1].text == n.index:
                    idx.targets.append((_tok_span(toks[i + 1], span.file), n.span, n.index, n))
        for p in d.params if isinstance(d, A.BlockDef) else []:
            if p.default is not None:
                for n in nodes(p.default):
                    if isinstance(n, A.Name):
                        idx.names.append(n)
    return idx


def _tok_span(tok, file: str) -> Span:
    return Span(file, tok.line, tok.col, tok.line, tok.col + len(tok.text))


def _closing_brace(toks, first: int) -> tuple[int, int]:
    """0-based position just after the `}` closing the body that follows token `first` (parameter brackets are
    skipped: the first `{` outside any bracket opens the body)."""
    depth, i = 0, first
    while i < len(toks):
        t = toks[i]
        if t.text == "{" and depth == 0:
            break
        if t.text in OPENERS:
            depth += 1
        elif t.text in (")", "]", "}"):
            depth -= 1
        i += 1
    depth = 0
    for t in toks[i:]:
        if t.text == "{":
            depth += 1
        elif t.text == "}":
            depth -= 1
            if depth == 0:
                return (t.line - 1, t.col)
    last = toks[-1]
    return (last.line - 1, last.col - 1 + len(last.text))
