"""The .net grammar and its Lark parser, built once per process. The parser (AST building) and the syntax-error
explainer (syntax.py, which reads terminal patterns for its messages) both start here."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from lark import Lark


def grammar_text() -> str:
    """The grammar ships inside the wheel as the package `dslc.grammars`; in a checkout it is grammars/."""
    try:
        from importlib.resources import files
        return files("dslc.grammars").joinpath("dslc.lark").read_text()
    except (ModuleNotFoundError, FileNotFoundError):
        return (Path(__file__).resolve().parents[2] / "grammars" / "dslc.lark").read_text()


@lru_cache(maxsize=1)
def lark_parser() -> Lark:
    return Lark(grammar_text(), parser="lalr", propagate_positions=True, maybe_placeholders=True, cache=True)
