"""Triton's repository API and model control: index / load / unload through tritonclient.http unchanged,
version_policy, and poll mode reloading a changed model under load without losing a request."""
from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
import pytest

from serve_helpers import ServerProcess, lenet_input, serve_models

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

pytestmark = pytest.mark.timeout(120)
CONFIG = 'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 16\ndynamic_batching {{ }}\n{extra}'


def _write_model(repo, name: str, version: int, seed: int, extra: str = "") -> None:
    """DIR/name/config.pbtxt and DIR/name/version/model.onnx, each replaced atomically (as a deploy would)."""
    mdir = repo / name
    (mdir / str(version)).mkdir(parents=True, exist_ok=True)
    for path, data in ((mdir / str(version) / "model.onnx", serve_models.lenet(seed).SerializeToString()),
                       (mdir / "config.pbtxt", CONFIG.format(name=name, extra=extra).encode())):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)


def _reference(seed: int, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort
    s = ort.InferenceSession(serve_models.lenet(seed).SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x})[0]


def _infer(client, name: str, x: np.ndarray, version: str = "") -> np.ndarray:
    inp = httpclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    return client.infer(name, [inp], model_version=version).as_numpy("logits")


def _wait(cond, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_poll_reloads_a_changed_model_under_load_losing_no_request(tmp_path):
    repo = tmp_path / "repo"
    _write_model(repo, "lenet", 1, seed=0)
    srv = ServerProcess(["--repository", str(repo), "--model-control-mode", "poll", "--repository-poll-secs", "0.1",
                         "--max-queue-delay-ms", "1"])
    x = lenet_input(7, batch=1)
    old, new = _reference(0, x), _reference(1, x)
    assert not np.allclose(old, new)
    stop = threading.Event()
    seen: list[list[str]] = [[] for _ in range(6)]
    errors: list[str] = []

    def client_loop(k: int):
        c = httpclient.InferenceServerClient(srv.host_port)
        while not stop.is_set():
            try:
                got = _infer(c, "lenet", x)
            except Exception as e:  # noqa: BLE001 - every failure is a lost request
                errors.append(f"{type(e).__name__}: {e}")
                continue
            seen[k].append("old" if np.allclose(got, old, atol=1e-5) else
                           "new" if np.allclose(got, new, atol=1e-5) else "other")
        c.close()

    try:
        srv.wait_ready()
        threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(len(seen))]
        for t in threads:
            t.start()
        _wait(lambda: all(len(s) > 5 for s in seen), what="load to start")
        _write_model(repo, "lenet", 1, seed=1)           # a new model file in place of the old one
        _wait(lambda: all(s and s[-1] == "new" for s in seen), what="the reload")
        # a half-written / broken model: the serving version stays, the error is in the index
        (repo / "lenet" / "1" / "model.onnx").write_bytes(b"not an onnx model")
        _wait(lambda: "failed" in srv.output, what="the failed reload")
        n_before = sum(map(len, seen))
        _wait(lambda: sum(map(len, seen)) > n_before + 50, what="more requests")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        code = srv.stop()
    assert errors == [], errors[:5]
    total = sum(map(len, seen))
    assert total > 200
    for s in seen:   # each client: old answers, then new ones, never back, never anything else
        assert set(s) <= {"old", "new"}
        assert s == sorted(s, key=lambda v: v == "new"), "a client saw the old model after the new one"
    assert "model 'lenet' reloaded" in srv.output
    assert "keep serving" in srv.output
    assert code == 0


def test_poll_loads_new_and_unloads_removed_models(tmp_path):
    import shutil
    repo = tmp_path / "repo"
    repo.mkdir()            # poll mode may start from an empty repository
    srv = ServerProcess(["--repository", str(repo), "--model-control-mode", "poll", "--repository-poll-secs", "0.1"])
    try:
        srv.wait_ready()
        c = httpclient.InferenceServerClient(srv.host_port)
        _write_model(repo, "a", 1, seed=0)
        _wait(lambda: c.is_model_ready("a"), what="model a to load")
        _write_model(repo, "b", 1, seed=1)
        _wait(lambda: c.is_model_ready("b"), what="model b to load")
        np.testing.assert_allclose(_infer(c, "b", lenet_input(1)), _reference(1, lenet_input(1)), atol=1e-5)
        shutil.rmtree(repo / "a")
        _wait(lambda: not c.is_model_ready("a"), what="model a to unload")
        index = {e["name"]: e for e in c.get_model_repository_index()}
        assert index["b"]["state"] == "READY"
        assert "a" not in index or index["a"]["state"] == "UNAVAILABLE"
        with pytest.raises(InferenceServerException, match="not allowed with --model-control-mode poll"):
            c.load_model("b")
        c.close()
    finally:
        assert srv.stop() == 0


@pytest.fixture(scope="module")
def explicit(tmp_path_factory):
    repo = tmp_path_factory.mktemp("explicit_repo")
    for v in (1, 2, 3):
        _write_model(repo, "multi", v, seed=10 + v)
    _write_model(repo, "lenet", 1, seed=0)
    _write_model(repo, "other", 1, seed=5)
    (repo / "broken" / "1").mkdir(parents=True)
    (repo / "broken" / "1" / "model.onnx").write_bytes(b"garbage")
    srv = ServerProcess(["--repository", str(repo), "--model-control-mode", "explicit", "--load-model", "lenet"])
    try:
        yield srv.wait_ready(), repo
    finally:
        assert srv.stop() == 0


