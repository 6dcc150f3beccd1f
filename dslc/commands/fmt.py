"""`dslc fmt FILE.net ... | DIR`: rewrite .net files in the one canonical layout (dslc/fmt), in place by default."""
from __future__ import annotations

import argparse

NAME = "fmt"
HELP = "format .net files in the canonical layout (in place; --check for CI, --diff to preview, - for stdin)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="FILE.net|DIR|-",
                   help="files, directories (every *.net below them) or - (stdin to stdout)")
    p.add_argument("--check", action="store_true",
                   help="change nothing; list the files that would change and exit 1 if there are any")
    p.add_argument("--diff", action="store_true", help="change nothing; print a unified diff of what would change")


def run(args) -> int:
    import sys

    status = 0
    for path in args.paths:
        if path == "-":
            status = max(status, _stdin(args))
            continue
        files = _expand(path)
        if files is None:
            print(f"dslc: error: cannot read {path}: no such file or directory", file=sys.stderr)
            status = max(status, 2)
            continue
        for f in files:
            status = max(status, _one(f, args))
    return status


def _expand(path: str):
    from pathlib import Path
    p = Path(path)
    if p.is_dir():
        return sorted(f for f in p.rglob("*.net") if f.is_file() and not any(
            part.startswith(".") for part in f.relative_to(p).parts))
    return [p] if p.exists() else None


def _stdin(args) -> int:
    import sys

    from dslc.fmt import FormatError, format_source
    text = sys.stdin.read()
    try:
        out = format_source(text, "<stdin>")
    except FormatError as e:
        print(e.render(), file=sys.stderr)
        return 1
    if args.check or args.diff:
        if args.diff:
            sys.stdout.write(_unified(text, out, "<stdin>"))
        return 1 if out != text else 0
    sys.stdout.write(out)
    return 0


def _one(path, args) -> int:
    import sys

    from dslc.fmt import FormatError, format_source
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        why = {PermissionError: "permission denied"}.get(type(e)) or (e.strerror or str(e)).lower()
        print(f"dslc: error: cannot read {path}: {why}", file=sys.stderr)
        return 2
    except UnicodeDecodeError:
        print(f"dslc: error: {path} is not a UTF-8 text file", file=sys.stderr)
        return 2
    try:
        out = format_source(text, str(path))
    except FormatError as e:  # left untouched; the same diagnostics as `dslc check`
        print(e.render(), file=sys.stderr)
        return 1
    if out == text:
        return 0
    if args.check or args.diff:
        if args.diff:
            sys.stdout.write(_unified(text, out, str(path)))
        else:
            print(f"would reformat {path}")
        return 1
    from dslc.weights import atomic_write_bytes
    try:
        atomic_write_bytes(path, out.encode("utf-8"))
    except OSError as e:
        print(f"dslc: error: cannot write {path}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(f"reformatted {path}", file=sys.stderr)
    return 0


def _unified(old: str, new: str, name: str) -> str:
    import difflib
    return "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                        fromfile=f"{name} (original)", tofile=f"{name} (formatted)"))
