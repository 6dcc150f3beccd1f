"""Elaboration of expressions: names, attributes, indexing, arithmetic on compile-time values and on tensors,
comparisons, conditionals, pipelines, and the compile-time builtins (len, min, max, int)."""
from __future__ import annotations

import math
import operator

from dslc.diagnostics import UserError, did_you_mean
from dslc.frontend import ast as A
from dslc.frontend.values import POISON, SYMBOLIC_HINT, Frame, SymDim, Tensor, describe
from dslc.ops import registry


class ExpressionsMixin:
    """The Elaborator's `eval_*` methods (dslc/frontend/elaborate.py)."""

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