def test_explicit_load_unload_index_with_tritonclient(explicit):
    srv, _repo = explicit
    c = httpclient.InferenceServerClient(srv.host_port)
    index = {e["name"]: e for e in c.get_model_repository_index()}
    assert index["lenet"] == {"name": "lenet", "version": "1", "state": "READY"}
    assert index["other"]["state"] == "UNAVAILABLE" and "version" not in index["other"]
    assert not c.is_model_ready("other")
    c.load_model("other")
    assert c.is_model_ready("other")
    x = lenet_input(3, batch=2)
    np.testing.assert_allclose(_infer(c, "other", x), _reference(5, x), atol=1e-5)
    assert [e["name"] for e in c.get_model_repository_index()] == ["broken", "lenet", "multi", "other"]
    c.unload_model("other")
    assert not c.is_model_ready("other")
    with pytest.raises(InferenceServerException, match="unknown model 'other'"):
        _infer(c, "other", x)
    import urllib.request
    req = urllib.request.Request(srv.url + "/v2/repository/index", data=b'{"ready": true}', method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert [e["name"] for e in json.loads(r.read())] == ["lenet"]      # {"ready": true}: loaded ones only
    np.testing.assert_allclose(_infer(c, "lenet", x), _reference(0, x), atol=1e-5)   # unaffected
    c.close()


def test_explicit_load_errors_are_400_and_the_server_keeps_serving(explicit):
    srv, _repo = explicit
    c = httpclient.InferenceServerClient(srv.host_port)
    with pytest.raises(InferenceServerException, match="no model directory") as e:
        c.load_model("nosuch")
    assert e.value.status() == "400"
    with pytest.raises(InferenceServerException, match="failed to load 'broken'.*onnxruntime cannot load it"):
        c.load_model("broken")
    index = {e["name"]: e for e in c.get_model_repository_index()}
    assert index["broken"]["state"] == "UNAVAILABLE" and "onnxruntime" in index["broken"]["reason"]
    with pytest.raises(InferenceServerException, match="failed to unload 'nosuch'"):
        c.unload_model("nosuch")
    with pytest.raises(InferenceServerException, match="must be a JSON model configuration"):
        c.load_model("lenet", config="[1, 2]")
    with pytest.raises(InferenceServerException, match="not supported"):
        c.load_model("lenet", files={"file:1/model.onnx": b"x"}, config="{}")
    import urllib.request
    for body, want in ((b"[1]", "JSON object"), (b"{bad", "not valid JSON")):
        req = urllib.request.Request(srv.url + "/v2/repository/index", data=body, method="POST")
        with pytest.raises(urllib.error.HTTPError) as he:
            urllib.request.urlopen(req, timeout=10)
        assert he.value.code == 400 and want in json.loads(he.value.read())["error"]
    with pytest.raises(urllib.error.HTTPError) as he:
        urllib.request.urlopen(srv.url + "/v2/repository/index", timeout=10)   # GET
    assert he.value.code == 405
    assert c.is_model_ready("lenet")
    c.close()


def test_version_policy_latest_all_specific(explicit):
    srv, _repo = explicit
    c = httpclient.InferenceServerClient(srv.host_port)
    x = lenet_input(4)

    def load(policy):
        cfg = {"name": "multi", "platform": "onnxruntime_onnx", "max_batch_size": 16}
        if policy is not None:
            cfg["version_policy"] = policy
        c.load_model("multi", config=json.dumps(cfg))
        return [e["version"] for e in c.get_model_repository_index() if e["name"] == "multi"]

    assert load(None) == ["3"]                                   # Triton's default: latest 1
    assert load({"latest": {"num_versions": 2}}) == ["2", "3"]
    assert load({"all": {}}) == ["1", "2", "3"]
    assert load({"specific": {"versions": [1, 3]}}) == ["1", "3"]
    assert c.get_model_metadata("multi")["versions"] == ["1", "3"]
    for v in ("1", "3"):
        np.testing.assert_allclose(_infer(c, "multi", x, v), _reference(10 + int(v), x), atol=1e-5)
    np.testing.assert_allclose(_infer(c, "multi", x), _reference(13, x), atol=1e-5)   # no version: the latest
    with pytest.raises(InferenceServerException, match="unknown version '2'"):
        _infer(c, "multi", x, "2")
    c.close()


def test_none_mode_refuses_load_but_answers_the_index(server):
    c = httpclient.InferenceServerClient(server.host_port)
    names = {e["name"] for e in c.get_model_repository_index() if e["state"] == "READY"}
    assert names == {"lenet", "two_io", "fixed", "varlen"}
    with pytest.raises(InferenceServerException, match="--model-control-mode explicit"):
        c.load_model("lenet")
    c.close()


def test_model_control_usage_errors(tmp_path, model_dir):
    import subprocess
    import sys

    from serve_helpers import REPO
    for args, want in ((["--model-control-mode", "poll", str(model_dir / "lenet.onnx")], "needs --repository"),
                       (["--repository", str(tmp_path), "--load-model", "x"], "--load-model goes with"),
                       (["--repository", str(tmp_path), "--model-control-mode", "explicit", "--load-model", "x"],
                        "no such model directory")):
        r = subprocess.run([sys.executable, "-m", "dslc.cli", "serve", *args, "--port", "0"], capture_output=True,
                           text=True, cwd=REPO, timeout=60)
        assert r.returncode in (1, 2) and want in r.stderr, (args, r.stderr)
