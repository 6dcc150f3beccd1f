"""`dslc lsp` never dies on what an editor sends: random edits of every network in networks/ as incremental
didChange events, with requests at random places in between, and every golden test case (most of them broken
on purpose) opened. A bug inside a handler is answered with an LSP error and the server keeps serving."""
from __future__ import annotations

import os
import random

import pytest
import pytest_lsp
from conftest import ROOT, change_and_check, config, diagnostics_for, open_and_check, start, uri_of
from lsprotocol import types as T
from pygls.exceptions import JsonRpcException
from pytest_lsp import LanguageClient

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]

NETWORKS = sorted(p.stem for p in (ROOT / "networks").glob("*.net"))
SNIPPETS = ["(", ")", "{", "}", "[", "]", "|>", ",", "=", " ", "\n", "x", "conv2d(", "repeat i in 0..", "as",
            '"', '"""', "#", "1e999", "99999999999999999999", "block b(", "network", "train {", ".shape[",
            "return", "if", "else", "none", "-", "**", ":", "f32[", "import std.", "import \"", "relu", "?", "0"]
EDITS = 50


def _position(text: str, offset: int) -> T.Position:
    line = text.count("\n", 0, offset)
    return T.Position(line, offset - (text.rfind("\n", 0, offset) + 1))


def _random_edit(rng: random.Random, text: str) -> tuple[T.Range, str, str]:
    a = rng.randrange(len(text) + 1)
    b = min(len(text), a + rng.choice([0, 0, 1, 2, 5, 20, 80]))
    new = "" if rng.random() < 0.3 else "".join(rng.choice(SNIPPETS) for _ in range(rng.randint(1, 3)))
    return T.Range(_position(text, a), _position(text, b)), new, text[:a] + new + text[b:]


async def _ask_something(client, rng: random.Random, uri: str, text: str) -> None:
    """One request at a random place; each must be answered (a handler error would raise here)."""
    pos = _position(text, rng.randrange(len(text) + 1))
    doc = T.TextDocumentIdentifier(uri)
    kind = rng.randrange(7)
    if kind == 0:
        await client.text_document_hover_async(T.HoverParams(doc, pos))
    elif kind == 1:
        await client.text_document_completion_async(T.CompletionParams(doc, pos))
    elif kind == 2:
        await client.text_document_inlay_hint_async(T.InlayHintParams(doc, T.Range(T.Position(0, 0), pos)))
    elif kind == 3:
        await client.text_document_definition_async(T.DefinitionParams(doc, pos))
    elif kind == 4:
        await client.text_document_signature_help_async(T.SignatureHelpParams(doc, pos))
    elif kind == 5:
        await client.text_document_document_symbol_async(T.DocumentSymbolParams(doc))
    else:
        await client.text_document_references_async(T.ReferenceParams(
            text_document=doc, position=pos, context=T.ReferenceContext(include_declaration=True)))


def _no_internal_errors(client) -> None:
    bad = [(p.uri, d.message) for p in client.published for d in p.diagnostics if "internal error" in d.message]
    assert not bad, bad[:3]


@pytest.mark.parametrize("name", NETWORKS)
async def test_random_edits_as_did_change(client, name):
    rng = random.Random(f"lsp-{name}")
    path = ROOT / "networks" / f"{name}.net"
    original = text = path.read_text()
    first = await open_and_check(client, path, text)
    uri = uri_of(path)
    version = 1
    for _ in range(EDITS):
        rng_range, new, text = _random_edit(rng, text)
        version += 1
        client.text_document_did_change(T.DidChangeTextDocumentParams(
            T.VersionedTextDocumentIdentifier(version, uri), [T.TextDocumentContentChangePartial(rng_range, new)]))
        if rng.random() < 0.4:
            await _ask_something(client, rng, uri, text)
    got = await diagnostics_for(client, uri, version)  # the last edit is checked (earlier ones debounced)
    assert got.version == version
    back = await change_and_check(client, uri, version + 1, original)  # and it recovers fully
    assert back.diagnostics == first.diagnostics
    _no_internal_errors(client)
    client.text_document_did_close(T.DidCloseTextDocumentParams(T.TextDocumentIdentifier(uri)))


async def test_every_golden_case_gets_diagnostics(client):
    cases = sorted((ROOT / "tests" / "cases").rglob("*.net"))
    assert len(cases) > 50
    broken = 0
    for path in cases:
        got = await open_and_check(client, path)
        broken += any(d.severity == T.DiagnosticSeverity.Error for d in got.diagnostics)
        client.text_document_did_close(T.DidCloseTextDocumentParams(T.TextDocumentIdentifier(uri_of(path))))
    assert broken > len(cases) // 2  # most golden cases are mistakes, and each one was reported
    _no_internal_errors(client)


FAULTS = f"{T.TEXT_DOCUMENT_HOVER},{T.TEXT_DOCUMENT_DID_CHANGE}"


@pytest_lsp.fixture(scope="module", config=config({**os.environ, "DSLC_LSP_FAULT": FAULTS}))
async def faulty(lsp_client: LanguageClient):
    await start(lsp_client)
    yield
    await lsp_client.shutdown_session()


async def test_a_handler_bug_is_an_lsp_error_and_the_server_lives_on(faulty):
    path = ROOT / "networks" / "lenet5.net"
    text = path.read_text()
    await open_and_check(faulty, path, text)
    uri = uri_of(path)
    with pytest.raises(JsonRpcException, match="fault injected"):
        await faulty.text_document_hover_async(T.HoverParams(T.TextDocumentIdentifier(uri), T.Position(2, 5)))
    faulty.text_document_did_change(T.DidChangeTextDocumentParams(  # a notification whose handler fails
        T.VersionedTextDocumentIdentifier(2, uri), [T.TextDocumentContentChangeWholeDocument(text + "\n")]))
    syms = await faulty.text_document_document_symbol_async(T.DocumentSymbolParams(T.TextDocumentIdentifier(uri)))
    assert [s.name for s in syms][:1] == ["lenet5"]
    assert any("fault injected" in m.message for m in faulty.messages)  # the client was told
