"""`dslc diff A.net B.net`: what changed between two networks, layer by layer and per block (dslc/netdiff.py)."""
from __future__ import annotations

import argparse

NAME = "diff"
HELP = ("structural diff of two networks: added, removed, changed and renamed layers, parameter and MAC deltas "
        "per block; exit 0 when identical, 1 when they differ")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE.net",
                   help="the old and the new file; or one file with --networks OLD,NEW")
    p.add_argument("--networks", metavar="OLD[,NEW]",
                   help="the network to take from each side (one name: the same in both); default: each file's "
                        "last network, as check does")
    p.add_argument("--depth", type=int, default=1,
                   help="name depth of the blocks the deltas are summed over (1: layer3, 2: layer3.block1)")
    p.add_argument("--json", action="store_true", help="print the diff as one JSON object (docs/tools.md)")


def run(args) -> int:
    import json
    import sys

    from dslc.commands.check import read_error
    from dslc.netdiff import diff_graphs
    sides = _sides(args)
    if isinstance(sides, str):
        print(f"dslc diff: error: {sides}", file=sys.stderr)
        return 2
    from dslc.api import load
    progs = []
    for path, network in sides:
        try:
            progs.append(load(path, network=network))
        except (OSError, UnicodeDecodeError) as e:
            print(f"dslc: error: cannot read {path}: {read_error(e)}", file=sys.stderr)
            return 2
    heads = [{"file": p.path, "network": p.network, "ok": p.ok,
              "diagnostics": [d.to_json() for d in p.diagnostics.items]} for p in progs]
    if not all(p.ok for p in progs):
        if args.json:
            print(json.dumps({"version": 1, "ok": False, "a": heads[0], "b": heads[1]}))
        else:
            for p in progs:
                if p.diagnostics.items:
                    print(p.diagnostics.render_all(), file=sys.stderr)
        return 1
    for p in progs:  # warnings of a file that is fine still deserve to be seen
        if p.diagnostics.items and not args.json:
            print(p.diagnostics.render_all(), file=sys.stderr)
    d = diff_graphs(progs[0].graph, progs[1].graph, args.depth)
    if args.json:
        print(json.dumps({"version": d["version"], "ok": True, "a": heads[0], "b": heads[1],
                          **{k: v for k, v in d.items() if k != "version"}}))
    else:
        print_diff(d, progs[0], progs[1])
    return 0 if d["identical"] else 1


def _sides(args):
    """[(path, network), (path, network)], or the usage mistake as text."""
    names = [n.strip() for n in args.networks.split(",")] if args.networks else []
    if len(names) > 2 or any(not n for n in names):
        return f"--networks takes one or two names (OLD,NEW), got {args.networks!r}"
    if len(args.files) > 2:
        return f"give two files (old, new), or one file with --networks OLD,NEW; got {len(args.files)} files"
    if len(args.files) == 1:
        if len(names) != 2:
            return "one file: name the two networks to compare with --networks OLD,NEW"
        return [(args.files[0], names[0]), (args.files[0], names[1])]
    names = names * 2 if len(names) == 1 else names or [None, None]
    return list(zip(args.files, names))


