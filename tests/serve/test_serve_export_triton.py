"""dslc export-triton: the repository entry, parsed back field by field (by our parser and by protobuf's own
text-format parser against the ModelConfig fields Triton defines), and served back by `dslc serve --repository`."""
from __future__ import annotations

import numpy as np
import pytest

from serve_helpers import ServerProcess, lenet_input, serve_models
from dslc.cli import main
from dslc.serve import triton

pytestmark = pytest.mark.timeout(60)


def _model_config_class():
    """A protobuf class for the subset of Triton's inference.ModelConfig that export-triton writes (field names,
    numbers and types as in Triton's model_config.proto), so protobuf's strict text-format parser checks the file."""
    pb = pytest.importorskip("google.protobuf")
    del pb
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="dslc_test_model_config.proto", package="inference", syntax="proto3")

    def enum(name, values):
        e = fdp.enum_type.add(name=name)
        for i, v in enumerate(values):
            e.value.add(name=v, number=i)

    enum("DataType", ["TYPE_INVALID", "TYPE_BOOL", "TYPE_UINT8", "TYPE_UINT16", "TYPE_UINT32", "TYPE_UINT64",
                      "TYPE_INT8", "TYPE_INT16", "TYPE_INT32", "TYPE_INT64", "TYPE_FP16", "TYPE_FP32", "TYPE_FP64",
                      "TYPE_STRING", "TYPE_BF16"])
    enum("Kind", ["KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL"])
    enum("Format", ["FORMAT_NONE", "FORMAT_NHWC", "FORMAT_NCHW"])

    def message(name, fields, parent=None):
        m = (parent.nested_type if parent is not None else fdp.message_type).add(name=name)
        for fname, num, ftype, label, tname in fields:
            f = m.field.add(name=fname, number=num, type=ftype, label=label)
            if tname:
                f.type_name = tname
        return m

    OPT, REP = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    message("ModelTensorReshape", [("shape", 1, F.TYPE_INT64, REP, None)])
    message("ModelInput", [("name", 1, F.TYPE_STRING, OPT, None), ("data_type", 2, F.TYPE_ENUM, OPT, ".inference.DataType"),
                           ("format", 3, F.TYPE_ENUM, OPT, ".inference.Format"), ("dims", 4, F.TYPE_INT64, REP, None),
                           ("reshape", 5, F.TYPE_MESSAGE, OPT, ".inference.ModelTensorReshape")])
    message("ModelOutput", [("name", 1, F.TYPE_STRING, OPT, None), ("data_type", 2, F.TYPE_ENUM, OPT, ".inference.DataType"),
                            ("dims", 3, F.TYPE_INT64, REP, None),
                            ("reshape", 5, F.TYPE_MESSAGE, OPT, ".inference.ModelTensorReshape")])
    message("ModelInstanceGroup", [("name", 1, F.TYPE_STRING, OPT, None), ("count", 2, F.TYPE_INT32, OPT, None),
                                   ("gpus", 3, F.TYPE_INT32, REP, None), ("kind", 4, F.TYPE_ENUM, OPT, ".inference.Kind")])
    message("ModelDynamicBatching", [("preferred_batch_size", 1, F.TYPE_INT32, REP, None),
                                     ("max_queue_delay_microseconds", 2, F.TYPE_UINT64, OPT, None)])
    message("ModelParameter", [("string_value", 1, F.TYPE_STRING, OPT, None)])
    cfg = message("ModelConfig", [
        ("name", 1, F.TYPE_STRING, OPT, None), ("platform", 2, F.TYPE_STRING, OPT, None),
        ("max_batch_size", 4, F.TYPE_INT32, OPT, None),
        ("input", 5, F.TYPE_MESSAGE, REP, ".inference.ModelInput"),
        ("output", 6, F.TYPE_MESSAGE, REP, ".inference.ModelOutput"),
        ("instance_group", 7, F.TYPE_MESSAGE, REP, ".inference.ModelInstanceGroup"),
        ("default_model_filename", 8, F.TYPE_STRING, OPT, None),
        ("dynamic_batching", 11, F.TYPE_MESSAGE, OPT, ".inference.ModelDynamicBatching"),
        ("parameters", 14, F.TYPE_MESSAGE, REP, ".inference.ModelConfig.ParametersEntry"),
        ("backend", 17, F.TYPE_STRING, OPT, None)])
    entry = message("ParametersEntry", [("key", 1, F.TYPE_STRING, OPT, None),
                                        ("value", 2, F.TYPE_MESSAGE, OPT, ".inference.ModelParameter")], parent=cfg)
    entry.options.map_entry = True
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelConfig"))


