"""Between dslc's positions (1-based lines and columns, end column exclusive, files by path) and LSP's
(0-based lines and characters, documents by URI); and dslc diagnostics as LSP diagnostics."""
from __future__ import annotations

from pathlib import Path

from lsprotocol import types as T
from pygls import uris

from dslc.diagnostics import Diagnostic, Span

SEVERITY = {"error": T.DiagnosticSeverity.Error, "warning": T.DiagnosticSeverity.Warning,
            "note": T.DiagnosticSeverity.Information}


def uri_to_path(uri: str) -> Path:
    fs = uris.to_fs_path(uri)
    return Path(fs if fs else uri).resolve()


def path_to_uri(path) -> str:
    return uris.from_fs_path(str(path)) or str(path)


def _word_end(line: str | None, col0: int) -> int:
    """The end of the word starting at `col0` (a span without an end marks a word, or one character)."""
    if line is None or col0 >= len(line):
        return col0 + 1
    end = col0
    while end < len(line) and (line[end].isalnum() or line[end] == "_"):
        end += 1
    return end if end > col0 else col0 + 1


def span_range(span: Span | None, lines: list[str] | None = None) -> T.Range:
    if span is None:
        return T.Range(T.Position(0, 0), T.Position(0, 0))
    start = T.Position(max(span.line - 1, 0), max(span.col - 1, 0))
    if span.end_line is not None and span.end_col is not None:
        end = T.Position(max(span.end_line - 1, 0), max(span.end_col - 1, 0))
    else:
        line = lines[start.line] if lines and start.line < len(lines) else None
        end = T.Position(start.line, _word_end(line, start.character))
    return T.Range(start, end)


def contains(span: Span | None, line0: int, char0: int) -> bool:
    """Whether a 0-based position lies in `span` (its end included, so a cursor just after a name counts)."""
    if span is None:
        return False
    start = (span.line - 1, span.col - 1)
    end = (span.end_line - 1, span.end_col - 1) if span.end_line is not None and span.end_col is not None \
        else (span.line - 1, span.col)
    return start <= (line0, char0) <= end


def span_size(span: Span) -> tuple[int, int]:
    """For choosing the innermost of several spans holding a position."""
    if span.end_line is None:
        return (0, 1)
    return (span.end_line - span.line, (span.end_col or 0) - span.col)


class DiagnosticConverter:
    """dslc diagnostics of one analysis, grouped by the document each belongs to."""

    def __init__(self, sources: dict[str, str], root: str):
        self.sources = sources  # shown path -> text, as Diagnostics keeps them
        self.root = root
        self._lines: dict[str, list[str]] = {}

    def lines(self, file: str) -> list[str] | None:
        if file not in self._lines:
            text = self.sources.get(file)
            self._lines[file] = text.splitlines() if text is not None else None
        return self._lines[file]

    def location(self, span: Span) -> T.Location:
        return T.Location(path_to_uri(span.file), span_range(span, self.lines(span.file)))

    def convert(self, d: Diagnostic, where: Span | None = None, prefix: str = "") -> T.Diagnostic:
        span = where or d.span
        message = prefix + d.message
        related = []
        for s, m in d.notes:
            if s is None:
                message += f"\nnote: {m}"
            else:
                related.append(T.DiagnosticRelatedInformation(self.location(s), m))
        if where is not None and d.span is not None:
            related.insert(0, T.DiagnosticRelatedInformation(self.location(d.span), d.message))
        if d.hint:
            message += f"\nhint: {d.hint}"
        file = span.file if span is not None else self.root
        return T.Diagnostic(span_range(span, self.lines(file)), message, SEVERITY.get(d.severity),
                            source="dslc", related_information=related or None)

    def by_file(self, items: list[Diagnostic]) -> dict[str, list[T.Diagnostic]]:
        """Each diagnostic goes to the file of its span (an error inside an imported file shows there). One whose
        span is in another file also shows in this file, at the call made here (its last note in this file)."""
        out: dict[str, list[T.Diagnostic]] = {self.root: []}
        for d in items:
            file = d.span.file if d.span is not None else self.root
            out.setdefault(file, []).append(self.convert(d))
            if file != self.root:
                # call-site notes come last (dslc/frontend/elaborate.py with_call_sites): the last one here
                here = next((s for s, _ in reversed(d.notes) if s is not None and s.file == self.root), None)
                if here is not None:
                    name = Path(file).name
                    out[self.root].append(self.convert(d, here, f"in {name}: "))
        return out
