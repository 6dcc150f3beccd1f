"""A linear layer's GEMMs cut in two lane-owned column blocks of its weight (see dslc/train/lanes.py).

The executor keeps W [out, in] column-major, so W[:, :k] and W[:, k:] are each contiguous: block 0 (the first k
input features) belongs to the helper lane, block 1 to the main thread, for the forward product, the weight
gradient and (in the optimiser) the update. With x = [x0 | x1]:
    y   = x0 W0^T + x1 W1^T (+ b)        two partial products, summed on the main thread (helper's first)
    gW  = [(x0^T gy)^T | (x1^T gy)^T]    each lane writes its own block of one column-major array
    gx  = [gy W0 | gy W1]                each lane writes its own columns
ctx.lanes is a dslc.train.lanes.Lane: its gemm_pair runs the two blocks' GEMMs at once, the helper's on the
helper thread, in compiled code. BLAS is single-threaded meanwhile (the executor holds it at one thread).
The op itself (dslc/ops/linear.py) knows nothing of this: the executor's planner gives a linear step these
functions (`lane_linear`) in place of the op's own when it runs lanes (Executor._uses_lanes).
"""
from __future__ import annotations

import numpy as np

from dslc.kernels.nn import wants

# a weight with at least this many elements is cut in two (lane-owned halves); smaller ones stay whole: the
# hand-off to the helper costs ~10-20 us, about what half of a 2^16-element update or GEMM saves
SPLIT_MIN = 1 << 16


def split_column(p: np.ndarray) -> int | None:
    """Where a parameter is cut into its two lane halves, as an index into its memory-order flat view (the
    first half goes to the helper lane), or None when it stays whole. A column-major 2-D weight is cut between
    columns, so that each half is a block of whole columns: the block a split linear layer gives each lane."""
    n = p.size
    if n < SPLIT_MIN:
        return None
    if p.ndim == 2 and p.flags.f_contiguous and not p.flags.c_contiguous:
        return p.shape[0] * (p.shape[1] // 2)
    return n // 2


def weight_cut(w: np.ndarray) -> int | None:
    """The column where a linear weight is cut into its two lane blocks, or None when it stays whole: only a
    large, column-major float32 matrix is cut."""
    if w.ndim != 2 or w.dtype != np.float32 or not w.flags.f_contiguous or w.flags.c_contiguous:
        return None
    cut = split_column(w)
    return None if cut is None else cut // w.shape[0]


def split_at(ctx, w: np.ndarray) -> int | None:
    """weight_cut(w) when this context runs lanes (ctx.lanes), else None."""
    return None if getattr(ctx, "lanes", None) is None else weight_cut(w)


def forward(ctx, x2: np.ndarray, w: np.ndarray, k: int) -> np.ndarray:
    """x2 [rows, in] @ W^T, as two partial products (a fixed summation order: helper's block, then main's)."""
    x2 = np.ascontiguousarray(x2)
    y0 = np.empty((x2.shape[0], w.shape[0]), w.dtype)
    y1 = np.empty_like(y0)
    ctx.lanes.gemm_pair((x2[:, :k], w[:, :k].T, y0, False), (x2[:, k:], w[:, k:].T, y1, False))
    y0 += y1
    return y0


def weight_grad(ctx, x2: np.ndarray, gy2: np.ndarray, w: np.ndarray, k: int) -> np.ndarray:
    """(x2^T gy2)^T [out, in], column-major like W, each lane writing its own column block."""
    x2, gy2 = np.ascontiguousarray(x2), np.ascontiguousarray(gy2)
    gw = np.empty(w.shape, w.dtype, order="F")
    ctx.lanes.gemm_pair((x2[:, :k].T, gy2, gw[:, :k].T, False), (x2[:, k:].T, gy2, gw[:, k:].T, False))
    return gw


def input_grad(ctx, gy2: np.ndarray, w: np.ndarray, k: int) -> np.ndarray:
    """gy2 @ W [rows, in], each lane writing its own columns."""
    gy2 = np.ascontiguousarray(gy2)
    gx = np.empty((gy2.shape[0], w.shape[1]), w.dtype)
    ctx.lanes.gemm_pair((gy2, w[:, :k], gx[:, :k], False), (gy2, w[:, k:], gx[:, k:], False))
    return gx


def lane_linear(op_forward, op_vjp):
    """The linear op's forward and vjp with the GEMMs of a cut weight in two lane-owned blocks; a weight that is
    not cut (or a context without lanes) runs the op's own `forward` / `vjp`."""
    def lane_forward(ctx, xs, ws, attrs):
        w = ws["weight"]
        k = split_at(ctx, w)
        if k is None:
            return op_forward(ctx, xs, ws, attrs)
        x = xs[0]
        y = forward(ctx, x.reshape(-1, x.shape[-1]), w, k)
        if attrs["bias"]:
            y += ws["bias"]
        return [y.reshape(x.shape[:-1] + (w.shape[0],))], None

    def lane_vjp(ctx, gys, saved, xs, ws, attrs):
        w = ws["weight"]
        k = split_at(ctx, w)
        if k is None:
            return op_vjp(ctx, gys, saved, xs, ws, attrs)
        x = xs[0]
        gy2 = gys[0].reshape(-1, w.shape[0])
        x2 = x.reshape(-1, x.shape[-1])
        gws = {"weight": weight_grad(ctx, x2, gy2, w, k)}
        if attrs["bias"]:
            gws["bias"] = gy2.sum(axis=0)
        gx = input_grad(ctx, gy2, w, k).reshape(x.shape) if wants(ctx, 0) else None
        return [gx], gws
    return lane_forward, lane_vjp
