"""`dslc graph FILE.net -o net.svg`: a picture of the network (SVG, no Graphviz needed; or dot)."""
from __future__ import annotations

import argparse

NAME = "graph"
HELP = "draw a network: layers with output shapes, tensors as edges, blocks as boxes (SVG or Graphviz dot)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE.net")
    p.add_argument("-o", "--output", metavar="OUT.svg", help="output file (default: FILE's name with .svg or .dot "
                                                             "in the current directory; - for stdout)")
    p.add_argument("--format", choices=("svg", "dot"), help="svg (default) or dot; taken from -o's suffix when "
                                                            "not given")
    p.add_argument("--depth", type=int, metavar="N", help="collapse blocks nested deeper than N levels into one box "
                                                           "each (0: every top-level block is one box)")
    p.add_argument("--network", metavar="NAME", help="the network to draw (default: the file's last)")


def run(args) -> int:
    import sys
    from pathlib import Path

    from dslc.api import load
    src = Path(args.file)
    fmt = args.format
    if fmt is None:
        fmt = "dot" if args.output and args.output.endswith((".dot", ".gv")) else "svg"
    if args.depth is not None and args.depth < 0:
        print("dslc: error: --depth must be 0 or more", file=sys.stderr)
        return 2
    try:
        prog = load(src, network=args.network)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
        why = {FileNotFoundError: "no such file", IsADirectoryError: "it is a directory",
               PermissionError: "permission denied"}[type(e)]
        print(f"dslc: error: cannot read {src}: {why}", file=sys.stderr)
        return 2
    except UnicodeDecodeError:
        print(f"dslc: error: {src} is not a UTF-8 text file", file=sys.stderr)
        return 2
    if prog.diagnostics.items:
        print(prog.diagnostics.render_all(), file=sys.stderr)
    if not prog.ok or prog.network is None:
        return 1
    from dslc.viz import render
    text = render(prog.graph, fmt, args.depth)
    if args.output == "-":
        sys.stdout.write(text)
        return 0
    out = Path(args.output) if args.output else Path(src.stem + "." + fmt)
    from dslc.weights import atomic_write_bytes
    try:
        atomic_write_bytes(out, text.encode())
    except OSError as e:
        print(f"dslc: error: cannot write {out}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(f"wrote {out}: network {prog.network}, {fmt}")
    return 0
