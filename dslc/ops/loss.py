"""Training losses: mse, bce (from logits), cross_entropy; each reduces to a scalar (mean over elements/batch)."""
import numpy as np

from dslc.kernels import nn as K
from dslc.ops.common import FLOAT_DTYPES, INT_DTYPES, shp
from dslc.ops.registry import Case, Op, Param, ShapeError, register
from dslc.types import TensorType


def _same_shape_loss(name, first):
    def infer(ins, attrs):
        a, b = ins
        if a.dtype not in FLOAT_DTYPES:
            raise ShapeError(f"{name}: {first} must be a float tensor, got {a}", operand=0)
        if a.shape != b.shape:
            raise ShapeError(f"{name}: {first} {shp(a)} and target {shp(b)} must have the same shape",
                             hint="the target must match the network output exactly", operand=1)
        if b.dtype not in FLOAT_DTYPES:
            raise ShapeError(f"{name}: the target must be a float tensor, got {b}", operand=1)
        return [TensorType((), a.dtype)]
    return infer


# ---- numpy executor (dslc/ops/registry.py contract): the loss is a 0-d array of the logits' dtype ---------
def _scaled(g, gy, n):
    """g * gy / n in place, keeping g's dtype (gy is the 0-d upstream gradient of the scalar loss)."""
    g *= 1.0 / n
    g *= gy
    return g


def mse_forward(ctx, xs, ws, attrs):
    d = xs[0] - xs[1]
    return [np.asarray(np.mean(d * d), dtype=d.dtype)], d


def mse_vjp(ctx, gys, saved, xs, ws, attrs):
    d = saved
    gp = _scaled(d * 2.0, gys[0], d.size)
    return [gp if K.wants(ctx, 0) else None, -gp if K.wants(ctx, 1) else None], {}


def bce_forward(ctx, xs, ws, attrs):
    """mean(max(x, 0) - x*y + log1p(exp(-|x|))): exact for any logit, no overflow."""
    x, y = xs
    loss = np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))
    return [np.asarray(np.mean(loss), dtype=x.dtype)], None


def bce_vjp(ctx, gys, saved, xs, ws, attrs):
    x, y = xs
    gx = _scaled(K.sigmoid(x) - y, gys[0], x.size) if K.wants(ctx, 0) else None
    gt = _scaled(-x, gys[0], x.size) if K.wants(ctx, 1) else None
    return [gx, gt], {}


def _ce_index(logits, target):
    c = logits.shape[1]
    if target.size and (target.min() < 0 or target.max() >= c):
        bad = target.min() if target.min() < 0 else target.max()
        raise ValueError(f"cross_entropy: class index {int(bad)} is out of range for {c} classes [0, {c})")
    return np.expand_dims(target.astype(np.intp, copy=False), 1)


class _RowsSaved:
    __slots__ = ("p", "idx")

    def __init__(self, p, idx):
        self.p, self.idx = p, idx


def _ce_rows_forward(z, t, c, eps):
    """[N, C] logits with class indices (the common case): softmax, the loss and the class picks in one compiled
    pass over the rows (dslc.kernels.jit.xent_rows_forward; the numpy formulation took ten array calls, ~30 us
    for a 64 x 10 batch, most of it call overhead)."""
    from dslc.kernels.jit import xent_rows_forward
    idx = np.ascontiguousarray(t, dtype=np.intp)
    zc = np.ascontiguousarray(z)
    p = np.empty_like(zc)
    loss = xent_rows_forward(zc, idx, p, float(eps))
    if loss < 0:   # a class index out of range (the kernel's signal): say which
        _ce_index(z, t)
    return [np.asarray(loss / z.shape[0], dtype=z.dtype)], _RowsSaved(p, idx)


def _class_first(z, attrs):
    """Logits with the class axis at 1 (a view): [N, T, V] sequence logits are read class-last."""
    return np.moveaxis(z, -1, 1) if attrs.get("class_last") else z


def _ignored(t, attrs):
    """The mask of positions whose class index is ignore_index, or None when none is (the common case)."""
    if t.dtype.kind not in "iu" or not t.size:
        return None
    mask = t == attrs.get("ignore_index", -100)
    return mask if mask.any() else None


