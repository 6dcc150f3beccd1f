"""dslc serve: Open Inference Protocol (KServe v2) server over onnxruntime, with dynamic batching and metrics."""
from __future__ import annotations

import argparse

NAME = "serve"
HELP = "serve models over HTTP with the Open Inference Protocol (KServe v2 / Triton compatible)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="*", metavar="MODEL",
                   help="model files: .onnx (or .net with --weights); each is served as version 1 under its file "
                        "name without the extension")
    p.add_argument("--repository", metavar="DIR",
                   help="a Triton-style model repository: DIR/<name>/config.pbtxt and DIR/<name>/<version>/model.onnx "
                        "(config.pbtxt settings win over the flags below)")
    from dslc.weight_files import add_weights_arguments
    add_weights_arguments(p, "weights for a .net model")
    p.add_argument("--model-control-mode", choices=("none", "explicit", "poll"), default="none",
                   help="repository models (as Triton): none: those at startup (default); explicit: --load-model "
                        "ones, then POST /v2/repository/models/NAME/load|unload; poll: rescan the repository and "
                        "load new, reload changed, unload removed models, without dropping a request")
    p.add_argument("--repository-poll-secs", type=float, default=15.0, metavar="S",
                   help="how often poll mode rescans the repository (default 15)")
    p.add_argument("--load-model", action="append", metavar="NAME",
                   help="with --model-control-mode explicit: load NAME at startup (repeatable; '*' loads all)")
    from dslc.commands.compile import add_precision_arguments
    add_precision_arguments(p)   # for .net models: compiled at this precision
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--grpc-port", default=None, metavar="PORT",
                   help="also serve the Open Inference Protocol over gRPC (inference.GRPCInferenceService, as "
                        "Triton/KServe) on this port (default 8001; with --port 0 a free one; 'off': HTTP only)")
    p.add_argument("--workers", default="1", metavar="N|auto",
                   help="server processes sharing the ports, each with its own onnxruntime sessions and batchers "
                        "(default 1; auto: one per core, at most 8); /metrics sums all of them")
    p.add_argument("--max-batch-size", type=int, default=32, metavar="N",
                   help="largest batch (rows along dim 0) per execution and per request (default 32); "
                        "1 turns dynamic batching off; 0 serves the model's full shapes without a batch dim")
    p.add_argument("--max-queue-delay-ms", type=float, default=0.0, metavar="MS",
                   help="how long the first queued request may wait for others to join its batch (default 0: "
                        "batch only what queued while the model was busy)")
    p.add_argument("--instances", type=int, default=1, metavar="N",
                   help="executions of one model that may run at once (default 1)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="onnxruntime intra-op threads per model instance (default: the CPUs this process may "
                        "use, less one for HTTP, divided among the instances)")
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
                   help="auto: CUDA when a GPU is usable, else CPU (default); gpu: fail without one")
    p.add_argument("--max-body-size", default="64MiB", metavar="SIZE",
                   help="largest request body accepted, e.g. 64MiB or 1048576 (default 64MiB); larger gets 413")
    p.add_argument("--api-key", default=None, metavar="KEY",
                   help="require 'Authorization: Bearer KEY' on every endpoint except /v2/health/* "
                        "(or set DSLC_API_KEY)")


def run(args) -> int:
    from dslc.serve.server import main
    return main(args)
