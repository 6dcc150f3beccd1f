"""Pooling / resampling kernels (NCHW; 1-D pooling goes through the 2-D path with H = 1).

Every window reduction is a loop over the KH*KW kernel offsets, each a whole-tensor strided-slice operation
(np.maximum / add): a 2x2 stride-2 max pool is four strided slices, ~35x faster than reshape + max, and no loop
ever runs per sample or per output pixel. Backward scatters with slice-adds per offset (no np.add.at). The
halving max pool (2x2, stride 2) has compiled kernels instead (dslc.kernels.jit): one pass that also records
where each maximum was, and a backward pass that writes the gradient from that (LeNet-5's two pools: 1.0 ms ->
0.35 ms per training step, forward + backward).
Adaptive average pooling (and bilinear resize) is instead y = A_h x A_w^T with small constant matrices.
Pads are (top, left, bottom, right) = ONNX (begin..., end...); ceil_mode windows that overhang the padded input
see -inf (max) or nothing (average).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dslc.kernels.conv import same_upper_pads


@dataclass(frozen=True)
class PoolGeom:
    N: int
    C: int
    H: int
    W: int
    KH: int
    KW: int
    sh: int
    sw: int
    pt: int
    pl: int
    pb: int
    pr: int
    OH: int
    OW: int

    @property
    def Hx(self) -> int:  # rows of the working buffer: padded input plus any ceil-mode overhang
        return max(self.H + self.pt + self.pb, (self.OH - 1) * self.sh + self.KH)

    @property
    def Wx(self) -> int:
        return max(self.W + self.pl + self.pr, (self.OW - 1) * self.sw + self.KW)

    @property
    def plain(self) -> bool:
        """No padding and no overhang: the input itself is the working buffer."""
        return (self.Hx, self.Wx) == (self.H, self.W)


def _out(n, k, s, pb, pe, ceil_mode):
    num = n + pb + pe - k
    if ceil_mode:
        o = -(-num // s) + 1
        if (o - 1) * s >= n + pb:
            o -= 1
        return o
    return num // s + 1


def pool_geom(x_shape, kernel, stride, pads, ceil_mode=False) -> PoolGeom:
    """x_shape (N, C, H, W); kernel/stride 2-tuples; pads 4-tuple or None (= SAME_UPPER from the size)."""
    N, C, H, W = x_shape
    (KH, KW), (sh, sw) = kernel, stride
    if pads is None:
        (pt, pb), (pl, pr) = same_upper_pads(H, KH, sh, 1), same_upper_pads(W, KW, sw, 1)
    else:
        pt, pl, pb, pr = pads
    return PoolGeom(N, C, H, W, KH, KW, sh, sw, pt, pl, pb, pr,
                    _out(H, KH, sh, pt, pb, ceil_mode), _out(W, KW, sw, pl, pr, ceil_mode))


def _win(g: PoolGeom, i: int, j: int):
    return slice(i, i + g.sh * (g.OH - 1) + 1, g.sh), slice(j, j + g.sw * (g.OW - 1) + 1, g.sw)


def _buffer(x: np.ndarray, g: PoolGeom, fill) -> np.ndarray:
    if g.plain:
        return x
    xp = np.full((g.N, g.C, g.Hx, g.Wx), fill, x.dtype)
    xp[:, :, g.pt:g.pt + g.H, g.pl:g.pl + g.W] = x
    return xp


def _crop(gxp: np.ndarray, g: PoolGeom) -> np.ndarray:
    if g.plain:
        return gxp
    return np.ascontiguousarray(gxp[:, :, g.pt:g.pt + g.H, g.pl:g.pl + g.W])


def _halving(g: PoolGeom) -> bool:
    """2x2 windows at stride 2 tiling the input exactly: U-Net's, VGG's and LeNet's pools."""
    return (g.KH, g.KW, g.sh, g.sw) == (2, 2, 2, 2) and g.plain and (2 * g.OH, 2 * g.OW) == (g.H, g.W)


def maxpool2d(x: np.ndarray, g: PoolGeom) -> tuple[np.ndarray, np.ndarray | None]:
    """(y, arg): the window maxima and, for halving pools, which of the four cells held each one (0-3,
    row-major; first maximum on ties, a NaN wins), found in one compiled pass (dslc.kernels.jit) so the
    backward pass needs neither x nor y. Other windows: four-slice numpy, arg None."""
    if _halving(g) and x.flags.c_contiguous:
        from dslc.kernels import jit
        y = np.empty((g.N, g.C, g.OH, g.OW), x.dtype)
        arg = np.empty(y.shape, np.uint8)
        B = g.N * g.C
        jit.maxpool2x2_forward(x.reshape(B, g.H, g.W), y.reshape(B, g.OH, g.OW), arg.reshape(B, g.OH, g.OW))
        return y, arg
    return _maxpool2d_slices(x, g), None