def cross_entropy_forward(ctx, xs, ws, attrs):
    """Mean over N (and spatial / sequence positions) of -sum_c t'_c log_softmax(z)_c, t' = (1 - eps) t + eps / C:
    t one-hot from integer class indices, or the given probabilities. Positions whose index is ignore_index
    count for nothing, the mean runs over the others (PyTorch's rule; 0, not NaN, when all are ignored)."""
    z, t = _class_first(xs[0], attrs), xs[1]
    c, eps = z.shape[1], attrs["label_smoothing"]
    ignored = _ignored(t, attrs)
    if z.ndim == 2 and t.dtype.kind in "iu" and ignored is None:
        return _ce_rows_forward(z, t, c, eps)
    logp = K.log_softmax(z, axis=1)
    if t.dtype.kind in "iu":
        keep = None if ignored is None else ~ignored
        t = t if keep is None else np.where(keep, t, 0)
        per = -np.take_along_axis(logp, _ce_index(z, t), axis=1)[:, 0]
        if eps:
            per = (1.0 - eps) * per - (eps / c) * logp.sum(axis=1)
        count = per.size if keep is None else int(keep.sum())
        loss = per.sum() if keep is None else per[keep].sum()
    else:
        count = z.size // c
        loss = -(t * logp).sum()
        if eps:
            loss = (1.0 - eps) * loss - (eps / c) * logp.sum()
    return [np.asarray(loss / max(count, 1), dtype=z.dtype)], logp


def cross_entropy_vjp(ctx, gys, saved, xs, ws, attrs):
    """d/dz = softmax(z) * sum_c t'_c - t' (sum_c t'_c = 1 for class indices); 0 at ignored positions."""
    z, t = _class_first(xs[0], attrs), xs[1]
    if isinstance(saved, _RowsSaved):
        if not K.wants(ctx, 0):
            return [None, None], {}
        from dslc.kernels.jit import xent_rows_backward
        gz = saved.p  # the forward's softmax, ours to overwrite: d/dz = (p - t') * gy / N (t' smoothed one-hot)
        xent_rows_backward(gz, saved.idx, float(attrs["label_smoothing"]), float(gys[0]) / z.shape[0])
        return [gz, None], {}
    logp = saved
    c, eps = z.shape[1], attrs["label_smoothing"]
    count = z.size // c
    gz = gt = None
    if K.wants(ctx, 0):
        p = np.exp(logp)
        if t.dtype.kind in "iu":
            ignored = _ignored(t, attrs)
            if ignored is not None:
                t = np.where(ignored, 0, t)
                count = int((~ignored).sum())
            gz = p - eps / c if eps else p
            idx = _ce_index(z, t)
            np.put_along_axis(gz, idx, np.take_along_axis(gz, idx, axis=1) - (1.0 - eps), axis=1)
            if ignored is not None:
                gz *= np.expand_dims(~ignored, 1)
        else:
            ts = t * (1.0 - eps) + eps / c if eps else t
            gz = p * ts.sum(axis=1, keepdims=True) - ts
        _scaled(gz, gys[0], max(count, 1))
        if attrs.get("class_last"):
            gz = np.ascontiguousarray(np.moveaxis(gz, 1, -1))
    if t.dtype.kind == "f" and K.wants(ctx, 1):
        gt = _scaled(logp * -(1.0 - eps), gys[0], count)
        if attrs.get("class_last"):
            gt = np.ascontiguousarray(np.moveaxis(gt, 1, -1))
    return [gz, gt], {}


def mse_torch(e):
    return f"F.mse_loss({e.x(0)}, {e.x(1)})"


MSE = register(Op(
    name="mse", inputs=("pred", "target"), infer=_same_shape_loss("mse", "pred"), category="loss",
    doc="Mean squared error mean((pred - target)^2); pred and target share a shape; output a scalar [].",
    cases=[Case((TensorType((2, 3)), TensorType((2, 3)))),
           Case((TensorType(("N", 1)), TensorType(("N", 1))), note="symbolic batch")],
    forward=mse_forward, vjp=mse_vjp, torch=mse_torch,
))

def bce_torch(e):
    return f"F.binary_cross_entropy_with_logits({e.x(0)}, {e.x(1)})"


BCE = register(Op(
    name="bce", inputs=("logits", "target"), infer=_same_shape_loss("bce", "logits"), category="loss",
    doc="Binary cross-entropy from logits (sigmoid fused), mean over elements; same shapes; output a scalar [].",
    cases=[Case((TensorType((4, 1)), TensorType((4, 1)))),
           Case((TensorType(("N", 3)), TensorType(("N", 3))), note="multi-label, symbolic batch")],
    forward=bce_forward, vjp=bce_vjp, torch=bce_torch,
))


def _ce_prepare(ins, attrs):
    if not 0.0 <= attrs["label_smoothing"] < 1.0:
        raise TypeError(f"`label_smoothing` must be in [0, 1), got {attrs['label_smoothing']}")
    attrs = dict(attrs)
    attrs["class_last"] = len(ins) == 2 and _reads_class_last(*ins)
    return attrs


