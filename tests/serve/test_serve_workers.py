"""`dslc serve --workers N`: N processes behind one HTTP and one gRPC port, each with its own sessions and
batchers; /metrics sums them; SIGTERM stops them all gracefully; one dying stops the rest."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from serve_helpers import REPO, ServerProcess, lenet_input

from dslc.serve.workers import WORKERS_CAP, resolve_workers

pytestmark = pytest.mark.timeout(120)


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def _start(model_dir, n=2, extra=()):
    s = ServerProcess([str(model_dir / "lenet.onnx"), "--workers", str(n), *extra])
    s.wait_ready()
    deadline = time.monotonic() + 60
    while s.output.count("ready: 1 model(s)") < n:   # ready over HTTP says only that one worker is
        assert time.monotonic() < deadline and s.proc.poll() is None, s.output
        time.sleep(0.05)
    return s


def _success_total(url: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    line = next(ln for ln in text.splitlines() if ln.startswith('dslc_inference_request_success_total{model="lenet"'))
    return float(line.split()[-1])


@pytest.mark.skipif(sys.platform != "linux", reason="/proc and fork")
def test_workers_share_the_ports_and_sum_metrics(model_dir, ref):
    grpcclient = pytest.importorskip("tritonclient.grpc")
    import tritonclient.http as httpclient
    s = _start(model_dir)
    try:
        workers = _children(s.proc.pid)
        assert len(workers) == 2, s.output
        x = lenet_input(3)
        want = ref("lenet", {"x": x})["logits"]
        errors = []

        def http_load(k):
            try:
                c = httpclient.InferenceServerClient(s.host_port)
                inp = httpclient.InferInput("x", list(x.shape), "FP32")
                inp.set_data_from_numpy(x)
                for _ in range(k):
                    np.testing.assert_allclose(c.infer("lenet", [inp]).as_numpy("logits"), want, rtol=1e-5, atol=1e-6)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)
        threads = [threading.Thread(target=http_load, args=(40,)) for _ in range(8)]
        for t in threads:
            t.start()
        g = grpcclient.InferenceServerClient(s.grpc_target)
        ginp = grpcclient.InferInput("x", list(x.shape), "FP32")
        ginp.set_data_from_numpy(x)
        for _ in range(20):
            np.testing.assert_allclose(g.infer("lenet", [ginp]).as_numpy("logits"), want, rtol=1e-5, atol=1e-6)
        for t in threads:
            t.join()
        assert not errors, errors
        deadline = time.monotonic() + 10   # other workers' snapshots are up to SNAPSHOT_SECONDS old
        while _success_total(s.url) != 340 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _success_total(s.url) == 340
        assert s.stop() == 0
        answered = [int(n) for n in re.findall(r"stopped: answered (\d+) of \d+", s.output)]
        assert len(answered) == 2 and sum(answered) == 340, s.output
        assert all(not Path(f"/proc/{w}").exists() or "zombie" in Path(f"/proc/{w}/status").read_text()
                   for w in workers)
    finally:
        s.kill()


@pytest.mark.skipif(sys.platform != "linux", reason="/proc and fork")
def test_a_dying_worker_stops_the_others(model_dir):
    s = _start(model_dir, extra=["--grpc-port", "off"])
    try:
        first, second = _children(s.proc.pid)
        os.kill(first, signal.SIGKILL)
        assert s.proc.wait(30) == 1
        assert "stopping the others" in s.output
        deadline = time.monotonic() + 10
        while Path(f"/proc/{second}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not Path(f"/proc/{second}").exists()
    finally:
        s.kill()


@pytest.mark.parametrize("value, message", [("0", "must be >= 1"), ("many", "not a number of workers")])
def test_workers_usage_errors(model_dir, value, message):
    r = subprocess.run([sys.executable, "-m", "dslc.cli", "serve", str(model_dir / "lenet.onnx"), "--port", "0",
                        "--workers", value], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and message in r.stderr, r.stderr


def test_auto_is_one_per_core_up_to_the_cap():
    assert resolve_workers("auto", 2) == 2
    assert resolve_workers("auto", 1) == 1
    assert resolve_workers("AUTO", 10 * WORKERS_CAP) == WORKERS_CAP
    assert resolve_workers("3", 2) == 3
