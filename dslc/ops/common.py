"""Shared helpers for the op families' shape rules (dim arithmetic, axes, tuples, messages).

Symbolic dims are strings; MACs are counted at batch 1 by treating every symbolic dim as 1.
"""
from __future__ import annotations

from dslc.ops.registry import ShapeError
from dslc.types import Dim, TensorType, dim_floordiv, dims_product, is_known

FLOAT_DTYPES = ("f32", "f64")
INT_DTYPES = ("i64", "i32")


def dim_offset(d: Dim, c: int) -> Dim:
    """d + c for a possibly symbolic dim d and an int c (renders "H-2", not "H+-2")."""
    if is_known(d):
        return d + c
    if c == 0:
        return d
    return f"{d}{'+' if c > 0 else '-'}{abs(c)}"  # appending +-c needs no parentheses


def dim1(d: Dim) -> int:
    """A dim for MAC counting: symbolic dims count as 1 (MACs are reported at batch 1)."""
    return d if is_known(d) else 1


def numel1(shape) -> int:
    n = 1
    for d in shape:
        n *= dim1(d)
    return n


def shp(t) -> str:
    """Shape text for messages: [N, 64, 28, 28]."""
    if isinstance(t, TensorType):
        return t.shape_str()
    return "[" + ", ".join(str(d) for d in t) + "]"


def norm_axis(axis: int, rank: int, what: str = "axis") -> int:
    if not -rank <= axis < rank:
        raise ShapeError(f"{what} {axis} is out of range for a rank-{rank} input (valid: {-rank}..{rank - 1})"
                         if rank else f"{what} {axis} is out of range for a scalar input")
    return axis % rank


def ntuple(value, n: int, name: str) -> tuple[int, ...]:
    """An int or a tuple of 1 or n ints as a tuple of n ints (TypeError otherwise)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,) * n
    value = tuple(value)
    if len(value) == 1:
        return value * n
    if len(value) != n:
        raise TypeError(f"`{name}` must be an integer or a list of {n} integers, got {list(value)}")
    return value


def check_positive(attrs: dict, *names: str) -> None:
    """Size-like arguments (an int, or a tuple of ints after ntuple) must be > 0 (TypeError otherwise)."""
    for n in names:
        v = attrs[n]
        if isinstance(v, int):
            if v <= 0:
                raise TypeError(f"`{n}` must be a positive integer, got {v}")
        elif any(x <= 0 for x in v):
            raise TypeError(f"`{n}` must be positive, got {list(v)}")


def require_rank(t: TensorType, ranks, what: str, operand: int = 0, layout: str = "") -> None:
    if t.rank not in ranks:
        want = " or ".join(str(r) for r in ranks) if len(ranks) <= 3 else f"{min(ranks)}..{max(ranks)}"
        lay = f" ({layout})" if layout else ""
        raise ShapeError(f"{what} expects a rank-{want} input{lay}, got {shp(t)} (rank {t.rank})",
                         hint=_reshape_hint(t, max(ranks)), operand=operand)


def _reshape_hint(t: TensorType, want: int) -> str | None:
    """For a flat [N, K] input to an image op: the reshape that would give it a channel and square spatial dims."""
    if t.rank != 2 or want != 4 or not is_known(t.shape[1]):
        return None
    k = t.shape[1]
    for c in (1, 3):
        side = int(round((k // c) ** 0.5))
        if k % c == 0 and side * side * c == k:
            return f"give the input its image layout first, e.g. `x |> reshape([0, {c}, {side}, {side}])`"
    return "give the input its image layout first with reshape([0, C, H, W])"


def require_known(d: Dim, what: str, t: TensorType, operand: int = 0) -> int:
    if not is_known(d):
        raise ShapeError(f"{what} must be a known size to size the weights, got `{d}` in {shp(t)}",
                         hint="only batch-like dims may be symbolic; give this dim a concrete size",
                         operand=operand)
    return d


def window_out(n: Dim, k: int, s: int, d: int, pb: int, pe: int, ceil_mode: bool = False) -> Dim:
    """Output length of a sliding window (conv / pool) over length n, PyTorch/ONNX rules incl. ceil_mode
    (with ceil_mode the last window must start inside the input plus the left pad)."""
    eff = d * (k - 1) + 1
    if is_known(n):
        num = n + pb + pe - eff
        if ceil_mode:
            out = -(-num // s) + 1
            if (out - 1) * s >= n + pb:
                out -= 1
        else:
            out = num // s + 1
        return out
    if s == 1:
        return dim_offset(n, pb + pe - eff + 1)
    # symbolic: (n + pads - eff [+ s - 1]) // s + 1; the ceil-mode correction (a window starting past the
    # input) cannot be decided symbolically and only matters when stride > the dilated kernel extent
    num = dim_offset(n, pb + pe - eff + ((s - 1) if ceil_mode else 0))
    return dim_offset(dim_floordiv(num, s), 1)


def dim_ceildiv(n: Dim, s: int) -> Dim:
    """ceil(n / s) for a possibly symbolic n."""
    if is_known(n):
        return -(-n // s)
    return dim_floordiv(dim_offset(n, s - 1), s)


def same_pads(sizes, kernel, stride, dilation):
    """ONNX SAME_UPPER pads (begin..., end...) giving output ceil(in / stride); the extra pad goes at the end.
    Returns None when a needed size is symbolic (stride > 1 over a symbolic dim) -- compute at run time then."""
    begins, ends = [], []
    for n, k, s, d in zip(sizes, kernel, stride, dilation):
        eff = d * (k - 1) + 1
        if s == 1:
            total = eff - 1
        elif is_known(n):
            out = -(-n // s)
            total = max((out - 1) * s + eff - n, 0)
        else:
            return None
        begins.append(total // 2)
        ends.append(total - total // 2)
    return tuple(begins + ends)


def explicit_pads(padding, n: int, name: str = "padding") -> tuple[int, ...]:
    """int / list of n (symmetric per dim) / list of 2n (ONNX order begin..., end...) / "valid" -> 2n pads."""
    if padding == "valid":
        return (0,) * (2 * n)
    if isinstance(padding, int) and not isinstance(padding, bool):
        padding = (padding,)
    p = tuple(padding)
    if len(p) == 1:
        pads = p * (2 * n)
    elif len(p) == n:
        pads = p + p
    elif len(p) == 2 * n:
        pads = p
    else:
        raise TypeError(f"`{name}` must be an integer, a list of {n} integers (per spatial dim) or of {2 * n} "
                        f"(begin..., end...), got {list(p)}")
    if any(v < 0 for v in pads):
        raise TypeError(f"`{name}` must not be negative, got {list(p)}")
    return pads


__all__ = ["FLOAT_DTYPES", "INT_DTYPES", "check_positive", "dim_offset", "dim1", "numel1", "shp", "norm_axis", "ntuple",
           "require_rank", "require_known", "window_out", "dim_ceildiv", "same_pads", "explicit_pads", "dims_product"]