def _reads_class_last(logits, target):
    """Sequence logits [N, T, V] with an integer target [N, T]: the class axis is the last one. PyTorch's
    class-at-axis-1 reading ([N, C, L] with [N, L]) wins where the target fits both."""
    if target.dtype not in INT_DTYPES or logits.rank < 3:
        return False
    return target.shape != (logits.shape[0],) + logits.shape[2:] and target.shape == logits.shape[:-1]


def _ce_infer(ins, attrs):
    logits, target = ins
    if logits.rank < 2:
        raise ShapeError(f"cross_entropy: logits must be [N, C] or [N, C, *spatial], got {shp(logits)}", operand=0)
    if logits.dtype not in FLOAT_DTYPES:
        raise ShapeError(f"cross_entropy: logits must be a float tensor, got {logits}", operand=0)
    if target.dtype in INT_DTYPES:
        want = (logits.shape[0],) + logits.shape[2:]
        if target.shape != want and target.shape != logits.shape[:-1]:
            raise ShapeError(f"cross_entropy: class-index target {shp(target)} does not fit logits {shp(logits)}; "
                             f"expected {shp(want)}" + (f" (or {shp(logits.shape[:-1])} for sequence logits "
                                                        f"[N, T, V])" if logits.rank >= 3 else ""),
                             hint="an integer target holds one class index per sample (logits without the class dim)",
                             operand=1)
    elif target.dtype in FLOAT_DTYPES:
        if target.shape != logits.shape:
            raise ShapeError(f"cross_entropy: one-hot / probability target {shp(target)} must have the logits' shape "
                             f"{shp(logits)}",
                             hint="use an i64 target of shape [N] for class indices", operand=1)
    else:
        raise ShapeError(f"cross_entropy: target must be i64/i32 class indices or float probabilities, got {target}",
                         operand=1)
    return [TensorType((), logits.dtype)]


def cross_entropy_torch(e):
    """Class indices or probabilities, ignore_index, label smoothing: F.cross_entropy has dslc's semantics for
    all of them; sequence logits [N, T, V] (class last) are moved to torch's class-at-axis-1 layout. With an
    ignore_index given (padding), the mean is written out as sum / count so that a batch of padding only gives
    dslc's 0, not torch's 0 / 0."""
    z = f"{e.x(0)}.movedim(-1, 1)" if e.a.get("class_last") else e.x(0)
    smooth = f", label_smoothing={e.a['label_smoothing']!r}" if e.a.get("label_smoothing", 0.0) else ""
    ignore = e.a.get("ignore_index", -100)
    if e.in_types[1].dtype in INT_DTYPES and ignore != -100:
        t = e.x(1)
        return (f"(F.cross_entropy({z}, {t}, ignore_index={ignore!r}{smooth}, reduction='sum') / "
                f"({t} != {ignore!r}).sum().clamp(min=1))")
    return f"F.cross_entropy({z}, {e.x(1)}{smooth})"


CROSS_ENTROPY = register(Op(
    name="cross_entropy", inputs=("logits", "target"), infer=_ce_infer, prepare=_ce_prepare, category="loss",
    params=(Param("label_smoothing", "float", 0.0),
            Param("ignore_index", "int", -100, doc="integer targets equal to it count for nothing (padding)")),
    doc="Softmax cross-entropy (mean over samples): logits [N, C, *spatial] with an integer target [N, *spatial] "
        "or a float target of the logits' shape; sequence logits [N, T, V] with a target [N, T] (class last). "
        "Positions whose target is ignore_index are left out of the mean; output a scalar [].",
    cases=[
        Case((TensorType((4, 5)), TensorType((4,), "i64"))),
        Case((TensorType((3, 4)), TensorType((3, 4))), note="one-hot target"),
        Case((TensorType(("N", 10)), TensorType(("N",), "i64")), {"label_smoothing": 0.1}, "smoothing, symbolic"),
        Case((TensorType((2, 3, 4, 4)), TensorType((2, 4, 4), "i64")), note="segmentation"),
        Case((TensorType((2, 5, 4)), TensorType((2, 5), "i64")), note="sequence logits [N, T, V], class last"),
        Case((TensorType((3, 4)), TensorType((3,), "i64")), {"ignore_index": 1}, "ignore_index"),
        Case((TensorType(("N", "T", 6)), TensorType(("N", "T"), "i64")), {"ignore_index": 2, "label_smoothing": 0.1},
             "sequence, ignore_index, smoothing"),
    ],
    forward=cross_entropy_forward, vjp=cross_entropy_vjp, torch=cross_entropy_torch,
))
