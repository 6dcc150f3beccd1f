"""`dslc export-kserve`: the Triton repository entry and a KServe InferenceService manifest, checked against the
fields and types of KServe's v1beta1 schema (kserve_isvc_v1beta1_schema.json, from KServe's Go API types)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from dslc.cli import main
from dslc.serve import kserve, triton

jsonschema = pytest.importorskip("jsonschema")
SCHEMA = json.loads((Path(__file__).parent / "kserve_isvc_v1beta1_schema.json").read_text())


def _validate(manifest):
    jsonschema.validate(manifest, SCHEMA)
    assert kserve.validate(manifest) == []


def test_manifest_for_the_repository_fits_kserve_schema(tmp_path, model_dir, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    repo = tmp_path / "repo"
    rc = main(["export-kserve", str(model_dir / "lenet.onnx"), "--repository", str(repo), "--name", "LeNet_5.v2",
               "--storage-uri", "s3://bucket/models", "--namespace", "ml", "--max-replicas", "4"])
    assert rc == 0, capsys.readouterr().err
    out = tmp_path / "lenet-5-v2.isvc.yaml"
    assert f"wrote {out.name}" in capsys.readouterr().out
    manifest = yaml.safe_load(out.read_text())
    _validate(manifest)
    assert manifest["metadata"] == {"name": "lenet-5-v2", "namespace": "ml",
                                    "labels": {"app.kubernetes.io/managed-by": "dslc"}}
    model = manifest["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "triton", "version": "2"}
    assert model["runtime"] == "kserve-tritonserver" and model["protocolVersion"] == "v2"
    assert model["storageUri"] == "s3://bucket/models"
    assert "nvidia.com/gpu" not in model["resources"]["limits"]
    assert manifest["spec"]["predictor"]["maxReplicas"] == 4
    # the repository entry beside it is what Triton (and dslc serve --repository) loads
    (entry,) = triton.scan_repository(repo)
    assert entry["name"] == "LeNet_5.v2" and entry["config"]["platform"] == "onnxruntime_onnx"


def test_gpu_manifest_and_default_storage(tmp_path, model_dir, capsys):
    out = tmp_path / "m.yaml"
    assert main(["export-kserve", str(model_dir / "lenet.onnx"), "--repository", str(tmp_path / "models"),
                 "--gpu", "-o", str(out)]) == 0
    assert "note: storageUri is pvc://dslc-models/models" in capsys.readouterr().out
    manifest = yaml.safe_load(out.read_text())
    _validate(manifest)
    assert manifest["spec"]["predictor"]["model"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    cfg = triton.read_config(tmp_path / "models" / "lenet" / "config.pbtxt")
    assert cfg["instance_group"][0]["kind"] == "KIND_GPU"


@pytest.mark.parametrize("extra, want", [
    (["--name", "9lives"], "cannot be an InferenceService name"),
    (["--isvc-name", "Bad_Name"], "cannot be an InferenceService name"),
    (["--storage-uri", "/local/dir"], "KServe downloads from"),
    (["--min-replicas", "3", "--max-replicas", "2"], "--max-replicas"),
])
def test_bad_options_are_usage_errors(tmp_path, model_dir, capsys, extra, want):
    assert main(["export-kserve", str(model_dir / "lenet.onnx"), "--repository", str(tmp_path / "r"),
                 "-o", str(tmp_path / "m.yaml"), *extra]) == 2
    assert want in capsys.readouterr().err
    assert not (tmp_path / "m.yaml").exists() and not (tmp_path / "r").exists()


def test_schema_and_validate_reject_what_kserve_rejects():
    good = kserve.inference_service("ok", "gs://b/m")
    _validate(good)
    bad_name = {**good, "metadata": {"name": "Not_OK"}}
    assert kserve.validate(bad_name) and pytest.raises(jsonschema.ValidationError, jsonschema.validate, bad_name, SCHEMA)
    no_format = json.loads(json.dumps(good))
    del no_format["spec"]["predictor"]["model"]["modelFormat"]
    assert kserve.validate(no_format)
    with pytest.raises(jsonschema.ValidationError, match="modelFormat"):
        jsonschema.validate(no_format, SCHEMA)
    typo = json.loads(json.dumps(good))
    typo["spec"]["predictor"]["model"]["storageURI"] = typo["spec"]["predictor"]["model"].pop("storageUri")
    assert kserve.validate(typo)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(typo, SCHEMA)
    assert kserve.isvc_name("My_Model.v1") == "my-model-v1" and kserve.isvc_name("1x") is None


def test_export_of_a_net_at_int8(tmp_path, model_dir, capsys):
    import onnx
    from dslc.train.data import default_mnist_dir
    if not list(default_mnist_dir().glob("t10k-images*")):
        pytest.skip("MNIST not found (DSLC_DATA_DIR)")
    net = Path(__file__).resolve().parents[2] / "networks" / "lenet5.net"
    repo = tmp_path / "repo"
    assert main(["export-kserve", str(net), "--repository", str(repo), "--precision", "int8",
                 "-o", str(tmp_path / "m.yaml")]) == 0
    assert "int8 vs fp32" in capsys.readouterr().err
    ops = {n.op_type for n in onnx.load(str(repo / "lenet5" / "1" / "model.onnx")).graph.node}
    assert "QuantizeLinear" in ops
    assert main(["export-triton", str(model_dir / "lenet.onnx"), "--repository", str(repo), "--precision",
                 "fp16"]) == 2
    assert "--precision applies to .net models" in capsys.readouterr().err
