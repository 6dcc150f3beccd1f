"""What elaboration computes with: tensors and bindings, environments and frames, and how values are described
in messages. No elaboration logic here (train_config and the elaborator both read it)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dslc.diagnostics import Span, UserError
from dslc.frontend import ast as A
from dslc.ops import registry
from dslc.types import TensorType

if TYPE_CHECKING:   # train_config reads this module's `describe`; the annotation alone needs TrainConfig
    from dslc.frontend.train_config import TrainConfig




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
