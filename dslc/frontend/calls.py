"""Elaboration of calls: ops (one graph node each, its shape rule run at once), blocks (inlined in their own
scope) and `repeat` (unrolled)."""
from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from dslc import ir
from dslc.diagnostics import Span, UserError, did_you_mean
from dslc.frontend import ast as A
from dslc.frontend.expressions import BUILTINS
from dslc.frontend.modules import std_block_index
from dslc.frontend.train_config import TRAIN_FUNCTIONS
from dslc.frontend.values import (NONE_HINT, POISON, SYMBOLIC_HINT, Binding, Env, Frame, Halt, SymDim, Tensor,
                                  block_signature, describe, describe_operand, signature_hint)
from dslc.ops import registry
from dslc.ops.registry import ShapeError


def _recorded(value):
    """A block argument or result as the IR records it (ir.BlockCall): tensors by (node, output index)."""
    if isinstance(value, Tensor):
        return (value.node, value.index)
    if isinstance(value, (list, tuple)):
        return [_recorded(v) for v in value]
    return value if isinstance(value, (int, float, str, bool)) or value is None else repr(value)


class CallsMixin:
    """The Elaborator's call, block and repeat methods (dslc/frontend/elaborate.py)."""

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
        # `max(3, k)` is the compile-time builtin; `max(x, axis=1)` on a tensor is the reduction op
        if c.func in BUILTINS and not any(isinstance(a, Tensor) for a in args):
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
        self.g.graph.setdefault("blocks", {})[".".join(scope.path)] = ir.BlockCall(
            block.name, scope.path, block.span, c.span,
            tuple((p.name, _recorded(env.vars[p.name].value)) for p in block.params if p.name in env.vars),
            tuple(_recorded(v) for v in values))
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
