"""dslc.runtime.session (quiet provider probe, sessions) and the server's API key."""
from __future__ import annotations

import subprocess
import sys

import httpx
import numpy as np
import pytest

from serve_helpers import REPO, ServerProcess, serve_models
from dslc.runtime import session as rt

pytestmark = pytest.mark.timeout(60)


def test_create_session_reports_the_provider_it_really_uses(model_dir):
    for model in (serve_models.lenet(), str(model_dir / "lenet.onnx"), (model_dir / "lenet.onnx").read_bytes()):
        s, provider = rt.create_session(model, intra_op_threads=1)
        assert provider in s.get_providers()[0:1]
        assert s.run(None, {"x": np.zeros((2, 1, 28, 28), np.float32)})[0].shape == (2, 10)
    probe = rt.probe_providers()
    assert provider == probe.provider
    line = rt.describe(probe, provider)
    assert line.startswith("onnxruntime ") and provider in line and "\n" not in line


def test_cpu_forced():
    s, provider = rt.create_session(serve_models.two_io(), prefer_gpu=False)
    assert provider == rt.CPU and s.get_providers() == [rt.CPU]


def test_probe_is_quiet_even_when_cuda_libraries_are_missing(monkeypatch, capfd):
    """Pretend the driver reports a GPU: the probe then opens a CUDA session in a child process, whose complaints
    (missing libcudart/libcudnn here) never reach our stderr; we fall back to CPU with a reason."""
    import onnxruntime as ort
    if rt.CUDA not in ort.get_available_providers():
        pytest.skip("onnxruntime built without CUDA")
    name, _ = rt._driver_device()
    if name is not None:
        pytest.skip("a real GPU is present")
    monkeypatch.setattr(rt, "_driver_device", lambda: ("Pretend GPU", "1 CUDA device(s)"))
    probe = rt.probe_providers.__wrapped__(True)
    assert probe.provider == rt.CPU
    assert "Pretend GPU present but the CUDA provider is unusable" in probe.reason
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_importing_and_creating_a_cpu_session_prints_nothing(model_dir):
    code = ("from dslc.runtime.session import create_session, probe_providers; "
            f"s, p = create_session({str(model_dir / 'lenet.onnx')!r}); print(p)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert r.stdout.strip() in (rt.CPU, rt.CUDA)


def test_api_key(model_dir):
    srv = ServerProcess([str(model_dir / "two_io.onnx")], env={"DSLC_API_KEY": "s3cret"})
    try:
        srv.wait_ready()
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            assert c.get("/v2/health/live").status_code == 200      # health stays open
            assert c.get("/v2/health/ready").status_code == 200
            for path in ("/v2", "/v2/models/two_io", "/v2/models/two_io/config", "/metrics", "/v2/models/nope"):
                r = c.get(path)
                assert r.status_code == 401, path
                assert r.headers["www-authenticate"] == "Bearer"
                assert "API key" in r.json()["error"]
            assert c.get("/v2/models/two_io", headers={"Authorization": "Bearer wrong"}).status_code == 401
            r = c.get("/v2/models/two_io", headers={"Authorization": "Bearer s3cret"})
            assert r.status_code == 200 and r.json()["name"] == "two_io"
        httpclient = pytest.importorskip("tritonclient.http")
        tc = httpclient.InferenceServerClient(srv.host_port)
        auth = {"Authorization": "Bearer s3cret"}
        x = np.ones((1, 4), np.float32)
        idx = np.ones((1, 3), np.int64)
        a = httpclient.InferInput("x", [1, 4], "FP32")
        a.set_data_from_numpy(x)
        b = httpclient.InferInput("idx", [1, 3], "INT64")
        b.set_data_from_numpy(idx)
        with pytest.raises(Exception, match="API key"):
            tc.infer("two_io", [a, b])
        res = tc.infer("two_io", [a, b], headers=auth)
        np.testing.assert_array_equal(res.as_numpy("y"), 2 * x + 1)
        tc.close()
    finally:
        assert srv.stop() == 0


def test_usage_errors(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "dslc.cli", "serve", *args], capture_output=True, text=True,
                              cwd=REPO, timeout=60)
    r = run()
    assert r.returncode == 2 and "give model files" in r.stderr
    r = run(str(tmp_path / "missing.onnx"))
    assert r.returncode == 2 and "no such model file" in r.stderr
    r = run(str(tmp_path), "--max-body-size", "lots")
    assert r.returncode == 2 and "not a size" in r.stderr


def test_net_source_without_compiler_is_a_clear_error(tmp_path):
    from dslc.serve.model import ModelLoadError, load_model_source
    net = tmp_path / "m.net"
    net.write_text("network m {}\n")
    try:
        import dslc.lowering.compile  # noqa: F401
    except ImportError:
        with pytest.raises(ModelLoadError, match="needs the dslc compiler"):
            load_model_source(net)
    p = tmp_path / "m.onnx"
    serve_models.save(serve_models.two_io(), p)
    assert load_model_source(p) == p.read_bytes()
    with pytest.raises(ModelLoadError, match="--weights applies to .net"):
        load_model_source(p, weights="w.npz")