def _export(*args) -> int:
    return main(["export-triton", *map(str, args)])


def test_export_lenet_field_by_field(model_dir, tmp_path, capsys):
    repo = tmp_path / "repo"
    assert _export(model_dir / "lenet.onnx", "--repository", repo, "--max-batch-size", 8, "--instances", 2,
                   "--max-queue-delay-ms", 0.5) == 0
    assert "config.pbtxt" in capsys.readouterr().out
    assert (repo / "lenet" / "1" / "model.onnx").read_bytes() == (model_dir / "lenet.onnx").read_bytes()
    text = (repo / "lenet" / "config.pbtxt").read_text()
    cfg = triton.normalize_config(triton.parse_pbtxt(text))
    assert cfg["name"] == "lenet"
    assert cfg["platform"] == "onnxruntime_onnx"
    assert cfg["max_batch_size"] == 8
    assert cfg["input"] == [{"name": "x", "data_type": "TYPE_FP32", "format": "FORMAT_NONE", "dims": [1, 28, 28]}]
    assert cfg["output"] == [{"name": "logits", "data_type": "TYPE_FP32", "dims": [10]}]
    assert cfg["dynamic_batching"] == {"max_queue_delay_microseconds": 500}
    assert cfg["instance_group"] == [{"count": 2, "kind": "KIND_CPU"}]
    assert cfg["default_model_filename"] == "model.onnx"
    assert "parameters" not in cfg

    from google.protobuf import text_format
    msg = text_format.Parse(text, _model_config_class()())
    assert msg.name == "lenet" and msg.platform == "onnxruntime_onnx" and msg.max_batch_size == 8
    assert [(i.name, list(i.dims)) for i in msg.input] == [("x", [1, 28, 28])]
    assert msg.input[0].data_type == 11       # TYPE_FP32
    assert [(o.name, list(o.dims)) for o in msg.output] == [("logits", [10])]
    assert msg.dynamic_batching.max_queue_delay_microseconds == 500
    assert msg.instance_group[0].kind == 2 and msg.instance_group[0].count == 2   # KIND_CPU


def test_export_gpu_two_io_and_fixed(model_dir, tmp_path):
    from google.protobuf import text_format
    repo = tmp_path / "repo"
    assert _export(model_dir / "two_io.onnx", "--repository", repo, "--gpu") == 0
    text = (repo / "two_io" / "config.pbtxt").read_text()
    cfg = triton.read_config(repo / "two_io" / "config.pbtxt")
    assert cfg["max_batch_size"] == 32
    assert [(t["name"], t["data_type"], t["dims"]) for t in cfg["input"]] == [
        ("x", "TYPE_FP32", [4]), ("idx", "TYPE_INT64", [3])]
    assert [(t["name"], t["data_type"], t["dims"]) for t in cfg["output"]] == [
        ("y", "TYPE_FP32", [4]), ("total", "TYPE_INT64", [1])]
    assert cfg["instance_group"] == [{"count": 1, "kind": "KIND_GPU"}]
    assert cfg["parameters"] == {"cudnn_conv_algo_search": {"string_value": "1"}}
    msg = text_format.Parse(text, _model_config_class()())
    assert msg.instance_group[0].kind == 1    # KIND_GPU
    assert msg.parameters["cudnn_conv_algo_search"].string_value == "1"
    assert msg.input[1].data_type == 9        # TYPE_INT64

    assert _export(model_dir / "fixed.onnx", "--repository", repo) == 0
    cfg = triton.read_config(repo / "fixed" / "config.pbtxt")
    assert cfg["max_batch_size"] == 0
    assert cfg["input"][0]["dims"] == [2, 3] and "dynamic_batching" not in cfg
    text_format.Parse((repo / "fixed" / "config.pbtxt").read_text(), _model_config_class()())


