"""Validation run on every compile: the ONNX checker (full check), strict ONNX shape inference compared with
dslc's own shape of every value, and an onnxruntime session. Any failure is a dslc bug: LoweringError,
naming the op and the .net location of the value or node at fault.
"""
from __future__ import annotations

import os
import re
import tempfile

import onnx

from dslc.lowering.context import DSLC_DTYPE
from dslc.lowering.errors import LoweringError
from dslc.lowering.model import LowerInfo

PROTOBUF_LIMIT = 2 ** 31 - 1
EXTERNAL_DATA_THRESHOLD = 2 * 1024 ** 3 - 64 * 1024 ** 2   # leave room for the graph itself


def needs_external_data(model: onnx.ModelProto, info: LowerInfo | None = None,
                        threshold: int = EXTERNAL_DATA_THRESHOLD) -> bool:
    size = info.weight_bytes if info is not None else sum(
        len(t.raw_data) for t in model.graph.initializer)
    return size >= threshold


def validate(model: onnx.ModelProto, info: LowerInfo, *, ort: bool = True,
             threshold: int = EXTERNAL_DATA_THRESHOLD, checker: bool = True) -> onnx.ModelProto:
    """Check `model`; returns the shape-inferred model. Raises LoweringError on any failure.
    checker=False leaves the ONNX checker to the caller (`check_file` on the file it writes)."""
    inferred = _infer(model, info)   # first: its value-by-value comparison names the first op at fault
    if ort:
        _session(model, info)
    if not checker:
        return inferred
    if needs_external_data(model, info, threshold):
        with tempfile.TemporaryDirectory(prefix="dslc-validate-") as d:
            path = os.path.join(d, "model.onnx")
            from dslc.lowering.serialize import write_external
            write_external(model, info.arrays, path, os.path.join(d, "model.onnx.data"))
            _checker(path, info)
        return inferred
    from dslc.lowering.serialize import model_bytes
    if info.data is None:
        info.data = model_bytes(model, info.arrays)
    _checker(info.data, info)        # full check: includes ONNX's strict shape inference on the real model
    return inferred


def check_file(path, info: LowerInfo) -> None:
    """The ONNX checker (full check) on a written model file (external data beside it is found)."""
    _checker(str(path), info)


def _infer(model: onnx.ModelProto, info: LowerInfo) -> onnx.ModelProto:
    """Strict shape inference with data propagation, compared value by value with dslc's types. A lenient
    pass first: a lowering that makes a wrong shape is named by the comparison (in topological order), not
    by the strict pass tripping over some consumer further down."""
    data = _skeleton(model).SerializeToString()
    try:
        lenient = onnx.shape_inference.infer_shapes(data, check_type=False, strict_mode=False, data_prop=True)
    except Exception:
        lenient = None
    if lenient is not None:
        compare_shapes(lenient, info)
    try:
        inferred = onnx.shape_inference.infer_shapes(data, check_type=True, strict_mode=True, data_prop=True)
    except Exception as e:
        raise _blame(info, e, "shape inference") from None
    compare_shapes(inferred, info)
    return inferred


def _skeleton(model: onnx.ModelProto, output_shapes: bool = False) -> onnx.ModelProto:
    """The model with its float weights as typed graph inputs instead of initializers: shape inference gives
    the same types for every value (weight values never decide a shape), without copying the weights.
    Without `output_shapes` the graph outputs keep only their dtype (the inferred shapes are compared)."""
    m = onnx.ModelProto()
    m.ir_version = model.ir_version
    m.opset_import.extend(model.opset_import)
    g = m.graph
    g.name = model.graph.name
    g.node.extend(model.graph.node)
    g.input.extend(model.graph.input)
    for o in model.graph.output:   # dtype only: the inferred shape is compared with dslc's, not merged
        if output_shapes:
            g.output.append(o)
        else:
            g.output.append(onnx.helper.make_tensor_value_info(o.name, o.type.tensor_type.elem_type, None))
    for t in model.graph.initializer:
        n = 1
        for d in t.dims:
            n *= d
        if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE) and n > 16:
            g.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        else:
            g.initializer.append(t)
    return m


