"""Parse .net text into the AST (dslc/frontend/ast.py); syntax errors become diagnostics in plain words."""
from __future__ import annotations

import ast as pyast

from lark import Token, Transformer_NonRecursive, Tree, v_args
from lark.exceptions import UnexpectedInput, VisitError

from dslc.diagnostics import Span, UserError
from dslc.frontend import ast as A
from dslc.frontend import syntax
from dslc.frontend.grammar import grammar_text, lark_parser  # noqa: F401 (grammar_text: public)


class SyntaxErrors(UserError):
    """Every syntax error found in one file: `.diagnostic` is the first, `.diagnostics` all of them."""

    def __init__(self, diagnostics: list):
        first = diagnostics[0]
        super().__init__(first.message, first.span, first.hint, first.notes)
        self.diagnostics = list(diagnostics)


@v_args(meta=True, inline=True)
class ToAst(Transformer_NonRecursive):  # non-recursive: a 5000-stage pipeline is fine
    def __init__(self, file: str):
        super().__init__()
        self.file = file

    def _span(self, meta) -> Span | None:
        if getattr(meta, "empty", True):
            return None
        return Span(self.file, meta.line, meta.column, meta.end_line, meta.end_column)

    def _tspan(self, tok: Token) -> Span:
        return Span(self.file, tok.line, tok.column, tok.end_line, tok.end_column)

    # ---- module ----
    def start(self, meta, *items):
        doc = ""
        if items and isinstance(items[0], Token) and items[0].type == "DOCSTRING":
            doc = items[0].value[3:-3].strip()
            items = items[1:]
        elif items and items[0] is None:
            items = items[1:]
        mod = A.Module(self.file, doc, [], [], [], [], span=self._span(meta))
        for it in items:
            if isinstance(it, A.Import):
                mod.imports.append(it)
            elif isinstance(it, A.BlockDef):
                it.module = mod
                (mod.networks if it.kind == "network" else mod.blocks).append(it)
            elif isinstance(it, A.TrainDef):
                mod.trains.append(it)
        return mod

    def import_file(self, meta, s):
        return A.Import(_unquote(s), False, span=self._span(meta))

    def import_std(self, meta, name):
        return A.Import(name, True, span=self._span(meta))

    def dotted_name(self, meta, *parts):
        return ".".join(str(p) for p in parts)

    def block_def(self, meta, name, params, body):
        return A.BlockDef(str(name), params or [], body, "block", span=self._tspan(name))

    def network_def(self, meta, name, params, body):
        return A.BlockDef(str(name), params or [], body, "network", span=self._tspan(name))

    def train_def(self, meta, name, body):
        return A.TrainDef(str(name) if name else None, body, span=self._span(meta))

    def params(self, meta, *ps):
        return list(ps)

    def tensor_param(self, meta, name, t):
        return A.Param(str(name), type=t, span=self._tspan(name))

    def default_param(self, meta, name, e):
        return A.Param(str(name), default=e, has_default=True, span=self._tspan(name))

    def plain_param(self, meta, name):
        return A.Param(str(name), span=self._tspan(name))

    def type_expr(self, meta, dtype, *dims):
        ds = []
        for d in dims:
            if d is None:
                continue
            ds.append(int(d) if d.type == "INT" else str(d))
        return A.TypeExpr(str(dtype), ds, span=self._span(meta))

    def body(self, meta, *stmts):
        # a bare `;` statement arrives as an empty Tree('stmt')
        return [s for s in stmts if s is not None and not isinstance(s, (Token, Tree))]

    # ---- statements ----
    def assign(self, meta, *parts):
        *names, value = parts
        return A.Assign([str(n) for n in names], value, span=self._span(meta))

    def return_stmt(self, meta, *values):
        return A.Return(list(values), span=self._span(meta))

    def if_stmt(self, meta, *parts):
        parts = list(parts)
        orelse = parts.pop() if len(parts) % 2 == 1 else None
        branches = [(parts[i], parts[i + 1]) for i in range(0, len(parts), 2)]
        return A.If(branches, orelse, span=self._span(meta))

    def target_decl(self, meta, name, t):
        return A.TargetDecl(str(name), t, span=self._tspan(name))

    # ---- expressions ----
    def pipeline(self, meta, source, stage):
        return A.Pipeline(source, stage, span=stage.span)

    def name_stage(self, meta, name, alias):
        return A.Call(str(name), [], [], str(alias) if alias else None, func_span=self._tspan(name),
                      span=self._span(meta))

    def call_stage(self, meta, name, args, alias):
        pos, kw = args or ([], [])
        return A.Call(str(name), pos, kw, str(alias) if alias else None, func_span=self._tspan(name),
                      span=self._span(meta))

    def repeat(self, meta, head, alias, *stages):
        index, start, stop = head
        if alias is None and isinstance(stop, A.Call) and stop.alias is not None:
            # `repeat i in 0..len(xs) as name { }`: the grammar hands `as name` to the call; it names the repeat
            alias, stop.alias = stop.alias, None
        return A.Repeat(index, start, stop, str(alias) if alias else None, list(stages), span=self._span(meta))

    def range_index(self, meta, name, start, stop):
        return (str(name), start, stop)

    def range_count(self, meta, count):
        return (None, None, count)

    def cond(self, meta, test, then, orelse):
        return A.Cond(test, then, orelse, span=self._span(meta))

    def or_(self, meta, a, b):
        return A.BinOp("or", a, b, span=self._span(meta))

    def and_(self, meta, a, b):
        return A.BinOp("and", a, b, span=self._span(meta))

    def not_(self, meta, a):
        return A.Unary("not", a, span=self._span(meta))

    def compare(self, meta, a, op, b):
        return A.Compare(str(op), a, b, span=self._span(meta))

    def _bin(op):
        def f(self, meta, a, b):
            return A.BinOp(op, a, b, span=self._span(meta))
        return f

    add, sub, mul, div = _bin("add"), _bin("sub"), _bin("mul"), _bin("div")
    floordiv, mod, matmul, pow_ = _bin("floordiv"), _bin("mod"), _bin("matmul"), _bin("pow")

    def neg(self, meta, a):
        return A.Unary("neg", a, span=self._span(meta))

    def call(self, meta, func, args, alias):
        pos, kw = args or ([], [])
        if not isinstance(func, A.Name):
            raise UserError("only named blocks and ops can be called", func.span)
        return A.Call(func.id, pos, kw, str(alias) if alias else None, func_span=func.span, span=self._span(meta))

    def attr(self, meta, obj, name):
        return A.Attr(obj, str(name), span=self._span(meta))

    def index(self, meta, obj, idx):
        return A.Index(obj, idx, span=self._span(meta))

    def name(self, meta, tok):
        return A.Name(str(tok), span=self._tspan(tok))

    def int_(self, meta, tok):
        if len(tok) > 19 or int(tok) > 2 ** 63 - 1:
            raise UserError("this integer is too large (more than 64 bits)", self._tspan(tok))
        return A.Const(int(tok), span=self._tspan(tok))

    def float_(self, meta, tok):
        value = float(tok)
        if value == float("inf"):
            raise UserError("this number is too large for a float", self._tspan(tok))
        return A.Const(value, span=self._tspan(tok))

    def string(self, meta, tok):
        return A.Const(_unquote(tok), span=self._tspan(tok))

    def true(self, meta):
        return A.Const(True, span=self._span(meta))

    def false(self, meta):
        return A.Const(False, span=self._span(meta))

    def none(self, meta):
        return A.Const(A.NONE, span=self._span(meta))

    def list_(self, meta, *items):
        return A.ListExpr([i for i in items if i is not None], span=self._span(meta))

    def args(self, meta, *items):
        pos, kw = [], []
        for it in items:
            if isinstance(it, tuple) and len(it) == 3 and it[0] == "__kw__":
                kw.append(it[1])
            else:
                if kw:
                    raise UserError("a positional argument cannot follow keyword arguments", it.span)
                pos.append(it)
        return (pos, kw)

    def kwarg(self, meta, name, value):
        return ("__kw__", (str(name), value, self._tspan(name)), None)


