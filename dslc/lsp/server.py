"""`dslc lsp`: the language server (pygls over stdio). This file wires LSP methods to the modules that answer
them; the state lives in session.py.

A bug in a handler never stops the server: pygls logs it and answers the request with an LSP error
(notifications are logged only). `DSLC_LSP_FAULT=<method>` makes that method's handler raise, so the tests can
check exactly this path (a comma-separated list names several).

Client settings (initializationOptions, or `dslc` in workspace/didChangeConfiguration):
    inlayHints   true (default) / false: the shape hints at the end of assignments
    debounceMs   how long after the last edit diagnostics are computed (default 40)
"""
from __future__ import annotations

import functools
import logging
import os

from lsprotocol import types as T
from pygls.lsp.server import LanguageServer

from dslc import __version__
from dslc.lsp import completion, hover, inlay, navigation
from dslc.lsp.session import Session

log = logging.getLogger("dslc.lsp")


class DslcServer(LanguageServer):
    def __init__(self):
        super().__init__("dslc", __version__, text_document_sync_kind=T.TextDocumentSyncKind.Incremental)
        self.session = Session(self)


server = DslcServer()


def guarded(method: str):
    """The handler of `method`; raises on purpose when DSLC_LSP_FAULT names it (the robustness tests)."""
    def wrap(fn):
        @functools.wraps(fn)
        def handler(ls, params):
            if method in os.environ.get("DSLC_LSP_FAULT", "").split(","):
                raise RuntimeError(f"fault injected into {method} (DSLC_LSP_FAULT)")
            return fn(ls, params)
        return handler
    return wrap


def _settings(ls: DslcServer, options) -> None:
    if not isinstance(options, dict):
        return
    options = options.get("dslc", options)
    if "inlayHints" in options:
        ls.session.inlay_hints = bool(options["inlayHints"])
    if isinstance(options.get("debounceMs"), (int, float)):
        ls.session.debounce_s = max(float(options["debounceMs"]), 0.0) / 1000


@server.feature(T.INITIALIZE)
def initialize(ls: DslcServer, params: T.InitializeParams):
    _settings(ls, params.initialization_options)


@server.feature(T.WORKSPACE_DID_CHANGE_CONFIGURATION)
def did_change_configuration(ls: DslcServer, params: T.DidChangeConfigurationParams):
    _settings(ls, params.settings)


@server.feature(T.TEXT_DOCUMENT_DID_OPEN)
@guarded(T.TEXT_DOCUMENT_DID_OPEN)
def did_open(ls: DslcServer, params: T.DidOpenTextDocumentParams):
    ls.session.schedule(params.text_document.uri, delay=0)


@server.feature(T.TEXT_DOCUMENT_DID_CHANGE)
@guarded(T.TEXT_DOCUMENT_DID_CHANGE)
def did_change(ls: DslcServer, params: T.DidChangeTextDocumentParams):
    ls.session.schedule(params.text_document.uri)


@server.feature(T.TEXT_DOCUMENT_DID_SAVE)
def did_save(ls: DslcServer, params: T.DidSaveTextDocumentParams):
    ls.session.schedule(params.text_document.uri, delay=0)


@server.feature(T.WORKSPACE_DID_CHANGE_WATCHED_FILES)
def did_change_watched_files(ls: DslcServer, params: T.DidChangeWatchedFilesParams):
    # a file changed on disk (another editor, git): re-check the open buffers that import it
    for change in params.changes:
        for uri in ls.session.dependents(change.uri):
            ls.session.schedule(uri)


@server.feature(T.TEXT_DOCUMENT_DID_CLOSE)
def did_close(ls: DslcServer, params: T.DidCloseTextDocumentParams):
    ls.session.closed(params.text_document.uri)


@server.feature(T.TEXT_DOCUMENT_HOVER)
@guarded(T.TEXT_DOCUMENT_HOVER)
def on_hover(ls: DslcServer, params: T.HoverParams):
    an = ls.session.usable(params.text_document.uri)
    return hover.hover(an, params.position.line, params.position.character) if an is not None else None


@server.feature(T.TEXT_DOCUMENT_INLAY_HINT)
@guarded(T.TEXT_DOCUMENT_INLAY_HINT)
def on_inlay_hint(ls: DslcServer, params: T.InlayHintParams):
    an = ls.session.exact(params.text_document.uri)
    if an is None or not ls.session.inlay_hints:
        return []
    return inlay.inlay_hints(an, params.range.start.line, params.range.end.line)


@server.feature(T.TEXT_DOCUMENT_DEFINITION)
@guarded(T.TEXT_DOCUMENT_DEFINITION)
def on_definition(ls: DslcServer, params: T.DefinitionParams):
    an = ls.session.usable(params.text_document.uri)
    return navigation.definition(an, params.position.line, params.position.character) if an else None


@server.feature(T.TEXT_DOCUMENT_REFERENCES)
@guarded(T.TEXT_DOCUMENT_REFERENCES)
def on_references(ls: DslcServer, params: T.ReferenceParams):
    an = ls.session.usable(params.text_document.uri)
    if an is None:
        return None
    return navigation.references(an, params.position.line, params.position.character,
                                 params.context.include_declaration)


@server.feature(T.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
@guarded(T.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
def on_symbols(ls: DslcServer, params: T.DocumentSymbolParams):
    an = ls.session.usable(params.text_document.uri)
    return navigation.symbols(an) if an is not None else []


def _text(ls: DslcServer, uri: str) -> str:
    doc = ls.workspace.text_documents.get(uri)
    return doc.source if doc is not None else ""


@server.feature(T.TEXT_DOCUMENT_COMPLETION, T.CompletionOptions(trigger_characters=["|", "(", ",", " ", "="]))
@guarded(T.TEXT_DOCUMENT_COMPLETION)
def on_completion(ls: DslcServer, params: T.CompletionParams):
    uri = params.text_document.uri
    ls.session.current(uri)  # refreshes `good`: this text, or its recovered form while it does not parse
    return completion.completion(ls.session.good.get(uri), _text(ls, uri), params.position.line,
                                 params.position.character)


@server.feature(T.TEXT_DOCUMENT_SIGNATURE_HELP, T.SignatureHelpOptions(trigger_characters=["(", ","]))
@guarded(T.TEXT_DOCUMENT_SIGNATURE_HELP)
def on_signature_help(ls: DslcServer, params: T.SignatureHelpParams):
    uri = params.text_document.uri
    ls.session.current(uri)  # refreshes `good`
    return completion.signature_help(ls.session.good.get(uri), _text(ls, uri), params.position.line,
                                     params.position.character)


@server.feature(T.TEXT_DOCUMENT_FORMATTING)
@guarded(T.TEXT_DOCUMENT_FORMATTING)
def on_formatting(ls: DslcServer, params: T.DocumentFormattingParams):
    from dslc.fmt import FormatError, format_source
    text = _text(ls, params.text_document.uri)
    try:
        new = format_source(text, str(params.text_document.uri))
    except FormatError:
        return None  # syntax errors: nothing to format; the diagnostics already say why
    if new == text:
        return []
    lines = text.split("\n")
    end = T.Position(len(lines) - 1, len(lines[-1]))
    return [T.TextEdit(T.Range(T.Position(0, 0), end), new)]


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="dslc lsp: %(levelname)s %(name)s: %(message)s")
    server.start_io()
    return 0
