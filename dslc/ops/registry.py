"""The op registry: one entry per op holds everything dslc knows about it.

An entry carries its signature (tensor inputs and keyword parameters), its shape rule, its learned weights,
its MAC count and the representative cases the registry-driven tests run. Later phases fill in the same
entry: `lower` (ONNX), `forward` and `vjp` (numpy executor). Adding an op = one `register(Op(...))`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from dslc.types import TensorType


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

# Parameter kinds understood by the elaborator's argument checker.
#   int, float, bool, str         scalars (float accepts int)
#   int2                          int or list of 2 ints, normalised to a tuple of 2 (kernel, stride, ...)
#   ints                          int or list of ints, normalised to a tuple
#   padding                       int, list of ints, or "same" / "valid"
#   shape                         list of ints (may contain -1) for reshape / param
#   choice                        one of `choices` (strings)
#   any                           passed through
PARAM_KINDS = {"int", "float", "bool", "str", "int2", "ints", "padding", "shape", "choice", "any"}


@dataclass(frozen=True)
class Param:
    name: str
    kind: str
    default: Any = REQUIRED
    choices: tuple = ()
    doc: str = ""


@dataclass(frozen=True)
class WeightSpec:
    """A learned (or running-statistics) tensor owned by a node; named `<node name>.<key>` in ONNX."""
    shape: tuple[int, ...]
    init: str  # "fan_in" (He or Xavier, decided per network), "zeros", "ones", "normal:<std>", "uniform:<a>"
    trainable: bool = True
    fan_in: int = 0
    fan_out: int = 0


class ShapeError(Exception):
    """A shape rule's complaint. `operand` names the input index to blame (its producer is quoted)."""

    def __init__(self, message: str, hint: str | None = None, operand: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.operand = operand


@dataclass(frozen=True)
class Case:
    """A representative use of an op for the registry-driven tests: input types and arguments."""
    inputs: tuple[TensorType, ...]
    attrs: dict = field(default_factory=dict)
    note: str = ""


def _no_weights(ins, attrs):
    return {}


def _no_macs(ins, outs, attrs):
    return 0


@dataclass
class Op:
    name: str
    inputs: tuple[str, ...]                 # tensor inputs; "*xs" = a list of tensors (concat)
    infer: Callable[[list[TensorType], dict], list[TensorType]]
    params: tuple[Param, ...] = ()
    prepare: Callable[[list[TensorType], dict], dict] | None = None  # normalise attrs (e.g. "same" -> pads)
    weights: Callable[[list[TensorType], dict], dict[str, WeightSpec]] = _no_weights
    macs: Callable[[list[TensorType], list[TensorType], dict], int] = _no_macs
    short: str = ""                          # prefix of auto-generated node names: conv1, bn1, fc1
    category: str = "layer"                  # layer | activation | elementwise | shape | source | loss
    doc: str = ""
    cases: list[Case] = field(default_factory=list)
    int_inputs: tuple[int, ...] = ()          # input slots that take integer ids (embedding); the rest are f32
    # Filled by later phases, in this same entry:
    lower: Callable | None = None
    forward: Callable | None = None
    vjp: Callable | None = None
    torch: Callable | None = None            # PyTorch lowering (dslc/torchgen), see the contract below
    # False: the vjp reads only its inputs' shapes and dtypes (besides what forward saved), so the executor does
    # not keep the input arrays alive for the backward pass (it passes zero-strided stand-ins of the same
    # shape and dtype): relu after batchnorm, the residual add (tests/ops/test_vjp.py checks the claim)
    vjp_reads_inputs: bool = True

    def __post_init__(self):
        if not self.short:
            self.short = self.name
        for p in self.params:
            assert p.kind in PARAM_KINDS, (self.name, p)

    @property
    def variadic(self) -> bool:
        return bool(self.inputs) and self.inputs[0].startswith("*")

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)


REGISTRY: dict[str, Op] = {}
ALIASES: dict[str, str] = {}


def register(op: Op, aliases: tuple[str, ...] = ()) -> Op:
    assert op.name not in REGISTRY, op.name
    REGISTRY[op.name] = op
    for a in aliases:
        ALIASES[a] = op.name
    return op


def get(name: str) -> Op | None:
    _load_all()
    return REGISTRY.get(ALIASES.get(name, name))


def all_ops() -> dict[str, Op]:
    _load_all()
    return REGISTRY


_loaded = False


def _load_all():
    global _loaded
    if not _loaded:
        _loaded = True
        import dslc.ops  # noqa: F401  (its __init__ imports every op family)


