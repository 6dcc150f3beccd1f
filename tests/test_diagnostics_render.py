"""How diagnostics read: `file:line:col: severity: message`, the source line with a caret and `~` under the span,
notes with their own quotes, a hint; and the `dslc check` exit codes and --json object."""
from __future__ import annotations

import json
import textwrap

import pytest

from dslc.api import load
from dslc.cli import main
from dslc.diagnostics import Diagnostic, Diagnostics, Span


def write(tmp_path, text, name="net.net"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text).lstrip("\n"))
    return p


def test_unknown_op_renders_position_source_caret_and_hint(tmp_path):
    p = write(tmp_path, """
        network cnn(x: f32[N, 3, 32, 32]) {
            h = x |> conv2(16, 3) |> relu
            return h
        }
    """)
    prog = load(p)
    assert prog.diagnostics.render_all() == "\n".join([
        f"{p}:2:14: error: unknown op or block `conv2`",
        "   2 |     h = x |> conv2(16, 3) |> relu",
        " " * 20 + "^~~~~",
        "  hint: did you mean `conv2d`?",
    ])


def test_shape_mismatch_names_both_shapes_and_quotes_where_each_operand_was_made(tmp_path):
    p = write(tmp_path, """
        network net(x: f32[N, 32, 16, 16]) {
            y = x |> conv2d(64, 3, padding=1)
            out = x + y
            return out
        }
    """)
    text = load(p).diagnostics.render_all()
    assert text == "\n".join([
        f"{p}:3:11: error: cannot add [N, 32, 16, 16] and [N, 64, 16, 16]: dims 1 differ (32 vs 64)",
        "   3 |     out = x + y",
        " " * 17 + "^~~~~",
        f"{p}:1:13: note: the left operand [N, 32, 16, 16] is declared here",
        "   1 | network net(x: f32[N, 32, 16, 16]) {",
        " " * 19 + "^",
        f"{p}:2:14: note: the right operand [N, 64, 16, 16] was made here",
        "   2 |     y = x |> conv2d(64, 3, padding=1)",
        " " * 20 + "^" + "~" * 23,
        "  hint: a residual add needs a projection shortcut, e.g. conv2d(c, 1, stride=s)",
    ])


def test_syntax_error_says_what_was_expected_and_points_at_the_open_bracket(tmp_path):
    p = write(tmp_path, """
        network net(x: f32[N, 8]) {
            h = x |> linear(4
        }
    """)
    text = load(p).diagnostics.render_all()
    assert text == "\n".join([
        f"{p}:3:1: error: unexpected `}}`, expected `)` or `,`",
        "   3 | }",
        " " * 7 + "^",
        f"{p}:2:20: note: this `(` is not closed",
        "   2 |     h = x |> linear(4",
        " " * 26 + "^",
        "  hint: is a `)` missing?",
    ])


def test_several_syntax_errors_are_reported_in_one_run(tmp_path):
    p = write(tmp_path, """
        network net(x: f32[N, 8]) {
            a = x |> linear(4 |> relu
            b = x |> linear(4) relu
            c = x |> linear(4,, 2)
            return a
        }
    """)
    errors = load(p).diagnostics.errors
    assert [(d.span.line, d.span.col) for d in errors] == [(3, 5), (3, 24), (4, 23)]
    assert "expected `)` or `,`" in errors[0].message
    assert "after a complete expression" in errors[1].message
    assert "unexpected `,`, expected" in errors[2].message


def test_windowed_quote_of_a_long_line_keeps_the_caret_under_the_span():
    d = Diagnostics()
    line = "x" * 300 + " bad " + "y" * 300
    d.sources["f.net"] = line + "\n"
    col = 302
    text = d.render(Diagnostic("error", "bad", Span("f.net", 1, col, 1, col + 3)))
    src, caret = text.splitlines()[1:3]
    assert len(src) < 130 and src.startswith("   1 | ...") and src.endswith("...")
    assert src[caret.index("^"):caret.index("^") + 3] == "bad"
    assert caret.endswith("^~~")


def test_tabs_are_kept_in_the_caret_line_so_it_lines_up():
    d = Diagnostics()
    d.sources["f.net"] = "\ty = x |>\tfoo\n"
    text = d.render(Diagnostic("error", "unknown", Span("f.net", 1, 11, 1, 14)))
    src, caret = text.splitlines()[1:3]
    assert caret == "     " + "  " + "\t" + " " * 8 + "\t" + "^~~"
    assert src.expandtabs(8)[caret.expandtabs(8).index("^"):][:3] == "foo"


