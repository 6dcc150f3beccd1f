"""Open Inference Protocol (KServe v2) tensors: datatypes, request parsing and checking, response encoding.

Requests arrive as JSON (`data` flat or nested, row-major) or through the binary tensor data extension: the
JSON header is the first `Inference-Header-Content-Length` bytes of the body, and each input with
`parameters.binary_data_size` takes its bytes, in input order, from what follows.  Responses put an output in
the binary section when the request asks for it (`outputs[i].parameters.binary_data`, or the request-level
`parameters.binary_data_output` for outputs not listed), which is what tritonclient.http does by default.

Every problem with a request raises ProtocolError(status, message); the message names the problem.
"""
from __future__ import annotations

import json
import math

import orjson
from dataclasses import dataclass

import numpy as np

# protocol datatype -> numpy dtype (BYTES and BF16 exist in the protocol; dslc serve does not carry them)
DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8), "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
}
KNOWN_DATATYPES = set(DTYPES) | {"BYTES", "BF16"}

# onnxruntime NodeArg.type -> protocol datatype
ORT_TO_DATATYPE = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8", "tensor(uint16)": "UINT16", "tensor(uint32)": "UINT32", "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8", "tensor(int16)": "INT16", "tensor(int32)": "INT32", "tensor(int64)": "INT64",
    "tensor(float16)": "FP16", "tensor(float)": "FP32", "tensor(double)": "FP64",
    "tensor(string)": "BYTES", "tensor(bfloat16)": "BF16",
}
# protocol datatype -> Triton model-config enum
TRITON_TYPE = {dt: ("TYPE_STRING" if dt == "BYTES" else "TYPE_" + dt) for dt in KNOWN_DATATYPES}
FROM_TRITON_TYPE = {v: k for k, v in TRITON_TYPE.items()}

_UNSUPPORTED_PARAMS = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")


class ProtocolError(Exception):
    """A request the server answers with an HTTP error: `{"error": message}` and `status`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str              # protocol name: FP32, INT64, ...
    shape: tuple[int, ...]     # full shape as the model declares it, -1 for a variable dim

    def __post_init__(self):   # looked up once: the request path reads these per input
        object.__setattr__(self, "dtype", DTYPES.get(self.datatype))
        object.__setattr__(self, "itemsize", self.dtype.itemsize if self.dtype is not None else 0)


@dataclass
class InferRequest:
    id: str | None
    inputs: dict[str, np.ndarray]          # in the model's input order
    outputs: list[tuple[str, bool]]        # (output name, send as binary)
    batch: int                             # rows along dim 0 when the model batches, else 1


def _bad(msg: str) -> ProtocolError:
    return ProtocolError(400, msg)


def _fmt_shape(shape) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _check_shape(spec: TensorSpec, shape: list, model) -> None:
    ok = len(shape) == len(spec.shape) and all(e < 0 or e == d for e, d in zip(spec.shape, shape))
    if not ok:
        raise _bad(f"unexpected shape for input '{spec.name}' for model '{model.name}': "
                   f"expected {_fmt_shape(spec.shape)}, got {_fmt_shape(shape)}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _from_json(name: str, data, spec: TensorSpec, shape: list) -> np.ndarray:
    dtype = spec.dtype
    count = math.prod(shape)
    if not isinstance(data, list):
        raise _bad(f"input '{name}': 'data' must be a JSON array, got {type(data).__name__}")
    try:
        arr = np.array(data)
    except (ValueError, TypeError, OverflowError):
        raise _bad(f"input '{name}': 'data' is not a rectangular array of numbers") from None
    if arr.size != count:
        raise _bad(f"input '{name}': 'data' has {arr.size} elements but shape {_fmt_shape(shape)} "
                   f"needs {count}")
    if count == 0:
        return np.zeros(shape, dtype)
    kind = arr.dtype.kind
    if spec.datatype == "BOOL":
        if kind != "b":
            raise _bad(f"input '{name}': BOOL 'data' must hold only true/false")
    elif dtype.kind in "iu":
        if kind not in "iu":
            what = "non-integer numbers" if kind in "fb" else "non-numeric values"
            raise _bad(f"input '{name}': {spec.datatype} 'data' holds {what}")
        info = np.iinfo(dtype)
        if int(arr.min()) < info.min or int(arr.max()) > info.max:
            raise _bad(f"input '{name}': a value in 'data' is out of range for {spec.datatype}")
    else:  # float
        if kind not in "iuf":
            raise _bad(f"input '{name}': {spec.datatype} 'data' holds non-numeric values")
    return arr.astype(dtype, copy=False).reshape(shape)


def check_input_header(model, name: str, datatype: str, shape: list, given: dict) -> TensorSpec:
    """The checks every input goes through, whatever the wire format: a known, not repeated name, the model's
    datatype, a shape the model accepts.  Returns the input's spec."""
    spec = model.input_index.get(name)
    if spec is None:
        raise _bad(f"unexpected inference input '{name}' for model '{model.name}' "
                   f"(it takes {', '.join(repr(s.name) for s in model.inputs)})")
    if name in given:
        raise _bad(f"input '{name}' is given more than once")
    if datatype != spec.datatype:
        hint = "" if datatype in KNOWN_DATATYPES else " (not a protocol datatype)"
        raise _bad(f"inference input '{name}' data-type is '{datatype}'{hint}, but model '{model.name}' "
                   f"expects '{spec.datatype}'")
    if any(d < 0 for d in shape):
        raise _bad(f"input '{name}': 'shape' must be an array of non-negative integers")
    _check_shape(spec, shape, model)
    return spec


