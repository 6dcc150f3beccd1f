"""One check of one editor buffer: the same pipeline as `dslc check` (dslc/api.py), with editor buffers read
instead of files on disk, parsed imports reused between edits, and what the elaborator computed recorded.

`ParseCache` keeps, per file, the last text parsed and its result. An edit re-parses only the buffer edited:
`import std.resnet` is parsed once per server, not once per keystroke (files on disk are re-read only when
their modification time or size changes). Elaboration always runs again: it is where the shapes come from.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

from dslc.api import Program, elaborate_networks, parse_modules
from dslc.frontend.modules import ModuleSet
from dslc.lsp.convert import contains, span_size
from dslc.lsp.facts import Facts, RecordingElaborator
from dslc.lsp.index import Index, build


class ParseCache:
    def __init__(self):
        self.parsed: dict[Path, tuple[str, str, object, list]] = {}  # path -> (text, shown, module, errors)
        self.files: dict[Path, tuple[tuple, str]] = {}  # path -> ((mtime_ns, size), text)
        self.hits = self.misses = 0

    def read(self, path: Path) -> str:
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
        hit = self.files.get(path)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        text = path.read_text()
        self.files[path] = (stamp, text)
        return text

    def parse(self, path: Path, text: str, shown: str, parse: Callable):
        hit = self.parsed.get(path)
        if hit is not None and hit[0] == text and hit[1] == shown:
            self.hits += 1
            return hit[2], hit[3]
        self.misses += 1
        module, errors = parse(path, text, shown)
        self.parsed[path] = (text, shown, module, errors)
        return module, errors


class EditorModuleSet(ModuleSet):
    """A ModuleSet that reads open buffers first and parses through a ParseCache. Every file is shown by its
    absolute path, so each diagnostic's span names the file it belongs to."""

    def __init__(self, diags, cache: ParseCache, buffers: Callable[[Path], str | None]):
        super().__init__(diags)
        self.cache = cache
        self.buffers = buffers

    def read(self, path: Path) -> str:
        text = self.buffers(path)
        return text if text is not None else self.cache.read(path)

    def parse(self, path, text, shown):
        return self.cache.parse(path, text, str(path), super().parse)

    def _load(self, path, text, shown, stack):
        return super()._load(path, text, str(path), stack)


@dataclass
class Analysis:
    path: Path
    text: str
    version: int | None
    program: Program
    modules: EditorModuleSet
    facts: Facts = field(default_factory=Facts)
    buffer: str | None = None  # for an analysis of a recovered text (see `recover`): the buffer's own text

    @property
    def module(self):
        """The buffer's AST, or None when it has syntax errors."""
        return self.program.module

    @property
    def shown(self) -> str:
        return str(self.path)

    @cached_property
    def lines(self) -> list[str]:
        return self.text.splitlines()

    @cached_property
    def index(self) -> Index | None:
        return build(self.text, self.module) if self.module is not None else None

    def in_buffer(self, span) -> bool:
        return span is not None and span.file == self.shown

    def _innermost(self, spans, line0: int, char0: int):
        hits = [s for s in spans if self.in_buffer(s) and contains(s, line0, char0)]
        return min(hits, key=span_size) if hits else None

    def calls_at(self, line0: int, char0: int) -> list:
        """The elaborated instances of the call whose name is at the position (one per block instance)."""
        span = self._innermost(self.facts.calls, line0, char0)
        return self.facts.calls[span] if span is not None else []

    def ref_at(self, line0: int, char0: int):
        """The definition key (span, name) of the name reference at the position, as elaboration resolved it."""
        span = self._innermost(self.facts.refs, line0, char0)
        return self.facts.refs[span] if span is not None else None

    def target_at(self, line0: int, char0: int):
        """(name span, definition span, name, node) of the assignment target or parameter at the position."""
        if self.index is None:
            return None
        return next((t for t in self.index.targets if contains(t[0], line0, char0)), None)

    def files(self) -> set[Path]:
        """Every file this analysis read: the buffer and its imports, transitively."""
        return set(self.modules.by_path)


def analyze(path: Path, text: str, cache: ParseCache, buffers: Callable[[Path], str | None],
            version: int | None = None) -> Analysis:
    """Check `text` as the contents of `path`, as `dslc check` does (except that a file of blocks only is no
    error). Never raises for mistakes in the program."""
    path = Path(path).resolve()
    prog = Program(str(path))
    modules = EditorModuleSet(prog.diagnostics, cache, buffers)
    el_holder: list[RecordingElaborator] = []

    def make(mods, diags):
        el = RecordingElaborator(mods, diags)
        el_holder.append(el)
        return el

    module, _ = parse_modules(prog, path, text, modules)
    # a library (blocks, no network) is normal in an editor: not the error `dslc check` makes of it. Its blocks
    # run when a network calls them: session.py shows the shapes of an open network that imports it.
    if module is not None and module.networks and not prog.diagnostics.has_errors():
        elaborate_networks(prog, module, modules, None, None, elaborator=make)
    facts = el_holder[0].facts if el_holder else Facts()
    return Analysis(path, text, version, prog, modules, facts)


def recover(path: Path, text: str, cache: ParseCache, buffers: Callable[[Path], str | None],
            version: int | None = None) -> Analysis | None:
    """For a buffer with syntax errors: the analysis of its text with the broken statements blanked out (the
    parser's own error recovery, dslc/frontend/syntax.py), so the rest of a half-typed file keeps its shapes,
    hover and completion. None where that text does not parse either. Its diagnostics are not shown: the
    buffer's are its syntax errors."""
    from lark.exceptions import UnexpectedInput

    from dslc.frontend.grammar import lark_parser
    from dslc.frontend.syntax import recovered_text
    try:
        lark_parser().parse(text)
        return None  # the grammar accepts it: the error came later (ToAst), nothing to blank
    except UnexpectedInput as e:
        work = recovered_text(lark_parser().parse, e, text)
    if work is None:
        return None
    an = analyze(path, work, cache, buffers, version)
    an.buffer = text
    return an if an.module is not None else None
