"""Serialising a model whose weights are numpy arrays without copying them into protobuf first.

A lowered model keeps its big float initializers *dataless* (name, dims, dtype only) while its values live in
`LowerInfo.arrays`. `model_bytes` writes the ONNX protobuf encoding directly, splicing each array's buffer in
as the initializer's `raw_data` (protobuf fields may come in any order, so the dataless graph is serialised
once and the raw data appended field by field): one copy of the weights instead of three. `materialize`
fills the arrays into the protos for callers that want a self-contained ModelProto.
"""
from __future__ import annotations

import sys

import numpy as np
import onnx

BIG = 16  # float initializers with more elements than this are kept dataless until written


def is_big(dtype: np.dtype, size: int) -> bool:
    return dtype.kind == "f" and size > BIG


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _le_buffer(a: np.ndarray) -> memoryview:
    a = np.ascontiguousarray(a)
    if a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and sys.byteorder == "big"):
        a = a.astype(a.dtype.newbyteorder("<"))
    return memoryview(a.reshape(-1)).cast("B")


def _repeated(f) -> bool:
    rep = getattr(f, "is_repeated", None)   # protobuf >= 5; older ones have .label
    return bool(rep) if rep is not None else f.label == 3


def _copy_except(src, dst, skip: str) -> None:
    """Copy every set field of message `src` into `dst` but `skip` (the graph of a model, the initializers of
    a graph), without serialising the skipped field."""
    for f, v in src.ListFields():
        if f.name == skip:
            continue
        if _repeated(f):
            getattr(dst, f.name).extend(v)
        elif f.message_type is not None:
            getattr(dst, f.name).CopyFrom(v)
        else:
            setattr(dst, f.name, v)


def dataless(t: onnx.TensorProto) -> bool:
    return not t.raw_data and t.data_location != onnx.TensorProto.EXTERNAL and not any(
        (t.float_data, t.int32_data, t.int64_data, t.double_data, t.uint64_data, t.string_data))


def model_bytes(model: onnx.ModelProto, arrays: dict[str, np.ndarray]) -> bytes:
    """The serialised model, dataless initializers filled from `arrays` on the way out."""
    parts = model_parts(model, arrays)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def model_parts(model: onnx.ModelProto, arrays: dict[str, np.ndarray]) -> list:
    """The serialised model as a list of byte chunks (the weights' own buffers among them): write them one
    after the other to get the file without ever holding a second copy of the weights."""
    todo = [t for t in model.graph.initializer if dataless(t) and t.name in arrays]
    if not todo:
        return [model.SerializeToString()]
    graph = onnx.GraphProto()
    _copy_except(model.graph, graph, "initializer")
    parts: list = [graph.SerializeToString()]
    for t in model.graph.initializer:       # in order; field 5 of GraphProto
        if dataless(t) and t.name in arrays:
            meta = t.SerializeToString()
            raw = _le_buffer(arrays[t.name])
            body = len(meta) + 1 + len(_varint(raw.nbytes)) + raw.nbytes
            parts += [b"\x2a", _varint(body), meta, b"\x4a", _varint(raw.nbytes), raw]   # raw_data = field 9
        else:
            enc = t.SerializeToString()
            parts += [b"\x2a", _varint(len(enc)), enc]
    graph_len = sum(len(p) if isinstance(p, bytes) else p.nbytes for p in parts)
    head = onnx.ModelProto()
    _copy_except(model, head, "graph")
    return [head.SerializeToString(), b"\x3a", _varint(graph_len)] + parts   # graph = field 7


def materialize(model: onnx.ModelProto, arrays: dict[str, np.ndarray]) -> onnx.ModelProto:
    """Fill every dataless initializer's raw_data from `arrays`, in place; returns the model."""
    for t in model.graph.initializer:
        if dataless(t) and t.name in arrays:
            t.raw_data = _le_buffer(arrays[t.name]).tobytes()
    return model


def write_external(model: onnx.ModelProto, arrays: dict[str, np.ndarray], model_path, data_path,
                   min_bytes: int = 1024) -> None:
    """Write the weights to `data_path` (streamed, 64-byte aligned) and the model, pointing at them, to
    `model_path`. `model` is not modified."""
    from pathlib import Path
    m = onnx.ModelProto()
    _copy_except(model, m, "graph")
    g = model.graph
    mg = m.graph
    _copy_except(g, mg, "initializer")
    location = Path(data_path).name
    offset = 0
    with open(data_path, "wb") as f:
        for t in g.initializer:
            nt = mg.initializer.add()
            if t.name in arrays and (dataless(t) or len(t.raw_data) >= max(min_bytes, 1)):
                buf = _le_buffer(arrays[t.name])
            elif t.raw_data and len(t.raw_data) >= max(min_bytes, 1):
                buf = memoryview(t.raw_data)
            else:
                nt.CopyFrom(t)
                continue
            nt.name = t.name
            nt.data_type = t.data_type
            nt.dims.extend(t.dims)
            pad = (-offset) % 64
            if pad:
                f.write(b"\0" * pad)
                offset += pad
            f.write(buf)
            nt.data_location = onnx.TensorProto.EXTERNAL
            for k, v in (("location", location), ("offset", str(offset)), ("length", str(buf.nbytes))):
                e = nt.external_data.add()
                e.key, e.value = k, v
            offset += buf.nbytes
    with open(model_path, "wb") as f:
        f.write(m.SerializeToString())
