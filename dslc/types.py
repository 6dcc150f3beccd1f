"""Tensor types of the IR: a shape of dims (int when known, str when symbolic) and a dtype name."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

Dim = Union[int, str]

DTYPES = ("f32", "f64", "i64", "i32", "bool")
NUMPY_DTYPE = {"f32": "float32", "f64": "float64", "i64": "int64", "i32": "int32", "bool": "bool"}


@dataclass(frozen=True)
class TensorType:
    shape: tuple[Dim, ...]
    dtype: str = "f32"

    @property
    def rank(self) -> int:
        return len(self.shape)

    def with_shape(self, shape) -> "TensorType":
        return TensorType(tuple(shape), self.dtype)

    def is_concrete(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    def __str__(self) -> str:
        return f"{self.dtype}[{', '.join(str(d) for d in self.shape)}]"

    def shape_str(self) -> str:
        return "[" + ", ".join(str(d) for d in self.shape) + "]"


def is_known(d: Dim) -> bool:
    return isinstance(d, int)


def _wrap(d: Dim) -> str:
    s = str(d)
    return s if s.isidentifier() or s.lstrip("-").isdigit() else f"({s})"


def dim_add(a: Dim, b: Dim) -> Dim:
    if is_known(a) and is_known(b):
        return a + b
    if b == 0:
        return a
    if a == 0:
        return b
    return f"{_wrap(a)}+{_wrap(b)}"


def dim_mul(a: Dim, b: Dim) -> Dim:
    if is_known(a) and is_known(b):
        return a * b
    if a == 1:
        return b
    if b == 1:
        return a
    return f"{_wrap(a)}*{_wrap(b)}"


def dim_floordiv(a: Dim, b: Dim) -> Dim:
    if is_known(a) and is_known(b):
        return a // b
    if b == 1:
        return a
    return f"{_wrap(a)}//{_wrap(b)}"


def dims_product(dims) -> Dim:
    out: Dim = 1
    for d in dims:
        out = dim_mul(out, d)
    return out


def broadcast_shapes(a: tuple[Dim, ...], b: tuple[Dim, ...]) -> tuple[Dim, ...] | None:
    """numpy broadcasting over possibly symbolic dims; None when incompatible."""
    out = []
    for i in range(max(len(a), len(b))):
        da = a[len(a) - 1 - i] if i < len(a) else 1
        db = b[len(b) - 1 - i] if i < len(b) else 1
        if da == db:
            out.append(da)
        elif da == 1:
            out.append(db)
        elif db == 1:
            out.append(da)
        else:
            return None
    return tuple(reversed(out))
