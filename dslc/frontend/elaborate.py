"""Elaboration: run a network's body at compile time and build its NetworkX graph.

Blocks are inlined, `repeat` is unrolled, `if` is decided, integers are computed. Each op node's shape rule
runs as the node is made, because block code may ask for a tensor's shape (`x.shape[1] != c`). A mistake in
one statement becomes a diagnostic; the names it would have bound become `POISON`, which silences the errors
that would only follow from it, so independent mistakes are all reported in one run.
"""
from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass, replace
from typing import Any

import networkx as nx

from dslc import ir
from dslc.diagnostics import Diagnostics, Span, UserError, did_you_mean
from dslc.frontend import ast as A
from dslc.frontend.modules import ModuleSet, std_block_index
from dslc.frontend.train_config import TRAIN_FUNCTIONS, TrainConfig
from dslc.ops import registry
from dslc.ops.registry import ShapeError
from dslc.types import TensorType


class _Poison:
    def __repr__(self):
        return "POISON"


POISON: Any = _Poison()


class SymDim(str):
    """A symbolic size (`N`) read from `x.shape`: known only at run time, so it is no compile-time integer."""


NONE_HINT = "`none` means absent: test for it first, e.g. `if skip != none { ... }`"
SYMBOLIC_HINT = "a symbolic size such as `N` is only known at run time; compile-time values need known sizes"


class Halt(Exception):
    """Stop elaborating the current statement: its error is already reported."""


@dataclass(frozen=True)
class Tensor:
    node: str
    index: int
    type: TensorType
    span: Span | None

    def shape_str(self) -> str:
        return self.type.shape_str()


@dataclass
class Binding:
    value: Any
    span: Span | None
    used: bool = False
    kind: str = "local"  # local | param | index


class Env:
    def __init__(self, parent: "Env | None" = None):
        self.vars: dict[str, Binding] = {}
        self.parent = parent

    def lookup(self, name: str) -> Binding | None:
        env = self
        while env is not None:
            b = env.vars.get(name)
            if b is not None:
                return b
            env = env.parent
        return None

    def names(self) -> set[str]:
        out, env = set(), self
        while env is not None:
            out |= set(env.vars)
            env = env.parent
        return out


class Scope:
    """Naming scope of one block instance or repeat iteration: hands out conv1, conv2, bn1, ..."""

    def __init__(self, path: tuple[str, ...]):
        self.path = path
        self.counters: dict[str, int] = {}
        self.taken: dict[str, Span | None] = {}

    def fresh(self, base: str) -> str:
        while True:
            n = self.counters.get(base, 0) + 1
            self.counters[base] = n
            name = f"{base}{n}"
            if name not in self.taken:
                self.taken[name] = None
                return name

    def claim(self, name: str, span: Span | None) -> str:
        if name in self.taken:
            first = self.taken[name]
            raise UserError(f"the name `{name}` is already used in this scope",
                            span, "give each layer a distinct `as` name",
                            [(first, "first used here")] if first else None)
        self.taken[name] = span
        return name

    def full(self, local: str) -> str:
        return ".".join(self.path + (local,))

    def child(self, local: str) -> "Scope":
        return Scope(self.path + (local,))


@dataclass
class Frame:
    """What the statements being run belong to: their names, the module they see, their role."""
    env: Env
    scope: Scope
    module: A.Module
    role: str = "model"
    block: A.BlockDef | None = None
    returned: list | None = None
    train: TrainConfig | None = None