def _unquote(tok) -> str:
    return pyast.literal_eval(str(tok))


def parse(text: str, file: str) -> A.Module:
    """Parse one file; raises SyntaxErrors (a UserError: every syntax error found, in plain words)."""
    try:
        tree = lark_parser().parse(text)
    except UnexpectedInput as e:
        raise SyntaxErrors(syntax.parse_errors(lark_parser().parse, e, text, file)) from None
    try:
        module = ToAst(file).transform(tree)
    except VisitError as e:  # lark wraps transformer errors
        inner = e.orig_exc
        if isinstance(inner, UserError):
            raise inner from None
        raise
    check_nesting(module)
    return module


MAX_NESTING = 100


def check_nesting(module: A.Module) -> None:
    """Expressions nested deeper than MAX_NESTING are refused: elaboration evaluates them recursively. A pipeline's
    source and a left-nested chain of arithmetic (`a + b + c`) do not count as nesting (they are run in a loop)."""
    stack: list = [(d, 0, d.span) for d in module.blocks + module.networks + module.trains]
    while stack:
        node, depth, where = stack.pop()
        where = getattr(node, "span", None) or where  # the nearest enclosing node with a position
        if depth > MAX_NESTING:
            raise UserError(f"this expression is nested too deeply (more than {MAX_NESTING} levels)", where,
                            "split it into named steps: `a = ...`, then `b = a |> ...`")
        if isinstance(node, list):
            stack.extend((x, depth, where) for x in node)
        elif isinstance(node, tuple):
            stack.extend((x, depth + 1, where) for x in node)
        elif isinstance(node, A.Pipeline):
            stack.append((node.source, depth, where))
            stack.append((node.stage, depth + 1, where))
        elif isinstance(node, A.BinOp) and node.op not in ("and", "or"):
            stack.append((node.left, depth, where))
            stack.append((node.right, depth + 1, where))
        elif isinstance(node, A.Node):
            for name in node.__dataclass_fields__:
                if name not in ("span", "module", "func_span"):
                    value = getattr(node, name)
                    if isinstance(value, (A.Node, list, tuple)):
                        stack.append((value, depth + 1, where))
