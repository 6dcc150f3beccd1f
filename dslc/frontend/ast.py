"""AST of the .net language. Class names mirror the grammar aliases in grammars/dslc.lark."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dslc.diagnostics import Span


@dataclass
class Node:
    span: Span | None = field(default=None, kw_only=True, repr=False, compare=False)


# ---- expressions -------------------------------------------------------------------------------------------
class _NoneValue:
    """The value of the `none` literal: "absent" (e.g. a block parameter's default when nothing is passed).
    A singleton distinct from Python's None, which the elaborator uses for "no value given"."""

    def __repr__(self):
        return "none"

    def __reduce__(self):  # copies and pickles stay the singleton
        return "NONE"


NONE: Any = _NoneValue()


@dataclass
class Name(Node):
    id: str


@dataclass
class Const(Node):
    value: Any  # int, float, str, bool or NONE


@dataclass
class ListExpr(Node):
    items: list


@dataclass
class BinOp(Node):
    op: str  # add sub mul div floordiv mod matmul pow and or
    left: Any
    right: Any


@dataclass
class Compare(Node):
    op: str
    left: Any
    right: Any


@dataclass
class Unary(Node):
    op: str  # neg not
    operand: Any


@dataclass
class Cond(Node):
    test: Any
    then: Any
    orelse: Any


@dataclass
class Call(Node):
    func: str
    args: list
    kwargs: list  # list of (name, expr, span)
    alias: str | None = None
    func_span: Span | None = None


@dataclass
class Attr(Node):
    obj: Any
    name: str


@dataclass
class Index(Node):
    obj: Any
    index: Any


@dataclass
class Pipeline(Node):
    source: Any
    stage: Any  # Call (piped value becomes its first argument) or Repeat


@dataclass
class Repeat(Node):
    index: str | None
    start: Any  # expr (None when a plain count is given)
    stop: Any  # expr: the end of the range, or the count
    alias: str | None
    stages: list  # Call or nested Repeat, in pipeline order


# ---- statements ----------------------------------------------------------------------------------------------
@dataclass
class Assign(Node):
    targets: list[str]
    value: Any


@dataclass
class Return(Node):
    values: list


@dataclass
class If(Node):
    branches: list  # list of (test expr, body)
    orelse: list | None


@dataclass
class TargetDecl(Node):
    name: str
    type: "TypeExpr"


# ---- declarations ------------------------------------------------------------------------------------------
@dataclass
class TypeExpr(Node):
    dtype: str
    dims: list  # int or str


@dataclass
class Param(Node):
    name: str
    type: TypeExpr | None = None
    default: Any = None
    has_default: bool = False


@dataclass
class BlockDef(Node):
    name: str
    params: list[Param]
    body: list
    kind: str = "block"  # block | network
    module: Any = field(default=None, repr=False, compare=False)


@dataclass
class TrainDef(Node):
    network: str | None
    body: list


@dataclass
class Import(Node):
    target: str
    std: bool


@dataclass
class Module(Node):
    file: str
    doc: str
    imports: list[Import]
    blocks: list[BlockDef]
    networks: list[BlockDef]
    trains: list[TrainDef]
