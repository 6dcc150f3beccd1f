"""Serving a .net file directly: compiled through dslc.lowering.compile.compile_file (when it is there)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from serve_helpers import REPO, ServerProcess, lenet_input

pytestmark = pytest.mark.timeout(120)
compile_mod = pytest.importorskip("dslc.lowering.compile")
LENET = REPO / "networks" / "lenet5.net"


@pytest.mark.skipif(not LENET.exists(), reason="networks/lenet5.net not in this checkout")
def test_serve_net_file_equals_compiled_model():
    import onnxruntime as ort
    httpclient = pytest.importorskip("tritonclient.http")
    try:
        model = compile_mod.compile_file(str(LENET))
    except Exception as e:  # noqa: BLE001 - the compiler's own tests cover it; here it is only a dependency
        pytest.skip(f"the dslc compiler cannot compile {LENET.name} in this checkout: {e}")
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    srv = ServerProcess([str(LENET)])
    try:
        srv.wait_ready()
        assert "seeded initial weights" in srv.output
        c = httpclient.InferenceServerClient(srv.host_port)
        x = lenet_input(21, batch=2)
        inp = httpclient.InferInput("x", [2, 1, 28, 28], "FP32")
        inp.set_data_from_numpy(x)
        got = c.infer("lenet5", [inp]).as_numpy("logits")
        np.testing.assert_array_equal(got, sess.run(None, {"x": x})[0])
        assert c.get_model_metadata("lenet5")["inputs"][0]["shape"] == [-1, 1, 28, 28]
        c.close()
    finally:
        assert srv.stop() == 0


def test_net_file_with_program_errors_exits_1(tmp_path):
    bad = tmp_path / "bad.net"
    bad.write_text("network bad(x: f32[N, 4]) {\n    return y\n}\n")
    r = subprocess.run([sys.executable, "-m", "dslc.cli", "serve", str(bad), "--port", "0"], capture_output=True,
                       text=True, cwd=REPO, timeout=60)
    assert r.returncode == 1, r.stderr
    assert "bad.net" in r.stderr and "listening" not in r.stderr


def test_weights_needs_exactly_one_net(tmp_path, model_dir):
    r = subprocess.run([sys.executable, "-m", "dslc.cli", "serve", str(model_dir / "lenet.onnx"), "--weights",
                        str(tmp_path / "w.npz")], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 2 and "--weights goes with exactly one .net model" in r.stderr
