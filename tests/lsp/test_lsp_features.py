"""`dslc lsp` features, through a real client over stdio: diagnostics (unsaved buffers, imports, related notes),
hover, inlay hints, go to definition (into an imported file and into std), references, symbols, completion,
signature help and formatting."""
from __future__ import annotations

import pytest
from conftest import ROOT, change_and_check, diagnostics_for, open_and_check, position_of, uri_of
from lsprotocol import types as T

from dslc.fmt import format_source

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]

RESNET50 = ROOT / "networks" / "resnet50.net"

BROKEN = """network broken(x: f32[N, 64, 56, 56]) {
    a = x |> conv2d(128, 3, stride=2, padding=1)
    y = a |> relu
    out = y + x
    return out
}
"""


def _td(uri: str) -> T.TextDocumentIdentifier:
    return T.TextDocumentIdentifier(uri)


async def test_diagnostics_of_an_unsaved_buffer_follow_edits(client, tmp_path):
    path = tmp_path / "broken.net"  # never written: the buffer is all there is
    got = await open_and_check(client, path, BROKEN)
    errors = [d for d in got.diagnostics if d.severity == T.DiagnosticSeverity.Error]
    assert len(errors) == 1, got.diagnostics
    d = errors[0]
    assert "cannot add [N, 128, 28, 28] and [N, 64, 56, 56]" in d.message
    assert d.range.start == T.Position(3, 10) and d.range.end == T.Position(3, 15)  # `y + x`
    related = {(r.location.range.start.line, r.message) for r in d.related_information}
    assert (2, "the left operand [N, 128, 28, 28] was made here") in related
    assert (0, "the right operand [N, 64, 56, 56] is declared here") in related
    fixed = BROKEN.replace("out = y + x", "out = y")
    got = await change_and_check(client, uri_of(path), 2, fixed)
    assert list(got.diagnostics) == []
    syntax = await change_and_check(client, uri_of(path), 3, fixed.replace("|> relu", "|> relu(("))
    assert syntax.diagnostics and syntax.diagnostics[0].severity == T.DiagnosticSeverity.Error
    assert syntax.diagnostics[0].range.start.line == 2


async def test_an_error_in_an_imported_file_shows_in_that_file(client, tmp_path):
    lib = tmp_path / "lib.net"
    lib.write_text("block widen(x, c) {\n    y = x |> conv2d(c, 3, padding=1) |> relu\n    return y\n}\n")
    main = tmp_path / "main.net"
    main.write_text('import "lib.net"\n\nnetwork n(x: f32[N, 3, 8]) {\n    y = x |> widen(4)\n    return y\n}\n')
    since = len(client.published)
    got = await open_and_check(client, main)
    # conv2d on a rank-3 tensor fails inside the block: reported in lib.net, and in main.net at the call
    here = [d for d in got.diagnostics if d.severity == T.DiagnosticSeverity.Error]
    assert here and here[0].range.start.line == 3 and "lib.net" in here[0].message
    assert any(r.location.uri == uri_of(lib) for r in here[0].related_information)
    params = await diagnostics_for(client, uri_of(lib), since=since)
    assert params.diagnostics and params.diagnostics[0].range.start.line == 1


async def test_hover_shows_shape_op_params_and_doc(client):
    text = RESNET50.read_text()
    await open_and_check(client, RESNET50)
    uri = uri_of(RESNET50)
    h = await client.text_document_hover_async(T.HoverParams(_td(uri), position_of(text, "features = ", 2)))
    assert "`features`: `f32[N, 2048, 7, 7]`" in h.contents.value
    h = await client.text_document_hover_async(T.HoverParams(_td(uri), position_of(text, "conv2d(64, 7", 2)))
    value = h.contents.value
    assert "`conv1` → `f32[N, 64, 112, 112]`" in value and "params 9,408" in value and "MACs 118.01M" in value
    assert "2-D convolution" in value  # the op's doc from the registry
    h = await client.text_document_hover_async(T.HoverParams(_td(uri), position_of(text, "bottleneck_stage", 3)))
    assert "4 instances" in h.contents.value and "`layer4` → `f32[N, 2048, 7, 7]`" in h.contents.value
    assert "block bottleneck_stage(x, c, n, stride = 1" in h.contents.value


