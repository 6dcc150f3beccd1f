"""Training losses: mse, bce (from logits), cross_entropy; each reduces to a scalar (mean over elements/batch)."""
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


MSE = register(Op(
    name="mse", inputs=("pred", "target"), infer=_same_shape_loss("mse", "pred"), category="loss",
    doc="Mean squared error mean((pred - target)^2); pred and target share a shape; output a scalar [].",
    cases=[Case((TensorType((2, 3)), TensorType((2, 3)))),
           Case((TensorType(("N", 1)), TensorType(("N", 1))), note="symbolic batch")],
))

BCE = register(Op(
    name="bce", inputs=("logits", "target"), infer=_same_shape_loss("bce", "logits"), category="loss",
    doc="Binary cross-entropy from logits (sigmoid fused), mean over elements; same shapes; output a scalar [].",
    cases=[Case((TensorType((4, 1)), TensorType((4, 1)))),
           Case((TensorType(("N", 3)), TensorType(("N", 3))), note="multi-label, symbolic batch")],
))


def _ce_prepare(ins, attrs):
    if not 0.0 <= attrs["label_smoothing"] < 1.0:
        raise TypeError(f"`label_smoothing` must be in [0, 1), got {attrs['label_smoothing']}")
    return attrs


def _ce_infer(ins, attrs):
    logits, target = ins
    if logits.rank < 2:
        raise ShapeError(f"cross_entropy: logits must be [N, C] or [N, C, *spatial], got {shp(logits)}", operand=0)
    if logits.dtype not in FLOAT_DTYPES:
        raise ShapeError(f"cross_entropy: logits must be a float tensor, got {logits}", operand=0)
    if target.dtype in INT_DTYPES:
        want = (logits.shape[0],) + logits.shape[2:]
        if target.shape != want:
            raise ShapeError(f"cross_entropy: class-index target {shp(target)} does not fit logits {shp(logits)}; "
                             f"expected {shp(want)}",
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


CROSS_ENTROPY = register(Op(
    name="cross_entropy", inputs=("logits", "target"), infer=_ce_infer, prepare=_ce_prepare, category="loss",
    params=(Param("label_smoothing", "float", 0.0),),
    doc="Softmax cross-entropy (mean over samples): logits [N, C, *spatial] with an integer target [N, *spatial] "
        "or a float target of the logits' shape; output a scalar [].",
    cases=[
        Case((TensorType((4, 5)), TensorType((4,), "i64"))),
        Case((TensorType((3, 4)), TensorType((3, 4))), note="one-hot target"),
        Case((TensorType(("N", 10)), TensorType(("N",), "i64")), {"label_smoothing": 0.1}, "smoothing, symbolic"),
        Case((TensorType((2, 3, 4, 4)), TensorType((2, 4, 4), "i64")), note="segmentation"),
    ],
))
