"""The gRPC API (inference.GRPCInferenceService) against tritonclient.grpc, unchanged: health, metadata, config,
inference (raw and typed contents, streaming), statistics shared with HTTP, API key as metadata, and the
bad-input matrix -- each a gRPC status with a message, the server still serving on the same channel.

The requests the client library would never build (wrong byte counts, typed contents) are made with
tritonclient's own generated protobuf classes and sent through its stub.  The server's stubs are never imported
here: they register the same .proto file names in protobuf's default pool as tritonclient's."""
from __future__ import annotations

import json
import re
import queue
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

grpcclient = pytest.importorskip("tritonclient.grpc")
import grpc  # noqa: E402
from tritonclient.grpc import service_pb2 as pb  # noqa: E402
from tritonclient.grpc import service_pb2_grpc as pb_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from serve_helpers import REPO, ServerProcess, lenet_input, two_io_inputs  # noqa: E402

pytestmark = pytest.mark.timeout(120)
MODELS = ("lenet", "two_io", "fixed", "varlen")


@pytest.fixture(scope="module")
def gserver(model_dir):
    s = ServerProcess([str(model_dir / f"{n}.onnx") for n in MODELS] + [
        "--max-batch-size", "16", "--max-queue-delay-ms", "2", "--max-body-size", "1MiB"])
    try:
        yield s.wait_ready()
    finally:
        s.stop()


@pytest.fixture(scope="module")
def client(gserver):
    assert gserver.grpc_target, gserver.output
    c = grpcclient.InferenceServerClient(gserver.grpc_target)
    yield c
    c.close()


@pytest.fixture(scope="module")
def stub(gserver):
    channel = grpc.insecure_channel(gserver.grpc_target)
    yield pb_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


def _inputs(x, idx):
    a = grpcclient.InferInput("x", list(x.shape), "FP32")
    a.set_data_from_numpy(x)
    b = grpcclient.InferInput("idx", list(idx.shape), "INT64")
    b.set_data_from_numpy(idx)
    return [a, b]


def test_health_metadata_config(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("lenet") and client.is_model_ready("lenet", "1")
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "dslc" and "binary_tensor_data" in meta["extensions"]
    md = client.get_model_metadata("two_io", as_json=True)
    assert md["versions"] == ["1"] and md["platform"] == "onnxruntime_onnx"
    assert [(t["name"], t["datatype"], t["shape"]) for t in md["inputs"]] == [
        ("x", "FP32", ["-1", "4"]), ("idx", "INT64", ["-1", "3"])]
    cfg = client.get_model_config("lenet", as_json=True)["config"]
    assert cfg["max_batch_size"] == 16 and cfg["input"][0]["data_type"] == "TYPE_FP32"
    assert cfg["input"][0]["dims"] == ["1", "28", "28"]
    assert cfg["dynamic_batching"]["max_queue_delay_microseconds"] == "2000"


def test_infer_matches_onnxruntime(client, ref):
    x, idx = two_io_inputs(3, batch=5)
    r = client.infer("two_io", _inputs(x, idx), request_id="req-7")
    want = ref("two_io", {"x": x, "idx": idx})
    assert r.get_response().id == "req-7" and r.get_response().model_version == "1"
    np.testing.assert_array_equal(r.as_numpy("y"), want["y"])
    np.testing.assert_array_equal(r.as_numpy("total"), want["total"])
    xl = lenet_input(4, batch=3)
    inp = grpcclient.InferInput("x", list(xl.shape), "FP32")
    inp.set_data_from_numpy(xl)
    only = client.infer("lenet", [inp], outputs=[grpcclient.InferRequestedOutput("logits")])
    np.testing.assert_allclose(only.as_numpy("logits"), ref("lenet", {"x": xl})["logits"], rtol=1e-5, atol=1e-6)
    sub = client.infer("two_io", _inputs(x, idx), outputs=[grpcclient.InferRequestedOutput("total")])
    assert [o.name for o in sub.get_response().outputs] == ["total"]


def test_typed_contents(stub, ref):
    x, idx = two_io_inputs(5, batch=2)
    req = pb.ModelInferRequest(model_name="two_io")
    a = req.inputs.add(name="x", datatype="FP32", shape=[2, 4])
    a.contents.fp32_contents.extend(x.ravel().tolist())
    b = req.inputs.add(name="idx", datatype="INT64", shape=[2, 3])
    b.contents.int64_contents.extend(idx.ravel().tolist())
    resp = stub.ModelInfer(req)
    out = {o.name: (o, raw) for o, raw in zip(resp.outputs, resp.raw_output_contents)}
    y = np.frombuffer(out["y"][1], np.float32).reshape(list(out["y"][0].shape))
    np.testing.assert_array_equal(y, ref("two_io", {"x": x, "idx": idx})["y"])


def test_streaming_infer_in_order(client, ref):
    results: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        feeds = [two_io_inputs(100 + i, batch=1 + i % 3) for i in range(12)]
        for i, (x, idx) in enumerate(feeds):
            client.async_stream_infer("two_io", _inputs(x, idx), request_id=str(i))
        bad = grpcclient.InferInput("x", [1, 4], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 4), np.float32))
        client.async_stream_infer("two_io", [bad], request_id="bad")   # missing idx: an error in the stream
        got = [results.get(timeout=30) for _ in range(len(feeds) + 1)]
    finally:
        client.stop_stream()
    for i, (x, idx) in enumerate(feeds):
        result, error = got[i]
        assert error is None and result.get_response().id == str(i)
        np.testing.assert_array_equal(result.as_numpy("y"), ref("two_io", {"x": x, "idx": idx})["y"])
    assert got[-1][0] is None and "missing 'idx'" in str(got[-1][1])


