"""Serving compiled networks: the Open Inference Protocol (KServe v2 REST, Triton-compatible) over onnxruntime.

    dslc serve MODEL.onnx [MORE.onnx ...] | --repository DIR      (dslc/commands/serve.py)
    dslc export-triton MODEL.onnx --repository DIR                (dslc/commands/export_triton.py)

| module | what |
|---|---|
| protocol.py | datatypes, request parsing and checking (JSON and binary tensor extension), response encoding |
| model.py    | ServedModel: session, tensors, batchability, warm-up, metadata/config, stats; load_model_source |
| batcher.py  | dynamic batching: merge along dim 0 by deadline / size, execute in a thread, split back |
| app.py      | the ASGI application: routes, auth, body limits, errors as {"error": ...} |
| server.py   | gathering models, binding, uvicorn, graceful SIGTERM/SIGINT |
| metrics.py  | Prometheus metrics per model |
| triton.py   | Triton model repositories: config.pbtxt writer/parser, repository scan, config checks |

Sessions come from dslc.runtime.session (quiet CUDA probe, provider confirmed with get_providers()).
"""
