"""The server through the official tritonclient.http client and raw HTTP: answers equal direct onnxruntime."""
from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from serve_helpers import lenet_input, two_io_inputs

httpclient = pytest.importorskip("tritonclient.http")
pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def client(server):
    c = httpclient.InferenceServerClient(server.host_port, network_timeout=30, connection_timeout=10)
    yield c
    c.close()


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_lenet_infer_equals_onnxruntime(client, ref, binary):
    x = lenet_input(1, batch=3)
    inp = httpclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    outputs = [httpclient.InferRequestedOutput("logits", binary_data=binary)]
    res = client.infer("lenet", [inp], outputs=outputs, request_id="req-7")
    got = res.as_numpy("logits")
    assert got.dtype == np.float32 and got.shape == (3, 10)
    np.testing.assert_array_equal(got, ref("lenet", {"x": x})["logits"])
    assert res.get_response()["id"] == "req-7"
    assert res.get_response()["model_name"] == "lenet"


def test_client_default_binary_no_content_type(client, ref):
    """No requested outputs: the client asks for binary_data_output and sends no Content-Type."""
    x = lenet_input(2)
    inp = httpclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    res = client.infer("lenet", [inp])
    out = res.get_output("logits")
    assert out["parameters"]["binary_data_size"] == 40
    np.testing.assert_array_equal(res.as_numpy("logits"), ref("lenet", {"x": x})["logits"])


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_two_io_int64(client, ref, binary):
    x, idx = two_io_inputs(3, batch=5)
    a = httpclient.InferInput("x", list(x.shape), "FP32")
    a.set_data_from_numpy(x, binary_data=binary)
    b = httpclient.InferInput("idx", list(idx.shape), "INT64")
    b.set_data_from_numpy(idx, binary_data=not binary)   # mixed: one binary, one JSON
    res = client.infer("two_io", [a, b], outputs=[httpclient.InferRequestedOutput("y", binary_data=binary),
                                                  httpclient.InferRequestedOutput("total", binary_data=binary)])
    want = ref("two_io", {"x": x, "idx": idx})
    np.testing.assert_array_equal(res.as_numpy("y"), want["y"])
    total = res.as_numpy("total")
    assert total.dtype == np.int64
    np.testing.assert_array_equal(total, want["total"])


def test_outputs_filter(client, ref):
    x, idx = two_io_inputs(4)
    a = httpclient.InferInput("x", list(x.shape), "FP32")
    a.set_data_from_numpy(x)
    b = httpclient.InferInput("idx", list(idx.shape), "INT64")
    b.set_data_from_numpy(idx)
    res = client.infer("two_io", [a, b], outputs=[httpclient.InferRequestedOutput("total")])
    names = [o["name"] for o in res.get_response()["outputs"]]
    assert names == ["total"]
    assert res.as_numpy("y") is None
    np.testing.assert_array_equal(res.as_numpy("total"), ref("two_io", {"x": x, "idx": idx})["total"])


def test_versions_path_and_fixed_model(client, ref):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    inp = httpclient.InferInput("a", [2, 3], "FP32")
    inp.set_data_from_numpy(a)
    res = client.infer("fixed", [inp], model_version="1")
    np.testing.assert_array_equal(res.as_numpy("b"), -a)
    assert res.get_response()["model_version"] == "1"