def test_a_span_over_several_lines_is_underlined_to_the_end_of_its_first_line():
    d = Diagnostics()
    d.sources["f.net"] = "y = x |> conv2d(4, 3)\n      |> relu\n"
    text = d.render(Diagnostic("error", "e", Span("f.net", 1, 5, 2, 14)))
    assert text.splitlines()[2] == " " * 7 + " " * 4 + "^" + "~" * 16


def test_diagnostic_without_position_and_unknown_file_render_plainly():
    d = Diagnostics()
    assert d.render(Diagnostic("error", "no network", None, "add one")) == "error: no network\n  hint: add one"
    text = d.render(Diagnostic("warning", "w", Span("/nonexistent/x.net", 3, 2)))
    assert text == "/nonexistent/x.net:3:2: warning: w"


# ---- the CLI --------------------------------------------------------------------------------------------------
def test_cli_exit_codes(tmp_path, capsys):
    good = write(tmp_path, """
        network net(x: f32[N, 8]) {
            y = x |> linear(2)
            return y
        }
    """, "good.net")
    warn = write(tmp_path, """
        network net(x: f32[N, 8]) {
            unused = x |> linear(3)
            y = x |> linear(2)
            return y
        }
    """, "warn.net")
    bad = write(tmp_path, """
        network net(x: f32[N, 8]) {
            y = x |> linaer(2)
            return y
        }
    """, "bad.net")
    binary = tmp_path / "binary.net"
    binary.write_bytes(b"\xff\xfe\x00network")
    assert main(["check", "-q", str(good)]) == 0
    assert main(["check", "-q", str(warn)]) == 0
    assert main(["check", "-q", str(bad)]) == 1
    assert main(["check", "-q", str(tmp_path / "missing.net")]) == 2
    assert main(["check", "-q", str(tmp_path)]) == 2
    assert main(["check", "-q", str(binary)]) == 2
    assert main(["check", "-q", str(good), str(bad), str(tmp_path / "missing.net")]) == 2
    with pytest.raises(SystemExit) as e:
        main(["check", "--no-such-option", str(good)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "warning: tensor `unused` is never used" in err
    assert f"{bad}:2:14: error: unknown op or block `linaer`" in err
    assert "cannot read" in err


def test_cli_json_object(tmp_path, capsys):
    good = write(tmp_path, """
        network mlp(x: f32[N, 784]) {
            logits = x |> linear(10)
            return logits
        }
    """, "good.net")
    bad = write(tmp_path, """
        network mlp(x: f32[N, 784]) {
            logits = x |> linear(10) |> conv2d(3, 3)
            return logits
        }
    """, "bad.net")
    assert main(["check", "--json", str(good)]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["network"] == "mlp" and obj["ok"] is True
    assert obj["inputs"] == {"x": ["N", 784]} and obj["outputs"] == {"logits": ["N", 10]}
    assert obj["trainable_params"] == 7850 and obj["macs"] == 7840 and obj["diagnostics"] == []
    assert main(["check", "--json", str(bad)]) == 1
    obj = json.loads(capsys.readouterr().out)
    assert obj["ok"] is False and obj["network"] == "mlp"
    assert obj["inputs"] == {} and obj["outputs"] == {} and obj["trainable_params"] is None and obj["macs"] is None
    (d,) = obj["diagnostics"]
    assert {k: d[k] for k in ("file", "line", "col", "severity")} == {"file": str(bad), "line": 2, "col": 33,
                                                                      "severity": "error"}
    assert d["message"].startswith("conv2d expects a rank-4 input")


def test_cli_json_for_a_syntax_error(tmp_path, capsys):
    bad = write(tmp_path, "network mlp(x: f32[N, 784]) {\n    y = x |> linear(10\n}\n", "bad.net")
    assert main(["check", "--json", str(bad)]) == 1
    obj = json.loads(capsys.readouterr().out)
    assert obj["network"] is None and obj["ok"] is False
    assert [(d["line"], d["col"], d["severity"]) for d in obj["diagnostics"]] == [(3, 1, "error")]