def ordered_inputs(model, given: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
    """All inputs present, in the model's order, agreeing on a batch size within max_batch_size: (inputs, rows)."""
    if len(given) != len(model.inputs):
        missing = [s.name for s in model.inputs if s.name not in given]
        raise _bad(f"expected {len(model.inputs)} inputs but got {len(given)} inputs for model "
                   f"'{model.name}': missing {', '.join(repr(m) for m in missing)}")
    inputs = {s.name: given[s.name] for s in model.inputs}
    batch = 1
    if model.max_batch_size > 0:
        rows = {n: a.shape[0] for n, a in inputs.items()}
        batch = next(iter(rows.values()))
        if any(r != batch for r in rows.values()):
            raise _bad(f"inputs of model '{model.name}' disagree on the batch size (dim 0): "
                       + ", ".join(f"'{n}' has {r}" for n, r in rows.items()))
        if batch < 1:
            raise _bad(f"inference request batch-size must be >= 1 for '{model.name}'")
        if batch > model.max_batch_size:
            raise _bad(f"inference request batch-size must be <= {model.max_batch_size} for "
                       f"'{model.name}', got {batch}")
    return inputs, batch


def check_output_request(model, name: str, seen: set, classification=False, shared_memory=False) -> None:
    """A requested output: one the model produces, asked for once, without extensions dslc does not carry."""
    if name not in model.output_index:
        raise _bad(f"unexpected inference output '{name}' for model '{model.name}' "
                   f"(it produces {', '.join(repr(s.name) for s in model.outputs)})")
    if name in seen:
        raise _bad(f"output '{name}' is requested more than once")
    seen.add(name)
    if classification:
        raise _bad(f"output '{name}': the classification extension is not supported")
    if shared_memory:
        raise _bad(f"output '{name}': shared-memory tensors are not supported by this server")


# Requests whose every input comes as binary data: the checked JSON header, keyed by its bytes.  A client sends
# the same header bytes for every request of one shape (tritonclient builds it from names, datatypes, shapes and
# sizes only), so the parse and every check above are done once per distinct header; later requests only slice
# their binary section.  The plan depends on nothing but the header bytes and the model, and is kept per model
# (a reloaded model starts empty); the binary section's length is still checked per request.
HEADER_PLANS_MAX = 256


class _HeaderPlan:
    __slots__ = ("id", "inputs", "outputs", "batch", "binary_size")

    def __init__(self, req: InferRequest):
        self.id = req.id
        self.inputs = [(n, a.dtype, a.shape) for n, a in req.inputs.items()]
        self.outputs = req.outputs
        self.batch = req.batch
        self.binary_size = sum(a.nbytes for a in req.inputs.values())

    def request(self, binary: memoryview) -> InferRequest:
        inputs = {}
        offset = 0
        for name, dtype, shape in self.inputs:
            arr = np.frombuffer(binary, dtype, math.prod(shape), offset).reshape(shape)
            offset += arr.nbytes
            inputs[name] = arr
        return InferRequest(self.id, inputs, self.outputs, self.batch)


def parse_infer_request(body: bytes, header_length: str | None, model) -> InferRequest:
    """Parse and check an inference request for `model` (an object with name, inputs, outputs, input_index,
    output_index, max_batch_size)."""
    plans = getattr(model, "header_plans", None)
    if plans is not None and header_length is not None and header_length.isdigit():
        hl = int(header_length)
        head = body[:hl]
        plan = plans.get(head)
        if plan is not None and len(body) - hl == plan.binary_size:
            return plan.request(memoryview(body)[hl:])
        req, all_binary = _parse(body, header_length, model)
        if all_binary:
            if len(plans) >= HEADER_PLANS_MAX:
                plans.clear()
            plans[head] = _HeaderPlan(req)
        return req
    return _parse(body, header_length, model)[0]


def _parse(body: bytes, header_length: str | None, model) -> tuple[InferRequest, bool]:
    """The request and whether every input came as binary data."""
    if header_length is not None:
        try:
            hl = int(header_length)
        except ValueError:
            raise _bad(f"Inference-Header-Content-Length is not an integer: {header_length!r}") from None
        if hl < 0 or hl > len(body):
            raise _bad(f"Inference-Header-Content-Length is {hl} but the request body has only "
                       f"{len(body)} bytes")
        head = body[:hl]
        binary = memoryview(body)[hl:]
    else:
        head = body
        binary = memoryview(b"")
    try:
        req = orjson.loads(head)   # ~5x json.loads on a request header; a JSON-tensor body gains most
    except (ValueError, UnicodeDecodeError) as e:
        raise _bad(f"malformed JSON in request body: {e}") from None
    if not isinstance(req, dict):
        raise _bad("request body must be a JSON object with an 'inputs' array")
    rid = req.get("id")
    if rid is not None and not isinstance(rid, str):
        raise _bad("'id' must be a string")
    params = req.get("parameters") or {}
    if not isinstance(params, dict):
        raise _bad("'parameters' must be a JSON object")
    raw_inputs = req.get("inputs")
    if not isinstance(raw_inputs, list):
        raise _bad("request needs an 'inputs' array")

    given: dict[str, np.ndarray] = {}
    offset = 0
    all_binary = True
    for i, inp in enumerate(raw_inputs):
        if not isinstance(inp, dict):
            raise _bad(f"inputs[{i}] must be a JSON object")
        name = inp.get("name")
        if not isinstance(name, str):
            raise _bad(f"inputs[{i}] needs a string 'name'")
        dt = inp.get("datatype")
        if not isinstance(dt, str):
            raise _bad(f"input '{name}' needs a string 'datatype'")
        shape = inp.get("shape")
        if type(shape) is not list or not all(type(d) is int for d in shape):
            raise _bad(f"input '{name}': 'shape' must be an array of non-negative integers")
        spec = check_input_header(model, name, dt, shape, given)
        ip = inp.get("parameters") or {}
        if type(ip) is not dict:
            raise _bad(f"input '{name}': 'parameters' must be a JSON object")
        if (len(ip) > 1 or (ip and "binary_data_size" not in ip)) and any(k in ip for k in _UNSUPPORTED_PARAMS):
            raise _bad(f"input '{name}': shared-memory tensors are not supported by this server")
        size = ip.get("binary_data_size")
        if size is not None:
            if not _is_int(size) or size < 0:
                raise _bad(f"input '{name}': binary_data_size must be a non-negative integer")
            if "data" in inp:
                raise _bad(f"input '{name}' has both 'data' and binary_data_size")
            need = math.prod(shape) * spec.itemsize
            if size != need:
                raise _bad(f"input '{name}': binary_data_size is {size} bytes but shape {_fmt_shape(shape)} "
                           f"of {dt} needs {need}")
            if offset + size > len(binary):
                raise _bad(f"input '{name}': binary data is truncated: binary_data_size {size} needs bytes "
                           f"{offset}..{offset + size} of the binary section, which has {len(binary)}")
            arr = np.frombuffer(binary[offset:offset + size], dtype=spec.dtype).reshape(shape)
            offset += size
        elif "data" in inp:
            arr = _from_json(name, inp["data"], spec, shape)
            all_binary = False
        else:
            raise _bad(f"input '{name}' has neither 'data' nor parameters.binary_data_size")
        given[name] = arr
    if offset != len(binary):
        raise _bad(f"binary section has {len(binary) - offset} byte(s) beyond what the inputs' "
                   f"binary_data_size values account for")
    inputs, batch = ordered_inputs(model, given)

    default_binary = params.get("binary_data_output", False)
    if not isinstance(default_binary, bool):
        raise _bad("parameters.binary_data_output must be true or false")
    raw_outputs = req.get("outputs")
    if raw_outputs is None:
        outputs = [(s.name, default_binary) for s in model.outputs]
    else:
        if not isinstance(raw_outputs, list):
            raise _bad("'outputs' must be an array")
        outputs = []
        seen = set()
        for i, out in enumerate(raw_outputs):
            if not isinstance(out, dict) or not isinstance(out.get("name"), str):
                raise _bad(f"outputs[{i}] must be a JSON object with a string 'name'")
            name = out["name"]
            op = out.get("parameters") or {}
            if not isinstance(op, dict):
                raise _bad(f"output '{name}': 'parameters' must be a JSON object")
            check_output_request(model, name, seen, bool(op.get("classification")),
                                 any(k in op for k in _UNSUPPORTED_PARAMS))
            b = op.get("binary_data", default_binary)
            if not isinstance(b, bool):
                raise _bad(f"output '{name}': parameters.binary_data must be true or false")
            outputs.append((name, b))
    return InferRequest(rid, inputs, outputs, batch), all_binary


# JSON fragments of the response header, built once per model and per output: the header is assembled from
# them with string joins instead of a json.dumps of a fresh dict per request (the same bytes, a few µs less).
_PREFIX: dict[tuple[str, str], str] = {}
_ENTRY: dict[tuple[str, str], str] = {}
_dumps = json.JSONEncoder(separators=(",", ":")).encode


def _reference_encode(model_name: str, version: str, request_id: str | None, outputs: list[tuple[str, bool]],
                      results: dict[str, np.ndarray], datatypes: dict[str, str]) -> tuple[bytes, int | None]:
    """The plain definition of the response bytes (json.dumps of the whole dict); the tests hold
    encode_infer_response to it."""
    entries = []
    chunks = []
    for name, binary in outputs:
        arr = results[name]
        entry = {"name": name, "datatype": datatypes[name], "shape": list(arr.shape)}
        if binary:
            raw = np.ascontiguousarray(arr).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = arr.ravel().tolist()
        entries.append(entry)
    resp = {"model_name": model_name, "model_version": version}
    if request_id is not None:
        resp["id"] = request_id
    resp["outputs"] = entries
    head = json.dumps(resp, separators=(",", ":")).encode()
    if not chunks:
        return head, None
    return b"".join([head, *chunks]), len(head)


def _json_data(arr: np.ndarray) -> str:
    """An output's values as a flat JSON array: orjson straight from the numpy buffer (30x json.dumps of
    .tolist() on 1000 floats; float32 printed shortest-round-trip as float32).  Non-finite floats keep the
    standard library's NaN/Infinity (orjson would write null)."""
    flat = arr.ravel()
    if flat.dtype.kind != "f" or np.isfinite(flat).all():
        try:
            return orjson.dumps(flat, option=orjson.OPT_SERIALIZE_NUMPY).decode()
        except orjson.JSONEncodeError:   # a dtype orjson does not take
            pass
    return _dumps(flat.tolist())


# Response headers of all-binary answers without a request id, keyed by what they are made of (model, version,
# the requested outputs and their shapes): a stream of same-shaped requests gets the header bytes from here.
_BINARY_HEADS: dict[tuple, bytes] = {}


def encode_infer_response(model_name: str, version: str, request_id: str | None,
                          outputs: list[tuple[str, bool]], results: dict[str, np.ndarray],
                          datatypes: dict[str, str]) -> tuple[bytes, int | None]:
    """Body bytes and, when some output went binary, the JSON header length for Inference-Header-Content-Length."""
    if request_id is None and outputs and all([b for _, b in outputs]):
        arrays = [results[name] for name, _ in outputs]
        key = (model_name, version, tuple(outputs), tuple([a.shape for a in arrays]),
               tuple([a.dtype.str for a in arrays]))
        head = _BINARY_HEADS.get(key)
        if head is None:
            body, hlen = _encode(model_name, version, None, outputs, results, datatypes)
            head = body[:hlen]
            if len(_BINARY_HEADS) >= HEADER_PLANS_MAX:
                _BINARY_HEADS.clear()
            _BINARY_HEADS[key] = head
        return b"".join([head, *[a.tobytes() for a in arrays]]), len(head)
    return _encode(model_name, version, request_id, outputs, results, datatypes)


def _encode(model_name: str, version: str, request_id: str | None, outputs: list[tuple[str, bool]],
            results: dict[str, np.ndarray], datatypes: dict[str, str]) -> tuple[bytes, int | None]:
    prefix = _PREFIX.get((model_name, version))
    if prefix is None:
        prefix = _PREFIX[(model_name, version)] = f'{{"model_name":{_dumps(model_name)},"model_version":{_dumps(version)}'
    parts = [prefix]
    if request_id is not None:
        parts.append(',"id":')
        parts.append(_dumps(request_id))
    parts.append(',"outputs":[')
    chunks = []
    first = True
    for name, binary in outputs:
        arr = results[name]
        dt = datatypes[name]
        frag = _ENTRY.get((name, dt))
        if frag is None:
            frag = _ENTRY[(name, dt)] = f'{{"name":{_dumps(name)},"datatype":{_dumps(dt)},"shape":['
        if not first:
            parts.append(",")
        first = False
        parts.append(frag)
        parts.append(",".join([str(d) for d in arr.shape]))
        if binary:
            raw = arr.tobytes()     # C order whatever the array's layout, like ascontiguousarray(arr).tobytes()
            parts.append('],"parameters":{"binary_data_size":%d}}' % len(raw))
            chunks.append(raw)
        else:
            parts.append('],"data":')
            parts.append(_json_data(arr))
            parts.append("}")
    parts.append("]}")
    head = "".join(parts).encode()
    if not chunks:
        return head, None
    chunks.insert(0, head)
    return b"".join(chunks), len(head)
