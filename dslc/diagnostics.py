"""Diagnostics: every user mistake becomes one of these, rendered as `file:line:col: error: message`."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Span:
    file: str
    line: int
    col: int
    end_line: int | None = None
    end_col: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass
class Diagnostic:
    severity: str  # "error" | "warning" | "note"
    message: str
    span: Span | None = None
    hint: str | None = None
    notes: list[tuple[Span | None, str]] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "file": self.span.file if self.span else None,
            "line": self.span.line if self.span else None,
            "col": self.span.col if self.span else None,
            "severity": self.severity,
            "message": self.message,
            "hint": self.hint,
            "notes": [{"file": s.file if s else None, "line": s.line if s else None,
                       "col": s.col if s else None, "message": m} for s, m in self.notes],
        }


class UserError(Exception):
    """Raised inside a phase for one user mistake; the phase turns it into a Diagnostic and carries on."""

    def __init__(self, message: str, span: Span | None = None, hint: str | None = None,
                 notes: list[tuple[Span | None, str]] | None = None):
        super().__init__(message)
        self.diagnostic = Diagnostic("error", message, span, hint, list(notes or []))


class Diagnostics:
    """The list of diagnostics a run collected, plus the source texts to quote them."""

    def __init__(self):
        self.items: list[Diagnostic] = []
        self.sources: dict[str, str] = {}

    def add(self, d: Diagnostic) -> None:
        key = (d.severity, d.message, d.span)
        if any((x.severity, x.message, x.span) == key for x in self.items):
            return
        self.items.append(d)

    def error(self, message, span=None, hint=None, notes=None):
        self.add(Diagnostic("error", message, span, hint, list(notes or [])))

    def warning(self, message, span=None, hint=None, notes=None):
        self.add(Diagnostic("warning", message, span, hint, list(notes or [])))

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity == "warning"]

    def has_errors(self) -> bool:
        return any(d.severity == "error" for d in self.items)

    def source_line(self, span: Span) -> str | None:
        text = self.sources.get(span.file)
        if text is None:
            try:
                text = Path(span.file).read_text()
            except OSError:
                return None
            self.sources[span.file] = text
        lines = text.splitlines()
        return lines[span.line - 1] if 0 < span.line <= len(lines) else None

    def render(self, d: Diagnostic) -> str:
        out = []
        where = f"{d.span}: " if d.span else ""
        out.append(f"{where}{d.severity}: {d.message}")
        if d.span:
            out.extend(self._quote(d.span))
        for span, msg in d.notes:
            out.append(f"{span}: note: {msg}" if span else f"note: {msg}")
            if span:
                out.extend(self._quote(span))
        if d.hint:
            out.append(f"  hint: {d.hint}")
        return "\n".join(out)

    QUOTE_WIDTH = 100  # longer source lines are shown as a window around the span

    def _quote(self, span: Span) -> list[str]:
        """The source line and a caret line: `^` under the span's first character, `~` under the rest (to the
        end of the line for a span that continues on later lines)."""
        line = self.source_line(span)
        if line is None:
            return []
        col = max(span.col, 1)
        width = 1
        if span.end_line == span.line and span.end_col and span.end_col > col:
            width = span.end_col - col
        elif span.end_line and span.end_line > span.line:
            width = max(len(line.rstrip()) - col + 1, 1)
        shown, start = line, 0
        if len(line) > self.QUOTE_WIDTH:
            start = max(0, min(col - 1 - self.QUOTE_WIDTH // 4, len(line) - self.QUOTE_WIDTH))
            head = "..." if start > 0 else ""
            tail = "..." if start + self.QUOTE_WIDTH < len(line) else ""
            shown = head + line[start:start + self.QUOTE_WIDTH] + tail
            start -= len(head)
            width = min(width, self.QUOTE_WIDTH - (col - 1 - start) + len(head))
        before = shown[:col - 1 - start]
        pad = "".join("\t" if ch == "\t" else " " for ch in before) + " " * (col - 1 - start - len(before))
        gutter = f"{span.line:>4} | "
        return [gutter + shown, " " * len(gutter) + pad + "^" + "~" * (max(width, 1) - 1)]

    def render_all(self) -> str:
        return "\n".join(self.render(d) for d in self.items)


def did_you_mean(name: str, candidates) -> str | None:
    import difflib
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else None