def _checker(model_or_path, info: LowerInfo) -> None:
    try:
        onnx.checker.check_model(model_or_path, full_check=True)
    except Exception as e:
        raise _blame(info, e, "check") from None


def _session(model: onnx.ModelProto, info: LowerInfo) -> None:
    """An onnxruntime session on the model, its weights handed over as the numpy arrays they are
    (SessionOptions.add_initializer, zero-copy) instead of a second serialized copy of them."""
    import numpy as np
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.add_session_config_entry("session.disable_prepacking", "1")   # validation only: no weight repacking
    skeleton = _skeleton(model, output_shapes=True)
    held = []
    for vi in skeleton.graph.input[len(model.graph.input):]:
        arr = info.arrays.get(vi.name)
        if arr is None:  # a hand-made model: take the values from the proto
            arr = onnx.numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == vi.name))
        v = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(arr))
        held.append(v)
        so.add_initializer(vi.name, v)
    try:
        ort.InferenceSession(skeleton.SerializeToString(), so, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise _blame(info, e, "session creation (onnxruntime)") from None


def _blame(info: LowerInfo, e: Exception, stage: str) -> LoweringError:
    """Find the ONNX node (hence the dslc node) a checker / inference / runtime message talks about."""
    msg = str(e).strip()
    node = None
    best = 0
    for oname, dnode in info.origin.items():
        if len(oname) > best and re.search(r"(?<![\w./:-])" + re.escape(oname) + r"(?![\w./:-])", msg):
            node, best = dnode, len(oname)
    if node is None:
        for tname, (_t, dnode) in info.value_types.items():
            if len(tname) > best and re.search(r"(?<![\w./:-])" + re.escape(tname) + r"(?![\w./:-])", msg):
                node, best = dnode, len(tname)
    op, span = info.node_info(node)
    if len(msg) > 2000:
        msg = msg[:2000] + " ..."
    return LoweringError(msg, node, op, span, stage)


def _onnx_dims(vi: onnx.ValueInfoProto):
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return None
    dims = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            dims.append(d.dim_value)
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return dims


def compare_shapes(inferred: onnx.ModelProto, info: LowerInfo) -> None:
    """ONNX's inferred type of every value dslc knows must agree with dslc's: same dtype and rank, equal known
    dims, symbolic dims equal by name where ONNX keeps one of dslc's names. A dim ONNX could not infer is
    not an error (ONNX knows less, not something else)."""
    g = inferred.graph
    vis = {vi.name: vi for vi in list(g.value_info) + list(g.output) + list(g.input)}
    symbols = set()
    for t, _n in info.value_types.values():
        symbols.update(d for d in t.shape if isinstance(d, str))
    for name, (t, dnode) in info.value_types.items():
        vi = vis.get(name)
        if vi is None:
            continue
        op, span = info.node_info(dnode)
        elem = vi.type.tensor_type.elem_type
        if elem and DSLC_DTYPE.get(elem) != t.dtype:
            raise LoweringError(f"value `{name}`: ONNX infers dtype "
                                f"{onnx.TensorProto.DataType.Name(elem).lower()}, dslc says {t.dtype}",
                                dnode, op, span, "shape inference")
        dims = _onnx_dims(vi)
        if dims is None:
            continue
        if len(dims) != t.rank:
            raise LoweringError(f"value `{name}`: ONNX infers rank {len(dims)} {_show(dims)}, dslc says "
                                f"{t.shape_str()}", dnode, op, span, "shape inference")
        for k, (od, dd) in enumerate(zip(dims, t.shape)):
            if od is None:
                continue
            if isinstance(dd, int):
                ok = not isinstance(od, int) or od == dd
            elif isinstance(od, int):
                ok = False
            else:
                ok = od == dd or od not in symbols
            if not ok:
                raise LoweringError(f"value `{name}`: ONNX infers shape {_show(dims)}, dslc says {t.shape_str()} "
                                    f"(dim {k})", dnode, op, span, "shape inference")


def _show(dims) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"
