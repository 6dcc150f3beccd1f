"""SIGTERM during load: the server stops accepting, answers every request it accepted, and exits 0."""
from __future__ import annotations

import asyncio
import json
import re
import signal
import time

import numpy as np
import pytest

from serve_helpers import ServerProcess

aiohttp = pytest.importorskip("aiohttp")

CLIENTS = 16


def _body(x: np.ndarray) -> tuple[bytes, dict]:
    head = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape),
                                   "parameters": {"binary_data_size": x.nbytes}}],
                       "parameters": {"binary_data_output": True}}).encode()
    return head + x.tobytes(), {"Inference-Header-Content-Length": str(len(head))}


async def _client(url, c, ok, bad, stop_at):
    rng = np.random.default_rng(c)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as s:
        while time.monotonic() < stop_at:
            x = rng.standard_normal((1, 1, 28, 28)).astype(np.float32)
            body, headers = _body(x)
            try:
                async with s.post(f"{url}/v2/models/lenet/infer", data=body, headers=headers) as r:
                    data = await r.read()
                    if r.status != 200:
                        bad.append(f"HTTP {r.status}: {data[:200]!r}")
                        continue
                    hl = int(r.headers["Inference-Header-Content-Length"])
                    ok.append((x, np.frombuffer(data[hl:], np.float32).reshape(1, 10)))
            except (aiohttp.ClientConnectionError, asyncio.TimeoutError):
                return  # server closed or refused the connection: this request was never accepted


@pytest.mark.timeout(90)
def test_sigterm_during_load_answers_every_accepted_request(model_dir, ref):
    srv = ServerProcess([str(model_dir / "lenet.onnx"), "--max-queue-delay-ms", "200", "--max-batch-size", "64"])
    srv.wait_ready()
    ok, bad = [], []
    rc = None

    async def main():
        nonlocal rc
        stop_at = time.monotonic() + 20
        tasks = [asyncio.create_task(_client(srv.url, c, ok, bad, stop_at)) for c in range(CLIENTS)]
        # A long queue delay puts the clients in lockstep: a burst of answers, then ~200 ms with every client's
        # next request waiting in the batching queue.  Signal inside such a wait, so requests are surely in flight.
        while len(ok) < 3 * CLIENTS:
            await asyncio.sleep(0.005)
        seen = len(ok)
        while len(ok) == seen:
            await asyncio.sleep(0.002)
        await asyncio.sleep(0.05)
        srv.proc.send_signal(signal.SIGTERM)
        sent_at = len(ok)
        await asyncio.wait_for(asyncio.gather(*tasks), 40)
        return sent_at

    try:
        answered_before_signal = asyncio.run(main())
        rc = srv.proc.wait(30)
    finally:
        srv.kill()
        srv._reader.join(5)
    out = srv.output
    assert rc == 0, out
    assert not bad, bad[:5]
    m = re.search(r"SIGTERM: no new connections; finishing (\d+) request\(s\) in flight", out)
    assert m, out
    in_flight = int(m.group(1))
    m = re.search(r"stopped: answered (\d+) of (\d+) accepted inference requests", out)
    assert m, out
    answered, accepted = int(m.group(1)), int(m.group(2))
    assert answered == accepted
    assert len(ok) == answered                 # every accepted request's answer reached its client
    assert in_flight >= 1 and len(ok) > answered_before_signal, out   # some were in flight, still answered
    print(f"\n{in_flight} in flight at SIGTERM; {answered} answered in all")
    for x, y in ok:
        np.testing.assert_array_equal(y, ref("lenet", {"x": x})["logits"])


@pytest.mark.timeout(60)
def test_sigint_idle_exits_cleanly(model_dir):
    srv = ServerProcess([str(model_dir / "two_io.onnx")])
    srv.wait_ready()
    rc = srv.stop(signal.SIGINT)
    assert rc == 0, srv.output
    assert "stopped: answered 0 of 0" in srv.output
