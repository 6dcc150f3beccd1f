"""Elaboration: run a network's body at compile time and build its NetworkX graph.

Blocks are inlined, `repeat` is unrolled, `if` is decided, integers are computed. Each op node's shape rule
runs as the node is made, because block code may ask for a tensor's shape (`x.shape[1] != c`). A mistake in
one statement becomes a diagnostic; the names it would have bound become `POISON`, which silences the errors
that would only follow from it, so independent mistakes are all reported in one run.
"""
from __future__ import annotations

import networkx as nx

from dslc import ir
from dslc.diagnostics import Diagnostics, Span, UserError, did_you_mean
from dslc.frontend import ast as A
from dslc.frontend.calls import CallsMixin
from dslc.frontend.expressions import BUILTINS, ExpressionsMixin  # noqa: F401 (BUILTINS: the builtins' table)
from dslc.frontend.modules import ModuleSet
from dslc.frontend.train_config import KEYS as TRAIN_KEYS
from dslc.frontend.train_section import TrainSectionMixin
from dslc.frontend.values import POISON, Binding, Env, Frame, Halt, Scope, Tensor, describe
from dslc.ops import registry
from dslc.types import TensorType


class Elaborator(ExpressionsMixin, CallsMixin, TrainSectionMixin):
    """Runs networks' bodies into graphs. Its methods live in one file per seam: expressions.py (eval_*),
    calls.py (ops, blocks, repeat), train_section.py; this file holds the statements, bindings and checks."""
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
        # a train section's settings (`clip = 1.0`) are keys, not tensors: they may share an op's name
        if registry.get(name) is not None and not (frame.train is not None and name in TRAIN_KEYS):
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

    def type_of(self, t: A.TypeExpr) -> TensorType:
        for d in t.dims:
            if isinstance(d, int) and d <= 0:
                raise UserError(f"dimension {d} must be positive", t.span)
        return TensorType(tuple(t.dims), t.dtype)

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
