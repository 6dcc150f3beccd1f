"""`dslc export-torch FILE.net -o model.py`: the network as a readable, self-contained PyTorch module."""
from __future__ import annotations

import argparse

NAME = "export-torch"
HELP = "write a network as a PyTorch module (imports only torch; state_dict names are dslc's weight names)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE.net")
    p.add_argument("-o", "--output", metavar="OUT.py", help="output file (default: FILE's name with .py in the "
                                                            "current directory; - for stdout)")
    p.add_argument("--network", metavar="NAME", help="the network to write (default: the file's last)")


def run(args) -> int:
    import sys
    from pathlib import Path

    from dslc.lowering.compile import load_program
    from dslc.lowering.errors import report
    from dslc.torchgen import TorchCodegenError, module_source, root_class_name
    src = Path(args.file)
    try:
        prog, g = load_program(src, args.network)
    except Exception as e:  # noqa: BLE001 - report() re-raises what is not the user's
        return report(e, src)
    if prog.diagnostics.items:
        print(prog.diagnostics.render_all(), file=sys.stderr)   # warnings
    try:
        text = module_source(g)
    except TorchCodegenError as e:
        print(f"dslc: error: {e}", file=sys.stderr)
        return 1
    if args.output == "-":
        sys.stdout.write(text)
        return 0
    out = Path(args.output) if args.output else Path(src.stem + ".py")
    from dslc.weights import atomic_write_bytes
    try:
        atomic_write_bytes(out, text.encode())
    except OSError as e:
        print(f"dslc: error: cannot write {out}: {e.strerror or e}", file=sys.stderr)
        return 2
    blocks = text.count("\nclass ") - 1
    print(f"wrote {out}: class {root_class_name(g, text)} "
          f"({sum(1 for n in g if g.nodes[n]['op'] != 'input')} nodes"
          + (f", {blocks} block class{'es' if blocks != 1 else ''})" if blocks else ")"))
    return 0
