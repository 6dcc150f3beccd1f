"""`dslc lsp`: the language server, speaking LSP over stdin/stdout (editors start it; docs/tools.md)."""
from __future__ import annotations

import argparse

NAME = "lsp"
HELP = "run the language server over stdio (diagnostics, hover shapes, inlay hints, definitions, formatting)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stdio", action="store_true", help="talk over stdin/stdout (the default and only transport; "
                   "accepted because editor clients pass it)")


def run(args) -> int:
    from dslc.lsp.server import main
    return main()
