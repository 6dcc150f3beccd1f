"""`dslc compile FILE.net -o model.onnx`: lower a checked network to a validated ONNX model."""
from __future__ import annotations

import argparse

NAME = "compile"
HELP = "compile a .net network to a validated ONNX model"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE.net")
    p.add_argument("-o", "--output", metavar="MODEL.onnx", help="output file (default: FILE's name with .onnx, "
                                                                "in the current directory)")
    p.add_argument("--network", metavar="NAME", help="the network to compile (default: the file's last)")
    p.add_argument("--opset", type=int, default=21, help="ONNX opset (default 21)")
    p.add_argument("--weights", metavar="FILE.npz", help="weights to export (dslc weights file, e.g. from "
                                                         "`dslc train`); default: seeded initialisation")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights (default 0)")
    p.add_argument("--batch", type=int, metavar="N", help="fix the batch dim to N (default: symbolic)")
    p.add_argument("--fold-bn", action=argparse.BooleanOptionalAction, default=True,
                   help="fold each batchnorm that follows a conv into the conv's weight and bias (default: on, "
                        "as torch.onnx.export does); --no-fold-bn keeps BatchNormalization nodes with the running "
                        "statistics")
    add_precision_arguments(p)
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")


def add_precision_arguments(p: argparse.ArgumentParser) -> None:
    """--precision / --calibration, shared by compile, train and serve."""
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32",
                   help="fp32 (default); fp16: weights and compute in half precision, inputs/outputs kept "
                        "float32; int8: static QDQ quantization calibrated on the train section's data. The "
                        "output delta (and accuracy) against fp32 on held-out data is printed")
    p.add_argument("--calibration", metavar="SPEC",
                   help="data for int8 calibration and the fp32 comparison instead of the train section's: "
                        "mnist, mnist:DIR, FILE.npz, FILE.csv, a built-in set, or a folder of images")
    p.add_argument("--fp16-io", action="store_true",
                   help="with --precision fp16: float16 inputs and outputs too (no casts at the edges; clients "
                        "send and receive FP16); default: they stay float32")


def precision_usage_error(args) -> str | None:
    if getattr(args, "calibration", None) is not None and args.precision == "fp32":
        return "--calibration goes with --precision int8 (or fp16, for the comparison data)"
    if getattr(args, "fp16_io", False) and args.precision != "fp16":
        return "--fp16-io goes with --precision fp16"
    return None


def run(args) -> int:
    import sys
    import time
    from pathlib import Path

    from dslc.lowering.compile import compile_graph, load_program
    from dslc.lowering.errors import report

    t0 = time.perf_counter()
    src = Path(args.file)
    out = Path(args.output) if args.output else Path(src.stem + ".onnx")
    if precision_usage_error(args):
        print(f"dslc: error: {precision_usage_error(args)}", file=sys.stderr)
        return 2
    if args.weights and not Path(args.weights).is_file():
        print(f"dslc: error: weights file {args.weights} not found", file=sys.stderr)
        return 2
    try:
        prog, g = load_program(src, args.network)
    except Exception as e:  # noqa: BLE001 - report() re-raises what is not the user's
        return report(e, src)
    if prog.diagnostics.items:
        print(prog.diagnostics.render_all(), file=sys.stderr)   # warnings
    if args.precision != "fp32":
        return _run_reduced(args, g, src, out, t0)
    try:
        model, info = compile_graph(g, weights=args.weights, batch=args.batch, opset=args.opset,
                                    fold_bn=args.fold_bn, seed=args.seed, materialize=False, output=out)
    except OSError as e:   # the weights file's problems come as WeightsMismatch: this is writing `out`
        print(f"dslc: error: cannot write {out}: {e.strerror or e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001
        return report(e, src)
    files = info.files
    if not args.quiet:
        g = info.g  # with --batch: the graph with the batch dim bound
        n_nodes = len(model.graph.node)
        size = sum(f.stat().st_size for f in files)
        ins = ", ".join(f"{n}: {g.nodes[n]['outputs'][0]}" for n in g.graph["inputs"])
        outs = ", ".join(f"{k}: {g.nodes[v[0]]['outputs'][v[1]]}" for k, v in g.graph["outputs"].items())
        extra = f" + {files[1].name}" if len(files) > 1 else ""
        print(f"wrote {out}{extra}: network {g.graph['name']}, {n_nodes} ONNX nodes, opset {args.opset}, "
              f"{_human_bytes(size)}, validated (checker, shape inference, onnxruntime) in "
              f"{time.perf_counter() - t0:.2f}s")
        print(f"  inputs  {ins}")
        print(f"  outputs {outs}")
    return 0


def _run_reduced(args, g, src, out, t0) -> int:
    """fp16 / int8: compile and validate fp32 in memory, convert, validate again, compare, write."""
    import sys
    import time

    from dslc.lowering.compile import compile_graph
    from dslc.lowering.errors import report
    from dslc.lowering.precision import PrecisionError, reduce_for_graph
    from dslc.weights import atomic_write_bytes
    try:
        _model, info = compile_graph(g, weights=args.weights, batch=args.batch, opset=args.opset,
                                     fold_bn=args.fold_bn, seed=args.seed, materialize=False)
    except Exception as e:  # noqa: BLE001
        return report(e, src)
    if info.data is None:
        print(f"dslc: error: --precision {args.precision}: the fp32 model is over 2 GB, which the converters "
              f"cannot read in one piece", file=sys.stderr)
        return 2
    try:
        reduced, comparison = reduce_for_graph(info.data, args.precision, info.g, args.calibration,
                                                 fp16_io=args.fp16_io)
    except PrecisionError as e:
        print(f"dslc: error: {e}", file=sys.stderr)
        return e.code
    try:
        atomic_write_bytes(out, reduced)
    except OSError as e:
        print(f"dslc: error: cannot write {out}: {e.strerror or e}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(f"wrote {out}: network {info.g.graph['name']}, {args.precision}, {_human_bytes(len(reduced))} "
              f"(fp32 {_human_bytes(len(info.data))}), validated (checker, shape inference, onnxruntime) in "
              f"{time.perf_counter() - t0:.2f}s")
        print(f"  {comparison.describe()}")
    return 0


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
