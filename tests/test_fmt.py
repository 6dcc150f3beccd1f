"""`dslc fmt` never changes meaning and is idempotent: every network, the standard library, the golden cases and
random programs (the fuzzer's mutations) elaborate to the same graph after formatting; comments stay in place;
the CLI's --check / --diff / stdin / in-place modes and its handling of syntax errors."""
from __future__ import annotations

import io
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_fuzz_frontend import LARGE, OTHER, SMALL, STD_USERS, TOKEN, examples, mutated

from dslc.api import load
from dslc.cli import main
from dslc.fmt import FormatError, format_source
from dslc.frontend.modules import std_dir

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "networks").glob("*.net")) + sorted(std_dir().glob("*.net")) + \
    sorted((ROOT / "tests" / "cases").rglob("*.net"))


def graph_signature(prog) -> dict:
    """Everything the formatter must keep: per network its nodes (name, op, attributes, input wiring, output
    shapes, weight names and shapes), inputs, outputs and train section."""
    out = {}
    for name, g in prog.networks.items():
        nodes = {n: (d["op"], repr(d["attrs"]), d["inputs"], [str(t) for t in d["outputs"]],
                     {k: (tuple(w.shape), w.trainable) for k, w in d["weights"].items()}, d["scope"], d["role"])
                 for n, d in g.nodes(data=True)}
        out[name] = (nodes, list(g.graph["inputs"]), dict(g.graph["outputs"]), repr(g.graph.get("train")))
    return out


def outcome(path: Path, text: str):
    prog = load(path, text=text)
    messages = sorted((d.severity, d.message) for d in prog.diagnostics.items)
    return prog.ok, messages, graph_signature(prog) if prog.ok else None


def assert_same_meaning(path: Path, text: str) -> str:
    out = format_source(text, str(path))
    assert format_source(out, str(path)) == out, "not idempotent"
    assert outcome(path, out) == outcome(path, text)
    return out


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_formatting_keeps_the_graph_and_is_idempotent(path):
    text = path.read_text()
    if path.parent == std_dir():  # a library: elaborate it through a small network that uses its blocks
        text += "\n" + STD_USERS[path.stem]
    try:
        out = assert_same_meaning(path, text)
    except FormatError:  # a golden syntax-error case: fmt refuses it, as check does
        assert not load(path, text=text).ok
        return
    comments = [line.strip() for line in text.splitlines() if line.strip().startswith("#")]
    for c in comments:  # own-line comments survive as own-line comments, text unchanged
        assert c in out.splitlines() or any(line.strip() == c for line in out.splitlines()), c


def test_the_networks_and_the_standard_library_are_formatted():
    """What CI runs: `dslc fmt --check` on every .net file we ship or measure: networks/, dslc/std/, and the
    networks of benchmarks/ and experiments/ (the lead re-runs fmt when merging)."""
    out, err = io.StringIO(), io.StringIO()
    dirs = [ROOT / "networks", std_dir(), ROOT / "benchmarks" / "nets", ROOT / "experiments" / "nets"]
    with redirect_stdout(out), redirect_stderr(err):
        status = main(["fmt", "--check", *[str(d) for d in dirs if d.is_dir()]])
    assert status == 0, out.getvalue()


def _formats_or_refuses(path: Path, text: str) -> None:
    try:
        assert_same_meaning(path, text)
    except FormatError as e:
        assert e.diagnostics.has_errors() and not load(path, text=text).ok


@examples(120)
@given(mutated(SMALL))
def test_random_programs_keep_their_meaning(case):
    _formats_or_refuses(*case)


@examples(40)
@given(mutated({**OTHER, **{k: v for k, v in LARGE.items() if k in ("resnet18", "vit")}}))
def test_random_library_and_golden_programs_keep_their_meaning(case):
    _formats_or_refuses(*case)