def maxpool2d_grad(gy: np.ndarray, x: np.ndarray, y: np.ndarray, arg: np.ndarray | None,
                   g: PoolGeom) -> np.ndarray:
    """Route each output's gradient to the first (row-major) maximal element of its window, like PyTorch."""
    if arg is None:
        return _maxpool2d_grad_masks(gy, x, y, g)
    from dslc.kernels import jit
    gx = np.empty((g.N, g.C, g.H, g.W), gy.dtype)   # every cell is written: the windows tile it
    B = g.N * g.C
    jit.maxpool2x2_backward(np.ascontiguousarray(gy).reshape(B, g.OH, g.OW), arg.reshape(B, g.OH, g.OW),
                            gx.reshape(B, g.H, g.W))
    return gx


def _maxpool2d_slices(x: np.ndarray, g: PoolGeom) -> np.ndarray:
    xp = _buffer(x, g, -np.inf)
    rs, cs = _win(g, 0, 0)
    y = xp[:, :, rs, cs].copy()
    for i in range(g.KH):
        for j in range(g.KW):
            if i or j:
                rs, cs = _win(g, i, j)
                np.maximum(y, xp[:, :, rs, cs], out=y)
    return y


def _maxpool2d_grad_masks(gy: np.ndarray, x: np.ndarray, y: np.ndarray, g: PoolGeom) -> np.ndarray:
    xp = _buffer(x, g, -np.inf)
    disjoint = g.sh >= g.KH and g.sw >= g.KW
    gxp = (np.empty if disjoint and g.plain and (g.sh, g.sw) == (g.KH, g.KW) and (g.OH * g.sh, g.OW * g.sw)
           == (g.H, g.W) else np.zeros)(xp.shape, gy.dtype)  # exact tiling: every cell is written below
    taken = None  # outputs whose gradient already went to an earlier (row-major) maximum
    for i in range(g.KH):
        for j in range(g.KW):
            rs, cs = _win(g, i, j)
            hit = xp[:, :, rs, cs] == y
            if taken is None:
                taken = hit
            else:
                hit &= ~taken
                taken |= hit
            # boolean-mask multiplies: ~10x faster than np.where / copyto(where=) on unpredictable masks
            if disjoint:
                np.multiply(gy, hit, out=gxp[:, :, rs, cs])
            else:
                gxp[:, :, rs, cs] += gy * hit
    return _crop(gxp, g)


def _window_sum(xp: np.ndarray, g: PoolGeom) -> np.ndarray:
    rs, cs = _win(g, 0, 0)
    s = xp[:, :, rs, cs].copy()
    for i in range(g.KH):
        for j in range(g.KW):
            if i or j:
                rs, cs = _win(g, i, j)
                s += xp[:, :, rs, cs]
    return s


def _divisor(g: PoolGeom, count_include_pad: bool, dtype) -> np.ndarray:
    """(1, 1, OH, OW) number of cells each window averages (PyTorch rules: padded cells count only with
    count_include_pad; ceil-mode overhang never counts)."""
    m = np.zeros((1, 1, g.Hx, g.Wx), dtype)
    if count_include_pad:
        m[:, :, :g.H + g.pt + g.pb, :g.W + g.pl + g.pr] = 1
    else:
        m[:, :, g.pt:g.pt + g.H, g.pl:g.pl + g.W] = 1
    return _window_sum(m, g)


def avgpool2d(x: np.ndarray, g: PoolGeom, count_include_pad: bool = False) -> np.ndarray:
    y = _window_sum(_buffer(x, g, 0), g)
    if g.plain:
        y *= x.dtype.type(1.0 / (g.KH * g.KW))
    else:
        y /= _divisor(g, count_include_pad, x.dtype)
    return y


def avgpool2d_grad(gy: np.ndarray, g: PoolGeom, count_include_pad: bool = False) -> np.ndarray:
    if g.plain:
        gs = gy * gy.dtype.type(1.0 / (g.KH * g.KW))
    else:
        gs = gy / _divisor(g, count_include_pad, gy.dtype)
    gxp = np.zeros((g.N, g.C, g.Hx, g.Wx), gy.dtype)
    for i in range(g.KH):
        for j in range(g.KW):
            rs, cs = _win(g, i, j)
            gxp[:, :, rs, cs] += gs
    return _crop(gxp, g)


