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
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")


def run(args) -> int:
    import sys
    import time
    from pathlib import Path

    from dslc.lowering.compile import compile_graph, load_program
    from dslc.lowering.errors import report

    t0 = time.perf_counter()
    src = Path(args.file)
    out = Path(args.output) if args.output else Path(src.stem + ".onnx")
    if args.weights and not Path(args.weights).is_file():
        print(f"dslc: error: weights file {args.weights} not found", file=sys.stderr)
        return 2
    try:
        prog, g = load_program(src, args.network)
    except Exception as e:  # noqa: BLE001 - report() re-raises what is not the user's
        return report(e, src)
    if prog.diagnostics.items:
        print(prog.diagnostics.render_all(), file=sys.stderr)   # warnings
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


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
