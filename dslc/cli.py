"""`dslc` command line: a thin dispatcher over dslc/commands/<name>.py.

Each command module defines `NAME`, `HELP`, `add_arguments(parser)` and `run(args) -> int`.
Exit codes: 0 fine, 1 errors in the user's program, 2 usage error or missing file, 3 internal error.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ["check", "compile", "run", "graph", "train", "serve", "export_triton", "export_torch", "export_kserve", "fmt",
            "diff", "lsp", "export_weights", "generate"]


def build_parser() -> argparse.ArgumentParser:
    from dslc import __version__
    parser = argparse.ArgumentParser(prog="dslc", description="Compile neural networks written as .net text.")
    parser.add_argument("--version", action="version", version=f"dslc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"dslc.commands.{name}")
        except ModuleNotFoundError:
            continue  # command not built yet
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args._argv = list(sys.argv[1:] if argv is None else argv)   # `train --nproc N` restarts itself N times
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # a bug in dslc, never the user's mistake: say so, without a traceback
        import os
        import traceback
        if os.environ.get("DSLC_DEBUG"):
            traceback.print_exc()
        where = traceback.extract_tb(e.__traceback__)[-1]
        print(f"dslc: internal error: {type(e).__name__}: {e}\n"
              f"  at {where.filename}:{where.lineno}; this is a bug in dslc, please report it "
              f"(set DSLC_DEBUG=1 for the traceback)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
