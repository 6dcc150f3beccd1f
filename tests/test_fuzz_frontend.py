"""Property-based fuzzing of the front end: random token deletions, duplications, swaps, insertions and number
changes applied to every networks/*.net (and to the standard library, and to the golden cases) must give a
program with diagnostics or a clean one -- never an exception out of dslc.load (nor out of rendering, the
summary or `dslc check`).

Deterministic for CI (derandomize, fixed example counts, no deadline). For a longer local hunt:
DSLC_FUZZ_SCALE=10 (ten times the examples) and DSLC_FUZZ_RANDOM=1 (fresh random examples each run).
"""
from __future__ import annotations

import io
import json
import os
import re
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from dslc.api import load
from dslc.cli import main
from dslc.commands.check import to_json
from dslc.frontend.modules import std_dir

ROOT = Path(__file__).resolve().parents[1]
SCALE = float(os.environ.get("DSLC_FUZZ_SCALE", "1"))

settings.register_profile("dslc-fuzz", deadline=None, derandomize=not os.environ.get("DSLC_FUZZ_RANDOM"),
                          database=None, print_blob=False,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                 HealthCheck.filter_too_much])
FUZZ = settings.get_profile("dslc-fuzz")


def examples(n: int) -> settings:
    return settings(FUZZ, max_examples=max(1, int(n * SCALE)))


# Networks whose elaboration takes longer (deep or wide); they get fewer examples than the rest.
BIG = {"resnet18", "resnet50", "unet", "transunet", "vit", "vit_b16", "mlp_mixer_b16"}

# The standard library is fuzzed through a small network that uses its blocks, appended to the module text.
STD_USERS = {
    "mlp": "network n(x: f32[N, 16]) {\n    y = x |> residual_mlp(32) |> linear(4)\n    return y\n}\n",
    "resnet": "network n(x: f32[N, 3, 32, 32]) {\n    y = x |> basic_stage(16, 2, stride=2)\n"
              "          |> bottleneck_stage(8, 1, stride=2) |> global_avgpool\n    return y\n}\n",
    "transformer": "network n(x: f32[N, 8, 32]) {\n    y = x |> encoder(2, 4, 64)\n    return y\n}\n",
    "unet": "network n(x: f32[N, 1, 32, 32]) {\n    e1 = x |> double_conv(8)\n    e2 = e1 |> down(16)\n"
            "    d = up(e2, e1, 8)\n    return d\n}\n",
    "mobilenet": "network n(x: f32[N, 3, 16, 16]) {\n    y = x |> conv_bn_act(8, stride=2) |> inverted_residual(8)\n"
                 "          |> mbconv(16, stride=2, drop=0.1) |> global_avgpool\n    return y\n}\n",
}


def _seeds() -> tuple[dict, dict, dict]:
    small, big, other = {}, {}, {}
    for p in sorted((ROOT / "networks").glob("*.net")):
        (big if p.stem in BIG else small)[p.stem] = (p, p.read_text())
    for name, user in STD_USERS.items():
        p = std_dir() / f"{name}.net"
        if p.exists():
            other[f"std.{name}"] = (p, p.read_text() + "\n" + user)
    cases = ROOT / "tests" / "cases"
    for p in sorted(cases.rglob("*.net")):
        other[str(p.relative_to(cases))] = (p, p.read_text())
    return small, big, other


SMALL, LARGE, OTHER = _seeds()

TOKEN = re.compile(r'""".*?"""|"(?:[^"\\\n]|\\.)*"|#[^\n]*|\d+\.\d+(?:[eE][-+]?\d+)?|\d+|[A-Za-z_]\w*'
                   r'|\|>|\.\.|\*\*|//|==|!=|<=|>=|\s+|.', re.S)
NUMBERS = ["0", "1", "2", "3", "5", "7", "13", "64", "100", "255", "300", "-1", "-3", "0.0", "0.5", "1.5",
           "1e-9", "1e30", "1e400", "99999999999", "9" * 25, "2 ** 63", "1 // 0"]
EXTRA = ["(", ")", "[", "]", "{", "}", ",", "=", "==", "|>", ":", ".", "..", "as", "repeat", "in", "if", "elif",
         "else", "return", "target", "train", "block", "network", "import", '"same"', '"', "'", "true", "false", "none",
         "not", "and", "-", "+", "*", "**", "/", "//", "%", "@", "?", ";", "$", "x", "N", "f32[", "i64[N]", "[]",
         "conv2d", "relu", "linear(3)", "concat", "reshape([0, -1])", "x.shape", ".shape[9]", "len", "\n", "\t",
         "#", '"""']
KINDS = ["delete", "delete", "duplicate", "swap", "number", "number", "name", "insert", "replace"]


@st.composite
def mutated(draw, seeds: dict):
    """A seed program with 1..4 random token-level edits; returns (path, text)."""
    key = draw(st.sampled_from(sorted(seeds)))
    path, text = seeds[key]
    toks = TOKEN.findall(text)
    sig = [i for i, t in enumerate(toks) if not t.isspace()]
    names = sorted({t for t in toks if t[:1].isalpha() or t[:1] == "_"})
    edits = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(KINDS))
        i = draw(st.sampled_from(sig))
        if kind == "delete":
            toks[i] = ""
        elif kind == "duplicate":
            toks[i] = toks[i] + " " + toks[i]
        elif kind == "swap":
            j = draw(st.sampled_from(sig))
            toks[i], toks[j] = toks[j], toks[i]
        elif kind == "number":
            nums = [k for k in sig if toks[k][:1].isdigit()]
            if nums:
                i = draw(st.sampled_from(nums))
            toks[i] = draw(st.sampled_from(NUMBERS))
        elif kind == "name":
            idents = [k for k in sig if toks[k][:1].isalpha() or toks[k][:1] == "_"]
            if idents:
                i = draw(st.sampled_from(idents))
            toks[i] = draw(st.sampled_from(names + ["conv2d", "relu", "loss", "x", "N", "block", "shape"]))
        elif kind == "insert":
            toks[i] = draw(st.sampled_from(EXTRA)) + " " + toks[i]
        else:
            toks[i] = draw(st.sampled_from(EXTRA + NUMBERS))
        edits.append(f"{kind}@{i}")
    note(f"seed {key}, edits {edits}")
    out = "".join(toks)
    note(out)
    return path, out