async def test_inlay_hints_give_each_assignment_its_shape(client):
    await open_and_check(client, RESNET50)
    hints = await client.text_document_inlay_hint_async(T.InlayHintParams(
        _td(uri_of(RESNET50)), T.Range(T.Position(0, 0), T.Position(100, 0))))
    lines = RESNET50.read_text().splitlines()
    got = {(lines[h.position.line].strip(), h.label) for h in hints}
    assert got == {("|> maxpool(3, stride=2, padding=1)", "[N, 64, 56, 56]"), ("}", "[N, 2048, 7, 7]"),
                   ("logits = features |> global_avgpool |> linear(classes) as fc", "[N, 1000]")}


async def test_definition_into_std_and_into_an_imported_file(client, tmp_path):
    text = RESNET50.read_text()
    await open_and_check(client, RESNET50)
    locs = await client.text_document_definition_async(T.DefinitionParams(
        _td(uri_of(RESNET50)), position_of(text, "bottleneck_stage", 2)))
    std = ROOT / "dslc" / "std" / "resnet.net"
    assert [loc.uri for loc in locs] == [uri_of(std)]
    assert std.read_text().splitlines()[locs[0].range.start.line].startswith("block bottleneck_stage(")
    locs = await client.text_document_definition_async(T.DefinitionParams(
        _td(uri_of(RESNET50)), position_of(text, "return logits", 8)))
    assert locs[0].uri == uri_of(RESNET50) and locs[0].range.start == position_of(text, "logits =")

    (tmp_path / "lib.net").write_text("block twice(x) {\n    y = x + x\n    return y\n}\n")
    main = tmp_path / "main.net"
    text = 'import "lib.net"\nnetwork n(x: f32[N, 4]) {\n    y = x |> twice\n    return y\n}\n'
    await open_and_check(client, main, text)
    locs = await client.text_document_definition_async(T.DefinitionParams(
        _td(uri_of(main)), position_of(text, "twice", 1)))
    assert [(loc.uri, loc.range.start.line) for loc in locs] == [(uri_of(tmp_path / "lib.net"), 0)]


async def test_references_and_symbols(client):
    text = RESNET50.read_text()
    await open_and_check(client, RESNET50)
    refs = await client.text_document_references_async(T.ReferenceParams(
        text_document=_td(uri_of(RESNET50)), position=position_of(text, "stem = "),
        context=T.ReferenceContext(include_declaration=True)))
    assert [r.range.start for r in refs] == [position_of(text, "stem ="), position_of(text, "stem\n")]
    syms = await client.text_document_document_symbol_async(T.DocumentSymbolParams(_td(uri_of(RESNET50))))
    assert [s.name for s in syms] == ["resnet50"]
    children = {c.name: c.detail for c in syms[0].children}
    assert children["features"] == "f32[N, 2048, 7, 7]" and children["depths"] == "[3, 4, 6, 3]"


async def test_completion_and_signature_help(client, tmp_path):
    path = tmp_path / "c.net"
    good = ("import std.resnet\nnetwork n(x: f32[N, 3, 32, 32]) {\n    h = x |> conv2d(8, 3)\n"
            "    y = h |> relu\n    return y\n}\n")
    await open_and_check(client, path, good)
    uri = uri_of(path)
    text = good.replace("h |> relu", "h |> ")  # being typed: does not parse
    await change_and_check(client, uri, 2, text)
    at_stage = position_of(text, "h |> \n", 5)
    items = (await client.text_document_completion_async(T.CompletionParams(_td(uri), at_stage))).items
    labels = {i.label for i in items}
    assert {"conv2d", "relu", "basic_stage", "bottleneck"} <= labels and "h" not in labels  # a stage, not a name
    # half-typed call: keyword arguments with their defaults, names in scope
    half = text.replace("h |> \n", "h |> conv2d(16, 3, \n")
    await change_and_check(client, uri, 3, half)
    at_arg = position_of(half, "conv2d(16, 3, ", 14)
    items = (await client.text_document_completion_async(T.CompletionParams(_td(uri), at_arg))).items
    by_label = {i.label: i for i in items}
    assert by_label["stride="].detail == "default 1" and by_label["padding="].detail == "default 0"
    assert "out=" not in by_label and "kernel=" not in by_label  # given positionally already
    assert by_label["h"].kind == T.CompletionItemKind.Variable and by_label["h"].detail == "f32[N, 8, 30, 30]"
    sig = await client.text_document_signature_help_async(T.SignatureHelpParams(_td(uri), at_arg))
    assert sig.signatures[0].label.startswith("conv2d(x, out, kernel, stride=1")
    assert sig.signatures[0].parameters[sig.active_parameter].label == "stride=1"  # x is piped: 3rd written = stride


