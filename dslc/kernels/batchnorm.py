"""Batch normalisation as two compiled passes per direction (numba, dslc.kernels.jit's settings).

numpy's formulation made ~10 passes over the activation and kept x-hat (a second copy of it) for the backward
pass; here the forward reads x twice (mean, then the variance about it) and writes y once, and keeps only the
per-channel mean and 1/std: the backward rebuilds x-hat from the input x, which the executor keeps anyway (it
is the convolution's output). Per-channel sums accumulate in float64, in a fixed order (deterministic); the
elementwise passes compute in the array's dtype (float32 in training, float64 in gradient checks).

Arrays are (N, C, S) views of contiguous NC... inputs (S = the product of the spatial dims, 1 for rank 2).
"""
from __future__ import annotations

import numpy as np

from dslc.kernels.jit import jit


# Row sums: 16 lanes of partial sums in the array's dtype over blocks of _BLOCK elements (a loop the compiler
# vectorises), each block's total added to a float64 sum -- so each float32 partial sum adds only
# _BLOCK / 16 terms. A fixed order: deterministic. (A single float64 chain is bound by the add latency and the
# conversions: 4x slower on ResNet-18's first batchnorm.)
_BLOCK = 256


@jit
def _row_sum(r, acc):
    """sum_k r[k], float64; acc: a 16-element work array of r's dtype."""
    S = r.size
    total = 0.0
    for b0 in range(0, S, _BLOCK):
        b1 = min(b0 + _BLOCK, S)
        acc[:] = 0
        k = b0
        while k + 16 <= b1:
            for j in range(16):
                acc[j] += r[k + j]
            k += 16
        for q in range(k, b1):
            acc[0] += r[q]
        total += acc.sum()
    return total


@jit
def _row_sq(r, m, acc):
    """sum_k (r[k] - m)^2, float64 (m in r's dtype)."""
    S = r.size
    total = 0.0
    for b0 in range(0, S, _BLOCK):
        b1 = min(b0 + _BLOCK, S)
        acc[:] = 0
        k = b0
        while k + 16 <= b1:
            for j in range(16):
                d = r[k + j] - m
                acc[j] += d * d
            k += 16
        for q in range(k, b1):
            d = r[q] - m
            acc[0] += d * d
        total += acc.sum()
    return total


@jit
def _row_dot(g, r, m, acc):
    """sum_k g[k] * (r[k] - m), float64 (m in r's dtype)."""
    S = r.size
    total = 0.0
    for b0 in range(0, S, _BLOCK):
        b1 = min(b0 + _BLOCK, S)
        acc[:] = 0
        k = b0
        while k + 16 <= b1:
            for j in range(16):
                acc[j] += g[k + j] * (r[k + j] - m)
            k += 16
        for q in range(k, b1):
            acc[0] += g[q] * (r[q] - m)
        total += acc.sum()
    return total


@jit
def _channel_mean_var(x, c, acc):
    """(mean, biased variance) of x[:, c, :] in float64: two passes (the second about the mean)."""
    N, _, S = x.shape
    s = 0.0
    for n in range(N):
        s += _row_sum(x[n, c], acc)
    m = s / (N * S)
    mt = x.dtype.type(m)
    q = 0.0
    for n in range(N):
        q += _row_sq(x[n, c], mt, acc)
    return m, q / (N * S)


@jit
def forward_train(x, w, b, eps, y, mean, var, invstd):
    """Batch statistics per channel into mean / var / invstd (float64 (C,)), and y = (x - mean) * invstd * w + b."""
    N, C, S = x.shape
    acc = np.empty(16, x.dtype)
    for c in range(C):
        m, v = _channel_mean_var(x, c, acc)
        inv = 1.0 / np.sqrt(v + eps)
        mean[c] = m
        var[c] = v
        invstd[c] = inv
        mt = x.dtype.type(m)
        a = x.dtype.type(w[c] * inv)
        bt = x.dtype.type(b[c])
        for n in range(N):
            r = x[n, c]
            o = y[n, c]
            for k in range(S):
                o[k] = (r[k] - mt) * a + bt


@jit
def backward(gy, x, w, mean, invstd, training, want_gx, gx, gw, gb):
    """Per channel gb = sum gy, gw = sum gy * xhat (xhat = (x - mean) * invstd, rebuilt here); with want_gx,
    gx = w * invstd * (gy - gb / n - xhat * gw / n) for batch statistics (training), w * invstd * gy for fixed
    ones."""
    N, C, S = gy.shape
    cnt = N * S
    acc = np.empty(16, gy.dtype)
    for c in range(C):
        m = mean[c]
        mt = gy.dtype.type(m)
        sb = 0.0
        sw = 0.0
        for n in range(N):
            sb += _row_sum(gy[n, c], acc)
            sw += _row_dot(gy[n, c], x[n, c], mt, acc)
        inv = invstd[c]
        gb[c] = sb
        gw[c] = sw * inv
        if not want_gx:
            continue
        k1 = gy.dtype.type(w[c] * inv)
        if training:
            mb = gy.dtype.type(sb / cnt)
            k2 = gy.dtype.type(sw * inv * inv / cnt)
            for n in range(N):
                g = gy[n, c]
                r = x[n, c]
                o = gx[n, c]
                for k in range(S):
                    o[k] = (g[k] - mb - (r[k] - mt) * k2) * k1
        else:
            for n in range(N):
                g = gy[n, c]
                o = gx[n, c]
                for k in range(S):
                    o[k] = g[k] * k1


def as_ncs(a: np.ndarray) -> np.ndarray:
    """(N, C, ...) -> contiguous (N, C, S)."""
    return np.ascontiguousarray(a).reshape(a.shape[0], a.shape[1], -1)


__all__ = ["forward_train", "backward", "as_ncs"]
