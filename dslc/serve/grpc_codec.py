"""Open Inference Protocol tensors over gRPC: a ModelInferRequest checked into the same InferRequest the REST
path makes, and outputs packed into a ModelInferResponse.

Inputs come either all as `raw_input_contents` (one little-endian, row-major byte string per input, in input
order: what tritonclient.grpc and perf_analyzer send) or as typed `contents` (fp32_contents, int64_contents ...).
Outputs always go back as raw_output_contents, as Triton does.  The checks are protocol.py's (same messages);
every problem raises ProtocolError, which grpc_server.py turns into a status code.
"""
from __future__ import annotations

import math

import numpy as np

from dslc.serve.grpc_stubs import grpc_service_pb2 as pb
from dslc.serve.protocol import (InferRequest, ProtocolError, TensorSpec, _fmt_shape, check_input_header,
                                 check_output_request, ordered_inputs)

# datatype -> the InferTensorContents field that carries it (FP16/BF16 have none: raw contents only)
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents", "INT64": "int64_contents",
    "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents",
}
_SHARED_MEMORY = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")


def _bad(msg: str) -> ProtocolError:
    return ProtocolError(400, msg)


def _from_raw(raw: bytes, spec: TensorSpec, shape: list, index: int) -> np.ndarray:
    need = math.prod(shape) * spec.itemsize
    if len(raw) != need:
        raise _bad(f"input '{spec.name}': raw_input_contents[{index}] has {len(raw)} bytes but shape "
                   f"{_fmt_shape(shape)} of {spec.datatype} needs {need}")
    return np.frombuffer(raw, dtype=spec.dtype).reshape(shape)


def _from_contents(inp, spec: TensorSpec, shape: list) -> np.ndarray:
    field = CONTENTS_FIELD.get(spec.datatype)
    if field is None:
        raise _bad(f"input '{spec.name}': {spec.datatype} has no typed contents field; send it in "
                   f"raw_input_contents")
    values = getattr(inp.contents, field)
    count = math.prod(shape)
    if len(values) != count:
        raise _bad(f"input '{spec.name}': contents.{field} has {len(values)} elements but shape "
                   f"{_fmt_shape(shape)} needs {count}")
    for other in CONTENTS_FIELD.values():
        if other != field and len(getattr(inp.contents, other)):
            raise _bad(f"input '{spec.name}' is {spec.datatype}: its values belong in contents.{field}, "
                       f"not contents.{other}")
    wide = np.array(values, dtype=np.float64 if spec.dtype.kind == "f" else None)
    if spec.dtype.kind in "iu" and count:
        info = np.iinfo(spec.dtype)
        if int(wide.min()) < info.min or int(wide.max()) > info.max:
            raise _bad(f"input '{spec.name}': a value in contents.{field} is out of range for {spec.datatype}")
    return wide.astype(spec.dtype, copy=False).reshape(shape)


def parse_grpc_request(req, model) -> InferRequest:
    """Check a ModelInferRequest against `model` (a ServedModel) and return its tensors."""
    raws = req.raw_input_contents
    if raws and len(raws) != len(req.inputs):
        raise _bad(f"raw_input_contents has {len(raws)} entries but the request has {len(req.inputs)} inputs; "
                   f"give one per input, in input order")
    given: dict[str, np.ndarray] = {}
    for i, inp in enumerate(req.inputs):
        name = inp.name
        if not name:
            raise _bad(f"inputs[{i}] needs a name")
        shape = list(inp.shape)
        spec = check_input_header(model, name, inp.datatype, shape, given)
        if any(k in inp.parameters for k in _SHARED_MEMORY):
            raise _bad(f"input '{name}': shared-memory tensors are not supported by this server")
        if raws:
            if inp.HasField("contents"):
                raise _bad(f"input '{name}' has both contents and raw_input_contents")
            given[name] = _from_raw(raws[i], spec, shape, i)
        else:
            given[name] = _from_contents(inp, spec, shape)
    inputs, batch = ordered_inputs(model, given)
    if req.outputs:
        seen: set = set()
        for out in req.outputs:
            params = out.parameters
            classification = "classification" in params and params["classification"].int64_param > 0
            check_output_request(model, out.name, seen, classification, any(k in params for k in _SHARED_MEMORY))
        outputs = [(out.name, True) for out in req.outputs]
    else:
        outputs = [(s.name, True) for s in model.outputs]
    return InferRequest(req.id or None, inputs, outputs, batch)


def encode_grpc_response(model, request: InferRequest, results: dict[str, np.ndarray]) -> "pb.ModelInferResponse":
    resp = pb.ModelInferResponse(model_name=model.name, model_version=model.version, id=request.id or "")
    datatypes = model.datatypes
    for name, _ in request.outputs:
        arr = results[name]
        out = resp.outputs.add(name=name, datatype=datatypes[name])
        out.shape.extend(arr.shape)
        resp.raw_output_contents.append(arr.tobytes())   # C order whatever the array's layout
    return resp
