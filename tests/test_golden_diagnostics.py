"""Golden diagnostics: every tests/cases/**/*.net program states the diagnostics dslc must report for it, in
comments (the convention is documented in tests/cases/README.md). The harness loads each case with dslc.load
and compares the full set: every expected error and warning is reported at its position with its words, and
nothing else is reported. Notes and hints are checked where a case asks for them."""
from __future__ import annotations

import io
import json
import re
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

from dslc.api import load
from dslc.cli import main

CASES_DIR = Path(__file__).resolve().parent / "cases"
KINDS = ("error", "warning", "note", "hint")


def case_files() -> list[Path]:
    """Every .net under tests/cases, except library files: any path part starting with `_` (e.g. imports/_lib/)."""
    return sorted(p for p in CASES_DIR.rglob("*.net")
                  if not any(part.startswith("_") for part in p.relative_to(CASES_DIR).parts))


@dataclass
class Expect:
    kind: str  # error | warning | note | hint
    file: Path
    line: int
    col: int | None
    text: str
    origin: int  # the line of the comment that states it

    def where(self) -> str:
        return f"{self.file.name}:{self.line}" + (f":{self.col}" if self.col else "")

    def __str__(self) -> str:
        return f"{self.where()} {self.kind}: ...{self.text}... (stated on line {self.origin})"


_EXPLICIT = re.compile(r"expect:\s*(?:(?P<file>[^\s:]+\.net):)?(?P<line>\d+)(?::(?P<col>\d+))?\s+"
                       r"(?P<kind>error|warning|note|hint)\s*:\s*(?P<text>.*\S)\s*$")
_PLAIN = re.compile(r"(?P<kind>error|warning|note|hint)\s*:\s*(?P<text>.*\S)\s*$")
_CARET = re.compile(r"\^\s*(?P<kind>error|warning|note|hint)\s*:\s*(?P<text>.*\S)\s*$")
_MARKER = re.compile(r"^(expect\s*:|\^|(error|warning|note|hint)\s*:)")


def _comment_start(line: str) -> int | None:
    """Index of the `#` that starts this line's comment (not one inside a "string"), or None."""
    in_str = False
    i = 0
    while i < len(line):
        ch = line[i]
        if in_str and ch == "\\":
            i += 2
            continue
        if ch == '"':
            in_str = not in_str
        elif ch == "#" and not in_str:
            return i
        i += 1
    return None


def parse_expectations(path: Path) -> tuple[list[Expect], bool]:
    """The expectations a case states, and whether it declares itself clean (`# expect: clean`)."""
    expects: list[Expect] = []
    clean = False
    target = 0  # the line a caret expectation refers to: the last line that is not a caret expectation
    in_doc = False
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if line.count('"""') % 2 == 1:
            in_doc = not in_doc
            target = n
            continue
        if in_doc:
            target = n
            continue
        at = _comment_start(line)
        comment = line[at + 1:].strip() if at is not None else ""
        code = line[:at].strip() if at is not None else line.strip()
        if at is None or not _MARKER.match(comment):
            target = n
            continue
        if comment.startswith("expect"):
            if re.fullmatch(r"expect:\s*clean", comment):
                clean = True
                continue
            m = _EXPLICIT.match(comment)
            if not m:
                raise ValueError(f"{path}:{n}: malformed expectation `# {comment}` "
                                 "(want `# expect: [FILE:]LINE[:COL] error|warning|note|hint: TEXT`)")
            file = (path.parent / m["file"]).resolve() if m["file"] else path
            expects.append(Expect(m["kind"], file, int(m["line"]), int(m["col"]) if m["col"] else None,
                                  m["text"], n))
            continue
        if comment.startswith("^"):
            m = _CARET.match(comment)
            if not m or code:
                raise ValueError(f"{path}:{n}: malformed caret expectation `# {comment}`")
            col = line.index("^", at) + 1
            expects.append(Expect(m["kind"], path, target, col, m["text"], n))
            continue
        m = _PLAIN.match(comment)
        if not m:
            raise ValueError(f"{path}:{n}: malformed expectation `# {comment}`")
        if not code:
            raise ValueError(f"{path}:{n}: `# {m['kind']}: ...` on a line of its own refers to nothing: put it "
                             "after the code, use a caret line (`#   ^ error: ...`) or `# expect: LINE:COL ...`")
        expects.append(Expect(m["kind"], path, n, None, m["text"], n))
        target = n
    return expects, clean


def _same_file(span_file: str, path: Path) -> bool:
    return Path(span_file).resolve() == path.resolve()