@st.composite
def respaced(draw, seeds: dict, newlines: bool):
    """A seed program with its whitespace between tokens changed (runs of 1-3 spaces; with `newlines`, also line
    breaks and end-of-line comments added where there was whitespace); returns (path, text, comments added, seed text)."""
    path, text = seeds[draw(st.sampled_from(sorted(seeds)))]
    toks = TOKEN.findall(text)
    added = []
    for i, t in enumerate(toks):
        if not t.isspace():
            continue
        if "\n" not in t:
            toks[i] = draw(st.sampled_from([" ", "  ", "   "]))
        if newlines and draw(st.integers(0, 5)) == 0:
            c = f"# comment {len(added)}"
            added.append(c)
            toks[i] = "  " + c + "\n" + toks[i].lstrip(" ")
        elif newlines and "\n" not in t and draw(st.integers(0, 5)) == 0:
            toks[i] = "\n        "
    return path, "".join(toks), added, text


def _parses(text: str) -> bool:
    try:
        format_source(text)
        return True
    except FormatError:
        return False


PARSEABLE = {k: v for k, v in {**SMALL, **OTHER}.items() if _parses(v[1])}


@examples(60)
@given(respaced(PARSEABLE, newlines=False))
def test_spacing_within_lines_does_not_change_the_layout(case):
    path, text, _, seed = case
    assert format_source(text, str(path)) == format_source(seed, str(path))


@examples(60)
@given(respaced(PARSEABLE, newlines=True))
def test_line_breaks_and_comments_anywhere_keep_meaning_and_comments(case):
    path, text, added, _ = case
    out = assert_same_meaning(path, text)
    for c in added:
        assert c in out


@pytest.mark.parametrize("every", [1, 3, 7])
def test_comments_between_tokens_of_every_program(every):
    """A comment after every `every`-th whitespace of every parseable seed: kept, same meaning, idempotent."""
    for key, (path, text) in PARSEABLE.items():
        toks = TOKEN.findall(text)
        spaces = [i for i, t in enumerate(toks) if t.isspace()]
        for n, i in enumerate(spaces[::every]):
            toks[i] = f"  # c{n}\n" + toks[i].lstrip(" ")
        out = assert_same_meaning(path, "".join(toks))
        assert all(f"# c{n}" in out for n in range(len(spaces[::every]))), key


# ---- the layout --------------------------------------------------------------------------------------------------
COMMENTED = '''# top comment
"""doc"""
import std.resnet   # after an import
# before the block

block b(x, c=1,   # after c
   d: f32[N,3]) {  # on the header
    # first
    y = x |> relu   # a
        # inside the pipeline
        |> conv2d(c,3) # b
    if c>1 { z = y # z
    } elif c == 0 {   # on elif
       z = -y
    } else { # on else
        # inside else
        z = (y+1)*2 - -(3 ** -x) ** 2
    } # after the if


    ;
    return z   # on return
    # end of body
} # after the block
network n(x: f32[N, 4]) { y = x |> repeat i in 0..2 as L { linear(4) |> relu } |> b(1, d=x)
return y }
# the end
'''

COMMENTED_FORMATTED = '''# top comment
"""doc"""
import std.resnet  # after an import
# before the block

block b(
    x,
    c = 1,  # after c
    d: f32[N, 3],
) {  # on the header
    # first
    y = x
        |> relu  # a
        # inside the pipeline
        |> conv2d(c, 3)  # b
    if c > 1 {
        z = y  # z
    } elif c == 0 {  # on elif
        z = -y
    } else {  # on else
        # inside else
        z = (y + 1) * 2 - -(3 ** -x) ** 2
    }  # after the if

    return z  # on return
    # end of body
}  # after the block

network n(x: f32[N, 4]) {
    y = x |> repeat i in 0..2 as L { linear(4) |> relu } |> b(1, d=x)
    return y
}

# the end
'''


def test_comments_stay_where_they_were():
    assert format_source(COMMENTED) == COMMENTED_FORMATTED
    assert format_source(COMMENTED_FORMATTED) == COMMENTED_FORMATTED


def test_a_comment_after_every_token_is_kept():
    """Several comments that end up on one printed line: all but the last go on their own lines above it."""
    toks = "network n ( x : f32[N, 4] , c = 2 ) { y = x |> linear ( c ) |> relu return y }".split()
    src = "".join(f"{t}  # c{i}\n" for i, t in enumerate(toks))
    out = format_source(src)
    assert format_source(out) == out
    assert sorted(line.split("#")[1] for line in out.splitlines()) == sorted(f" c{i}" for i in range(len(toks)))
    assert "    y = x  # c" in out and "        |> relu  # c" in out


