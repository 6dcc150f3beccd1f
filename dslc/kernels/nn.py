"""Small shared numerics for the ops' numpy forward / vjp: stable softmax, broadcasting gradients, attention.

Dtype discipline: every function keeps its inputs' float dtype (float32 in training, float64 in gradient checks);
constants are Python floats (weak under NumPy 2 promotion) or built with the array's dtype.
"""
from __future__ import annotations

import math

import numpy as np


def wants(ctx, i: int) -> bool:
    """Whether input slot i's gradient is wanted (ctx.needs_input_grad, set by the executor; None = all)."""
    n = getattr(ctx, "needs_input_grad", None)
    return n is None or i >= len(n) or bool(n[i])


def is_float(a) -> bool:
    return np.asarray(a).dtype.kind == "f"


def unbroadcast(g: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum a broadcast result's gradient back to an operand's shape."""
    if g.shape == tuple(shape):
        return g
    lead = g.ndim - len(shape)
    if lead:
        g = g.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, d in enumerate(shape) if d == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = x - x.max(axis=axis, keepdims=True)
    np.exp(e, out=e)
    e /= e.sum(axis=axis, keepdims=True)
    return e


def softmax_grad(gy: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    gx = gy * y
    gx -= y * gx.sum(axis=axis, keepdims=True)
    return gx


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = x - x.max(axis=axis, keepdims=True)
    z -= np.log(np.exp(z).sum(axis=axis, keepdims=True))
    return z


def log_softmax_grad(gy: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return gy - np.exp(y) * gy.sum(axis=axis, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """exp(min(x, 0)) / (1 + exp(-|x|)) = 1 / (1 + exp(-x)): no overflow, full relative precision in both
    tails, and no np.where (which is ~10x slower than arithmetic on unpredictable masks)."""
    d = np.exp(-np.abs(x))
    d += 1
    y = np.exp(np.minimum(x, 0))
    y /= d
    return y


# ---- multi-head self-attention ---------------------------------------------------------------------------------

def attention_forward(x, w_in, b_in, w_out, b_out, heads: int, causal: bool):
    """x [N, T, D] -> y [N, T, D] (torch.nn.MultiheadAttention math, packed in-projection [3D, D]).
    Returns (y, saved). All products are batched GEMMs over (N, heads)."""
    N, T, D = x.shape
    dh = D // heads
    x2 = x.reshape(N * T, D)
    qkv = x2 @ w_in.T
    if b_in is not None:
        qkv += b_in
    qkv = qkv.reshape(N, T, 3, heads, dh).transpose(2, 0, 3, 1, 4)  # (3, N, H, T, dh) view
    q = qkv[0] * (1.0 / math.sqrt(dh))                              # scaled, contiguous
    k, v = qkv[1], qkv[2]
    s = np.matmul(q, k.transpose(0, 1, 3, 2))                       # (N, H, T, T)
    if causal:
        s += np.triu(np.full((T, T), -np.inf, s.dtype), 1)  # future keys: -inf -> probability 0
    p = softmax(s, axis=-1)
    ctx = np.matmul(p, v)                                           # (N, H, T, dh)
    ctx2 = np.ascontiguousarray(ctx.transpose(0, 2, 1, 3)).reshape(N * T, D)
    y = ctx2 @ w_out.T
    if b_out is not None:
        y += b_out
    return y.reshape(N, T, D), (x2, q, k, v, p, ctx2)


def attention_backward(gy, saved, w_in, w_out, heads: int, need_x: bool = True):
    """Returns (gx or None, g_w_in, g_b_in, g_w_out, g_b_out)."""
    x2, q, k, v, p, ctx2 = saved
    N, H, T, dh = q.shape
    D = H * dh
    gy2 = gy.reshape(N * T, D)
    g_w_out = gy2.T @ ctx2
    g_b_out = gy2.sum(axis=0)
    gctx = (gy2 @ w_out).reshape(N, T, H, dh).transpose(0, 2, 1, 3)  # (N, H, T, dh) view
    gp = np.matmul(gctx, v.transpose(0, 1, 3, 2))
    gv = np.matmul(p.transpose(0, 1, 3, 2), gctx)
    gs = softmax_grad(gp, p)                                         # masked entries: p = 0 -> 0
    gqkv = np.empty((N, T, 3, H, dh), gy.dtype)
    gqkv_v = gqkv.transpose(2, 0, 3, 1, 4)
    np.matmul(gs, k, out=gqkv_v[0])
    gqkv_v[0] *= 1.0 / math.sqrt(dh)
    np.matmul(gs.transpose(0, 1, 3, 2), q, out=gqkv_v[1])
    gqkv_v[2] = gv
    g2 = gqkv.reshape(N * T, 3 * D)
    g_w_in = g2.T @ x2
    g_b_in = g2.sum(axis=0)
    gx = (g2 @ w_in).reshape(N, T, D) if need_x else None
    return gx, g_w_in, g_b_in, g_w_out, g_b_out


__all__ = ["wants", "is_float", "unbroadcast", "softmax", "softmax_grad", "log_softmax", "log_softmax_grad",
           "sigmoid", "attention_forward", "attention_backward"]
