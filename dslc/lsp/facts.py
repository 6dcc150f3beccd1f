"""What the elaborator computed, kept for the editor: the values bound to each name, where each name reference
was bound, and the graph nodes each op or block call made.

`RecordingElaborator` is the compiler's own Elaborator with four methods wrapped; nothing is computed twice.
A block body runs once per call, so one place in the source can have several values (one per instance):
each key maps to a list, capped at MAX_VALUES.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from dslc.diagnostics import Span
from dslc.frontend.elaborate import Elaborator

MAX_VALUES = 64


@dataclass
class CallFact:
    """One elaborated call: `func` at `span` (its name), in network `network`, made graph nodes `nodes`."""
    func: str
    kind: str  # op | block
    span: Span
    network: str
    nodes: list[str]
    value: Any
    block: Any = None  # the BlockDef for a block call


@dataclass
class Facts:
    calls: dict[Span, list[CallFact]] = field(default_factory=lambda: defaultdict(list))
    # (definition span, name) -> values; the span is the binding's (a statement, a parameter, a repeat)
    defs: dict[tuple[Span, str], list] = field(default_factory=lambda: defaultdict(list))
    refs: dict[Span, tuple[Span, str]] = field(default_factory=dict)  # name reference -> its definition key
    graphs: dict = field(default_factory=dict)  # network name -> graph (also of networks that had errors)

    def add_value(self, key, value) -> None:
        values = self.defs[key]
        if len(values) < MAX_VALUES:
            values.append(value)


class RecordingElaborator(Elaborator):
    def __init__(self, modules, diags):
        super().__init__(modules, diags)
        self.facts = Facts()

    def elaborate_network(self, net, overrides=None, train=None):
        g = super().elaborate_network(net, overrides, train)
        self.facts.graphs[net.name] = g
        return g

    def bind(self, frame, name, value, span, kind="local", used=False):
        super().bind(frame, name, value, span, kind, used)
        if span is not None:
            self.facts.add_value((span, name), value)

    def eval_Name(self, e, frame):
        value = super().eval_Name(e, frame)
        b = frame.env.lookup(e.id)
        if b is not None and b.span is not None and e.span is not None:
            key = (b.span, e.id)
            self.facts.refs[e.span] = key
            if b.kind != "local":  # block parameters and repeat indices are bound without `bind`
                self.facts.add_value(key, value)
        return value

    def call_op(self, op, c, args, kwargs, frame):
        n0 = len(self.g)
        value = super().call_op(op, c, args, kwargs, frame)
        self._record(c, "op", n0, value, None)
        return value

    def call_block(self, block, c, args, kwargs, frame, own_scope, piped=False):
        n0 = len(self.g)
        value = super().call_block(block, c, args, kwargs, frame, own_scope, piped)
        self._record(c, "block", n0, value, block)
        return value

    def _record(self, c, kind, n0, value, block) -> None:
        span = c.func_span or c.span
        if span is None:
            return
        facts = self.facts.calls[span]
        if len(facts) < MAX_VALUES:
            facts.append(CallFact(c.func, kind, span, self.g.graph["name"], list(islice(self.g, n0, None)),
                                  value, block))
