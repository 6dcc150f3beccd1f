"""The ASGI app in-process (httpx.ASGITransport): not-ready answers (503), and a model that fails to load."""
from __future__ import annotations

import json

import asyncio

import httpx
import pytest

from dslc.serve.app import ServeApp
from dslc.serve.metrics import Metrics
from dslc.serve.model import ServedModel
from serve_helpers import serve_models

pytestmark = pytest.mark.timeout(30)


def _client(app):
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dslc.test")


def test_not_ready_is_503_until_loaded():
    m = ServedModel("two_io", "1", serve_models.two_io().SerializeToString())
    app = ServeApp([m], metrics=Metrics())

    async def main():
        async with _client(app) as c:   # no lifespan startup: the model stays "loading"
            assert (await c.get("/v2/health/live")).status_code == 200
            r = await c.get("/v2/health/ready")
            assert r.status_code == 503 and "two_io v1" in r.json()["error"]
            r = await c.get("/v2/models/two_io/ready")
            assert r.status_code == 503 and r.json()["ready"] is False
            r = await c.post("/v2/models/two_io/infer", json={"inputs": []})
            assert r.status_code == 503 and "not ready yet (loading)" in r.json()["error"]
            r = await c.get("/v2/models/two_io")
            assert r.status_code == 503
            assert (await c.get("/v2/models/other")).status_code == 404

            await app._load_all()        # what lifespan startup runs
            assert (await c.get("/v2/health/ready")).status_code == 200
            r = await c.post("/v2/models/two_io/infer", json={"inputs": [
                {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]},
                {"name": "idx", "datatype": "INT64", "shape": [1, 3], "data": [1, 1, 1]}]})
            assert r.status_code == 200, r.text
            assert r.json()["outputs"][1]["data"] == [9]
            app.stopping = True          # what the first SIGTERM sets
            r = await c.get("/v2/health/ready")
            assert r.status_code == 503 and "shutting down" in r.json()["error"]
        m.batcher.close()

    asyncio.run(main())


def test_model_that_fails_to_load_is_reported_and_stops_the_server():
    good = ServedModel("two_io", "1", serve_models.two_io().SerializeToString())
    bad = ServedModel("broken", "1", b"this is not onnx")
    fatal = []
    app = ServeApp([bad, good], metrics=Metrics(), on_fatal=lambda: fatal.append(True))

    async def main():
        await app._load_all()
        async with _client(app) as c:
            r = await c.get("/v2/models/broken/ready")
            assert r.status_code == 503 and "failed to load" in r.json()["error"]

    asyncio.run(main())
    assert fatal and app.exit_code == 1
    assert bad.state == "failed" and "onnxruntime cannot load it" in bad.error


def test_metrics_histogram_buckets_and_exposition():
    from dslc.serve.metrics import Histogram
    h = Histogram((1, 2, 4))
    for v in (0.5, 1, 1.5, 4, 9):
        h.observe(v)
    assert h.cumulative() == [("1.0", 2), ("2.0", 3), ("4.0", 4), ("+Inf", 5)]   # le: a value on a bound counts in it
    assert h.sum == 16.0
    m = Metrics()
    mm = m.for_model("a", "1")
    mm.success.inc()
    mm.failure(400)
    mm.failure(400)
    mm.batch.observe(3)
    text = m.render().decode()
    assert 'dslc_inference_request_success_total{model="a",version="1"} 1.0' in text
    assert 'dslc_inference_request_failure_total{code="400",model="a",version="1"} 2.0' in text
    assert 'dslc_batch_size_bucket{le="4.0",model="a",version="1"} 1.0' in text
    assert 'dslc_batch_size_count{model="a",version="1"} 1.0' in text
    assert "process_cpu_seconds_total" in text


def test_internal_error_is_a_json_500_and_serving_goes_on(monkeypatch, capfd):
    from dslc.serve import app as app_mod
    m = ServedModel("two_io", "1", serve_models.two_io().SerializeToString())
    app = ServeApp([m], metrics=Metrics())
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]},
                       {"name": "idx", "datatype": "INT64", "shape": [1, 3], "data": [1, 1, 1]}]}
    real = app_mod.encode_infer_response
    calls = []

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 1:
            raise KeyError("boom")
        return real(*a, **k)

    monkeypatch.setattr(app_mod, "encode_infer_response", flaky)

    async def main():
        await app._load_all()
        async with _client(app) as c:
            r = await c.post("/v2/models/two_io/infer", json=body)
            assert r.status_code == 500 and "internal server error: KeyError" in r.json()["error"]
            r = await c.post("/v2/models/two_io/infer", json=body)
            assert r.status_code == 200
        m.batcher.close()

    asyncio.run(main())
    assert app.accepted == app.answered == 2
    assert m.mmetrics.failures == {500: 1} and m.mmetrics.inflight.value == 0
    assert "Traceback" in capfd.readouterr().err


def test_response_encoding_equals_the_plain_json_dumps_definition():
    import numpy as np
    from dslc.serve.protocol import DTYPES, _reference_encode, encode_infer_response
    rng = np.random.default_rng(0)
    results = {"y": rng.standard_normal((2, 3)).astype(np.float32), "idx": np.array([[1, -2]], np.int64),
               "b": np.array([True, False]), "s": np.float64(np.nan) * np.ones(()),
               "t": np.asfortranarray(rng.standard_normal((3, 2)))}
    dts = {"y": "FP32", "idx": "INT64", "b": "BOOL", "s": "FP64", "t": "FP64"}
    for rid in (None, "", "req-1", 'quote" and \\ and é and \u2028'):
        for outputs in ([("y", True)], [("y", False)], [("y", False), ("idx", True), ("b", False)],
                        [("s", False), ("t", True)], [("t", False), ("b", True), ("y", True)], []):
            for name, version in (("lenet", "1"), ("mödel \"x\"", "v2")):
                want, want_len = _reference_encode(name, version, rid, outputs, results, dts)
                got, got_len = encode_infer_response(name, version, rid, outputs, results, dts)
                # same binary section; same header but for how a float prints (orjson writes float32 values
                # shortest-round-trip as float32): equal once read back as the output's datatype
                assert (want_len is None) == (got_len is None)
                assert got[got_len or len(got):] == want[want_len or len(want):]
                w, g = json.loads(want[:want_len]), json.loads(got[:got_len])
                for wo, go in zip(w.pop("outputs"), g.pop("outputs")):
                    wd, gd = wo.pop("data", None), go.pop("data", None)
                    assert wo == go
                    if wd is not None:
                        dtype = DTYPES[dts[wo["name"]]]
                        np.testing.assert_array_equal(np.array(gd, dtype), np.array(wd, dtype))
                assert w == g
