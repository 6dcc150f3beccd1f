"""dslc export-triton: write a Triton model repository entry (config.pbtxt + <version>/model.onnx)."""
from __future__ import annotations

import argparse

NAME = "export-triton"
HELP = "write MODEL as a Triton model repository entry that Triton's onnxruntime backend loads unchanged"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="an .onnx model (or a .net file with --weights)")
    p.add_argument("--repository", required=True, metavar="DIR", help="model repository directory (created if needed)")
    p.add_argument("--name", default=None, help="model name (default: MODEL's file name without extension)")
    p.add_argument("--version", type=int, default=1, help="version directory to write (default 1)")
    p.add_argument("--weights", metavar="FILE", help="weights for a .net model")
    p.add_argument("--max-batch-size", type=int, default=32, metavar="N",
                   help="max_batch_size (default 32; 0 = no batch dim, used anyway when the model's first "
                        "dimension is fixed)")
    p.add_argument("--max-queue-delay-ms", type=float, default=0.0, metavar="MS",
                   help="dynamic_batching max_queue_delay (default 0)")
    p.add_argument("--instances", type=int, default=1, metavar="N", help="instance_group count (default 1)")
    p.add_argument("--gpu", action="store_true", help="instance_group KIND_GPU (default KIND_CPU)")
    from dslc.commands.compile import add_precision_arguments
    add_precision_arguments(p)   # for a .net model: compiled at this precision


def run(args) -> int:
    written = write_entry(args, "export-triton")
    if isinstance(written, int):
        return written
    for path in written[2:4]:
        print(f"wrote {path}")
    return 0


def write_entry(args, command: str):
    """Validate the options, read the model through onnxruntime, write DIR/<name>/config.pbtxt and
    DIR/<name>/<version>/model.onnx; returns (name, config, config path, model path, ServedModel), or the exit
    status after printing the error."""
    import re
    import sys
    from pathlib import Path

    from dslc.serve import triton
    from dslc.serve.model import ModelLoadError, ServedModel, load_model_source

    path = Path(args.model)
    if not path.is_file():
        print(f"dslc {command}: no such model file: {args.model}", file=sys.stderr)
        return 2
    if args.max_batch_size < 0 or args.instances < 1 or args.version < 1 or args.max_queue_delay_ms < 0:
        print(f"dslc {command}: --max-batch-size and --max-queue-delay-ms must be >= 0, --instances and "
              "--version >= 1", file=sys.stderr)
        return 2
    name = args.name or path.stem
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name) or name in (".", ".."):
        print(f"dslc {command}: model name {name!r} must be letters, digits, '_', '-' or '.'", file=sys.stderr)
        return 2
    from dslc.commands.compile import precision_usage_error
    problem = precision_usage_error(args) or (
        "--precision applies to .net models; make a reduced .onnx with `dslc compile --precision`"
        if args.precision != "fp32" and path.suffix != ".net" else None)
    if problem:
        print(f"dslc {command}: {problem}", file=sys.stderr)
        return 2
    try:
        data = load_model_source(path, args.weights, precision=args.precision, calibration=args.calibration,
                                 fp16_io=args.fp16_io)
    except ModelLoadError as e:
        print(str(e) if e.plain else f"dslc {command}: error: {e}", file=sys.stderr)
        return e.code
    # Read the tensors through onnxruntime (CPU): the same view the server and Triton's backend have.
    m = ServedModel(name, str(args.version), data, origin=str(path), max_batch_size=args.max_batch_size,
                    device="cpu", threads=1)
    try:
        m.load()
    except ModelLoadError as e:
        print(f"dslc {command}: error: {e}", file=sys.stderr)
        return 1
    for note in m.notes:
        print(f"dslc {command}: note: {note}", file=sys.stderr)
    cfg = triton.model_config(name, m.inputs, m.outputs, m.max_batch_size,
                              queue_delay_us=int(round(args.max_queue_delay_ms * 1000)),
                              instances=args.instances, gpu=args.gpu)
    try:
        cfg_path, model_path = triton.write_model(args.repository, name, data, cfg, version=args.version)
    except OSError as e:
        print(f"dslc {command}: error: cannot write into {args.repository}: {e.strerror or e}"
              f"{f' ({e.filename})' if e.filename else ''}", file=sys.stderr)
        return 2
    return name, cfg, cfg_path, model_path, m