def test_export_errors(model_dir, tmp_path, capsys):
    assert _export(tmp_path / "missing.onnx", "--repository", tmp_path) == 2
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    assert _export(bad, "--repository", tmp_path / "r") == 1
    assert "cannot load" in capsys.readouterr().err


def test_serve_exported_repository(model_dir, tmp_path, ref):
    httpclient = pytest.importorskip("tritonclient.http")
    repo = tmp_path / "repo"
    assert _export(model_dir / "lenet.onnx", "--repository", repo, "--max-batch-size", 8,
                   "--max-queue-delay-ms", 1) == 0
    assert _export(model_dir / "two_io.onnx", "--repository", repo, "--max-batch-size", 4) == 0
    # a second, newer lenet version: the default version policy serves the latest only
    (repo / "lenet" / "3").mkdir()
    serve_models.save(serve_models.lenet(seed=3), repo / "lenet" / "3" / "model.onnx")
    srv = ServerProcess(["--repository", str(repo)])
    try:
        srv.wait_ready()
        c = httpclient.InferenceServerClient(srv.host_port)
        cfg = c.get_model_config("lenet")
        assert cfg["max_batch_size"] == 8
        assert cfg["dynamic_batching"] == {"max_queue_delay_microseconds": 1000}
        assert c.get_model_metadata("lenet")["versions"] == ["3"]
        assert c.get_model_config("two_io")["max_batch_size"] == 4
        x = lenet_input(5)
        inp = httpclient.InferInput("x", [1, 1, 28, 28], "FP32")
        inp.set_data_from_numpy(x)
        got = c.infer("lenet", [inp]).as_numpy("logits")
        import onnxruntime as ort
        want = ort.InferenceSession(str(repo / "lenet" / "3" / "model.onnx"),
                                    providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        np.testing.assert_array_equal(got, want)
        assert not np.array_equal(got, ref("lenet", {"x": x})["logits"])
        c.close()
    finally:
        assert srv.stop() == 0


def test_repository_config_mismatch_is_an_error(model_dir, tmp_path):
    repo = tmp_path / "repo"
    assert _export(model_dir / "two_io.onnx", "--repository", repo) == 0
    p = repo / "two_io" / "config.pbtxt"
    p.write_text(p.read_text().replace("dims: [ 4 ]", "dims: [ 5 ]", 1))
    srv = ServerProcess(["--repository", str(repo)])
    rc = srv.proc.wait(60)
    srv._reader.join(5)
    assert rc == 1
    assert "input 'x' has dims [5] in config.pbtxt" in srv.output


def test_pbtxt_parser_subset():
    text = '''
    # comment
    name: "m"  max_batch_size: 8
    input { name: 'a\\'b' data_type: TYPE_FP32 dims: 3 dims: [4] }
    input [ { name: "c" dims: [ -1 ] } ]
    dynamic_batching { preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 100 }
    version_policy: { specific { versions: [1, 3] } }
    parameters: { key: "k" value: { string_value: "v" } }
    optimization < graph: { level: -1 } >
    '''
    cfg = triton.normalize_config(triton.parse_pbtxt(text))
    assert cfg["input"] == [{"name": "a'b", "data_type": "TYPE_FP32", "dims": [3, 4]}, {"name": "c", "dims": [-1]}]
    assert cfg["dynamic_batching"] == {"preferred_batch_size": [4, 8], "max_queue_delay_microseconds": 100}
    assert cfg["version_policy"] == {"specific": {"versions": [1, 3]}}
    assert cfg["parameters"] == {"k": {"string_value": "v"}}
    assert cfg["optimization"] == {"graph": {"level": -1}}
    assert triton.select_versions(cfg, [(1, "a"), (2, "b"), (3, "c")]) == [(1, "a"), (3, "c")]
    with pytest.raises(triton.ConfigError, match="line 1"):
        triton.parse_pbtxt("name: {")
