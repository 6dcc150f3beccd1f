"""`dslc check FILE.net ...`: diagnostics, then a summary table per network (or --json)."""
from __future__ import annotations

import argparse

NAME = "check"
HELP = "parse and shape-check .net files; print a summary of each network"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE.net")
    p.add_argument("--network", help="check only this network of the file")
    p.add_argument("--depth", type=int, default=None, help="show N levels of names (layer1.block1 is level 2); "
                   "deeper layers are summed into their block")
    p.add_argument("--json", action="store_true", help="print one JSON object per file")
    p.add_argument("-q", "--quiet", action="store_true", help="diagnostics only, no table")


def run(args) -> int:
    import json
    import sys

    from dslc.api import load
    status = 0
    for path in args.files:
        try:
            prog = load(path, network=args.network)
        except (OSError, UnicodeDecodeError) as e:  # the user's path, not a bug in dslc
            print(f"dslc: error: cannot read {path}: {read_error(e)}", file=sys.stderr)
            status = max(status, 2)
            continue
        if not prog.ok:
            status = max(status, 1)
        if args.json:
            print(json.dumps(to_json(prog)))
            continue
        if prog.diagnostics.items:
            print(prog.diagnostics.render_all(), file=sys.stderr)
        if prog.ok and not args.quiet:
            print_program(prog, args.depth)
    return status


def read_error(e: Exception) -> str:
    """Why a .net file could not be read (also e.g. a name too long), in a few words."""
    if isinstance(e, UnicodeDecodeError):
        return "not a UTF-8 text file"
    return {FileNotFoundError: "no such file", IsADirectoryError: "it is a directory",
            PermissionError: "permission denied"}.get(type(e)) or (e.strerror or str(e)).lower()


def to_json(prog) -> dict:
    out = {"file": prog.path, "ok": prog.ok, "doc": prog.doc, "network": prog.network,
           "diagnostics": [d.to_json() for d in prog.diagnostics.items]}
    if prog.ok:
        s = prog.summary()
        g = prog.graph
        out.update({
            "inputs": {k: list(v.shape) for k, v in s.inputs.items()},
            "input_dtypes": {k: v.dtype for k, v in s.inputs.items()},
            "outputs": {k: list(v.shape) for k, v in s.outputs.items()},
            "trainable_params": s.trainable_params,
            "total_params": s.total_params,
            "macs": s.macs,
            "param_bytes": s.param_bytes,
            "layers": sum(1 for n in g if g.nodes[n]["role"] == "model" and g.nodes[n]["op"] != "input"),
            "networks": sorted(prog.networks),
            "train": g.graph.get("train"),
        })
    else:
        out.update({"inputs": {}, "outputs": {}, "trainable_params": None, "macs": None})
    return out


def print_program(prog, depth) -> None:
    from rich.console import Console
    from rich.table import Table

    from dslc.summary import human, human_bytes, summarize
    console = Console(highlight=False)
    if prog.doc:
        console.print(prog.doc, markup=False)
        console.print()
    for name in prog.networks:
        g = prog.networks[name]
        s = summarize(g, depth)
        table = Table(title=f"network {name}", title_justify="left", show_edge=False, pad_edge=False)
        table.add_column("name", no_wrap=True)
        table.add_column("op")
        table.add_column("output shape")
        table.add_column("params", justify="right")
        table.add_column("MACs", justify="right")
        for r in s.rows:
            table.add_row(r.name, r.op, r.shape, f"{r.params:,}" if r.params else "", human(r.macs) if r.macs else "")
        console.print(table)
        ins = ", ".join(f"{k}: {v}" for k, v in s.inputs.items())
        outs = ", ".join(f"{k}: {v}" for k, v in s.outputs.items())
        console.print(f"inputs  {ins}", markup=False)
        console.print(f"outputs {outs}", markup=False)
        console.print(f"trainable params {s.trainable_params:,}   MACs (batch 1) {human(s.macs)}   "
                      f"parameter memory {human_bytes(s.param_bytes)}", markup=False)
        console.print()
