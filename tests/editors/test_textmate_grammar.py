"""The VS Code TextMate grammar (editors/vscode/syntaxes/dslc.tmLanguage.json) tokenises every .net file of
networks/, dslc/std and the golden test cases without gaps: each character that is not white space gets a
scope of its own (keyword, name, number, operator, ...). Also: it agrees with the Lark grammar on the reserved
words, and the editor package's files are well-formed."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from textmate import Grammar

from dslc.frontend.grammar import lark_parser

ROOT = Path(__file__).resolve().parents[2]
VSCODE = ROOT / "editors" / "vscode"
GRAMMAR = Grammar(VSCODE / "syntaxes" / "dslc.tmLanguage.json")
FILES = sorted((ROOT / "networks").glob("*.net")) + sorted((ROOT / "dslc" / "std").glob("*.net"))
CASES = sorted((ROOT / "tests" / "cases").rglob("*.net"))


def gaps(text: str) -> list[str]:
    lines = text.split("\n")
    out = []
    for t in GRAMMAR.tokenize(text):
        if len(t.scopes) == 1:  # only the file's own scope: nothing recognised this text
            piece = lines[t.line][t.start:t.end]
            if piece.strip():
                out.append(f"{t.line + 1}:{t.start + 1}: {piece!r}")
    return out


def test_the_network_library_is_tokenised_without_gaps():
    assert len(FILES) > 30
    bad = {p.name: g[:3] for p in FILES if (g := gaps(p.read_text()))}
    assert not bad


def test_the_golden_cases_are_tokenised_without_gaps():
    # some are broken on purpose (single quotes, stray characters): those may leave what is no .net text
    bad = {p.name: g[:3] for p in CASES if (g := gaps(p.read_text())) and p.parent.name != "syntax"}
    assert not bad


def scopes_of(text: str) -> dict[str, set]:
    lines = text.split("\n")
    out: dict[str, set] = {}
    for t in GRAMMAR.tokenize(text):
        out.setdefault(lines[t.line][t.start:t.end], set()).add(t.scopes[-1])
    return out


def test_scopes_of_a_network():
    text = ('"""A docstring\nover two lines."""\nimport std.resnet\n# a comment\n'
            'network n(x: f32[N, 3], k = 2) {\n    y = x |> linear(8, bias=false) |> relu as act  # end\n'
            '    z = y * 1.5e-3 ** 2 // k\n    return z\n}\n')
    s = scopes_of(text)
    assert s['"""'] == s["A docstring"] == s["over two lines."] == {"string.quoted.docstring.dslc"}
    assert s["# a comment"] == {"comment.line.number-sign.dslc"} and s["# end"] == {"comment.line.number-sign.dslc"}
    assert s["network"] == {"storage.type.dslc"} and s["n"] == {"entity.name.function.dslc"}
    assert s["std.resnet"] == {"entity.name.namespace.dslc"} and s["import"] == {"keyword.control.import.dslc"}
    assert s["f32"] == {"storage.type.dtype.dslc"} and s["1.5e-3"] == {"constant.numeric.dslc"}
    assert s["linear"] == {"entity.name.function.call.dslc"} and s["relu"] == {"entity.name.function.call.dslc"}
    assert s["bias"] == {"variable.parameter.dslc"} and s["false"] == {"constant.language.dslc"}
    assert s["|>"] == {"keyword.operator.pipeline.dslc"} and s["**"] == {"keyword.operator.arithmetic.dslc"}
    assert s["as"] == {"keyword.control.dslc"} and s["return"] == {"keyword.control.dslc"}
    assert "variable.other.dslc" in s["z"]


def test_every_reserved_word_of_the_language_is_highlighted_as_a_keyword():
    name = lark_parser().get_terminal("NAME").pattern.value
    reserved = re.search(r"\(\?!\(([^)]*)\)", name).group(1).split("|")
    assert "repeat" in reserved and "none" in reserved
    for word in reserved:
        (scope,) = {t.scopes[-1] for t in GRAMMAR.tokenize(word)}
        assert scope.startswith(("keyword.", "constant.language")), (word, scope)


def test_extension_manifest_points_at_its_files():
    pkg = json.loads((VSCODE / "package.json").read_text())
    assert (VSCODE / pkg["main"]).is_file()
    (lang,) = pkg["contributes"]["languages"]
    assert lang["extensions"] == [".net"] and (VSCODE / lang["configuration"]).is_file()
    (gram,) = pkg["contributes"]["grammars"]
    assert gram["scopeName"] == GRAMMAR.scope and (VSCODE / gram["path"]).is_file()
    conf = json.loads((VSCODE / lang["configuration"]).read_text())
    assert conf["comments"]["lineComment"] == "#"
    assert '"lsp"' in (VSCODE / "extension.js").read_text()


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_tokens_tile_each_line(path):
    text = path.read_text()
    lines = text.split("\n")
    by_line: dict[int, list] = {}
    for t in GRAMMAR.tokenize(text):
        by_line.setdefault(t.line, []).append(t)
    for n, line in enumerate(lines):
        toks = by_line.get(n, [])
        assert "".join(line[t.start:t.end] for t in toks) == line, n + 1


def _per_char(tokens_by_line, lines) -> list[list[str]]:
    out = []
    for n, line in enumerate(lines):
        row = [""] * len(line)
        for start, end, scope in tokens_by_line[n]:
            for i in range(start, min(end, len(line))):
                row[i] = scope
        out.append(row)
    return out


@pytest.mark.skipif(shutil.which("node") is None or not (VSCODE / "node_modules" / "vscode-textmate").is_dir(),
                    reason="VS Code's TextMate engine is not installed (cd editors/vscode && npm install "
                           "vscode-textmate vscode-oniguruma)")
def test_vscode_textmate_agrees_with_the_python_engine():
    files = [str(p) for p in FILES]
    got = json.loads(subprocess.run(["node", str(VSCODE / "test" / "tokenize.js"), *files], check=True,
                                    capture_output=True, text=True, timeout=60).stdout)
    for f in files:
        text = Path(f).read_text()
        lines = text.split("\n")
        ours: dict[int, list] = {n: [] for n in range(len(lines))}
        for t in GRAMMAR.tokenize(text):
            ours[t.line].append((t.start, t.end, t.scopes[-1]))
        assert _per_char(got[f], lines) == _per_char(ours, lines), f
