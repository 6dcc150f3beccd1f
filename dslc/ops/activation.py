"""Pointwise activations: shape-preserving, no weights."""
from dslc.ops.common import norm_axis
from dslc.ops.registry import Case, Op, Param, ShapeError, register
from dslc.types import TensorType


def same_type(ins, attrs):
    return [ins[0]]


def _pointwise(name, doc, params=(), cases_attrs=({},), aliases=()):
    return register(Op(
        name=name, inputs=("x",), infer=same_type, params=params, category="activation", doc=doc,
        cases=[Case((TensorType((2, 3, 4, 5)),), a) for a in cases_attrs] + [Case((TensorType((3, 7)),))],
    ), aliases)


RELU = _pointwise("relu", "max(x, 0).")
LEAKY_RELU = _pointwise("leaky_relu", "x if x > 0 else alpha * x.", (Param("alpha", "float", 0.01),),
                        ({"alpha": 0.01}, {"alpha": 0.2}))
SIGMOID = _pointwise("sigmoid", "1 / (1 + exp(-x)).")
TANH = _pointwise("tanh", "Hyperbolic tangent.")
GELU = _pointwise("gelu", "Gaussian error linear unit (exact, erf form).")


def _softmax_infer(ins, attrs):
    x = ins[0]
    if x.rank < 1:
        raise ShapeError(f"softmax needs an input with at least 1 dim, got a scalar {x.shape_str()}")
    norm_axis(attrs["axis"], x.rank)
    return [x]


def _softmax_like(name, doc):
    return register(Op(
        name=name, inputs=("x",), infer=_softmax_infer, params=(Param("axis", "int", -1),), category="activation",
        doc=doc,
        cases=[Case((TensorType((2, 5)),)), Case((TensorType((2, 3, 4)),), {"axis": 1}),
               Case((TensorType(("N", 4, 6)),), {"axis": -1}, "symbolic batch")],
    ))


SOFTMAX = _softmax_like("softmax", "exp(x) / sum(exp(x)) along `axis` (default last); shape unchanged.")
LOG_SOFTMAX = _softmax_like("log_softmax", "x - logsumexp(x) along `axis` (default last); shape unchanged.")