# ---- executor contract (filled in by the training issue) -------------------------------------------------
# forward(ctx, xs, ws, attrs) -> (ys, saved)
#     ctx: ExecContext (ctx.training: bool, ctx.rng: np.random.Generator); xs: list of float32 arrays in slot
#     order; ws: dict key -> array (the node's weights; batchnorm updates its running stats in place when
#     training); returns the list of outputs and whatever the VJP needs.
# vjp(ctx, gys, saved, xs, ws, attrs) -> (gxs, gws)
#     gys: list of output gradients (None where an output gets no gradient); returns input gradients in slot
#     order (None for non-differentiable inputs such as integer targets) and a dict of weight gradients.
#     None also means "zero" (expand_batch's `like`) or "not wanted": ctx.needs_input_grad (per input slot,
#     set by the executor; dslc.kernels.nn.wants(ctx, i)) lets a vjp skip input gradients nobody uses.
#     Weight gradients are keyed like ws, trainable keys only (batchnorm: weight, bias -- not running stats).
#     An op registered with vjp_reads_inputs=False gets, in xs, read-only stand-ins with the inputs' shapes and
#     dtypes only (dslc.ops.registry.stand_in).
# Outputs and gradients may be views of inputs (reshape, transpose, slice, split, dropout/eval returns x
# itself, param returns its weight array): callers never write into arrays they did not allocate.
# Kernels keep the inputs' float dtype (float32 training, float64 gradient checks): see dslc/kernels/.
# lower(ctx, node) -> None  (ONNX issue; see dslc/lowering)
# torch(e) -> str  (dslc/torchgen/codegen.py Emit): one Python expression computing the op's output (a tuple
#     expression for several) in the generated PyTorch module, from e.x(i) / e.xs (the inputs' variable names),
#     e.w(key) (the node's weight), e.a (attrs), e.in_types / e.out_types, e.training ("self.training") and
#     e.helper(name) (a function of dslc/torchgen/helpers.py pasted into the module). It must compute what
#     `forward` computes (tests/torchgen checks every case to 1e-5, and autograd's gradients against `vjp`).


def stand_in(x):
    """What a vjp_reads_inputs=False vjp gets for input x: an array of x's shape and dtype that holds no memory
    (one zero, broadcast)."""
    if isinstance(x, np.ndarray):
        return np.broadcast_to(np.zeros((), x.dtype), x.shape)
    return x


def coerce_param(p: Param, value: Any) -> Any:
    """Check one argument against its parameter kind; return the normalised value or raise TypeError."""
    k = p.kind
    if k == "any":
        return value
    if k == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"`{p.name}` must be an integer, got {_show(value)}")
        return value
    if k == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"`{p.name}` must be a number, got {_show(value)}")
        return float(value)
    if k == "bool":
        if not isinstance(value, bool):
            raise TypeError(f"`{p.name}` must be true or false, got {_show(value)}")
        return value
    if k == "str":
        if not isinstance(value, str):
            raise TypeError(f"`{p.name}` must be a string, got {_show(value)}")
        return value
    if k == "choice":
        if value not in p.choices:
            raise TypeError(f"`{p.name}` must be one of {', '.join(_show(c) for c in p.choices)}, got {_show(value)}")
        return value
    if k in ("int2", "ints", "shape", "padding"):
        if k == "padding" and isinstance(value, str):
            if value not in ("same", "valid"):
                raise TypeError(f"`{p.name}` must be an integer, a list of integers, \"same\" or \"valid\", "
                                f"got {_show(value)}")
            return value
        if isinstance(value, int) and not isinstance(value, bool) and k != "shape":
            return (value, value) if k in ("int2", "padding") else (value,)
        if isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            if k == "int2" and len(value) != 2:
                raise TypeError(f"`{p.name}` must be an integer or a list of 2 integers, got {_show(value)}")
            return tuple(value)
        raise TypeError(f"`{p.name}` must be {'a list of integers' if k == 'shape' else 'an integer or a list of integers'}, "
                        f"got {_show(value)}")
    raise AssertionError(k)


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if hasattr(value, "shape_str"):
        return f"a tensor {value}"
    return repr(value)


# Layers and activations compute in float32: the executor is float32 throughout, and onnxruntime has no
# integer (and for some ops no float64) kernels for them -- so the mistake is caught here, at its line.
FLOAT32_ONLY = ("layer", "activation")


def check_input_dtypes(op: Op, ins: list[TensorType]) -> None:
    """The front end's dtype rule for user programs (kernel tests run the same ops in float64 on purpose)."""
    if op.category not in FLOAT32_ONLY:
        return
    for i, t in enumerate(ins):
        if i in op.int_inputs:
            continue  # the op's own shape rule checks these are integers
        if t.dtype != "f32":
            raise ShapeError(f"`{op.name}` computes in f32, but its input is {t}",
                             "declare the input as f32[...] (integer labels belong in a train section's target)",
                             operand=i)


def resolve_attrs(op: Op, ins: list[TensorType], given: dict) -> dict:
    """Fill defaults, coerce kinds, then let the op normalise. Raises TypeError / ShapeError for the caller."""
    attrs = {}
    for p in op.params:
        if p.name in given:
            attrs[p.name] = coerce_param(p, given[p.name])
        elif p.default is REQUIRED:
            raise TypeError(f"{op.name}: missing required argument `{p.name}`")
        else:
            attrs[p.name] = p.default
    unknown = set(given) - {p.name for p in op.params}
    if unknown:
        raise TypeError(f"{op.name}: unknown argument `{sorted(unknown)[0]}`")
    if op.prepare is not None:
        attrs = op.prepare(ins, attrs)
    return attrs