# ---- adaptive average pooling -----------------------------------------------------------------------------------

def adaptive_matrix(n_in: int, n_out: int, dtype) -> np.ndarray:
    """(n_out, n_in) averaging matrix of PyTorch's adaptive pooling: row i is the mean of
    x[floor(i*n_in/n_out) : ceil((i+1)*n_in/n_out)] (windows may overlap; n_out > n_in repeats cells)."""
    i = np.arange(n_out)
    start = (i * n_in) // n_out
    end = -(-(i + 1) * n_in // n_out)
    cols = np.arange(n_in)
    inside = (cols >= start[:, None]) & (cols < end[:, None])
    return (inside / (end - start)[:, None]).astype(dtype)


def adaptive_avgpool2d(x: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """y = A_h x A_w^T over the last two dims; an axis that keeps its size is skipped (x itself when both do)."""
    H, W = x.shape[2:]
    y = x
    if ow != W:
        y = np.matmul(y, adaptive_matrix(W, ow, x.dtype).T)
    if oh != H:
        y = np.matmul(adaptive_matrix(H, oh, x.dtype), y)
    return y


def adaptive_avgpool2d_grad(gy: np.ndarray, H: int, W: int) -> np.ndarray:
    """The adjoint: gx = A_h^T gy A_w."""
    oh, ow = gy.shape[2:]
    gx = gy
    if ow != W:
        gx = np.matmul(gx, adaptive_matrix(W, ow, gy.dtype))
    if oh != H:
        gx = np.matmul(adaptive_matrix(H, oh, gy.dtype).T, gx)
    return gx


# ---- resize ------------------------------------------------------------------------------------------------------

def upsample_nearest(x: np.ndarray, sh: int, sw: int) -> np.ndarray:
    """One strided copy per (row, col) replica: ~4x faster than reshaping a broadcast view."""
    N, C, H, W = x.shape
    out = np.empty((N, C, H, sh, W, sw), x.dtype)
    for i in range(sh):
        for j in range(sw):
            out[:, :, :, i, :, j] = x
    return out.reshape(N, C, H * sh, W * sw)


def upsample_nearest_grad(gy: np.ndarray, sh: int, sw: int) -> np.ndarray:
    """Sum of the replicas' gradients as strided slice-adds (~15x faster than .sum over the small axes)."""
    N, C, OH, OW = gy.shape
    g6 = gy.reshape(N, C, OH // sh, sh, OW // sw, sw)
    out = g6[:, :, :, 0, :, 0].copy()
    for i in range(sh):
        for j in range(sw):
            if i or j:
                out += g6[:, :, :, i, :, j]
    return out


def interp_matrix(n_in: int, scale: int, align_corners: bool, dtype) -> np.ndarray:
    """(n_in*scale, n_in) linear-interpolation matrix, PyTorch's bilinear coordinate rules."""
    n_out = n_in * scale
    o = np.arange(n_out, dtype=np.float64)
    if align_corners:
        src = o * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros_like(o)
    else:
        src = np.maximum((o + 0.5) / scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = src - i0
    A = np.zeros((n_out, n_in), np.float64)
    rows = np.arange(n_out)
    A[rows, i0] += 1.0 - lam
    A[rows, i1] += lam
    return A.astype(dtype)


def upsample_bilinear(x: np.ndarray, sh: int, sw: int, align_corners: bool) -> np.ndarray:
    """y = A_h x A_w^T over the last two dims (two batched GEMMs)."""
    N, C, H, W = x.shape
    Ah = interp_matrix(H, sh, align_corners, x.dtype)
    Aw = interp_matrix(W, sw, align_corners, x.dtype)
    return np.matmul(np.matmul(Ah, x), Aw.T)


def upsample_bilinear_grad(gy: np.ndarray, sh: int, sw: int, align_corners: bool) -> np.ndarray:
    N, C, OH, OW = gy.shape
    Ah = interp_matrix(OH // sh, sh, align_corners, gy.dtype)
    Aw = interp_matrix(OW // sw, sw, align_corners, gy.dtype)
    return np.matmul(np.matmul(Ah.T, gy), Aw)


__all__ = ["PoolGeom", "pool_geom", "maxpool2d", "maxpool2d_grad", "avgpool2d", "avgpool2d_grad",
           "adaptive_matrix", "adaptive_avgpool2d", "adaptive_avgpool2d_grad", "upsample_nearest",
           "upsample_nearest_grad", "interp_matrix", "upsample_bilinear",
           "upsample_bilinear_grad"]
