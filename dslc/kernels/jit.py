"""Compiled loops (numba) for the places where numpy would make several passes over memory that one loop can do.

Only the numpy executor's op kernels and the optimisers use this module, and they import it lazily, so
`dslc check`, `dslc compile` and serving never load numba. Every kernel:
- is compiled with nogil=True, so the batch-parallel executor and the optimiser's two-thread split can run
  kernels concurrently from Python threads (numba's own threading layer is never used: its OpenMP workers would
  spin against OpenBLAS's threads on two cores);
- uses error_model="numpy" (a float division by zero gives inf, as numpy does; numba's default Python error
  model adds a check per division that stops LLVM from vectorising the loop: Adam 0.46 ms -> 0.07 ms);
- runs without fast-math; the optimiser updates do the float32 operations the numpy formulation did, in the
  same order, so their results are bit-identical to it (tests/train/test_optim.py holds them to it);
- is cached on disk (cache=True: compiled once per machine, ~0.1-0.3 s per kernel and dtype), or compiled
  in each process where no cache location is writable.
"""
from __future__ import annotations

import numba
import numpy as np


def jit(f):
    """numba.njit with the settings above."""
    try:
        return numba.njit(nogil=True, error_model="numpy", cache=True)(f)
    except RuntimeError:   # no writable cache location (read-only install and home): compile in each process
        return numba.njit(nogil=True, error_model="numpy")(f)


# ---------------------------------------------------------------------------------------------- optimisers
# p, state arrays and g are flat, contiguous, float32; scalars are np.float32 (NumPy 2 casts a Python float to
# float32 before multiplying a float32 array, so this is what numpy computes).

@jit
def adam_update(p, m, v, g, beta1, beta2, step_scale, eps_s, l2, decay):
    """Adam with scaled moments (see dslc.train.optim.Adam): m = b1 m + g, v = b2 v + g^2,
    p = p * decay - step_scale * m / (sqrt(v) + eps_s); l2 adds l2 * p to the gradient (0: off);
    decay is 1 - lr * wd for AdamW (1: off)."""
    use_l2 = l2 != 0
    use_decay = decay != 1
    for i in range(p.size):
        gi = g[i]
        pi = p[i]
        if use_l2:
            gi = pi * l2 + gi
        mi = m[i] * beta1 + gi
        vi = v[i] * beta2 + gi * gi
        m[i] = mi
        v[i] = vi
        u = mi / (np.sqrt(vi) + eps_s) * step_scale
        if use_decay:
            pi = pi * decay
        p[i] = pi - u


@jit
def sgd_update(p, buf, g, lr, momentum, keep, wd, first, nesterov):
    """SGD: d = g + wd p; with momentum (buf non-empty): buf = d on the first step, else momentum buf + keep d
    (keep = 1 - dampening); the step is buf, or d + momentum buf with Nesterov; p -= lr * step."""
    use_wd = wd != 0
    use_mom = buf.size > 0
    damp = keep != 1
    for i in range(p.size):
        d = g[i]
        if use_wd:
            d = p[i] * wd + d
        if use_mom:
            if first:
                b = d
            elif damp:
                b = buf[i] * momentum + keep * d
            else:
                b = buf[i] * momentum + d
            buf[i] = b
            d = b * momentum + d if nesterov else b
        p[i] = p[i] - d * lr


# ---------------------------------------------------------------------------------------------- losses

@jit
def xent_rows_forward(z, idx, p, eps):
    """Cross-entropy of [N, C] logits z against class indices idx, label smoothing eps: writes softmax(z) to p
    and returns the summed loss (the caller divides by N), or -1 if an index is out of [0, C) (a loss is never
    negative). Per row, with max subtraction: nll = log(sum exp(z - m)) - (z[k] - m); smoothed:
    (1 - eps) nll + eps (log s - mean_c(z_c - m))."""
    N, C = z.shape
    for i in range(N):
        if idx[i] < 0 or idx[i] >= C:
            return -1.0
    total = 0.0
    for i in range(N):
        m = z[i, 0]
        for c in range(1, C):
            if z[i, c] > m:
                m = z[i, c]
        s = 0.0
        zsum = 0.0
        for c in range(C):
            d = z[i, c] - m
            e = np.exp(d)
            p[i, c] = e
            s += e
            zsum += d
        logs = np.log(s)
        nll = logs - (z[i, idx[i]] - m)
        total += (1.0 - eps) * nll + eps * (logs - zsum / C) if eps != 0 else nll
        inv = 1.0 / s
        for c in range(C):
            p[i, c] = p[i, c] * inv
    return total


