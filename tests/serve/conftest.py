"""Fixtures for the serving tests: small ONNX models, and a shared `dslc serve` process on loopback."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import serve_models  # noqa: E402
from serve_helpers import ServerProcess  # noqa: E402


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("serve_models")
    serve_models.save(serve_models.lenet(), d / "lenet.onnx")
    serve_models.save(serve_models.two_io(), d / "two_io.onnx")
    serve_models.save(serve_models.fixed_batch(), d / "fixed.onnx")
    serve_models.save(serve_models.varlen(), d / "varlen.onnx")
    return d


@pytest.fixture(scope="session")
def ref(model_dir):
    """Direct onnxruntime sessions (CPU, defaults) to compare the server's answers with."""
    import onnxruntime as ort

    sessions = {n: ort.InferenceSession(str(model_dir / f"{n}.onnx"), providers=["CPUExecutionProvider"])
                for n in ("lenet", "two_io", "fixed", "varlen")}

    def run(name, feed, outputs=None):
        s = sessions[name]
        outs = s.run(outputs, feed)
        names = outputs or [o.name for o in s.get_outputs()]
        return dict(zip(names, outs))
    return run


@pytest.fixture(scope="session")
def server(model_dir):
    """One server for most tests: four models, dynamic batching with a short queue delay, 1 MiB body limit."""
    s = ServerProcess([str(model_dir / f"{n}.onnx") for n in ("lenet", "two_io", "fixed", "varlen")] + [
                       "--max-batch-size", "16", "--max-queue-delay-ms", "2", "--max-body-size", "1MiB"])
    try:
        yield s.wait_ready()
    finally:
        s.stop()