def print_diff(d: dict, a, b) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = 120  # a pipe or a file has no width to fit: keep a layer on one or two lines
    console.print(f"--- {a.path} (network {a.network})\n+++ {b.path} (network {b.network})", markup=False)
    if d["identical"]:
        console.print("no structural differences", markup=False)
    for r in d["renamed"]:
        how = "" if r["kind"] != "block" else f" ({r['layers']} layers, same structure)" if r["same_structure"] \
            else f" ({r['layers']} layers, renumbered)"
        console.print(f"renamed {r['from']} → {r['to']}{how}", markup=False)
    for k, (x, y) in d["network_params"].items():
        console.print(f"network parameter {k}: {_val(x)} → {_val(y)}", markup=False)
    for k, (x, y) in d["outputs"].items():
        console.print(f"output {k}: {x or '(none)'} → {y or '(none)'}", markup=False)
    style = {"added": ("+", "green"), "removed": ("-", "red"), "changed": ("~", "yellow")}
    if d["layers"]:
        names = [r["name"] if not r["from"] else f"{r['from']} → {r['name']}" for r in d["layers"]]
        t = Table(title="layers", title_justify="left", show_edge=False, pad_edge=False)
        t.add_column("")
        t.add_column("layer", min_width=max(map(len, names)))
        op_column = console.width >= 110  # a narrow terminal: the op leads the text instead
        if op_column:
            t.add_column("op")
        figures = [(_signed(r["params"]["delta"]), _signed(r["macs"]["delta"], macs=True)) for r in d["layers"]]
        widths = [max(len(col), *(len(c[i]) for c in figures)) for i, col in enumerate(("Δparams", "ΔMACs"))]
        # the text column takes what is left, so that the figures are never cut off
        rest = console.width - 1 - max(map(len, names)) - sum(widths) - 3 * (5 if op_column else 4)
        t.add_column("what changed", max_width=max(rest - (max(len(r["op"]) for r in d["layers"]) if op_column
                                                            else 0), 16))
        for col, w in zip(("Δparams", "ΔMACs"), widths):
            t.add_column(col, justify="right", min_width=w)
        for r, name, (dp, dm) in zip(d["layers"], names, figures):
            mark, colour = style[r["status"]]
            cells = [r["op"], _what(r)] if op_column else [f"{r['op']}: {_what(r)}"]
            t.add_row(Text(mark, style=colour), Text(name, style=colour), *cells, dp, dm)
        console.print(t)
    if d["blocks"]:
        names = [r["name"] if not r["from"] else f"{r['from']} → {r['name']}" for r in d["blocks"]]
        t = Table(title="blocks", title_justify="left", show_edge=False, pad_edge=False)
        t.add_column("block", min_width=max(map(len, names)))
        t.add_column("layers")
        for col in ("params (new)", "Δparams", "MACs (new)", "ΔMACs"):
            t.add_column(col, justify="right", no_wrap=True)
        tot = d["totals"]
        for r, name in zip([*d["blocks"], tot], [*names, "total"]):
            if r is tot:
                t.add_section()
            t.add_row(name, _counts(r.get("layers", r)), f"{r['params']['b']:,}", _signed(r["params"]["delta"]),
                      _human(r["macs"]["b"]), _signed(r["macs"]["delta"], macs=True), style="bold" if r is tot else None)
        console.print(t)
    tot = d["totals"]
    console.print(f"trainable params {tot['params']['a']:,} → {tot['params']['b']:,} "
                  f"({_signed(tot['params']['delta']) or '±0'})", markup=False)
    console.print(f"MACs (batch 1) {_human(tot['macs']['a'])} → {_human(tot['macs']['b'])} "
                  f"({_signed(tot['macs']['delta'], macs=True) or '±0'})", markup=False)


def _what(r: dict) -> str:
    ch = r["changes"]
    if r["status"] != "changed":
        return f"output {', '.join(r['outputs'])}"
    out = []
    if "op" in ch:
        out.append(f"op {ch['op'][0]} → {ch['op'][1]}")
    out += [f"{k} {_val(x)} → {_val(y)}" for k, (x, y) in ch.get("attrs", {}).items()]
    if "outputs" in ch:
        old, new = (", ".join(ts) for ts in ch["outputs"])
        dtype = old.partition("[")[0]
        if len(ch["outputs"][0]) == 1 == len(ch["outputs"][1]) and new.partition("[")[0] == dtype:
            old, new = old[len(dtype):], new[len(dtype):]  # the dtype only where it changed
        out.append(f"output {old} → {new}")
    by_change: dict[tuple, list[str]] = {}  # batchnorm's four vectors change alike: say it once
    for k, (x, y) in ch.get("weights", {}).items():
        by_change.setdefault((_val(x), _val(y)), []).append(k)
    out += [f"{', '.join(keys)} {x} → {y}" for (x, y), keys in by_change.items()]
    if "inputs" in ch:
        out.append("inputs " + " → ".join(", ".join(s for s, _ in ins) or "(none)" for ins in ch["inputs"]))
    return "; ".join(out)


def _val(v) -> str:
    if v is None:
        return "(none)"
    if isinstance(v, list):
        return "[" + ", ".join(_val(x) for x in v) + "]"
    return str(v)


def _counts(r: dict) -> str:
    parts = [f"{sign}{r[k]}" for k, sign in (("added", "+"), ("removed", "-"), ("changed", "~")) if r.get(k)]
    if r.get("renamed"):
        parts.append(f"{r['renamed']} renamed")
    return " ".join(parts)


def _human(n: int) -> str:
    from dslc.summary import human
    return human(n)


def _signed(n: int, macs: bool = False) -> str:
    if not n:
        return ""
    return ("+" if n > 0 else "-") + (_human(abs(n)) if macs else f"{abs(n):,}")
