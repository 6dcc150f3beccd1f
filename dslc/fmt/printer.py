"""Print a .net parse tree back in the canonical layout, with the source's comments put back by line.

The tree is Lark's raw parse tree of grammars/dslc.lark (rule aliases as `tree.data`, named tokens kept), so
number and string literals are printed exactly as written. Parentheses are not in the tree; they are printed
where precedence needs them (`PREC`), which gives back the same tree.
"""
from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from functools import lru_cache

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedInput

from dslc.diagnostics import Diagnostics, UserError

WIDTH = 100
INDENT = "    "


class FormatError(Exception):
    """The text does not parse. `.diagnostics` (a Diagnostics) holds what `dslc check` reports for it."""

    def __init__(self, diagnostics: Diagnostics):
        super().__init__(diagnostics.render_all())
        self.diagnostics = diagnostics

    def render(self) -> str:
        return self.diagnostics.render_all()


# ---- parsing with comments ----------------------------------------------------------------------------------------
_lock = threading.Lock()
_sink: list = []


@lru_cache(maxsize=1)
def _comment_parser() -> Lark:
    """The project grammar's parser, with a lexer callback that collects the comments the grammar ignores."""
    from dslc.frontend.grammar import grammar_text
    return Lark(grammar_text(), parser="lalr", propagate_positions=True, maybe_placeholders=True,
                lexer_callbacks={"COMMENT": lambda tok: _sink.append(tok)})


def parse_with_comments(text: str) -> tuple[Tree, list[Token]]:
    with _lock:
        _sink.clear()
        try:
            tree = _comment_parser().parse(text)
        finally:
            comments = list(_sink)
            _sink.clear()
    return tree, comments


def _syntax_check(text: str, path: str) -> None:
    """Raise FormatError with the diagnostics `dslc check` gives when `text` has syntax errors."""
    from dslc.frontend.parser import parse
    try:
        parse(text, path)
    except UserError as e:
        diags = Diagnostics()
        diags.sources[path] = text
        for d in getattr(e, "diagnostics", [e.diagnostic]):
            diags.add(d)
        raise FormatError(diags) from None


def format_source(text: str, path: str = "<stdin>") -> str:
    """The canonical layout of `text` (see the module docstring of dslc.fmt); FormatError on syntax errors."""
    text = text.removeprefix("\ufeff")
    _syntax_check(text, path)
    tree, comments = parse_with_comments(text)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20000))  # `x + x + ... + x` (1500 terms) prints by recursion
    try:
        out = Printer(text, comments).module(tree)
    finally:
        sys.setrecursionlimit(limit)
    try:
        tree2, comments2 = parse_with_comments(out)
    except UnexpectedInput as e:
        raise AssertionError(f"dslc fmt printed text that does not parse ({e}); this is a bug in dslc fmt") from None
    if not same_tree(tree, tree2) or sorted(map(str.rstrip, comments2)) != sorted(map(str.rstrip, comments)):
        raise AssertionError(f"dslc fmt would change the meaning of {path}; this is a bug in dslc fmt")
    return out


def _significant(children: list) -> list:
    return [c for c in children if not (isinstance(c, Tree) and c.data == "stmt" and not c.children)]  # `;`


def same_tree(a, b) -> bool:
    """Whether two parse trees are the same program: same rules, same token types and texts, positions aside;
    empty `;` statements do not count."""
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        if isinstance(x, Tree) and isinstance(y, Tree):
            cx, cy = _significant(x.children), _significant(y.children)
            if x.data != y.data or len(cx) != len(cy):
                return False
            stack.extend(zip(cx, cy))
        elif isinstance(x, Token) and isinstance(y, Token):
            if x.type != y.type or str(x) != str(y):
                return False
        elif x is not None or y is not None:
            return False
    return True


# ---- expressions --------------------------------------------------------------------------------------------------
# Binding strength of each expression form (higher binds tighter), and what its operands need.
PREC = {"pipeline": 0, "cond": 1, "or_": 2, "and_": 3, "not_": 4, "compare": 5, "add": 6, "sub": 6, "mul": 7,
        "div": 7, "floordiv": 7, "mod": 7, "matmul": 7, "neg": 8, "pow_": 9, "call": 10, "attr": 10, "index": 10}