class Elaborator:
    MAX_DEPTH = 64  # nested block calls
    MAX_NODES = 100_000  # nodes per network: beyond this a repeat count is surely a mistake

    def __init__(self, modules: ModuleSet, diags: Diagnostics):
        self.modules = modules
        self.diags = diags
        self.g: nx.DiGraph | None = None
        self.call_stack: list[A.BlockDef] = []
        self.call_sites: list[tuple[str, Span | None]] = []  # (block, call span) of the blocks being run
        self.unused_reported: set = set()
        self.too_big = None  # the graph that went past MAX_NODES

    # ---- entry point -------------------------------------------------------------------------------------
    def elaborate_network(self, net: A.BlockDef, overrides: dict | None = None,
                          train: A.TrainDef | None = None) -> nx.DiGraph:
        overrides = dict(overrides or {})
        self.g = g = ir.new_graph(net.name, net.module.doc, net.module.file)
        frame = Frame(Env(), Scope(()), net.module, block=net)
        for p in net.params:
            try:
                if p.name in frame.env.vars:
                    raise UserError(f"parameter `{p.name}` is declared twice", p.span, "rename one of them",
                                    [(frame.env.vars[p.name].span, "first declared here")])
                if p.type is not None:
                    if p.name in overrides:
                        overrides.pop(p.name)
                        self.diags.error(f"`{p.name}` is a tensor input of network `{net.name}` and cannot be "
                                         f"overridden", p.span, "parameter overrides set compile-time parameters "
                                         "(those with a default); feed tensor inputs when the network runs")
                    t = self.type_of(p.type)
                    ir.add_input(g, p.name, t, p.span)
                    frame.scope.taken[p.name] = p.span  # a layer named `as x` must not take an input's name
                    value = Tensor(p.name, 0, t, p.span)
                elif p.name in overrides:
                    value = overrides.pop(p.name)
                    value = A.NONE if value is None else value  # Python's None is the language's `none`
                elif p.has_default:
                    value = self.eval(p.default, frame)
                else:
                    raise UserError(f"network parameter `{p.name}` needs a type (an input such as "
                                    f"`{p.name}: f32[N, 3, 224, 224]`) or a default value", p.span)
                if p.type is None:
                    g.graph["params"][p.name] = None if value is A.NONE else value
                self.bind(frame, p.name, value, p.span, kind="param")
            except UserError as e:
                self.diags.add(e.diagnostic)
                self.bind(frame, p.name, POISON, p.span, kind="param")
        for name in overrides:
            self.diags.error(f"network `{net.name}` has no parameter `{name}`", net.span,
                             did_you_mean(name, [p.name for p in net.params]))
        if not g.graph["inputs"]:
            self.diags.error(f"network `{net.name}` has no tensor input", net.span,
                             "declare one, e.g. `network name(x: f32[N, 784])`")
        self.run_body(net.body, frame)
        self.collect_outputs(net, frame)
        if train is not None:
            self.elaborate_train(train, frame)
        self.report_unused(frame.env)
        self.check_reachability()
        return g

    def collect_outputs(self, net: A.BlockDef, frame: Frame) -> None:
        values = frame.returned
        if values is None:
            self.diags.error(f"network `{net.name}` returns nothing", net.span,
                             "end the network with `return <tensor>` naming its outputs")
            return
        for expr, value in values:
            if value is POISON:
                continue
            if not isinstance(expr, A.Name):
                self.diags.error("a network returns named tensors: give this output a name first", expr.span,
                                 "e.g. `logits = ...` then `return logits`")
                continue
            if not isinstance(value, Tensor):
                self.diags.error(f"output `{expr.id}` is not a tensor", expr.span)
                continue
            if expr.id in self.g.graph["outputs"]:
                self.diags.error(f"output `{expr.id}` is returned twice", expr.span)
                continue
            self.g.graph["outputs"][expr.id] = (value.node, value.index)
            self.g.graph.setdefault("output_spans", {})[expr.id] = expr.span

    # ---- statements ---------------------------------------------------------------------------------------
    def run_body(self, body: list, frame: Frame) -> None:
        for stmt in body:
            if frame.returned is not None:
                self.diags.warning("statement after `return` is never run", stmt.span)
                return
            try:
                self.run_stmt(stmt, frame)
            except UserError as e:
                self.diags.add(self.with_call_sites(e.diagnostic))
                self.poison_targets(stmt, frame)
            except Halt:
                self.poison_targets(stmt, frame)

    def with_call_sites(self, d):
        """A mistake inside a block also shows where the block was called from (innermost call first)."""
        sites = [(span, f"in block `{name}`, called here") for name, span in reversed(self.call_sites)
                 if span is not None]
        if len(sites) > 3:
            sites = sites[:3] + [(None, f"... and {len(sites) - 3} more enclosing block calls")]
        d.notes = list(d.notes) + sites
        return d

    def poison_targets(self, stmt, frame: Frame) -> None:
        """After a failed statement, the names it would have bound (in any branch of an `if`) hold POISON."""
        if isinstance(stmt, A.Assign):
            for name in stmt.targets:
                if name not in frame.env.vars:
                    frame.env.vars[name] = Binding(POISON, stmt.span, used=True)
        elif isinstance(stmt, A.TargetDecl):
            if stmt.name not in frame.env.vars:
                frame.env.vars[stmt.name] = Binding(POISON, stmt.span, used=True)
        elif isinstance(stmt, A.Return):
            frame.returned = [(e, POISON) for e in stmt.values]
        elif isinstance(stmt, A.If):
            bodies = [body for _, body in stmt.branches] + ([stmt.orelse] if stmt.orelse else [])
            for body in bodies:
                for sub in body:
                    if frame.returned is None or not isinstance(sub, A.Return):
                        self.poison_targets(sub, frame)

    def run_stmt(self, stmt, frame: Frame) -> None:
        if isinstance(stmt, A.Assign):
            self.run_assign(stmt, frame)
        elif isinstance(stmt, A.Return):
            if frame.train is not None:
                raise UserError("`return` is not allowed in a train section", stmt.span)
            frame.returned = [(e, self.eval(e, frame)) for e in stmt.values]
        elif isinstance(stmt, A.If):
            for test, body in stmt.branches:
                cond = self.eval(test, frame)
                if cond is POISON:
                    raise Halt()
                if not isinstance(cond, bool):
                    raise UserError(f"an `if` condition must be true or false at compile time, got "
                                    f"{describe(cond)}", test.span,
                                    "conditions compare block parameters or shapes, e.g. `stride != 1`")
                if cond:
                    self.run_body(body, frame)
                    return
            if stmt.orelse is not None:
                self.run_body(stmt.orelse, frame)
        elif isinstance(stmt, A.TargetDecl):
            if frame.train is None:
                raise UserError("`target` declarations belong in a `train { }` section", stmt.span)
            t = self.type_of(stmt.type)
            self.check_free(frame, stmt.name, stmt.span)
            if stmt.name in self.g:
                raise UserError(f"`{stmt.name}` is already the name of an input or layer of the network", stmt.span,
                                "give the target another name", [(self.g.nodes[stmt.name].get("span"),
                                                                  f"`{stmt.name}` is made here")])
            ir.add_input(self.g, stmt.name, t, stmt.span, role="target")
            self.bind(frame, stmt.name, Tensor(stmt.name, 0, t, stmt.span), stmt.span)
        else:
            raise UserError("unexpected statement", getattr(stmt, "span", None))

    def run_assign(self, stmt: A.Assign, frame: Frame) -> None:
        for name in stmt.targets:
            self.check_free(frame, name, stmt.span)
        if frame.train is not None and len(stmt.targets) == 1 and stmt.targets[0] != "loss":
            key = stmt.targets[0]
            value = self.eval(stmt.value, frame)
            frame.train.set(key, value, stmt.span, stmt.value.span)
            self.bind(frame, key, value, stmt.span, used=True)
            return
        value = self.eval(stmt.value, frame)
        if len(stmt.targets) == 1:
            self.bind(frame, stmt.targets[0], value, stmt.span, used=frame.train is not None)
            if frame.train is not None:
                self.set_loss(value, stmt, frame)
            return
        if value is POISON:
            raise Halt()
        if not isinstance(value, tuple) or len(value) != len(stmt.targets):
            n = len(value) if isinstance(value, tuple) else 1
            raise UserError(f"{len(stmt.targets)} names on the left but the right side gives {n} value"
                            f"{'s' if n != 1 else ''}", stmt.span)
        for name, v in zip(stmt.targets, value):
            self.bind(frame, name, v, stmt.span)

    def check_free(self, frame: Frame, name: str, span: Span | None) -> None:
        b = frame.env.vars.get(name)
        if b is not None:
            raise UserError(f"`{name}` is already defined; tensors are assigned once", span,
                            "pick a new name for the new value (e.g. `h2 = ...`)",
                            [(b.span, f"`{name}` was defined here")])
        if registry.get(name) is not None:
            raise UserError(f"`{name}` is the name of an op; pick another name", span)

    def bind(self, frame: Frame, name: str, value, span, kind="local", used=False) -> None:
        frame.env.vars[name] = Binding(value, span, used=used, kind=kind)

    def report_unused(self, env: Env) -> None:
        for name, b in env.vars.items():
            if not b.used and isinstance(b.value, Tensor) and b.kind == "local" and b.span is not None:
                key = (name, b.span)
                if key not in self.unused_reported:
                    self.unused_reported.add(key)
                    self.diags.warning(f"tensor `{name}` is never used", b.span,
                                       "remove it, or use it (e.g. return it or add it to a skip connection)")

    # ---- expressions --------------------------------------------------------------------------------------
    def eval(self, e, frame: Frame):
        m = getattr(self, "eval_" + type(e).__name__)
        return m(e, frame)

    def eval_Const(self, e: A.Const, frame):
        return e.value

    def eval_ListExpr(self, e: A.ListExpr, frame):
        items = [self.eval(i, frame) for i in e.items]
        return POISON if any(i is POISON for i in items) else items

    def eval_Name(self, e: A.Name, frame: Frame):
        b = frame.env.lookup(e.id)
        if b is not None:
            b.used = True
            return b.value
        if registry.get(e.id) is not None or self.modules.find_block(frame.module, e.id) is not None:
            raise UserError(f"`{e.id}` is an op or block, not a value", e.span,
                            f"call it (`{e.id}(x, ...)`) or use it in a pipeline (`x |> {e.id}`)")
        hint = did_you_mean(e.id, frame.env.names())
        if hint is not None:  # the name meant is used here: no "never used" warning for it as well
            meant = frame.env.lookup(hint.split("`")[1])
            if meant is not None:
                meant.used = True
        raise UserError(f"unknown name `{e.id}`", e.span, hint)

    def eval_Attr(self, e: A.Attr, frame):
        obj = self.eval(e.obj, frame)
        if obj is POISON:
            return POISON
        if isinstance(obj, Tensor):
            if e.name == "shape":
                return [SymDim(d) if isinstance(d, str) else d for d in obj.type.shape]
            if e.name == "rank":
                return obj.type.rank
            if e.name == "dtype":
                return obj.type.dtype
            raise UserError(f"a tensor has no attribute `{e.name}`", e.span,
                            did_you_mean(e.name, ["shape", "rank", "dtype"]) or "tensors have .shape, .rank, .dtype")
        raise UserError(f"{describe(obj)} has no attribute `{e.name}`", e.span)

    def eval_Index(self, e: A.Index, frame):
        obj, idx = self.eval(e.obj, frame), self.eval(e.index, frame)
        if obj is POISON or idx is POISON:
            return POISON
        if isinstance(obj, Tensor):
            raise UserError("tensors are not indexed with `[]`", e.span,
                            "use slice(x, axis, start, end) or split(x, sizes, axis)")
        if not isinstance(obj, (list, tuple)):
            raise UserError(f"{describe(obj)} cannot be indexed", e.span)
        if not isinstance(idx, int) or isinstance(idx, bool):
            raise UserError(f"an index must be an integer, got {describe(idx)}", e.index.span)
        if not -len(obj) <= idx < len(obj):
            raise UserError(f"index {idx} is out of range for a list of {len(obj)}", e.index.span)
        return obj[idx]

    def eval_Unary(self, e: A.Unary, frame):
        v = self.eval(e.operand, frame)
        if v is POISON:
            return POISON
        if e.op == "not":
            if not isinstance(v, bool):
                raise UserError(f"`not` needs true or false, got {describe(v)}", e.span)
            return not v
        if isinstance(v, Tensor):
            return self.tensor_binop("mul", v, -1.0, e, frame)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return -v
        raise UserError(f"cannot negate {describe(v)}", e.span, SYMBOLIC_HINT if isinstance(v, SymDim) else None)

    def eval_Cond(self, e: A.Cond, frame):
        t = self.eval(e.test, frame)
        if t is POISON:
            return POISON
        if not isinstance(t, bool):
            raise UserError(f"the condition of `? :` must be true or false, got {describe(t)}", e.test.span)
        return self.eval(e.then if t else e.orelse, frame)

    def eval_Compare(self, e: A.Compare, frame):
        a, b = self.eval(e.left, frame), self.eval(e.right, frame)
        if a is POISON or b is POISON:
            return POISON
        if (a is A.NONE or b is A.NONE) and e.op in ("==", "!="):  # `skip != none`: any value, a tensor too
            return (a is b) == (e.op == "==")
        if isinstance(a, Tensor) or isinstance(b, Tensor):
            raise UserError("tensors cannot be compared at compile time", e.span,
                            "compare shapes instead, e.g. `x.shape[1] != c`")
        try:
            return _COMPARE[e.op](a, b)
        except TypeError:
            raise UserError(f"cannot compare {describe(a)} with {describe(b)}", e.span,
                            SYMBOLIC_HINT if isinstance(a, SymDim) or isinstance(b, SymDim) else None) from None

    ARITH = {"add": "+", "sub": "-", "mul": "*", "div": "/", "floordiv": "//", "mod": "%", "pow": "**",
             "matmul": "@"}

    def eval_BinOp(self, e: A.BinOp, frame):
        if e.op in ("and", "or"):
            a = self.eval(e.left, frame)
            if a is POISON:
                return POISON
            if not isinstance(a, bool):
                raise UserError(f"`{e.op}` needs true or false, got {describe(a)}", e.left.span)
            if (e.op == "and" and not a) or (e.op == "or" and a):
                return a
            b = self.eval(e.right, frame)
            if b is not POISON and not isinstance(b, bool):
                raise UserError(f"`{e.op}` needs true or false, got {describe(b)}", e.right.span)
            return b
        chain = []  # a + b + c + ... is left-nested: fold it in a loop (long sums need no deep recursion)
        while isinstance(e, A.BinOp) and e.op not in ("and", "or"):
            chain.append(e)
            e = e.left
        a = self.eval(e, frame)
        for link in reversed(chain):
            a = self.binop(link, a, self.eval(link.right, frame), frame)
        return a

    def binop(self, e: A.BinOp, a, b, frame):
        if a is POISON or b is POISON:
            return POISON
        if isinstance(a, Tensor) or isinstance(b, Tensor):
            if e.op not in ("add", "sub", "mul", "div", "matmul"):
                raise UserError(f"`{self.ARITH[e.op]}` is not defined on tensors", e.span,
                                "tensors support + - * / and @")
            return self.tensor_binop(e.op, a, b, e, frame)
        if e.op == "matmul":
            raise UserError("`@` multiplies tensors, not numbers", e.span)
        if isinstance(a, list) and isinstance(b, list) and e.op == "add":
            return a + b
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b)):
            raise UserError(f"cannot compute {describe(a)} {self.ARITH[e.op]} {describe(b)}", e.span,
                            SYMBOLIC_HINT if isinstance(a, SymDim) or isinstance(b, SymDim) else None)
        if e.op == "pow" and abs(b) > 64:
            raise UserError(f"exponent {b} is too large (at most 64)", e.right.span)
        try:
            r = _arith(e.op, a, b)
        except ZeroDivisionError:
            raise UserError("division by zero", e.span,
                            f"the right side of `{self.ARITH[e.op]}` is 0 here") from None
        except OverflowError:
            raise UserError("the result of this arithmetic is too large", e.span) from None
        if isinstance(r, complex):
            raise UserError(f"{a:g} ** {b:g} is not a real number", e.span,
                            "a negative number has no real fractional power")
        if isinstance(r, float) and not math.isfinite(r):
            raise UserError("the result of this arithmetic is too large", e.span)
        return _check_int(r, e.span)

    def tensor_binop(self, op_name, a, b, e, frame):
        operands = []
        dtype = next(v.type.dtype for v in (a, b) if isinstance(v, Tensor))  # a number takes the tensor's dtype
        for v, sub in ((a, getattr(e, "left", e)), (b, getattr(e, "right", e))):
            if isinstance(v, Tensor):
                operands.append(v)
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                operands.append(self.make_node(registry.get("constant"), [], {"value": float(v), "dtype": dtype},
                                               e.span, frame, None))
            else:
                raise UserError(f"cannot combine a tensor with {describe(v)}", sub.span)
        return self.make_node(registry.get(op_name), operands, {}, e.span, frame, None)

    def eval_Pipeline(self, e: A.Pipeline, frame):
        chain = []  # x |> a |> b |> ... is left-nested: walk it in a loop, so long pipelines need no deep recursion
        while isinstance(e, A.Pipeline):
            chain.append(e)
            e = e.source
        value = self.eval(e, frame)
        for p in reversed(chain):
            if value is POISON:
                return POISON
            if isinstance(value, tuple):
                raise UserError(f"this pipeline carries {len(value)} values; `|>` passes one tensor", p.span,
                                "name the values first: `a, b = ...`")
            value = self.eval_repeat(p.stage, value, frame) if isinstance(p.stage, A.Repeat) \
                else self.call(p.stage, frame, piped=value)
        return value

    def eval_Call(self, e: A.Call, frame):
        return self.call(e, frame)

    def eval_Repeat(self, e: A.Repeat, frame):
        raise UserError("`repeat` is a pipeline stage: write `x |> repeat ... { ... }`", e.span)

    # ---- repeat ---------------------------------------------------------------------------------------------
    def eval_repeat(self, rep: A.Repeat, src, frame: Frame):
        stop = self.eval(rep.stop, frame)
        start = self.eval(rep.start, frame) if rep.start is not None else 0
        if stop is POISON or start is POISON:
            return POISON
        for v, ex in ((start, rep.start), (stop, rep.stop)):
            if not isinstance(v, int) or isinstance(v, bool):
                raise UserError(f"a repeat range needs integers, got {describe(v)}", (ex or rep).span,
                                SYMBOLIC_HINT if isinstance(v, SymDim) else None)
        if stop < start:
            if rep.start is None:
                raise UserError(f"a repeat count must not be negative, got {stop}", rep.stop.span)
            raise UserError(f"the repeat range {start}..{stop} runs backwards", rep.stop.span,
                            "a range a..b counts a, a+1, ..., b-1")
        if stop - start > 10000:
            raise UserError(f"repeat of {stop - start} iterations is too many (at most 10000)", rep.span)
        base = rep.alias or "repeat"
        # a repeat of one unnamed block call names each iteration's layers directly under repeat<k>
        single_block = (len(rep.stages) == 1 and isinstance(rep.stages[0], A.Call)
                        and rep.stages[0].alias is None
                        and self.modules.find_block(frame.module, rep.stages[0].func) is not None)
        value = src
        for k, i in enumerate(range(start, stop)):
            # an unnamed repeat is numbered on from earlier ones in the scope (repeat3, ...); `as` names are claimed
            local = frame.scope.claim(f"{base}{k + 1}", rep.span) if rep.alias else frame.scope.fresh(base)
            env = Env(frame.env)
            if rep.index:
                env.vars[rep.index] = Binding(i, rep.span, used=True, kind="index")
            sub = Frame(env, frame.scope.child(local), frame.module, frame.role, frame.block, train=frame.train)
            for stage in rep.stages:
                if value is POISON:
                    return POISON
                if isinstance(stage, A.Repeat):  # a repeat nested in a repeat's body
                    value = self.eval_repeat(stage, value, sub)
                else:
                    value = self.call(stage, sub, piped=value, own_scope=single_block)
        return value

    # ---- calls ----------------------------------------------------------------------------------------------
    def call(self, c: A.Call, frame: Frame, piped=None, own_scope: bool = False):
        args = [self.eval(a, frame) for a in c.args]
        kwargs = [(k, self.eval(v, frame), span) for k, v, span in c.kwargs]
        if piped is not None:
            args = [piped] + args
        if any(a is POISON for a in args) or any(v is POISON for _, v, _ in kwargs):
            return POISON
        if any(isinstance(a, list) and any(x is POISON for x in a) for a in args):
            return POISON
        seen = set()
        for k, _, span in kwargs:
            if k in seen:
                raise UserError(f"argument `{k}` is given twice", span)
            seen.add(k)
        if c.func in BUILTINS:
            if c.alias is not None:
                raise UserError(f"`as` names a layer; `{c.func}(...)` makes no layer", c.span,
                                f"remove `as {c.alias}`; a value is named by assigning it: `{c.alias} = {c.func}(...)`")
            return BUILTINS[c.func](self, c, args, kwargs)
        block = self.modules.find_block(frame.module, c.func)
        if block is not None:
            return self.call_block(block, c, args, kwargs, frame, own_scope, piped=piped is not None)
        if frame.train is not None and c.func in TRAIN_FUNCTIONS:  # before ops: `schedule = constant()`
            return frame.train.config_call(c, args, kwargs)
        op = registry.get(c.func)
        if op is not None and (op.category != "loss" or frame.role == "loss"):
            return self.call_op(op, c, args, kwargs, frame)
        if op is not None:
            raise UserError(f"`{c.func}` is a loss: use it in the `train {{ }}` section (`loss = {c.func}(...)`)",
                            c.func_span)
        where = c.func_span or c.span
        bound = frame.env.lookup(c.func)
        if bound is not None:
            bound.used = True
            raise UserError(f"`{c.func}` is {describe(bound.value)}, not an op or block", where,
                            "only ops and blocks can be called or used as a pipeline stage",
                            [(bound.span, f"`{c.func}` is defined here")] if bound.span else None)
        net = next((n for n in frame.module.networks if n.name == c.func), None)
        if net is not None:
            raise UserError(f"`{c.func}` is a network; networks cannot be called, blocks can", where,
                            f"turn it into `block {c.func}(...)` to use it inside another network",
                            [(net.span, f"`{c.func}` is defined here")])
        candidates = set(registry.all_ops()) | set(registry.ALIASES) | self.modules.visible_blocks(frame.module)
        if frame.train is not None:
            candidates |= set(TRAIN_FUNCTIONS)
        what = "function" if frame.train is not None else "op or block"
        std = std_block_index().get(c.func)
        hint = f"`{c.func}` is a block of {std}: add `import {std}` at the top of the file" if std else None
        raise UserError(f"unknown {what} `{c.func}`", where,
                        hint or did_you_mean(c.func, candidates) or "see docs/language.md for the ops dslc knows")

    def call_op(self, op: registry.Op, c: A.Call, args, kwargs, frame: Frame):
        n_in = len(op.inputs)
        tensors, rest = [], list(args)
        if op.variadic:
            if not rest:
                raise UserError(f"`{op.name}` needs a list of tensors", c.span, f"e.g. `{op.name}([a, b], axis=1)`")
            first = rest.pop(0)
            if isinstance(first, Tensor) and rest and isinstance(rest[0], list):
                first = [first] + rest.pop(0)  # x |> concat([skip])
            if isinstance(first, Tensor):
                first = [first]
            if isinstance(first, list) and A.NONE in first:
                raise UserError(f"`{op.name}` needs a list of tensors; item {first.index(A.NONE) + 1} is `none`",
                                c.span, NONE_HINT)
            if not isinstance(first, list) or not all(isinstance(t, Tensor) for t in first):
                raise UserError(f"`{op.name}` needs a list of tensors, got {describe(first)}", c.span)
            if not first:
                raise UserError(f"`{op.name}` needs at least one tensor", c.span)
            tensors = first
        else:
            for i in range(n_in):
                if not rest or not isinstance(rest[0], Tensor):
                    got = "nothing" if not rest else describe(rest[0])
                    want = ", ".join(op.inputs)
                    hint = f"pass the tensor first or pipe it: `x |> {op.name}(...)`" if n_in else None
                    raise UserError(f"`{op.name}` takes {n_in} tensor input{'s' if n_in != 1 else ''} ({want}); "
                                    f"input {i + 1} is {got}", c.span,
                                    NONE_HINT if rest and rest[0] is A.NONE else hint)
                tensors.append(rest.pop(0))
        given: dict[str, Any] = {}
        spans: dict[str, Span | None] = {}
        if len(rest) > len(op.params):
            most = f"at most {len(op.params)}" if op.params else "no"
            hint = signature_hint(op)
            if any(isinstance(v, Tensor) for v in rest):
                hint += "; in a pipeline `x |> op(...)` the piped tensor is already the first input"
            raise UserError(f"`{op.name}` takes {most} argument{'s' if len(op.params) != 1 else ''} after its "
                            f"tensor input{'s' if n_in != 1 else ''}, got {len(rest)}", c.span, hint)
        for p, v in zip(op.params, rest):
            given[p.name] = v
            spans[p.name] = c.span
        for k, v, span in kwargs:
            if op.param(k) is None:
                raise UserError(f"`{op.name}` has no argument `{k}`", span,
                                did_you_mean(k, [p.name for p in op.params]) or signature_hint(op))
            if k in given:
                raise UserError(f"argument `{k}` of `{op.name}` is given twice", span)
            given[k] = v
            spans[k] = span
        for k, v in list(given.items()):
            if v is A.NONE or (isinstance(v, list) and A.NONE in v):
                if v is A.NONE and op.param(k).default is None:
                    del given[k]  # `none` for an optional argument (default: none) leaves it out
                    continue
                raise UserError(f"argument `{k}` of `{op.name}` cannot be `none`", spans.get(k) or c.span,
                                signature_hint(op))
            if isinstance(v, Tensor) or (isinstance(v, list) and any(isinstance(x, Tensor) for x in v)):
                raise UserError(f"argument `{k}` of `{op.name}` must be a compile-time value, got a tensor",
                                spans.get(k) or c.span, signature_hint(op))
            sym = v if isinstance(v, SymDim) else next((x for x in v if isinstance(x, SymDim)), None) \
                if isinstance(v, list) else None
            if sym is not None and op.param(k).kind not in ("any", "str"):
                raise UserError(f"argument `{k}` of `{op.name}` needs a known size, got the symbolic size `{sym}`",
                                spans.get(k) or c.span, SYMBOLIC_HINT)
        return self.make_node(op, tensors, given, c.span, frame, c.alias, spans)

    def make_node(self, op: registry.Op, tensors: list[Tensor], given: dict, span: Span | None, frame: Frame,
                  alias: str | None, arg_spans: dict | None = None):
        ins = [t.type for t in tensors]
        try:
            registry.check_input_dtypes(op, ins)
            attrs = registry.resolve_attrs(op, ins, given)
            outs = op.infer(ins, attrs)
            weights = op.weights(ins, attrs)
        except TypeError as ex:
            msg = str(ex)
            where = span
            for k, s in (arg_spans or {}).items():
                if f"`{k}`" in msg and s is not None:
                    where = s
                    break
            raise UserError(msg if msg.startswith(op.name) else f"{op.name}: {msg}", where,
                            signature_hint(op)) from None
        except ShapeError as ex:
            notes = []
            for i, t in enumerate(tensors):
                if ex.operand is None or ex.operand == i or len(tensors) <= 3:
                    if t.span is not None:
                        made = "is declared here" if self.g.nodes[t.node]["op"] == "input" else "was made here"
                        notes.append((t.span, f"{describe_operand(op, i, len(tensors))} {t.type.shape_str()} {made}"))
            named = re.search(rf"\b{re.escape(op.name)}\b", ex.message[:40])  # "cannot add ...", "conv2d: ..."
            msg = ex.message if named else f"{op.name}: {ex.message}"
            raise UserError(msg, span, ex.hint, notes[:4]) from None
        local = frame.scope.claim(alias, span) if alias else frame.scope.fresh(op.short)
        name = frame.scope.full(local)
        if len(self.g) >= self.MAX_NODES:
            if self.too_big is self.g:
                raise Halt()  # reported once per network
            self.too_big = self.g
            raise UserError(f"network `{self.g.graph.get('name', '')}` has more than {self.MAX_NODES} layers",
                            span, "is a repeat count (or a network parameter used as one) too large?")
        if name in self.g:
            raise UserError(f"the name `{name}` is already used in this network", span,
                            "give this layer another `as` name", [(self.g.nodes[name].get("span"), "first used here")])
        ir.add_node(self.g, op.name, name, [(t.node, t.index) for t in tensors], attrs, outs, weights, span,
                    frame.scope.path, frame.role)
        result = [Tensor(name, i, t, span) for i, t in enumerate(outs)]
        return result[0] if len(result) == 1 else tuple(result)

    def call_block(self, block: A.BlockDef, c: A.Call, args, kwargs, frame: Frame, own_scope: bool,
                   piped: bool = False):
        if block in self.call_stack or len(self.call_stack) >= self.MAX_DEPTH:
            if block not in self.call_stack:
                raise UserError(f"blocks are nested more than {self.MAX_DEPTH} levels deep", c.span,
                                "block calls are inlined; flatten the nesting")
            cycle = self.call_stack[self.call_stack.index(block):]
            chain = " -> ".join([b.name for b in cycle] + [block.name])
            raise UserError(f"recursion between blocks: {chain}", c.span,
                            "blocks are inlined at compile time, so they cannot call themselves",
                            [(block.span, f"`{block.name}` is defined here")])
        if len(args) > len(block.params):
            raise UserError(f"block `{block.name}` takes {len(block.params)} argument"
                            f"{'s' if len(block.params) != 1 else ''}, got {len(args)}"
                            f"{' (the piped tensor is the first)' if piped else ''}", c.span,
                            block_signature(block), [(block.span, f"`{block.name}` is defined here")])
        env = Env()
        bound: dict[str, Any] = {p.name: v for p, v in zip(block.params, args)}
        for k, v, span in kwargs:
            if not any(p.name == k for p in block.params):
                raise UserError(f"block `{block.name}` has no parameter `{k}`", span,
                                did_you_mean(k, [p.name for p in block.params]) or block_signature(block))
            if k in bound:
                raise UserError(f"parameter `{k}` of `{block.name}` is given twice", span)
            bound[k] = v
        if own_scope:
            scope = frame.scope
        else:
            local = frame.scope.claim(c.alias, c.span) if c.alias else frame.scope.fresh(block.name)
            scope = frame.scope.child(local)
        sub = Frame(env, scope, block.module, frame.role, block, train=None)
        self.call_stack.append(block)
        self.call_sites.append((block.name, c.span))
        try:
            for p in block.params:
                if p.name in env.vars:
                    raise UserError(f"parameter `{p.name}` of block `{block.name}` is declared twice", p.span,
                                    "rename one of them", [(env.vars[p.name].span, "first declared here")])
                if p.name in bound:
                    value = bound[p.name]
                elif p.has_default:
                    value = self.eval(p.default, sub)
                else:
                    raise UserError(f"block `{block.name}` needs argument `{p.name}`", c.span, block_signature(block),
                                    [(block.span, f"`{block.name}` is defined here")])
                if p.type is not None:
                    self.check_block_tensor(block, p, value, c)
                env.vars[p.name] = Binding(value, p.span, used=True, kind="param")
            self.run_body(block.body, sub)
        finally:
            self.call_stack.pop()
            self.call_sites.pop()
        self.report_unused(env)
        if sub.returned is None:
            raise UserError(f"block `{block.name}` returns nothing", block.span,
                            "end the block with `return <value>`")
        values = [v for _, v in sub.returned]
        if any(v is POISON for v in values):
            return POISON
        # seen from the caller, a tensor a block returns was made by this call (notes then point here)
        values = [replace(v, span=c.span) if isinstance(v, Tensor) else v for v in values]
        return values[0] if len(values) == 1 else tuple(values)

    def check_block_tensor(self, block, p, value, c):
        want = self.type_of(p.type)
        if not isinstance(value, Tensor):
            raise UserError(f"parameter `{p.name}` of `{block.name}` is a tensor {want}, got {describe(value)}",
                            c.span, notes=[(p.span, "declared here")])
        if value.type.rank != want.rank or value.type.dtype != want.dtype:
            raise UserError(f"parameter `{p.name}` of `{block.name}` expects {want}, got {value.type}",
                            c.span, notes=[(p.span, "declared here"), (value.span, "the tensor was made here")])

    def type_of(self, t: A.TypeExpr) -> TensorType:
        for d in t.dims:
            if isinstance(d, int) and d <= 0:
                raise UserError(f"dimension {d} must be positive", t.span)
        return TensorType(tuple(t.dims), t.dtype)

    # ---- train section ----------------------------------------------------------------------------------------
    def elaborate_train(self, train: A.TrainDef, frame: Frame) -> None:
        config = TrainConfig(train.span)
        sub = Frame(Env(frame.env), Scope(("loss",)), frame.module, "loss", frame.block, train=config)
        self.run_body(train.body, sub)
        if config.loss is None and "loss" in sub.env.vars:  # `loss = ...` failed and is reported already
            config.loss_span = sub.env.vars["loss"].span
        self.g.graph["train"] = config.finish(self.diags)
        self.g.graph["loss"] = config.loss
        self.report_unused(sub.env)

    def set_loss(self, value, stmt: A.Assign, frame: Frame) -> None:
        if value is POISON:
            return
        if not isinstance(value, Tensor) or value.type.rank != 0:
            what = f"a tensor {value.type}" if isinstance(value, Tensor) else describe(value)
            raise UserError(f"`loss` must be a scalar, got {what}", stmt.value.span,
                            "use a loss op: mse(...), bce(...), cross_entropy(...)")
        frame.train.loss = (value.node, value.index)
        frame.train.loss_span = stmt.span

    # ---- checks on the finished graph -----------------------------------------------------------------------
    def check_reachability(self) -> None:
        g = self.g
        inputs = set(g.graph["inputs"])
        if not inputs:
            return  # "has no tensor input" is reported already
        for name, (node, _idx) in g.graph["outputs"].items():
            if node in inputs:
                continue
            if not (nx.ancestors(g, node) & inputs):
                span = g.graph.get("output_spans", {}).get(name)
                self.diags.error(f"output `{name}` does not depend on any input", span,
                                 "an output computed only from parameters and constants is the same for every input")


