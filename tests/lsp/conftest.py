"""The real `dslc lsp`, started as a subprocess and driven over stdio with JSON-RPC framing by pytest-lsp's
client. One server per test module (starting one costs about a second)."""
from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest_lsp
from lsprotocol import types as T
from pytest_lsp import ClientServerConfig, LanguageClient
from pytest_lsp.client import DEFAULT_CLIENT_FEATURES, default_converter, register_lsp_features

ROOT = Path(__file__).resolve().parents[2]
SERVER = [sys.executable, "-m", "dslc.cli", "lsp"]
TIMEOUT = 20


def uri_of(path: Path) -> str:
    return path.resolve().as_uri()


async def start(client: LanguageClient, options: dict | None = None) -> None:
    await client.initialize_session(T.InitializeParams(
        capabilities=pytest_lsp.client_capabilities("visual-studio-code"),
        root_uri=ROOT.as_uri(), initialization_options=options or {}))


def _record(client: LanguageClient, params: T.PublishDiagnosticsParams) -> None:
    client.diagnostics[params.uri] = params.diagnostics
    client.published.append(params)


def make_client() -> LanguageClient:
    """pytest-lsp's test client, also keeping every publishDiagnostics in order (`client.published`)."""
    client = LanguageClient(converter_factory=default_converter)
    client.published = []
    register_lsp_features(client, {**DEFAULT_CLIENT_FEATURES, T.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS: _record})
    return client


def config(env: dict | None = None) -> ClientServerConfig:
    return ClientServerConfig(server_command=SERVER, client_factory=make_client, server_env=env)


@pytest_lsp.fixture(scope="module", config=config())
async def client(lsp_client: LanguageClient):
    await start(lsp_client, {"debounceMs": 20})
    yield
    await lsp_client.shutdown_session()


async def diagnostics_for(client: LanguageClient, uri: str, version: int | None = None,
                          since: int = 0) -> T.PublishDiagnosticsParams:
    """The first diagnostics published for `uri` (and `version`, when given) after the first `since`."""
    async def wait():
        seen = since
        while True:
            for params in client.published[seen:]:
                if params.uri == uri and (version is None or params.version == version):
                    return params
            seen = len(client.published)
            await asyncio.sleep(0.002)
    return await asyncio.wait_for(wait(), TIMEOUT)


async def open_and_check(client: LanguageClient, path: Path, text: str | None = None,
                         version: int = 1) -> T.PublishDiagnosticsParams:
    """Open `path` (with `text` as the unsaved buffer, or its contents) and wait for its diagnostics."""
    uri, since = uri_of(path), len(client.published)
    client.text_document_did_open(T.DidOpenTextDocumentParams(T.TextDocumentItem(
        uri, "dslc", version, path.read_text() if text is None else text)))
    return await diagnostics_for(client, uri, version, since)


async def change_and_check(client: LanguageClient, uri: str, version: int, text: str) -> T.PublishDiagnosticsParams:
    """Replace the whole buffer and wait for the diagnostics of the new version."""
    since = len(client.published)
    client.text_document_did_change(T.DidChangeTextDocumentParams(
        T.VersionedTextDocumentIdentifier(version, uri), [T.TextDocumentContentChangeWholeDocument(text)]))
    return await diagnostics_for(client, uri, version, since)


def position_of(text: str, needle: str, offset: int = 0) -> T.Position:
    """The 0-based position of the first `needle` in `text`, `offset` characters into it."""
    i = text.index(needle) + offset
    line = text.count("\n", 0, i)
    return T.Position(line, i - (text.rfind("\n", 0, i) + 1))
