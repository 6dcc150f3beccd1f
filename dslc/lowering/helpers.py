"""Helpers shared by the ops' `lower` functions (imported lazily inside them: onnx stays out of `dslc check`)."""
from __future__ import annotations

from dslc.types import TensorType


def reshape_spec(src: TensorType, dst: TensorType) -> list[int] | None:
    """A constant ONNX Reshape shape turning `src` into `dst` (0 = copy the input dim at that position, one -1
    = the rest), or None when symbolic dims need a shape computed at run time."""
    spec: list[int] = []
    free = 0
    for i, d in enumerate(dst.shape):
        if isinstance(d, int):
            if d == 0:
                return None  # ONNX would read 0 as "copy the input dim"
            spec.append(d)
        elif i < src.rank and src.shape[i] == d:
            spec.append(0)
        else:
            spec.append(-1)
            free += 1
    return spec if free <= 1 else None


def reshape(ctx, x: str, src: TensorType, dst: TensorType, out: str | None = None) -> str:
    """Emit the single Reshape (constant shape) that gives `dst`; falls back to a run-time shape
    (Shape/Slice/Concat) only when two or more output dims are symbolic and not positionally copied."""
    spec = reshape_spec(src, dst)
    if spec is not None:
        return ctx.emit("Reshape", [x, ctx.ints(spec)], out)
    parts = []
    for i, d in enumerate(dst.shape):
        if isinstance(d, int):
            parts.append(ctx.ints([d]))
        elif d in src.shape:
            j = src.shape.index(d)
            parts.append(ctx.emit("Shape", [x], None, start=j, end=j + 1))
        else:
            parts.append(ctx.ints([-1]))
    if sum(1 for p in parts if p == ctx.ints([-1])) > 1:
        raise ValueError(f"cannot express reshape {src.shape_str()} -> {dst.shape_str()} in ONNX")
    shape = ctx.emit("Concat", parts, None, axis=0)
    return ctx.emit("Reshape", [x, shape], out)