def test_grpc_and_http_share_models_and_stats(gserver, client):
    def http_success():
        with urllib.request.urlopen(gserver.url + "/v2/models/lenet/stats", timeout=10) as r:
            return json.loads(r.read())["model_stats"][0]["inference_stats"]["success"]["count"]
    before = http_success()
    xl = lenet_input(9)
    inp = grpcclient.InferInput("x", list(xl.shape), "FP32")
    inp.set_data_from_numpy(xl)
    for _ in range(4):
        client.infer("lenet", [inp])
    assert http_success() == before + 4
    grpc_stats = client.get_inference_statistics("lenet", as_json=True)["model_stats"][0]
    assert int(grpc_stats["inference_stats"]["success"]["count"]) == before + 4
    with urllib.request.urlopen(gserver.url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    line = next(ln for ln in text.splitlines() if ln.startswith('dslc_inference_request_success_total{model="lenet"'))
    assert float(line.split()[-1]) >= before + 4


# ------------------------------------------------------------------------------------------ bad-input matrix

X, IDX = two_io_inputs(11, batch=2)
LX = lenet_input(12)


def _req(model="two_io", inputs=(("x", "FP32", [2, 4], X), ("idx", "INT64", [2, 3], IDX)), raw=None, outputs=()):
    req = pb.ModelInferRequest(model_name=model)
    for name, dt, shape, arr in inputs:
        req.inputs.add(name=name, datatype=dt, shape=shape)
    req.raw_input_contents.extend(raw if raw is not None else [a.tobytes() for *_, a in inputs])
    for name in outputs:
        req.outputs.add(name=name)
    return req


def _typed_in_wrong_field():
    req = pb.ModelInferRequest(model_name="two_io")
    a = req.inputs.add(name="x", datatype="FP32", shape=[2, 4])
    a.contents.fp32_contents.extend([0.0] * 8)
    b = req.inputs.add(name="idx", datatype="INT64", shape=[2, 3])
    b.contents.fp32_contents.extend([1.0] * 6)
    return req


GOOD_IDX = ("idx", "INT64", [2, 3], IDX)
CASES = [
    ("unknown-model", _req(model="nope"), grpc.StatusCode.NOT_FOUND, "unknown model 'nope'"),
    ("missing-input", _req(inputs=[("x", "FP32", [2, 4], X)]), grpc.StatusCode.INVALID_ARGUMENT, "missing 'idx'"),
    ("extra-input", _req(inputs=[("x", "FP32", [2, 4], X), GOOD_IDX, ("z", "FP32", [2, 4], X)]),
     grpc.StatusCode.INVALID_ARGUMENT, "unexpected inference input 'z'"),
    ("wrong-datatype", _req(inputs=[("x", "FP64", [2, 4], X.astype(np.float64)), GOOD_IDX]),
     grpc.StatusCode.INVALID_ARGUMENT, "data-type is 'FP64', but model 'two_io' expects 'FP32'"),
    ("wrong-shape", _req(inputs=[("x", "FP32", [2, 5], np.zeros((2, 5), np.float32)), GOOD_IDX]),
     grpc.StatusCode.INVALID_ARGUMENT, "expected [-1,4], got [2,5]"),
    ("wrong-rank", _req(model="lenet", inputs=[("x", "FP32", [784], LX.ravel())]),
     grpc.StatusCode.INVALID_ARGUMENT, "unexpected shape for input 'x'"),
    ("raw-size-vs-shape", _req(model="lenet", inputs=[("x", "FP32", [1, 1, 28, 28], LX)], raw=[LX.tobytes()[:3000]]),
     grpc.StatusCode.INVALID_ARGUMENT, "raw_input_contents[0] has 3000 bytes but shape [1,1,28,28] of FP32 needs 3136"),
    ("raw-count-vs-inputs", _req(raw=[X.tobytes()]), grpc.StatusCode.INVALID_ARGUMENT,
     "raw_input_contents has 1 entries but the request has 2 inputs"),
    ("batch-mismatch", _req(inputs=[("x", "FP32", [2, 4], X), ("idx", "INT64", [1, 3], IDX[:1])]),
     grpc.StatusCode.INVALID_ARGUMENT, "disagree on the batch size"),
    ("batch-too-big", _req(inputs=[("x", "FP32", [17, 4], np.zeros((17, 4), np.float32)),
                                   ("idx", "INT64", [17, 3], np.zeros((17, 3), np.int64))]),
     grpc.StatusCode.INVALID_ARGUMENT, "batch-size must be <= 16"),
    ("unknown-output", _req(outputs=["w"]), grpc.StatusCode.INVALID_ARGUMENT, "unexpected inference output 'w'"),
    ("typed-wrong-field", _typed_in_wrong_field(), grpc.StatusCode.INVALID_ARGUMENT,
     "contents.int64_contents has 0 elements but shape [2,3] needs 6"),
    ("oversize-message", _req(model="lenet", inputs=[("x", "FP32", [1, 1, 28, 28], LX)],
                              raw=[b"\0" * (1 << 20)]), grpc.StatusCode.RESOURCE_EXHAUSTED, "larger than max"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_request(stub, ref, case):
    _, req, code, fragment = case
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(req, timeout=30)
    assert info.value.code() == code, info.value.details()
    assert fragment in info.value.details(), info.value.details()
    resp = stub.ModelInfer(_req(), timeout=30)   # same channel: still serving
    y = np.frombuffer(resp.raw_output_contents[0], np.float32).reshape(2, 4)
    np.testing.assert_array_equal(y, ref("two_io", {"x": X, "idx": IDX})["y"])


def test_tritonclient_sees_status_and_message(client):
    inp = grpcclient.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 4), np.float32))
    with pytest.raises(InferenceServerException) as info:
        client.infer("two_io", [inp])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT" and "missing 'idx'" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata("nope")
    assert info.value.status() == "StatusCode.NOT_FOUND"


