"""The infer route answered by the HTTP protocol itself (dslc.serve.infer_http) against the ASGI route it bypasses.

A query string sends the same request down the ASGI route, so every case here is asked both ways and the answers
must be the same bytes; then the connection handling the protocol path takes part in: pipelining, Expect:
100-continue, Connection: close, HTTP/1.0, chunked uploads, a client that leaves halfway through its body.
"""
from __future__ import annotations

import json
import socket
import time

import httpx
import numpy as np
import pytest

from serve_helpers import ServerProcess, lenet_input
from test_serve_bad_requests import CASES

pytestmark = pytest.mark.timeout(120)


def _binary_request(x: np.ndarray, binary_out: bool = True) -> tuple[bytes, dict]:
    head = {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape),
                        "parameters": {"binary_data_size": x.nbytes}}]}
    if binary_out:
        head["parameters"] = {"binary_data_output": True}
    h = json.dumps(head).encode()
    return h + x.tobytes(), {"Inference-Header-Content-Length": str(len(h))}


def _json_request(x: np.ndarray) -> tuple[bytes, dict]:
    return json.dumps({"id": "r-7", "inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape),
                                               "data": x.ravel().tolist()}]}).encode(), {}


GOOD = [("binary", "POST", "/v2/models/lenet/infer", *_binary_request(lenet_input(1)), 200, ""),
        ("binary-batch-3", "POST", "/v2/models/lenet/infer", *_binary_request(lenet_input(2, 3)), 200, ""),
        ("json-with-id", "POST", "/v2/models/lenet/infer", *_json_request(lenet_input(3)), 200, ""),
        ("versioned", "POST", "/v2/models/lenet/versions/1/infer", *_binary_request(lenet_input(4), False), 200, "")]


@pytest.fixture(scope="module")
def inline_server(model_dir):
    """Queue delay 0: LeNet's batches run inline on the loop, so replies are written from inside the flush."""
    s = ServerProcess([str(model_dir / "lenet.onnx"), "--max-batch-size", "8", "--max-queue-delay-ms", "0",
                       "--max-body-size", "1MiB"])
    try:
        yield s.wait_ready()
    finally:
        s.stop()


@pytest.fixture(params=["batched", "inline"])
def srv(request, server, inline_server):
    """The shared server (2 ms queue delay: batches on the worker thread) and the inline one."""
    return server if request.param == "batched" else inline_server


@pytest.mark.parametrize("case", GOOD + CASES, ids=[c[0] for c in GOOD + CASES])
def test_protocol_path_answers_the_same_bytes_as_the_asgi_route(server, case):
    _, method, path, body, headers, status, _ = case
    with httpx.Client(base_url=server.url, timeout=30) as c:
        fast = c.request(method, path, content=body, headers=headers)
        asgi = c.request(method, path + "?route=asgi", content=body, headers=headers)
    assert fast.status_code == asgi.status_code == status, (fast.text, asgi.text)
    assert fast.content == asgi.content
    assert dict(fast.headers) == dict(asgi.headers)


def test_api_key_refusal_is_the_same_both_ways(model_dir):
    s = ServerProcess([str(model_dir / "lenet.onnx"), "--api-key", "k3y"]).wait_ready()
    try:
        body, headers = _binary_request(lenet_input(5))
        with httpx.Client(base_url=s.url, timeout=30) as c:
            for h in ({}, {"Authorization": "Bearer wrong"}):
                fast = c.post("/v2/models/lenet/infer", content=body, headers={**headers, **h})
                asgi = c.post("/v2/models/lenet/infer?x", content=body, headers={**headers, **h})
                assert fast.status_code == asgi.status_code == 401
                assert fast.content == asgi.content and dict(fast.headers) == dict(asgi.headers)
                assert fast.headers["www-authenticate"] == "Bearer"
            ok = c.post("/v2/models/lenet/infer", content=body, headers={**headers, "Authorization": "Bearer k3y"})
            assert ok.status_code == 200
    finally:
        s.stop()


# ------------------------------------------------------------------------------------------ raw connections