ATOM = 11
BINARY = {"or_": ("or", 2, 3), "and_": ("and", 3, 4), "add": ("+", 6, 7), "sub": ("-", 6, 7),
          "mul": ("*", 7, 8), "div": ("/", 7, 8), "floordiv": ("//", 7, 8), "mod": ("%", 7, 8),
          "matmul": ("@", 7, 8), "pow_": ("**", 10, 8)}
LITERALS = {"true": "true", "false": "false", "none": "none"}


def prec(node) -> int:
    return PREC.get(node.data, ATOM) if isinstance(node, Tree) else ATOM


def expr(node, need: int = 0) -> str:
    """`node` as text, in parentheses when it binds looser than its place needs (`need`)."""
    s = _expr(node)
    return f"({s})" if prec(node) < need else s


def _expr(n) -> str:
    if isinstance(n, Token):
        return str(n)
    d, c = n.data, n.children
    if d in BINARY:
        op, left, right = BINARY[d]
        return f"{expr(c[0], left)} {op} {expr(c[1], right)}"
    if d == "pipeline":
        return f"{expr(c[0], 0)} |> {stage(c[1])}"
    if d == "cond":
        return f"{expr(c[0], 2)} ? {expr(c[1], 2)} : {expr(c[2], 1)}"
    if d == "not_":
        return f"not {expr(c[0], 4)}"
    if d == "compare":
        return f"{expr(c[0], 6)} {c[1]} {expr(c[2], 6)}"
    if d == "neg":
        return f"-{expr(c[0], 8)}"
    if d == "call":
        return f"{expr(c[0], 10)}({args(c[1])}){alias(c[2])}"
    if d == "attr":
        return f"{expr(c[0], 10)}.{c[1]}"
    if d == "index":
        return f"{expr(c[0], 10)}[{expr(c[1])}]"
    if d in ("name", "int_", "float_", "string"):
        return str(c[0])
    if d in LITERALS:
        return LITERALS[d]
    if d == "list_":
        return "[" + ", ".join(expr(x) for x in c if x is not None) + "]"
    raise AssertionError(f"dslc fmt: unknown expression {d}")


def args(node) -> str:
    if node is None:
        return ""
    out = []
    for a in node.children:
        if isinstance(a, Tree) and a.data == "kwarg":
            value = a.children[1]  # `stride = i == 0 ? 2 : 1` is clearer than `stride=i == 0 ? 2 : 1`
            out.append(f"{a.children[0]}{'=' if prec(value) >= PREC['neg'] else ' = '}{expr(value)}")
        else:
            out.append(expr(a))
    return ", ".join(out)


def alias(tok) -> str:
    return f" as {tok}" if tok is not None else ""


def stage(n: Tree) -> str:
    d, c = n.data, n.children
    if d == "name_stage":
        return f"{c[0]}{alias(c[1])}"
    if d == "call_stage":
        return f"{c[0]}({args(c[1])}){alias(c[2])}"
    if d == "repeat":
        return repeat_head(n) + " { " + " |> ".join(stage(s) for s in c[2:]) + " }"
    raise AssertionError(f"dslc fmt: unknown stage {d}")


def repeat_head(n: Tree) -> str:
    head, name = n.children[0], n.children[1]
    if head.data == "range_index":
        i, a, b = head.children
        text = f"{i} in {expr(a, 2)}..{expr(b, 2)}"
    else:
        text = expr(head.children[0], 2)
    return f"repeat {text}{alias(name)}"


def chain(n) -> list:
    """A left-nested pipeline as [source, stage1, stage2, ...]."""
    out = []
    while isinstance(n, Tree) and n.data == "pipeline":
        out.append(n.children[1])
        n = n.children[0]
    out.append(n)
    return out[::-1]


def type_text(t: Tree) -> str:
    dtype, *dims = t.children
    return f"{dtype}[" + ", ".join(str(d) for d in dims if d is not None) + "]"


def param_text(p: Tree) -> str:
    c = p.children
    if p.data == "tensor_param":
        return f"{c[0]}: {type_text(c[1])}"
    if p.data == "default_param":
        return f"{c[0]} = {expr(c[1])}"
    return str(c[0])


# ---- layout with comments -----------------------------------------------------------------------------------------
def first_line(n) -> int:
    if isinstance(n, Token):
        return n.line
    return n.meta.line


def last_line(n) -> int:
    if isinstance(n, Token):
        return n.end_line
    return n.meta.end_line


@dataclass
class Entry:
    """One output line of a broken construct: its text and the source lines its comments come from."""
    indent: str
    text: str
    start: int
    end: int
    closers: list = field(default_factory=list)  # lines after this one (`}` of broken repeats), no comments