async def test_formatting_is_dslc_fmt(client, tmp_path):
    path = tmp_path / "f.net"
    text = "network n(x:f32[N,4]){\n  y=x|>linear(2,bias=false)\n      return y }\n"
    await open_and_check(client, path, text)
    edits = await client.text_document_formatting_async(T.DocumentFormattingParams(
        _td(uri_of(path)), T.FormattingOptions(tab_size=4, insert_spaces=True)))
    assert len(edits) == 1 and edits[0].range.start == T.Position(0, 0)
    assert edits[0].new_text == format_source(text) != text
    assert "y = x |> linear(2, bias=false)" in edits[0].new_text


async def test_a_library_shows_the_shapes_of_the_network_that_imports_it(client):
    await open_and_check(client, RESNET50)
    std = ROOT / "dslc" / "std" / "resnet.net"
    got = await open_and_check(client, std)
    assert list(got.diagnostics) == []  # a file of blocks is no error in an editor
    text = std.read_text()
    hints = await client.text_document_inlay_hint_async(T.InlayHintParams(
        T.TextDocumentIdentifier(uri_of(std)), T.Range(T.Position(0, 0), T.Position(1000, 0))))
    out_line = position_of(text, "out = relu(y + shortcut)\n    return out\n}\n\n# `n` residual").line
    (label,) = [h.label for h in hints if h.position.line == out_line]
    assert label == "[N, 256, 56, 56] | [N, 512, 28, 28] | [N, 1024, 14, 14] | +1"  # bottleneck in resnet50
    h = await client.text_document_hover_async(T.HoverParams(
        T.TextDocumentIdentifier(uri_of(std)), T.Position(out_line, 5)))
    assert "`out`, 4 values" in h.contents.value and "`f32[N, 2048, 7, 7]`" in h.contents.value
    client.text_document_did_close(T.DidCloseTextDocumentParams(T.TextDocumentIdentifier(uri_of(std))))


async def test_a_half_typed_buffer_keeps_its_shapes_and_blocks(client, tmp_path):
    # never parsed since it was opened: the broken statement is blanked (the parser's own recovery), the rest
    # is checked, so hints, hover and the imported blocks stay available while typing
    path = tmp_path / "half.net"
    text = ("import std.resnet\nnetwork n(x: f32[N, 3, 32, 32]) {\n    h = x |> conv2d(8, 3)\n"
            "    y = h |> basic_block(8) |>\n    z = h |> relu\n    return z\n}\n")
    got = await open_and_check(client, path, text)
    assert [d.range.start.line for d in got.diagnostics] == [3]  # the syntax error: a stage must follow `|>`
    uri = uri_of(path)
    hints = await client.text_document_inlay_hint_async(T.InlayHintParams(
        T.TextDocumentIdentifier(uri), T.Range(T.Position(0, 0), T.Position(10, 0))))
    assert {(h.position.line, h.label) for h in hints} >= {(2, "[N, 8, 30, 30]")}
    items = (await client.text_document_completion_async(T.CompletionParams(
        T.TextDocumentIdentifier(uri), position_of(text, "basic_block(8) |>", 17)))).items
    assert {"basic_block", "bottleneck", "conv2d"} <= {i.label for i in items}