def _request_bytes(path: str, body: bytes, headers: dict, extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    head = b"POST %s HTTP/%s\r\nHost: t\r\nContent-Length: %d\r\n" % (path.encode(), version, len(body))
    for k, v in headers.items():
        head += f"{k}: {v}\r\n".encode()
    return head + extra + b"\r\n" + body


def _read_response(sock: socket.socket, buf: bytearray) -> tuple[int, dict, bytes]:
    """One HTTP/1.1 response with a Content-Length off the socket; leftover bytes stay in buf."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed with {bytes(buf)!r} unread"
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    n = int(hdrs.get("content-length", 0))
    while len(rest) < n:
        chunk = sock.recv(65536)
        assert chunk
        rest += chunk
    buf[:] = rest[n:]
    return status, hdrs, rest[:n]


def _logits(hdrs: dict, body: bytes, rows: int = 1) -> np.ndarray:
    hl = int(hdrs["inference-header-content-length"])
    return np.frombuffer(body[hl:], np.float32).reshape(rows, 10)


def test_pipelined_requests_are_answered_in_order(srv, ref):
    """Three infers and a GET in one write: the protocol answers the first, uvicorn queues the rest behind it."""
    xs = [lenet_input(20 + i) for i in range(3)]
    reqs = [_request_bytes("/v2/models/lenet/infer", *_binary_request(x)) for x in xs]
    get = b"GET /v2/health/ready HTTP/1.1\r\nHost: t\r\n\r\n"
    host, port = srv.host_port.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(reqs[0] + reqs[1] + get + reqs[2])
        buf = bytearray()
        answers = [_read_response(s, buf) for _ in range(4)]
    assert [a[0] for a in answers] == [200, 200, 200, 200]
    assert json.loads(answers[2][2]) == {"ready": True}
    for x, (_, hdrs, body) in zip(xs, answers[:2] + answers[3:]):
        np.testing.assert_allclose(_logits(hdrs, body), ref("lenet", {"x": x})["logits"], rtol=1e-5, atol=1e-6)


def test_expect_100_continue_goes_the_asgi_way_and_works(srv, ref):
    x = lenet_input(30)
    body, headers = _binary_request(x)
    host, port = srv.host_port.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(_request_bytes("/v2/models/lenet/infer", b"", headers, b"Expect: 100-continue\r\n")
                  .replace(b"Content-Length: 0", b"Content-Length: %d" % len(body)))
        assert s.recv(1024).startswith(b"HTTP/1.1 100 Continue")
        s.sendall(body)
        status, hdrs, out = _read_response(s, bytearray())
    assert status == 200
    np.testing.assert_allclose(_logits(hdrs, out), ref("lenet", {"x": x})["logits"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("how", ["connection-close", "http-1.0"])
def test_a_request_that_ends_the_connection_gets_its_answer_then_the_close(srv, how):
    body, headers = _binary_request(lenet_input(31))
    if how == "connection-close":
        raw = _request_bytes("/v2/models/lenet/infer", body, {**headers, "Connection": "close"})
    else:
        raw = _request_bytes("/v2/models/lenet/infer", body, headers, version=b"1.0")
    host, port = srv.host_port.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(raw)
        buf = bytearray()
        status, hdrs, _ = _read_response(s, buf)
        assert status == 200 and hdrs["connection"] == "close"
        assert s.recv(1024) == b"" and not buf   # closed by the server, nothing after the response


def test_chunked_upload_is_answered(srv, ref):
    x = lenet_input(32)
    body, headers = _binary_request(x)

    def pieces():
        for i in range(0, len(body), 700):
            yield body[i:i + 700]
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        r = c.post("/v2/models/lenet/infer", content=pieces(), headers=headers)
    assert r.status_code == 200 and "transfer-encoding" not in r.headers
    hl = int(r.headers["inference-header-content-length"])
    np.testing.assert_allclose(np.frombuffer(r.content[hl:], np.float32).reshape(1, 10),
                               ref("lenet", {"x": x})["logits"], rtol=1e-5, atol=1e-6)


def _failures_499(c: httpx.Client) -> float:
    for ln in c.get("/metrics").text.splitlines():
        if ln.startswith('dslc_inference_request_failure_total{code="499",model="lenet"'):
            return float(ln.split()[-1])
    return 0.0


def test_a_client_leaving_halfway_through_its_body_is_counted_and_the_server_serves_on(srv):
    body, headers = _binary_request(lenet_input(33))
    host, port = srv.host_port.rsplit(":", 1)
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        before = _failures_499(c)
        with socket.create_connection((host, int(port)), timeout=30) as s:
            s.sendall(_request_bytes("/v2/models/lenet/infer", body, headers)[:-1000])
            time.sleep(0.1)
        deadline = time.monotonic() + 10
        while _failures_499(c) < before + 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _failures_499(c) == before + 1
        inflight = next(ln for ln in c.get("/metrics").text.splitlines()
                        if ln.startswith("dslc_inflight_requests") and 'model="lenet"' in ln)
        assert float(inflight.split()[-1]) == 0, inflight
        r = c.post("/v2/models/lenet/infer", content=body, headers=headers)
        assert r.status_code == 200


def test_shutdown_reports_every_accepted_request_answered(model_dir):
    """The protocol path's bookkeeping: accepted == answered, a client that left counted among them."""
    s = ServerProcess([str(model_dir / "lenet.onnx"), "--max-queue-delay-ms", "0"]).wait_ready()
    body, headers = _binary_request(lenet_input(34))
    host, port = s.host_port.rsplit(":", 1)
    with httpx.Client(base_url=s.url, timeout=30) as c:
        for _ in range(5):
            assert c.post("/v2/models/lenet/infer", content=body, headers=headers).status_code == 200
        assert c.post("/v2/models/nope/infer", content=body, headers=headers).status_code == 404   # not accepted
        assert c.post("/v2/models/lenet/infer", content=b"{", headers={}).status_code == 400
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(_request_bytes("/v2/models/lenet/infer", body, headers)[:-10])
    time.sleep(0.2)
    assert s.stop() == 0
    assert "answered 7 of 7 accepted inference requests" in s.output, s.output


def test_infer_route_recognises_exactly_the_infer_paths():
    from dslc.serve.app import ServeApp
    app = ServeApp([])
    assert app.infer_route(b"/v2/models/m/infer") == ("m", None)
    assert app.infer_route(b"/v2/models/m/versions/2/infer") == ("m", "2")
    assert app.infer_route(b"//v2//models/m/infer") == ("m", None)   # as the ASGI route splits it
    for other in (b"/v2/models/m/infer?x=1", b"/v2/models/m%20x/infer", b"/v2/models/m/ready", b"/v2/models/infer",
                  b"/v2/models/m/x/infer", b"/v2/models/m/versions/2/3/infer", "/v2/models/\u00e9/infer".encode(),
                  b"/v1/models/m/infer", b"/v2/repository/models/m/infer"):
        assert app.infer_route(other) is None, other


# ------------------------------------------------------------------------------------------------ in-process

class _Transport:
    """What the protocol writes, write by write."""

    def __init__(self):
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data):
        self.writes.append(bytes(data))

    def close(self):
        self.closed = True

    def is_closing(self):
        return self.closed

    def get_extra_info(self, name, default=None):
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