def describe(v) -> str:
    if v is None:
        return "nothing"
    if v is A.NONE:
        return "`none`"
    if isinstance(v, Tensor):
        return f"a tensor {v.type}"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return f"the integer {v}"
    if isinstance(v, float):
        return f"the number {v:g}"
    if isinstance(v, SymDim):
        return f"the symbolic size `{v}`"
    if isinstance(v, str):
        return f'the string "{v}"'
    if isinstance(v, tuple):
        return f"{len(v)} values"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return f"`{v.get('name', 'config')}(...)`"
    return type(v).__name__


def describe_operand(op: registry.Op, i: int, n: int = 0) -> str:
    if op.variadic:
        return f"input {i + 1} of {n}" if n else f"input {i + 1}"
    if len(op.inputs) == 1:
        return "the input"
    if op.category == "elementwise" or op.name == "matmul":
        return "the left operand" if i == 0 else "the right operand"
    if i < len(op.inputs):
        return f"the `{op.inputs[i]}` input"
    return f"input {i + 1}"


def signature_hint(op: registry.Op) -> str:
    parts = list(op.inputs)
    for p in op.params:
        parts.append(p.name if p.default is registry.REQUIRED else f"{p.name}={_show_default(p.default)}")
    return f"signature: {op.name}({', '.join(parts)})"


