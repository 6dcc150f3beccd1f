"""`dslc fmt`: the one canonical layout of .net files (no options, as gofmt and black).

Public API (the language server calls this for `textDocument/formatting`):

    from dslc.fmt import format_source, FormatError
    new_text = format_source(text, path="<stdin>")

`format_source(text: str, path: str = "<stdin>") -> str` returns the formatted text (unchanged text when it is
already formatted; a leading byte-order mark is dropped). It raises `FormatError` when the text does not parse:
`err.diagnostics` is a `dslc.diagnostics.Diagnostics` holding exactly the diagnostics `dslc check` reports for
those syntax errors (`err.diagnostics.items` the list of `Diagnostic`, `err.render()` the text `check` prints).
Only syntax is needed: imports are not followed and shapes are not checked, so a file with shape errors formats.

How it works: the text is parsed with the project's own grammar (grammars/dslc.lark, the same Lark LALR parser
as `dslc check`) and the parse tree is printed back (dslc/fmt/printer.py). Comments are ignored by the grammar;
the lexer hands them over on the side, and each is put back by its source line: own-line comments before the
statement (or pipeline stage, or parameter) that follows them, end-of-line comments after the statement /
stage / parameter of their line. Before returning, the output is parsed again and its tree compared with the
input's (and its comments counted): formatting cannot change the meaning of a program, by construction and by
this check (a mismatch is an internal error, never a silently changed file).

The layout (docs/tools.md has the full list): 4-space indents; one blank line between top-level definitions;
blank lines inside bodies kept (at most one); spaces around binary operators and `|>`; `name=value` keyword
arguments, `name = value` parameter defaults; no trailing commas; a statement wider than 100 columns whose
value is a pipeline gets one stage per line (`|> stage`, indented 4 more), and a `repeat { }` stage that still
does not fit gets one inner stage per line; a declaration header wider than 100 gets one parameter per line.
A line that still cannot fit (one long call, list or expression) is left long: fmt never breaks inside brackets.
"""
from __future__ import annotations

from dslc.fmt.printer import FormatError, format_source  # noqa: F401 (the public API)

__all__ = ["FormatError", "format_source"]