def test_the_protocol_answers_infer_in_one_write_without_an_asgi_task(ref):
    """The point of the path: no task per request and a single write per response; other routes still go
    through a task (uvicorn's ASGI cycle)."""
    import asyncio

    import uvicorn
    from uvicorn.server import ServerState

    from dslc.serve.app import ServeApp
    from dslc.serve.infer_http import InferHttpProtocol
    from dslc.serve.metrics import Metrics
    from dslc.serve.model import ServedModel
    from serve_helpers import serve_models

    async def main():
        m = ServedModel("lenet", "1", serve_models.lenet().SerializeToString(), max_batch_size=8,
                        queue_delay_ms=0.0)
        app = ServeApp([m], metrics=Metrics())
        await app._load_all()
        config = uvicorn.Config(app, http=InferHttpProtocol, lifespan="off", log_level="warning",
                                access_log=False, server_header=False, date_header=False)
        config.load()
        state = ServerState()
        proto = InferHttpProtocol(config=config, server_state=state, app_state={},
                                  _loop=asyncio.get_running_loop())
        t = _Transport()
        proto.connection_made(t)
        x = lenet_input(40)
        proto.data_received(_request_bytes("/v2/models/lenet/infer", *_binary_request(x)))
        assert not state.tasks   # no ASGI task for the infer route
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(t.writes) == 1, t.writes
        head, _, body = t.writes[0].partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK")
        hl = int(next(ln.split(b":")[1] for ln in head.split(b"\r\n")
                      if ln.lower().startswith(b"inference-header-content-length")))
        np.testing.assert_allclose(np.frombuffer(body[hl:], np.float32).reshape(1, 10),
                                   ref("lenet", {"x": x})["logits"], rtol=1e-5, atol=1e-6)
        assert app.accepted == app.answered == 1 and not t.closed

        proto.data_received(b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n")
        assert len(state.tasks) == 1   # the ASGI way
        for _ in range(20):
            await asyncio.sleep(0)
        assert b'{"live":true}' in b"".join(t.writes[1:])
        m.batcher.close()

    asyncio.run(main())
