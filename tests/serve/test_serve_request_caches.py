"""The request path's caches: checked binary request headers (per model) and all-binary response headers.  A
cached answer must be exactly what the uncached path gives, for good requests and bad ones."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dslc.serve import protocol
from dslc.serve.model import ServedModel
from dslc.serve.protocol import ProtocolError, _reference_encode, encode_infer_response, parse_infer_request
from serve_helpers import two_io_inputs
from serve_models import two_io


@pytest.fixture(scope="module")
def model():
    m = ServedModel("two_io", "1", two_io().SerializeToString())
    m.load()
    return m


def _binary_request(x, idx, outputs=None, rid=None):
    head = {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape),
                        "parameters": {"binary_data_size": x.nbytes}},
                       {"name": "idx", "datatype": "INT64", "shape": list(idx.shape),
                        "parameters": {"binary_data_size": idx.nbytes}}]}
    if outputs is not None:
        head["outputs"] = outputs
    if rid is not None:
        head["id"] = rid
    h = json.dumps(head).encode()
    return h + x.tobytes() + idx.tobytes(), str(len(h))


def _uncached(model, body, hl):
    plans, model.header_plans = model.header_plans, None
    try:
        return parse_infer_request(body, hl, model)
    finally:
        model.header_plans = plans


def test_a_repeated_header_is_parsed_once_and_carries_each_requests_data(model):
    model.header_plans.clear()
    for seed in range(4):
        x, idx = two_io_inputs(seed, batch=2)
        body, hl = _binary_request(x, idx, outputs=[{"name": "total", "parameters": {"binary_data": True}}])
        got = parse_infer_request(body, hl, model)
        want = _uncached(model, body, hl)
        assert len(model.header_plans) == 1
        assert list(got.inputs) == list(want.inputs) == ["x", "idx"]
        for n in want.inputs:
            assert got.inputs[n].dtype == want.inputs[n].dtype and got.inputs[n].shape == want.inputs[n].shape
            np.testing.assert_array_equal(got.inputs[n], want.inputs[n])
        np.testing.assert_array_equal(got.inputs["x"], x)
        assert (got.id, got.outputs, got.batch) == (want.id, want.outputs, want.batch) == (None, [("total", True)], 2)


@pytest.mark.parametrize("cut", [-1, +4, -8])
def test_a_cached_header_with_a_wrong_binary_length_gets_the_uncached_error(model, cut):
    x, idx = two_io_inputs(0)
    body, hl = _binary_request(x, idx)
    parse_infer_request(body, hl, model)            # now cached
    bad = body[:cut] if cut < 0 else body + b"\0" * cut
    with pytest.raises(ProtocolError) as cached:
        parse_infer_request(bad, hl, model)
    with pytest.raises(ProtocolError) as plain:
        _uncached(model, bad, hl)
    assert cached.value.status == plain.value.status == 400
    assert cached.value.message == plain.value.message


def test_json_data_and_bad_headers_are_not_cached(model):
    model.header_plans.clear()
    x, idx = two_io_inputs(1)
    h = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape),
                                "parameters": {"binary_data_size": x.nbytes}},
                               {"name": "idx", "datatype": "INT64", "shape": list(idx.shape),
                                "data": idx.ravel().tolist()}]}).encode()
    req = parse_infer_request(h + x.tobytes(), str(len(h)), model)   # one input binary, one JSON: not cached
    np.testing.assert_array_equal(req.inputs["idx"], idx)
    assert model.header_plans == {}
    wrong = json.dumps({"inputs": [{"name": "x", "datatype": "FP64", "shape": list(x.shape),
                                    "parameters": {"binary_data_size": x.nbytes}}]}).encode()
    for _ in range(2):
        with pytest.raises(ProtocolError, match="data-type is 'FP64'"):
            parse_infer_request(wrong + x.tobytes(), str(len(wrong)), model)
    assert model.header_plans == {}


def test_the_header_cache_is_bounded(model):
    model.header_plans.clear()
    x, idx = two_io_inputs(2)
    for i in range(protocol.HEADER_PLANS_MAX + 10):
        body, hl = _binary_request(x, idx, rid=f"r{i}")
        assert parse_infer_request(body, hl, model).id == f"r{i}"
        assert len(model.header_plans) <= protocol.HEADER_PLANS_MAX


def test_cached_binary_response_headers_equal_the_definition():
    rng = np.random.default_rng(3)
    dts = {"y": "FP32", "idx": "INT64"}
    protocol._BINARY_HEADS.clear()
    for rows in (1, 1, 3, 1, 3):
        results = {"y": rng.standard_normal((rows, 5)).astype(np.float32),
                   "idx": rng.integers(-9, 9, (rows, 2)).astype(np.int64)}
        for outputs in ([("y", True)], [("idx", True), ("y", True)]):
            assert encode_infer_response("m", "1", None, outputs, results, dts) == \
                _reference_encode("m", "1", None, outputs, results, dts)
    assert len(protocol._BINARY_HEADS) == 4      # (1 or 3 rows) x (two output lists)