def test_api_key_as_metadata(model_dir):
    s = ServerProcess([str(model_dir / "two_io.onnx"), "--api-key", "s3cret"]).wait_ready()
    try:
        c = grpcclient.InferenceServerClient(s.grpc_target)
        assert c.is_server_live() and c.is_server_ready()          # health needs no key, as over HTTP
        x, idx = two_io_inputs(1)
        with pytest.raises(InferenceServerException) as info:
            c.infer("two_io", _inputs(x, idx))
        assert info.value.status() == "StatusCode.UNAUTHENTICATED" and "API key" in info.value.message()
        with pytest.raises(InferenceServerException):
            c.infer("two_io", _inputs(x, idx), headers={"authorization": "Bearer wrong"})
        r = c.infer("two_io", _inputs(x, idx), headers={"authorization": "Bearer s3cret"})
        np.testing.assert_array_equal(r.as_numpy("y"), 2 * x + 1)
        assert c.get_model_metadata("two_io", headers={"authorization": "Bearer s3cret"}).name == "two_io"
        c.close()
    finally:
        assert s.stop() == 0


def test_grpc_port_in_use_is_a_clear_error(model_dir, gserver):
    port = gserver.grpc_target.rsplit(":", 1)[1]
    r = subprocess.run([sys.executable, "-m", "dslc.cli", "serve", str(model_dir / "two_io.onnx"), "--port", "0",
                        "--grpc-port", port], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert f"cannot listen for gRPC on 127.0.0.1:{port}" in r.stderr and "Traceback" not in r.stderr


def test_proto_matches_tritonclient(tmp_path):
    """Every message and field dslc's .proto declares has tritonclient's number, type and label: the wire
    format is the upstream one.  (protoc into a descriptor set; nothing is loaded into the default pool.)"""
    from google.protobuf import descriptor_pb2
    from grpc_tools import protoc
    from tritonclient.grpc import model_config_pb2
    stubs = REPO / "dslc" / "serve" / "grpc_stubs"
    out = tmp_path / "set.pb"
    assert protoc.main(["protoc", f"-I{stubs}", f"--descriptor_set_out={out}", "--include_imports",
                        str(stubs / "grpc_service.proto")]) == 0
    ours = {f.name: f for f in descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file}
    for module in (pb, model_config_pb2):
        theirs = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
        mine = ours[theirs.name]
        assert mine.package == theirs.package == "inference"

        def index(messages, prefix=""):
            for m in messages:
                yield prefix + m.name, m
                yield from index(m.nested_type, prefix + m.name + ".")
        their_msgs = dict(index(theirs.message_type))
        for name, m in index(mine.message_type):
            their_fields = {f.name: f for f in their_msgs[name].field}
            for f in m.field:
                t = their_fields[f.name]
                assert (f.number, f.type, f.label, f.type_name) == (t.number, t.type, t.label, t.type_name), \
                    (name, f.name)
        their_enums = {e.name: {v.name: v.number for v in e.value} for e in theirs.enum_type}
        for e in mine.enum_type:
            assert {v.name: v.number for v in e.value}.items() <= their_enums[e.name].items()
        for svc in mine.service:
            their_methods = {m.name: m for m in next(s for s in theirs.service if s.name == svc.name).method}
            for m in svc.method:
                t = their_methods[m.name]
                assert (m.input_type, m.output_type, m.client_streaming, m.server_streaming) == \
                    (t.input_type, t.output_type, t.client_streaming, t.server_streaming)


def test_checked_in_stubs_are_generated_from_the_proto(tmp_path):
    """The checked-in *_pb2.py embed exactly the descriptor protoc makes from the .proto beside them (in a
    subprocess: the server's stubs and tritonclient's cannot share one protobuf pool)."""
    code = (
        "import sys\n"
        "from google.protobuf import descriptor_pb2\n"
        "from grpc_tools import protoc\n"
        "from dslc.serve.grpc_stubs import grpc_service_pb2, model_config_pb2\n"
        "stubs, out = sys.argv[1], sys.argv[2]\n"
        "assert protoc.main(['protoc', '-I' + stubs, '--descriptor_set_out=' + out, '--include_imports',"
        " stubs + '/grpc_service.proto']) == 0\n"
        "made = {f.name: f for f in descriptor_pb2.FileDescriptorSet.FromString(open(out, 'rb').read()).file}\n"
        "def strip(d):\n"   # the embedded descriptor omits json_name (derived from the name); the set has it
        "    for m in list(d.message_type) + [n for m in d.message_type for n in m.nested_type]:\n"
        "        for f in m.field:\n"
        "            f.ClearField('json_name')\n"
        "        for n in m.nested_type:\n"
        "            for f in n.field:\n"
        "                f.ClearField('json_name')\n"
        "    return d\n"
        "for m in (grpc_service_pb2, model_config_pb2):\n"
        "    have = descriptor_pb2.FileDescriptorProto.FromString(m.DESCRIPTOR.serialized_pb)\n"
        "    assert strip(have) == strip(made[have.name]), have.name + ' is stale: run scripts/gen_grpc_stubs.py'\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(REPO / "dslc" / "serve" / "grpc_stubs"),
                        str(tmp_path / "s.pb")], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def _perf_analyzer_env():
    """perf_analyzer (pip install perf-analyzer) with what its binary links against: libcudart from the
    nvidia-cuda-runtime-cu12 wheel (even for CPU-only use) and libb64 (apt-get install libb64-0d).  None, with
    the reason, when it cannot start here."""
    import os
    import shutil
    exe = shutil.which("perf_analyzer") or shutil.which("perf_analyzer", path=str(Path(sys.executable).parent))
    if exe is None:
        return None, "perf_analyzer not installed (pip install perf-analyzer)"
    env = dict(os.environ)
    try:
        import nvidia.cuda_runtime
        lib = Path(next(iter(nvidia.cuda_runtime.__path__))) / "lib"
        env["LD_LIBRARY_PATH"] = f"{lib}:{env.get('LD_LIBRARY_PATH', '')}"
    except ImportError:
        pass
    probe = subprocess.run([exe, "--version"], capture_output=True, text=True, env=env, timeout=30)
    if "error while loading shared libraries" in probe.stderr:
        return None, f"perf_analyzer cannot start: {probe.stderr.strip()}"
    return (exe, env), ""


def test_perf_analyzer_over_grpc(gserver, client):
    """perf_analyzer over gRPC (`-i grpc`; this build's default is HTTP) measures the server: it reads the model
    metadata and config, sends random inputs at concurrency 2 and reads the server's statistics."""
    found, why = _perf_analyzer_env()
    if found is None:
        pytest.skip(why)
    exe, env = found
    before = int(client.get_inference_statistics("lenet", as_json=True)["model_stats"][0]
                 ["inference_stats"]["success"].get("count", 0))
    r = subprocess.run([exe, "-m", "lenet", "-i", "grpc", "-u", gserver.grpc_target, "--concurrency-range", "2",
                        "--measurement-interval", "500", "--max-trials", "4", "--stability-percentage", "100"],
                       capture_output=True, text=True, env=env, timeout=90)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"Throughput: ([\d.]+) infer/sec", r.stdout)
    assert m and float(m.group(1)) > 0, r.stdout
    after = int(client.get_inference_statistics("lenet", as_json=True)["model_stats"][0]
                ["inference_stats"]["success"]["count"])
    assert after > before
