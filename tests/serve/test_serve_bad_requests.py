"""Every bad request gets a 4xx naming the problem, and the server keeps serving (same connection, next request)."""
from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from serve_helpers import lenet_input, two_io_inputs

pytestmark = pytest.mark.timeout(60)

X, IDX = two_io_inputs(11, batch=2)
LENET_X = lenet_input(12)


def _inp(name="x", datatype="FP32", shape=(2, 4), data=None):
    return {"name": name, "datatype": datatype, "shape": list(shape),
            "data": X.tolist() if data is None else data}


GOOD_IDX = {"name": "idx", "datatype": "INT64", "shape": [2, 3], "data": IDX.ravel().tolist()}


def _binary(inputs_meta, payload: bytes):
    head = json.dumps({"inputs": inputs_meta}).encode()
    return head + payload, {"Inference-Header-Content-Length": str(len(head))}


def _body(obj):
    return json.dumps(obj).encode(), {}


# (id, method, path, body bytes, headers, status, message fragment)
CASES = [
    ("unknown-model", "POST", "/v2/models/nope/infer", *_body({"inputs": [_inp()]}), 404, "unknown model 'nope'"),
    ("unknown-version", "POST", "/v2/models/two_io/versions/3/infer", *_body({"inputs": [_inp(), GOOD_IDX]}), 404,
     "unknown version '3'"),
    ("missing-input", "POST", "/v2/models/two_io/infer", *_body({"inputs": [_inp()]}), 400, "missing 'idx'"),
    ("extra-input", "POST", "/v2/models/two_io/infer",
     *_body({"inputs": [_inp(), GOOD_IDX, _inp(name="z")]}), 400, "unexpected inference input 'z'"),
    ("duplicate-input", "POST", "/v2/models/two_io/infer",
     *_body({"inputs": [_inp(), GOOD_IDX, _inp()]}), 400, "input 'x' is given more than once"),
    ("wrong-datatype", "POST", "/v2/models/two_io/infer",
     *_body({"inputs": [_inp(datatype="FP64"), GOOD_IDX]}), 400, "data-type is 'FP64', but model 'two_io' expects 'FP32'"),
    ("unknown-datatype", "POST", "/v2/models/two_io/infer",
     *_body({"inputs": [_inp(datatype="FLOAT"), GOOD_IDX]}), 400, "not a protocol datatype"),
    ("wrong-shape", "POST", "/v2/models/two_io/infer",
     *_body({"inputs": [_inp(shape=(2, 5), data=[0.0] * 10), GOOD_IDX]}), 400,
     "unexpected shape for input 'x' for model 'two_io': expected [-1,4], got [2,5]"),
    ("wrong-rank", "POST", "/v2/models/lenet/infer",
     *_body({"inputs": [{"name": "x", "datatype": "FP32", "shape": [784], "data": [0.0] * 784}]}), 400,
     "unexpected shape for input 'x'"),
    ("count-mismatch", "POST", "/v2/models/two_io/infer",
     *_body({"inputs": [_inp(data=[1.0] * 7), GOOD_IDX]}), 400, "'data' has 7 elements but shape [2,4] needs 8"),
    ("batch-mismatch", "POST", "/v2/models/two_io/infer",
     *_body({"inputs": [_inp(), {**GOOD_IDX, "shape": [1, 3], "data": [1, 2, 3]}]}), 400, "disagree on the batch size"),
    ("batch-too-big", "POST", "/v2/models/two_io/infer",
     *_body({"inputs": [_inp(shape=(17, 4), data=[0.0] * 68),
                        {**GOOD_IDX, "shape": [17, 3], "data": [0] * 51}]}), 400, "batch-size must be <= 16"),
    ("malformed-json", "POST", "/v2/models/two_io/infer", b'{"inputs": [', {}, 400, "malformed JSON"),
    ("json-not-object", "POST", "/v2/models/two_io/infer", b"[1, 2]", {}, 400, "must be a JSON object"),
    ("non-numeric", "POST", "/v2/models/two_io/infer",
     *_body({"inputs": [_inp(data=["a"] * 8), GOOD_IDX]}), 400, "non-numeric"),
    ("float-in-int64", "POST", "/v2/models/two_io/infer",
     *_body({"inputs": [_inp(), {**GOOD_IDX, "data": [1.5] * 6}]}), 400, "INT64 'data' holds non-integer"),
    ("ragged-data", "POST", "/v2/models/two_io/infer",
     *_body({"inputs": [_inp(data=[[1, 2, 3, 4], [1, 2]]), GOOD_IDX]}), 400, "not a rectangular array"),
    ("truncated-binary", "POST", "/v2/models/lenet/infer",
     *_binary([{"name": "x", "datatype": "FP32", "shape": [1, 1, 28, 28],
                "parameters": {"binary_data_size": 3136}}], LENET_X.tobytes()[:1000]), 400,
     "binary data is truncated"),
    ("oversized-binary", "POST", "/v2/models/lenet/infer",
     *_binary([{"name": "x", "datatype": "FP32", "shape": [1, 1, 28, 28],
                "parameters": {"binary_data_size": 3136}}], LENET_X.tobytes() + b"\0" * 64), 400,
     "64 byte(s) beyond"),
    ("binary-size-vs-shape", "POST", "/v2/models/lenet/infer",
     *_binary([{"name": "x", "datatype": "FP32", "shape": [1, 1, 28, 28],
                "parameters": {"binary_data_size": 3000}}], LENET_X.tobytes()[:3000]), 400,
     "binary_data_size is 3000 bytes but shape [1,1,28,28] of FP32 needs 3136"),
    ("header-length-past-body", "POST", "/v2/models/lenet/infer", b'{"inputs": []}',
     {"Inference-Header-Content-Length": "999"}, 400, "Inference-Header-Content-Length is 999"),
    ("unknown-output", "POST", "/v2/models/two_io/infer",
     *_body({"inputs": [_inp(), GOOD_IDX], "outputs": [{"name": "w"}]}), 400, "unexpected inference output 'w'"),
    ("no-data", "POST", "/v2/models/two_io/infer",
     *_body({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4]}, GOOD_IDX]}), 400,
     "neither 'data' nor parameters.binary_data_size"),
    ("body-too-large", "POST", "/v2/models/lenet/infer", b"{" + b" " * (1 << 20) + b"}", {}, 413,
     "over the limit of 1048576 bytes"),
    ("bad-gzip", "POST", "/v2/models/lenet/infer", b"not gzip at all", {"Content-Encoding": "gzip"}, 400,
     "not valid gzip"),
    ("wrong-method", "PUT", "/v2/models/lenet/infer", b"{}", {}, 405, "method PUT not allowed"),
    ("wrong-method-get", "GET", "/v2/models/lenet/infer", b"", {}, 405, "use POST"),
]


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def _good(http, ref):
    r = http.post("/v2/models/two_io/infer", json={"inputs": [_inp(), GOOD_IDX]})
    assert r.status_code == 200, r.text
    y = np.array(r.json()["outputs"][0]["data"], np.float32).reshape(2, 4)
    np.testing.assert_array_equal(y, ref("two_io", {"x": X, "idx": IDX})["y"])


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_request(http, ref, case):
    _, method, path, body, headers, status, fragment = case
    r = http.request(method, path, content=body, headers=headers)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    err = r.json()["error"]
    assert fragment in err, err
    _good(http, ref)   # same keep-alive connection: still serving


def test_failures_are_counted(http):
    text = http.get("/metrics").text
    line = next(ln for ln in text.splitlines()
                if ln.startswith('dslc_inference_request_failure_total{code="400",model="two_io"'))
    assert float(line.split()[-1]) >= 1


def test_body_too_large_chunked(server):
    """No Content-Length (chunked upload): the limit still holds while streaming."""
    def gen():
        for _ in range(40):
            yield b" " * 65536
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post("/v2/models/lenet/infer", content=gen())
        assert r.status_code == 413 and "over the limit" in r.json()["error"]
        r = c.get("/v2/health/ready")
        assert r.status_code == 200