def block_signature(block: A.BlockDef) -> str:
    return f"signature: block {block.name}({', '.join(p.name for p in block.params)})"


def _show_default(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if v is None:
        return "none"
    return str(v)


def _arith(op: str, a, b):
    if op == "add":
        return a + b
    if op == "sub":
        return a - b
    if op == "mul":
        return a * b
    if op == "div":
        r = a / b
        return int(r) if isinstance(a, int) and isinstance(b, int) and r == int(r) else r
    if op == "floordiv":
        return a // b
    if op == "mod":
        return a % b
    if op == "pow":
        return a ** b
    raise AssertionError(op)


_COMPARE = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
            ">=": operator.ge}

INT_LIMIT = 2 ** 63 - 1


def _check_int(v, span):
    """Compile-time integers stay within i64 (sizes, counts, indices); bigger ones are a mistake."""
    if isinstance(v, int) and not isinstance(v, bool) and not -INT_LIMIT <= v <= INT_LIMIT:
        raise UserError("this integer is too large (more than 64 bits)", span)
    return v


# ---- compile-time builtins ----------------------------------------------------------------------------------
def _b_len(el, c, args, kwargs):
    if kwargs or len(args) != 1 or not isinstance(args[0], (list, tuple)):
        raise UserError("len(list) takes one list", c.span)
    return len(args[0])


def _b_minmax(fn):
    def f(el, c, args, kwargs):
        vals = args[0] if len(args) == 1 and isinstance(args[0], list) else args
        if kwargs or not vals or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            raise UserError(f"{c.func}() takes numbers", c.span)
        return fn(vals)
    return f


def _b_int(el, c, args, kwargs):
    if kwargs or len(args) != 1 or not isinstance(args[0], (int, float)) or isinstance(args[0], bool):
        raise UserError("int() takes one number", c.span)
    if isinstance(args[0], float) and not math.isfinite(args[0]):
        raise UserError(f"int() of {describe(args[0])}", c.span)
    return _check_int(int(args[0]), c.span)


BUILTINS = {"len": _b_len, "min": _b_minmax(min), "max": _b_minmax(max), "int": _b_int}