@jit
def xent_rows_backward(p, idx, eps, scale):
    """In place: p (softmax) becomes (p - t') * scale, t' the smoothed one-hot rows of idx."""
    N, C = p.shape
    off = eps / C
    for i in range(N):
        for c in range(C):
            p[i, c] = (p[i, c] - off) * scale
        p[i, idx[i]] -= (1.0 - eps) * scale


# ---------------------------------------------------------------------------------------------- convolution

@jit
def col2im_stride1(gcol, gx, OH, OW, KH, KW, C, dh, dw):
    """Adjoint of im2col for stride 1: gcol (N*OH*OW, KH*KW*C), rows = output pixels, columns (kernel row,
    kernel column, channel); gx (N, Hp, Wp, C) zeroed. Output pixel (oh, ow)'s kernel row i covers
    gx[n, oh + i*dh, ow + j*dw, :] for j < KW: with column dilation 1 one contiguous run of KW*C values, which the
    inner loop adds (vectorised; numpy's slice-adds per kernel offset move runs of only C values), else KW runs
    of C."""
    N, Hp, Wp, _ = gx.shape
    rows = gx.reshape(N, Hp, Wp * C)
    L = KW * C
    r = 0
    for n in range(N):
        for oh in range(OH):
            for ow in range(OW):
                src = gcol[r]
                r += 1
                q0 = ow * C
                for i in range(KH):
                    dst = rows[n, oh + i * dh]
                    b = i * L
                    if dw == 1:
                        for k in range(L):
                            dst[q0 + k] += src[b + k]
                    else:
                        for j in range(KW):
                            q = q0 + j * dw * C
                            s = b + j * C
                            for c in range(C):
                                dst[q + c] += src[s + c]


# ---------------------------------------------------------------------------------------------- activations

@jit
def relu_forward(x, y):
    """Flat arrays: y = max(x, 0), a NaN staying NaN (as np.maximum and PyTorch's relu give). np.maximum's
    NaN-propagating loop takes 7 us on a 64 x 256 activation; this one ~2."""
    zero = x.dtype.type(0)
    for i in range(x.size):
        xi = x[i]
        y[i] = zero if xi <= zero else xi


@jit
def relu_backward(gy, y, gx):
    """Flat arrays: gx = gy where y > 0, else 0."""
    zero = gy.dtype.type(0)
    for i in range(gy.size):
        gx[i] = gy[i] if y[i] > 0 else zero


# ---------------------------------------------------------------------------------------------- max pooling
# Halving max pool (2x2 windows, stride 2, tiling the input), on (B, H, W) views. arg: which cell of each window
# held the maximum, 0-3 row-major; the first on ties (as the slice-mask formulation and PyTorch route the
# gradient); a NaN wins its window (as np.maximum propagates it). Branch-free selects: on random data the
# branches of a compare-and-jump loop mispredict half the time (a generic-window loop ran 8x slower).

@jit
def _wins(v, best):
    return (v > best) | ((v != v) & (best == best))


@jit
def maxpool2x2_forward(x, y, arg):
    B, OH, OW = y.shape
    for b in range(B):
        for oh in range(OH):
            r0 = x[b, 2 * oh]
            r1 = x[b, 2 * oh + 1]
            yr = y[b, oh]
            ar = arg[b, oh]
            for ow in range(OW):
                a = r0[2 * ow]
                c = r0[2 * ow + 1]
                d = r1[2 * ow]
                e = r1[2 * ow + 1]
                t1 = _wins(c, a)
                m1 = c if t1 else a
                k1 = np.uint8(1) if t1 else np.uint8(0)
                t2 = _wins(e, d)
                m2 = e if t2 else d
                k2 = np.uint8(3) if t2 else np.uint8(2)
                t3 = _wins(m2, m1)
                yr[ow] = m2 if t3 else m1
                ar[ow] = k2 if t3 else k1


@jit
def maxpool2x2_backward(gy, arg, gx):
    """Writes every cell of gx (B, 2 OH, 2 OW): gy at each window's maximum, 0 elsewhere. Row by row, so
    the stores are contiguous (stores two floats apart ran 3x slower)."""
    B, OH, OW = gy.shape
    W = gx.shape[2]
    zero = gy.dtype.type(0)
    for b in range(B):
        for oh in range(OH):
            r0 = gx[b, 2 * oh]
            r1 = gx[b, 2 * oh + 1]
            gr = gy[b, oh]
            ar = arg[b, oh]
            for q in range(W):
                k = ar[q >> 1]
                v = gr[q >> 1]
                j = q & 1
                r0[q] = v if k == j else zero
                r1[q] = v if k == j + 2 else zero


__all__ = ["jit", "adam_update", "sgd_update", "xent_rows_forward", "xent_rows_backward", "col2im_stride1",
           "relu_backward", "maxpool2x2_forward", "maxpool2x2_backward"]