def test_health_and_metadata_via_client(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("lenet")
    assert client.is_model_ready("lenet", "1")
    assert not client.is_model_ready("nope")
    meta = client.get_server_metadata()
    assert meta["name"] == "dslc" and "binary_tensor_data" in meta["extensions"]
    md = client.get_model_metadata("lenet")
    assert md == {"name": "lenet", "versions": ["1"], "platform": "onnxruntime_onnx",
                  "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 1, 28, 28]}],
                  "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]}
    md2 = client.get_model_metadata("two_io", "1")
    assert [(t["name"], t["datatype"], t["shape"]) for t in md2["inputs"]] == [
        ("x", "FP32", [-1, 4]), ("idx", "INT64", [-1, 3])]
    assert [(t["name"], t["datatype"], t["shape"]) for t in md2["outputs"]] == [
        ("y", "FP32", [-1, 4]), ("total", "INT64", [-1, 1])]


def test_config_as_perf_analyzer_reads_it(client):
    cfg = client.get_model_config("lenet")
    assert cfg["name"] == "lenet"
    assert cfg["platform"] == "onnxruntime_onnx" and cfg["backend"] == "onnxruntime"
    assert cfg["max_batch_size"] == 16
    assert cfg["input"] == [{"name": "x", "data_type": "TYPE_FP32", "format": "FORMAT_NONE", "dims": [1, 28, 28]}]
    assert cfg["output"] == [{"name": "logits", "data_type": "TYPE_FP32", "dims": [10]}]
    assert cfg["dynamic_batching"] == {"max_queue_delay_microseconds": 2000}
    assert cfg["instance_group"][0]["kind"] == "KIND_CPU"
    assert cfg["model_transaction_policy"] == {"decoupled": False}
    fixed = client.get_model_config("fixed")
    assert fixed["max_batch_size"] == 0 and "dynamic_batching" not in fixed
    assert fixed["input"][0]["dims"] == [2, 3]


def test_statistics(client):
    stats = client.get_inference_statistics("lenet")
    s = stats["model_stats"][0]
    assert s["name"] == "lenet" and s["version"] == "1"
    for k in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
        assert set(s["inference_stats"][k]) == {"count", "ns"}


def test_raw_json_nested_and_flat(http, ref):
    x, idx = two_io_inputs(5, batch=2)
    for xdata in (x.tolist(), x.ravel().tolist()):
        r = http.post("/v2/models/two_io/infer", json={
            "id": "abc", "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [2, 4], "data": xdata},
                {"name": "idx", "datatype": "INT64", "shape": [2, 3], "data": idx.tolist()}]})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/json"
        body = r.json()
        assert body["id"] == "abc" and body["model_version"] == "1"
        out = {o["name"]: o for o in body["outputs"]}
        assert out["y"]["datatype"] == "FP32" and out["y"]["shape"] == [2, 4]
        assert out["total"]["datatype"] == "INT64"
        want = ref("two_io", {"x": x, "idx": idx})
        np.testing.assert_array_equal(np.array(out["y"]["data"], np.float32).reshape(2, 4), want["y"])
        np.testing.assert_array_equal(np.array(out["total"]["data"], np.int64).reshape(2, 1), want["total"])


def test_raw_binary_request_and_response(http, ref):
    x = lenet_input(6, batch=2)
    head = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 1, 28, 28],
                                   "parameters": {"binary_data_size": x.nbytes}}],
                       "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}).encode()
    r = http.post("/v2/models/lenet/infer", content=head + x.tobytes(),
                  headers={"Inference-Header-Content-Length": str(len(head))})
    assert r.status_code == 200, r.text
    hl = int(r.headers["inference-header-content-length"])
    meta = json.loads(r.content[:hl])
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == 80
    got = np.frombuffer(r.content[hl:], np.float32).reshape(2, 10)
    np.testing.assert_array_equal(got, ref("lenet", {"x": x})["logits"])


def test_gzip_request_body(client, ref):
    x = lenet_input(7)
    inp = httpclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    res = client.infer("lenet", [inp], request_compression_algorithm="gzip")
    np.testing.assert_array_equal(res.as_numpy("logits"), ref("lenet", {"x": x})["logits"])


def test_metrics(http, client):
    x = lenet_input(8)
    inp = httpclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    client.infer("lenet", [inp])
    text = http.get("/metrics").text
    for name in ("dslc_inference_request_success_total", "dslc_inference_request_failure_total",
                 "dslc_request_duration_seconds_bucket", "dslc_queue_duration_seconds_bucket",
                 "dslc_compute_duration_seconds_bucket", "dslc_batch_size_bucket", "dslc_inflight_requests"):
        assert name in text, name
    line = next(ln for ln in text.splitlines()
                if ln.startswith('dslc_inference_request_success_total{model="lenet",version="1"}'))
    assert float(line.split()[-1]) >= 1
    assert 'dslc_inflight_requests{model="lenet",version="1"} 0.0' in text


def test_endpoints_errors(http):
    r = http.get("/v2/models/nope")
    assert r.status_code == 404 and "unknown model 'nope'" in r.json()["error"]
    r = http.get("/v2/models/lenet/versions/9")
    assert r.status_code == 404 and "unknown version '9'" in r.json()["error"]
    r = http.get("/v2/nowhere")
    assert r.status_code == 404 and "no such endpoint" in r.json()["error"]
    r = http.delete("/v2/models/lenet")
    assert r.status_code == 405 and "GET" in r.headers["allow"]
    r = http.get("/v2/models/lenet/infer")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert "not allowed" in r.json()["error"]
    r = http.get("/v2/health/live")
    assert r.status_code == 200