def test_parentheses_only_where_precedence_needs_them():
    src = "network n(x: f32[N, 4]) {\n    y = ((x + 1)) * (2 - x) |> relu\n    z = (((x))) |> (relu)\n" \
          "    return -(x ** 2) + (-x) ** 2 + (a ? b : c) * 2\n}\n"
    with pytest.raises(FormatError):
        format_source(src)  # `|> (relu)` is not a stage: refused like check
    src = src.replace("|> (relu)", "|> relu")
    out = format_source(src)
    assert "    y = (x + 1) * (2 - x) |> relu\n" in out
    assert "    z = x |> relu\n" in out
    assert "    return -x ** 2 + (-x) ** 2 + (a ? b : c) * 2\n" in out


def test_long_lines():
    stages = " |> ".join(f"linear({64 + i}) as layer_number_{i}" for i in range(6))
    src = f"network n(x: f32[N, 4]) {{\n    y = x |> {stages}\n    return y\n}}\n"
    out = format_source(src)
    lines = out.splitlines()
    assert lines[1] == "    y = x" and lines[2] == "        |> linear(64) as layer_number_0", out
    assert all(len(line) <= 100 for line in lines)
    # a call that cannot fit is left long: fmt never breaks inside brackets
    wide = ", ".join(f"argument_{i}={i}" for i in range(12))
    out = format_source(f"network n(x: f32[N, 4]) {{\n    y = f({wide})\n    return y\n}}\n")
    assert f"    y = f({wide})" in out.splitlines()


# ---- the command line --------------------------------------------------------------------------------------------
def run_fmt(*argv, stdin: str | None = None) -> tuple[int, str, str]:
    p = subprocess.run([sys.executable, "-m", "dslc.cli", "fmt", *argv], input=stdin, capture_output=True,
                       text=True, cwd=ROOT)
    return p.returncode, p.stdout, p.stderr


UGLY = "network n(x: f32[N,4]) { y = x|>relu\n return y }\n"
PRETTY = "network n(x: f32[N, 4]) {\n    y = x |> relu\n    return y\n}\n"


def test_cli_in_place_check_and_diff(tmp_path):
    f = tmp_path / "a.net"
    f.write_text(UGLY)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.net").write_text(PRETTY)
    assert run_fmt("--check", str(tmp_path))[:2] == (1, f"would reformat {f}\n")
    status, out, _ = run_fmt("--diff", str(f))
    assert status == 1 and "-network n(x: f32[N,4]) { y = x|>relu" in out and "+    y = x |> relu" in out
    assert f.read_text() == UGLY  # --check and --diff change nothing
    status, _, err = run_fmt(str(tmp_path))
    assert status == 0 and f.read_text() == PRETTY and f"reformatted {f}" in err
    assert "b.net" not in err  # already formatted: untouched
    assert run_fmt("--check", str(tmp_path))[0] == 0


def test_cli_stdin_to_stdout():
    assert run_fmt("-", stdin=UGLY)[:2] == (0, PRETTY)
    assert run_fmt("--check", "-", stdin=UGLY)[0] == 1
    assert run_fmt("--check", "-", stdin=PRETTY)[0] == 0


def test_cli_syntax_errors_are_reported_as_check_does_and_the_file_is_untouched(tmp_path):
    f = tmp_path / "bad.net"
    bad = "network n(x: f32[N, 4]) {\n    y = x |> relu(\n}\n"
    f.write_text(bad)
    status, out, err = run_fmt(str(f))
    assert status == 1 and out == "" and f.read_text() == bad
    check = subprocess.run([sys.executable, "-m", "dslc.cli", "check", str(f)], capture_output=True, text=True,
                           cwd=ROOT)
    assert err == check.stderr and "error: unexpected `}`" in err
    status, _, err = run_fmt("-", stdin=bad)
    assert status == 1 and "<stdin>:3:1: error" in err


def test_cli_missing_file(tmp_path):
    status, _, err = run_fmt(str(tmp_path / "nope.net"))
    assert status == 2 and "cannot read" in err and "Traceback" not in err