def check(path: Path, text: str) -> None:
    prog = load(path, text=text)  # the property: a mistake is a diagnostic, never an exception
    for d in prog.diagnostics.items:
        assert d.severity in ("error", "warning"), d
        assert d.span is not None and d.span.line >= 1 and d.span.col >= 1, d
        for span, _msg in d.notes:
            assert span is None or (span.line >= 1 and span.col >= 1), d
    prog.diagnostics.render_all()
    json.dumps(to_json(prog))
    if prog.ok:
        prog.summary(depth=2)


@examples(5000)
@given(mutated(SMALL))
def test_fuzz_small_networks(case):
    check(*case)


@examples(400)
@given(mutated(LARGE))
def test_fuzz_big_networks(case):
    check(*case)


@examples(1500)
@given(mutated(OTHER))
def test_fuzz_std_library_and_golden_cases(case):
    check(*case)


@examples(500)
@given(st.sampled_from(sorted(SMALL)), st.integers(0, 10 ** 6), st.integers(1, 40))
def test_fuzz_truncated_and_spliced_text(key, seed, cut):
    """Prefixes and suffix-spliced texts: unclosed everything, ends in the middle of tokens."""
    path, text = SMALL[key]
    k = seed % (len(text) + 1)
    check(path, text[:k])
    check(path, text[:k] + text[min(len(text), k + cut):])


_TMP = tempfile.TemporaryDirectory(prefix="dslc-fuzz-")


@examples(30)
@given(mutated(SMALL))
def test_fuzz_cli_check(case):
    """`dslc check` on a mutated file: exit code 0 or 1, output but no traceback, for text and --json."""
    _path, text = case
    p = Path(_TMP.name) / "fuzzed.net"
    p.write_text(text)
    for argv in (["check", str(p)], ["check", "--json", str(p)]):
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            status = main(argv)
        assert status in (0, 1), (status, err.getvalue())
        assert "Traceback" not in err.getvalue()
        if "--json" in argv:
            obj = json.loads(out.getvalue())
            assert obj["ok"] is (status == 0)


# ---- regressions: inputs that once escaped dslc.load as exceptions (or hung) --------------------------------------
def _net(body: str) -> str:
    return "network n(x: f32[N, 3, 32, 32]) {\n    " + body + "\n    return y\n}\n"


REGRESSIONS = {
    "huge integer literal": (_net("y = x |> linear(" + "9" * 5000 + ")"), "too large"),
    "float literal overflow": (_net("y = x |> repeat int(1e400) { relu }"), "too large for a float"),
    "int of an overflowing product": (_net("y = x |> linear(int(1e300 * 1e300))"), "too large"),
    "complex power": (_net("y = x |> linear((-8) ** 0.5)"), "not a real number"),
    "integer beyond 64 bits": (_net("y = x |> linear(2 ** 62 * 4)"), "more than 64 bits"),
    "layer named like the input": (_net("y = x |> relu as x"), "already used"),
    "target named like a layer": ("network n(x: f32[N, 4]) {\n    y = x |> linear(2) as fc1\n    return y\n}\n"
                                  "train {\n    target fc1: f32[N, 2]\n    loss = mse(y, fc1)\n}\n",
                                  "already the name of an input or layer"),
    "repeat nested in a repeat": (_net("y = x |> repeat 2 { repeat 2 { relu } |> relu }"), None),
    "deep parentheses": (_net("y = " + "(" * 3000 + "x" + ")" * 3000), None),
    "long pipeline": (_net("y = x" + " |> relu" * 1500), None),
    "long sum": (_net("y = x" + " + x" * 1500), None),
    "deeply nested lists": (_net("y = " + "[" * 3000 + "]" * 3000), "nested too deeply"),
    "deep unary minus": (_net("y = " + "-" * 3000 + "x"), "nested too deeply"),
    "unclosed docstring start": ('""' + _net("y = x"), None),
}


def test_regressions_found_by_fuzzing():
    for what, (text, expect) in REGRESSIONS.items():
        prog = load(ROOT / "networks" / "regression.net", text=text)
        messages = " | ".join(d.message for d in prog.diagnostics.items)
        if expect is None:
            assert prog.ok or prog.diagnostics.errors, what
        else:
            assert expect in messages, (what, messages)
        prog.diagnostics.render_all()


def test_a_network_past_the_node_limit_is_one_error(monkeypatch):
    from dslc.frontend.elaborate import Elaborator
    monkeypatch.setattr(Elaborator, "MAX_NODES", 300)
    prog = load(ROOT / "networks" / "regression.net",
                text=_net("y = x |> repeat 10000 { repeat 10000 { relu } }\n    z = x |> repeat 400 { relu }"))
    assert [d.message for d in prog.diagnostics.items] == ["network `n` has more than 300 layers"]