class Printer:
    def __init__(self, text: str, comments: list[Token]):
        self.src_lines = text.split("\n")
        self.comments = sorted(comments, key=lambda t: (t.line, t.column))
        self.ci = 0
        self.out: list[str] = []
        self.last = 0  # the last source line printed

    # -- comments --
    def take_before(self, line: int) -> list[Token]:
        got = []
        while self.ci < len(self.comments) and self.comments[self.ci].line < line:
            got.append(self.comments[self.ci])
            self.ci += 1
        return got

    def take_through(self, line: int) -> list[Token]:
        return self.take_before(line + 1)

    def has_comments_before(self, line: int) -> bool:
        return self.ci < len(self.comments) and self.comments[self.ci].line < line

    def blank_between(self, a: int, b: int) -> bool:
        return any(not self.src_lines[i - 1].strip() for i in range(a + 1, b) if 0 < i <= len(self.src_lines))

    def emit(self, line: str, trailing: list[Token] = (), hoist: str | None = None) -> None:
        """One output line and its end-of-line comment. Where several comments fall on one printed line (a
        statement joined from several source lines), all but the last go on their own lines just above it,
        indented as the line (or as `hoist`: where a reformat would put them)."""
        if trailing:
            *above, last = [str(t).rstrip() for t in trailing]
            indent = line[: len(line) - len(line.lstrip())] if hoist is None else hoist
            self.out.extend(indent + c for c in above)
            line = f"{line}  {last}"
        self.out.append(line.rstrip())

    def leading(self, line: int, indent: str, body_start: bool) -> None:
        """Own-line comments before source line `line`, keeping (at most one) blank line where the source had."""
        for c in self.take_before(line):
            self.blank(c.line, body_start)
            body_start = False
            self.emit(indent + str(c).rstrip())
            self.last = c.line

    def blank(self, line: int, suppress: bool, force: bool = False) -> None:
        if not suppress and self.out and (force or self.blank_between(self.last, line)):
            self.out.append("")

    # -- module --
    def module(self, tree: Tree) -> str:
        prev = None  # kind of the previous top-level element
        for item in tree.children:
            if item is None:
                continue
            kind = "doc" if isinstance(item, Token) else ("import" if item.data.startswith("import") else "def")
            start = first_line(item)
            pending = self.take_before(start)
            for c in pending:
                self.blank(c.line, False, force=prev == "def")
                self.emit(str(c).rstrip())
                self.last, prev = c.line, "comment"
            self.blank(start, False, force=prev == "def" or (kind == "def" and prev in ("import", "doc")))
            if kind == "doc":
                self.emit(str(item), self.take_through(last_line(item)))
            elif kind == "import":
                target = item.children[0]
                text = str(target) if item.data == "import_file" else ".".join(map(str, target.children))
                self.emit(f"import {text}", self.take_through(last_line(item)))
            else:
                self.definition(item)
            self.last, prev = last_line(item), kind
        rest = self.take_before(1 << 30)
        for c in rest:
            self.blank(c.line, False, force=prev == "def")
            self.emit(str(c).rstrip())
            self.last, prev = c.line, "comment"
        return "\n".join(self.out).strip("\n") + "\n" if self.out else ""

    def definition(self, item: Tree) -> None:
        if item.data == "train_def":
            name, body = item.children
            self.header(f"train {name} {{" if name is not None else "train {", body)
        else:
            name, params, body = item.children
            word = "block" if item.data == "block_def" else "network"
            ps = params.children if params is not None else []
            one = f"{word} {name}(" + ", ".join(param_text(p) for p in ps) + ") {"
            if ps and (len(one) > WIDTH or self.has_comments_before(body.meta.line)):
                self.emit(f"{word} {name}(", self.take_through(min(first_line(ps[0]) - 1, name.line)))
                entries = [Entry(INDENT, param_text(p) + ",", first_line(p), last_line(p)) for p in ps]
                self.broken(entries, body.meta.line)
                self.header(") {", body)
            else:
                self.header(one, body)
        self.close(body, "")

    def header(self, text: str, body: Tree, inner: str = INDENT, join: bool = False) -> None:
        """`text` ends with the `{` of `body`; its end-of-line comments are those up to the `{` line. `join`:
        `text` goes on the last printed line (`} else {`)."""
        stmts = [s for s in body.children if isinstance(s, Tree) and s.children]
        open_line = body.meta.line
        own = open_line if not stmts or first_line(stmts[0]) > open_line else open_line - 1
        hoist = None
        if join:
            text, hoist = self.out.pop() + " " + text, inner  # `} else {`: comments above it are in the body
        self.emit(text, self.take_through(own), hoist)
        self.last = open_line
        self.body(body, stmts, inner)

    def close(self, body: Tree, indent: str, then: bool = False) -> None:
        """The `}` of `body`; with `then`, an `elif`/`else` header follows on the same line (and takes the
        comments of that line)."""
        self.emit(f"{indent}}}", () if then else self.take_through(body.meta.end_line), indent + INDENT)
        self.last = body.meta.end_line

    def body(self, body: Tree, stmts: list, indent: str) -> None:
        start = True
        for s in stmts:
            self.leading(first_line(s), indent, start)
            self.blank(first_line(s), start)
            self.statement(s, indent)
            self.last, start = last_line(s), False
        self.leading(body.meta.end_line, indent, start)

    # -- statements --
    def statement(self, s: Tree, indent: str) -> None:
        d, c = s.data, s.children
        if d == "if_stmt":
            return self.if_stmt(s, indent)
        if d == "target_decl":
            return self.emit(f"{indent}target {c[0]}: {type_text(c[1])}", self.take_through(last_line(s)))
        if d == "assign":
            prefix, values = ", ".join(map(str, c[:-1])) + " = ", [c[-1]]
        else:
            prefix, values = "return ", c
        one = indent + prefix + ", ".join(expr(v) for v in values)
        value = values[0]
        # broken when too wide, or when a comment sits before the last stage's line (comments from there on
        # fit at the end of one line in both layouts, so this choice is the same when formatting again)
        if len(values) == 1 and isinstance(value, Tree) and value.data == "pipeline" and (
                len(one) > WIDTH or self.has_comments_before(first_line(chain(value)[-1]))):
            return self.pipeline(indent, prefix, value, last_line(s))
        self.emit(one, self.take_through(last_line(s)))

    def if_stmt(self, s: Tree, indent: str) -> None:
        parts = list(s.children)
        orelse = parts.pop()
        inner = indent + INDENT
        for k in range(0, len(parts), 2):
            test, body = parts[k], parts[k + 1]
            if k == 0:
                self.header(f"{indent}if {expr(test)} {{", body, inner)
            else:
                self.header(f"elif {expr(test)} {{", body, inner, join=True)
            more = k + 2 < len(parts) or orelse is not None
            self.close(body, indent, then=more)
        if orelse is not None:
            self.header("else {", orelse, inner, join=True)
            self.close(orelse, indent)

    def pipeline(self, indent: str, prefix: str, value: Tree, end: int) -> None:
        items = chain(value)
        cont = indent + INDENT
        entries = [Entry(indent, prefix + expr(items[0], 0), first_line(items[0]), last_line(items[0]))]
        for st in items[1:]:
            entries.extend(self.stage_entries(st, cont, "|> "))
        self.broken(entries, end + 1, first_has_leading=False)

    def stage_entries(self, st: Tree, indent: str, lead: str) -> list[Entry]:
        text = indent + lead + stage(st)
        if st.data != "repeat" or len(text) <= WIDTH:
            return [Entry(indent, lead + stage(st), first_line(st), last_line(st))]
        inner = st.children[2:]
        head_end = st.children[1].line if st.children[1] is not None else last_line(st.children[0])
        out = [Entry(indent, lead + repeat_head(st) + " {", first_line(st), head_end)]
        for k, s in enumerate(inner):
            out.extend(self.stage_entries(s, indent + INDENT, "|> " if k else ""))
        out[-1].closers.append(indent + "}")
        return out

    def broken(self, entries: list[Entry], stop: int, first_has_leading: bool = True) -> None:
        """One line per entry; an entry's comments: own-line ones before its start line, end-of-line ones from
        its start line up to the line before the next entry starts (the last: up to `stop` - 1)."""
        for k, e in enumerate(entries):
            if k or first_has_leading:
                self.leading(e.start, e.indent, k == 0)
            nxt = entries[k + 1].start if k + 1 < len(entries) else stop
            self.emit(e.indent + e.text, self.take_through(min(nxt - 1, e.end)) if nxt > e.start else ())
            self.last = max(self.last, e.end)
            for line in e.closers:
                self.emit(line)