def _at(span, e: Expect) -> bool:
    return span is not None and _same_file(span.file, e.file) and span.line == e.line \
        and (e.col is None or span.col == e.col)


def compare(prog, expects: list[Expect]) -> list[str]:
    """Problems, in words: expected diagnostics not reported, and reported ones nobody expected."""
    problems = []
    actual = list(prog.diagnostics.items)
    unmatched = list(actual)
    main_expects = [e for e in expects if e.kind in ("error", "warning")]
    # the most specific expectations (with a column) pick their diagnostic first
    for e in sorted(main_expects, key=lambda e: e.col is None):
        hit = next((d for d in unmatched if d.severity == e.kind and _at(d.span, e) and e.text in d.message), None)
        if hit is None:
            problems.append(f"expected, not reported: {e}")
        else:
            unmatched.remove(hit)
    for d in unmatched:
        problems.append(f"reported, not expected: {d.span}: {d.severity}: {d.message}")
    for e in expects:
        if e.kind == "note":
            ok = any(_at(span, e) and e.text in msg for d in actual for span, msg in d.notes)
        elif e.kind == "hint":
            ok = any(_at(d.span, e) and d.hint and e.text in d.hint for d in actual)
        else:
            continue
        if not ok:
            problems.append(f"expected {e.kind} not found: {e}")
    return problems


def check_rendering(prog) -> list[str]:
    """Every diagnostic has file:line:col and, where the line exists, the source line with a caret under it."""
    problems = []
    for d in prog.diagnostics.items:
        if d.span is None or d.span.line < 1 or d.span.col < 1:
            problems.append(f"diagnostic without a position: {d.severity}: {d.message}")
            continue
        text = prog.diagnostics.render(d)
        head = f"{d.span.file}:{d.span.line}:{d.span.col}: {d.severity}: {d.message}"
        if not text.startswith(head):
            problems.append(f"rendering does not start with {head!r}:\n{text}")
        src = prog.diagnostics.source_line(d.span)
        if src is not None:
            lines = text.splitlines()
            quoted = f"{d.span.line:>4} | {src}" if len(src) <= 100 else f"{d.span.line:>4} | "
            if len(lines) < 3 or not lines[1].startswith(quoted) or "^" not in lines[2]:
                problems.append(f"no quoted source line with a caret:\n{text}")
            elif len(src) <= 100 and "\t" not in src:
                caret_col = lines[2].index("^") - len(f"{d.span.line:>4} | ") + 1
                if caret_col != d.span.col:
                    problems.append(f"caret at column {caret_col}, span at {d.span.col}:\n{text}")
    return problems


CASES = case_files()


def test_there_are_enough_cases():
    assert len(CASES) >= 30, [p.name for p in CASES]
    for path in CASES:
        expects, clean = parse_expectations(path)
        assert expects or clean, f"{path}: a case states its diagnostics, or `# expect: clean`"
        assert not (expects and clean), f"{path}: `# expect: clean` with expectations"


@pytest.mark.parametrize("path", CASES, ids=lambda p: str(p.relative_to(CASES_DIR).with_suffix("")))
def test_case(path):
    expects, clean = parse_expectations(path)
    prog = load(path)  # a mistake in the program is a diagnostic, never an exception
    problems = compare(prog, expects) + check_rendering(prog)
    if problems:
        pytest.fail("\n".join(problems) + "\n\n--- dslc said:\n" + (prog.diagnostics.render_all() or "(nothing)"),
                    pytrace=False)


def test_cli_check_json_over_all_cases():
    """`dslc check --json` on every case: one JSON object per file, exit status 1 when any has errors, no
    traceback, and each object carries the diagnostics with their positions."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = main(["check", "--json", *map(str, CASES)])
    objects = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(objects) == len(CASES)
    assert "Traceback" not in err.getvalue()
    any_errors = False
    for path, obj in zip(CASES, objects):
        expects, _ = parse_expectations(path)
        has_errors = any(e.kind == "error" for e in expects)
        any_errors |= has_errors
        assert obj["ok"] is (not has_errors), path
        for key in ("network", "inputs", "outputs", "trainable_params", "macs", "diagnostics"):
            assert key in obj, (path, key)
        for d in obj["diagnostics"]:
            assert {"file", "line", "col", "severity", "message"} <= set(d)
            assert d["severity"] in ("error", "warning") and d["line"] >= 1 and d["col"] >= 1
    assert status == (1 if any_errors else 0)
