"""The server's state: the latest analysis of each open buffer, the debounced re-checks after edits, and the
diagnostics published per document (one document's diagnostics can come from several analyses: an error in
an imported file is reported by every open file that imports it, as well as by its own)."""
from __future__ import annotations

import asyncio
import logging
import traceback
from dataclasses import replace
from pathlib import Path

from lsprotocol import types as T

from dslc.lsp.analysis import Analysis, ParseCache, analyze, recover
from dslc.lsp.convert import DiagnosticConverter, path_to_uri, uri_to_path

log = logging.getLogger("dslc.lsp")


class Session:
    def __init__(self, server):
        self.server = server
        self.cache = ParseCache()
        self.latest: dict[str, Analysis] = {}  # uri -> analysis of its current (or last checked) text
        self.good: dict[str, Analysis] = {}  # uri -> last analysis that parsed (maybe of a recovered text)
        self.pending: dict[str, asyncio.Task] = {}
        self.published: dict[str, dict[str, list]] = {}  # target uri -> source uri -> diagnostics
        self.debounce_s = 0.04
        self.inlay_hints = True

    # ---- buffers ---------------------------------------------------------------------------------------------
    def _doc(self, uri: str):
        return self.server.workspace.text_documents.get(uri)

    def buffer_text(self, path: Path) -> str | None:
        """The text of an open buffer for `path` (unsaved edits included), or None to read the file."""
        doc = self._doc(path_to_uri(path))
        return doc.source if doc is not None else None

    # ---- analysis --------------------------------------------------------------------------------------------
    def current(self, uri: str) -> Analysis | None:
        """The analysis of the buffer's text as it is now (checked now if an edit is still being debounced)."""
        doc = self._doc(uri)
        if doc is None:
            return None
        an = self.latest.get(uri)
        if an is None or an.text != doc.source:
            an = self.check(uri)
        return self._borrow(an)

    def usable(self, uri: str) -> Analysis | None:
        """The current analysis if it parsed, else the last one that did (positions may have moved a little)."""
        an = self.current(uri)
        if an is not None and an.module is not None:
            return an
        return self._borrow(self.good.get(uri, an))

    def exact(self, uri: str) -> Analysis | None:
        """An analysis whose positions are exactly the buffer's: the current one, or, while the buffer has syntax
        errors, that of its text with the broken statements blanked (None when recovery failed)."""
        an = self.current(uri)
        if an is None or an.module is not None:
            return an
        good = self.good.get(uri)
        return self._borrow(good) if good is not None and good.buffer == an.text else None

    def _borrow(self, an: Analysis | None) -> Analysis | None:
        """A library's blocks have shapes only where a network calls them: take the facts of an open buffer that
        imports this one (and read the same text of it), so hover and hints show the shapes of those calls."""
        if an is None or an.module is None or an.module.networks:
            return an
        for other in self.latest.values():
            if other is not an and an.path in other.files() and \
                    other.program.diagnostics.sources.get(an.shown) == an.text:
                return replace(an, facts=other.facts)
        return an

    def check(self, uri: str) -> Analysis | None:
        doc = self._doc(uri)
        if doc is None:
            return None
        path = uri_to_path(uri)
        try:
            an = analyze(path, doc.source, self.cache, self.buffer_text, doc.version)
        except Exception as e:  # a bug in dslc: say so in the editor, keep serving
            log.error("internal error checking %s:\n%s", uri, traceback.format_exc())
            self._publish_from(uri, {uri: [T.Diagnostic(T.Range(T.Position(0, 0), T.Position(0, 0)),
                                                        f"dslc internal error: {type(e).__name__}: {e} "
                                                        "(a bug in dslc; the server log has the traceback)",
                                                        T.DiagnosticSeverity.Error, source="dslc")]})
            return self.latest.get(uri)
        self.latest[uri] = an
        if an.module is None:
            try:
                an_rec = recover(path, doc.source, self.cache, self.buffer_text, doc.version)
            except Exception:
                log.error("internal error recovering %s:\n%s", uri, traceback.format_exc())
                an_rec = None
            if an_rec is not None:
                self.good[uri] = an_rec
        else:
            self.good[uri] = an
        return an

    def check_and_publish(self, uri: str) -> None:
        an = self.check(uri)
        if an is None or an.text != getattr(self._doc(uri), "source", None):
            return
        conv = DiagnosticConverter(an.program.diagnostics.sources, an.shown)
        by_file = conv.by_file(an.program.diagnostics.items)
        self._publish_from(uri, {path_to_uri(f): ds for f, ds in by_file.items()})

    def _publish_from(self, source: str, by_uri: dict[str, list]) -> None:
        touched = set(by_uri) | {t for t, srcs in self.published.items() if source in srcs}
        for target in touched:
            srcs = self.published.setdefault(target, {})
            if target in by_uri:
                srcs[source] = by_uri[target]
            else:
                srcs.pop(source, None)
            merged, seen = [], set()
            for ds in srcs.values():
                for d in ds:
                    key = (d.range.start.line, d.range.start.character, d.message)
                    if key not in seen:
                        seen.add(key)
                        merged.append(d)
            doc = self._doc(target)
            self.server.text_document_publish_diagnostics(T.PublishDiagnosticsParams(
                target, merged, version=doc.version if doc is not None else None))

    def dependents(self, uri: str) -> list[str]:
        """Other open buffers whose last analysis read this one (they import it, directly or not)."""
        path = uri_to_path(uri)
        return [u for u, an in self.latest.items() if u != uri and self._doc(u) is not None and path in an.files()]

    # ---- scheduling ------------------------------------------------------------------------------------------
    def schedule(self, uri: str, delay: float | None = None) -> None:
        """Check `uri` (and the open files importing it) after `delay` seconds; a newer edit restarts the wait."""
        old = self.pending.pop(uri, None)
        if old is not None:
            old.cancel()
        self.pending[uri] = asyncio.get_running_loop().create_task(
            self._later(uri, self.debounce_s if delay is None else delay))

    async def _later(self, uri: str, delay: float) -> None:
        try:
            if delay > 0:
                await asyncio.sleep(delay)
            self.pending.pop(uri, None)
            self.check_and_publish(uri)
            for dep in self.dependents(uri):
                self.check_and_publish(dep)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.error("internal error publishing diagnostics for %s:\n%s", uri, traceback.format_exc())

    def closed(self, uri: str) -> None:
        task = self.pending.pop(uri, None)
        if task is not None:
            task.cancel()
        self.latest.pop(uri, None)
        self.good.pop(uri, None)
        self._publish_from(uri, {})
