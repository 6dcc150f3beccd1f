"""KServe InferenceService manifests (serving.kserve.io/v1beta1) for an exported Triton model repository.

The predictor is KServe's `model` form: modelFormat `triton` (version 2), served by the `kserve-tritonserver`
ClusterServingRuntime over the Open Inference Protocol (`protocolVersion: v2`), the repository downloaded from
`storageUri` to /mnt/models by KServe's storage initializer.  Field names and types follow KServe's Go API
(pkg/apis/serving/v1beta1: ModelSpec, ModelFormat, PredictorExtensionSpec, ComponentExtensionSpec) and the name
rule of its webhook (a DNS-1035 label); `validate()` checks a manifest against those rules.
"""
from __future__ import annotations

import re

API_VERSION = "serving.kserve.io/v1beta1"
KIND = "InferenceService"
RUNTIME = "kserve-tritonserver"
MODEL_FORMAT = {"name": "triton", "version": "2"}
NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")   # KServe's isvc name regex (DNS-1035 label)
MAX_NAME = 63
# storage schemes KServe's storage initializer downloads from (kserve/storage: gs, s3, pvc, http(s), hdfs, ...)
STORAGE_SCHEMES = ("gs://", "s3://", "pvc://", "https://", "http://", "hdfs://", "webhdfs://", "oci://")


def isvc_name(model_name: str) -> str | None:
    """The model name as an InferenceService name: lower case, '_' and '.' as '-'; None when that is no
    valid name (e.g. it starts with a digit)."""
    name = re.sub(r"[_.]+", "-", model_name.lower()).strip("-")
    return name if NAME_RE.match(name) and len(name) <= MAX_NAME else None


def inference_service(name: str, storage_uri: str, *, gpu: bool = False, namespace: str | None = None,
                      min_replicas: int = 1, max_replicas: int | None = None, cpu: str = "1",
                      memory: str = "2Gi") -> dict:
    """The manifest as a dict (written as YAML by the command)."""
    metadata: dict = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    metadata["labels"] = {"app.kubernetes.io/managed-by": "dslc"}
    limits = {"cpu": cpu, "memory": memory}
    if gpu:
        limits["nvidia.com/gpu"] = "1"
    predictor: dict = {"minReplicas": int(min_replicas)}
    if max_replicas is not None:
        predictor["maxReplicas"] = int(max_replicas)
    predictor["model"] = {
        "modelFormat": dict(MODEL_FORMAT),
        "runtime": RUNTIME,
        "protocolVersion": "v2",
        "storageUri": storage_uri,
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": limits},
    }
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": {"predictor": predictor}}


def validate(manifest: dict) -> list[str]:
    """Problems KServe's API server or webhook would reject the manifest for (empty when none)."""
    problems = []
    if manifest.get("apiVersion") != API_VERSION or manifest.get("kind") != KIND:
        problems.append(f"apiVersion/kind must be {API_VERSION} / {KIND}")
    name = (manifest.get("metadata") or {}).get("name")
    if not isinstance(name, str) or not NAME_RE.match(name) or len(name) > MAX_NAME:
        problems.append(f"metadata.name {name!r} must be a DNS-1035 label (regex {NAME_RE.pattern}, <= 63 chars)")
    predictor = ((manifest.get("spec") or {}).get("predictor")) or {}
    model = predictor.get("model") or {}
    fmt = model.get("modelFormat") or {}
    if not isinstance(fmt.get("name"), str) or not fmt["name"]:
        problems.append("spec.predictor.model.modelFormat.name is required")
    uri = model.get("storageUri")
    if not isinstance(uri, str) or not uri.startswith(STORAGE_SCHEMES):
        problems.append(f"spec.predictor.model.storageUri {uri!r} must start with one of {', '.join(STORAGE_SCHEMES)}")
    if model.get("protocolVersion") not in (None, "v1", "v2", "grpc-v1", "grpc-v2"):
        problems.append("spec.predictor.model.protocolVersion must be v1, v2, grpc-v1 or grpc-v2")
    lo, hi = predictor.get("minReplicas", 1), predictor.get("maxReplicas", 0)
    if lo < 0 or hi < 0 or (hi and lo > hi):
        problems.append("minReplicas and maxReplicas must be >= 0, minReplicas <= maxReplicas")
    return problems
