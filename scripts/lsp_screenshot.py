"""A screenshot of `dslc lsp` in a real editor, taken headless: Neovim runs in a pseudo-terminal with
scripts/lsp_screenshot.lua (inlay hints drawn, a hover open), its screen is read back through the pyte terminal
emulator and written as an SVG with rich. Needs `nvim` and `pip install pyte` (neither is a dslc dependency).

    python scripts/lsp_screenshot.py [-o docs/img/lsp_hover.svg]
"""
from __future__ import annotations

import argparse
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pyte
from rich.console import Console
from rich.text import Text

ROOT = Path(__file__).resolve().parents[1]
COLS, ROWS = 110, 36
COLORS = {"default": None, "brown": "yellow"}


def grab(file: Path, line: int, col: int, wait_s: float) -> pyte.Screen:
    screen = pyte.Screen(COLS, ROWS)
    stream = pyte.ByteStream(screen)
    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "DSLC_SHOT_FILE": str(file), "DSLC_SHOT_LINE": str(line),
           "DSLC_SHOT_COL": str(col), "DSLC_SHOT_CMD": "\t".join([sys.executable, "-m", "dslc.cli", "lsp"])}
    proc = subprocess.Popen(["nvim", "--clean", "-u", "NONE", "-c", f"luafile {ROOT / 'scripts' / 'lsp_screenshot.lua'}",
                             "-c", f"set columns={COLS} lines={ROWS}"], stdin=slave, stdout=slave, stderr=slave,
                            env=env, cwd=ROOT)
    os.set_blocking(master, False)
    end = time.time() + wait_s
    while time.time() < end:
        if select.select([master], [], [], 0.1)[0]:
            try:
                stream.feed(os.read(master, 65536))
            except OSError:
                break
    proc.kill()
    return screen


def to_svg(screen: pyte.Screen, out: Path, title: str) -> None:
    console = Console(record=True, width=COLS, file=open(os.devnull, "w"), color_system="truecolor")
    for y in range(screen.lines):
        row = screen.buffer[y]
        text = Text()
        for x in range(screen.columns):
            ch = row[x]
            fg = None if ch.fg == "default" else ("#" + ch.fg if len(ch.fg) == 6 else COLORS.get(ch.fg, ch.fg))
            bg = None if ch.bg == "default" else ("#" + ch.bg if len(ch.bg) == 6 else COLORS.get(ch.bg, ch.bg))
            style = " ".join(s for s in [fg or "", f"on {bg}" if bg else "", "bold" if ch.bold else "",
                                         "reverse" if ch.reverse else ""] if s)
            if ch.data == " " and not bg:  # a style of its own: text runs start at their first character
                style = (style + " italic").strip()
            text.append(ch.data, style=style or None)
        console.print(text, no_wrap=True, overflow="crop")
    out.write_text(console.export_svg(title=title))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "img" / "lsp_hover.svg")
    ap.add_argument("--wait", type=float, default=6.0)
    args = ap.parse_args()
    net = ROOT / "networks" / "resnet50.net"
    lines = net.read_text().splitlines()
    line = next(i for i, s in enumerate(lines) if s.lstrip().startswith("logits =")) + 1  # 1-based
    col = lines[line - 1].index("linear(") + 2  # the hover: on the last layer's call
    screen = grab(net, line, col, args.wait)
    to_svg(screen, args.output, "dslc lsp in Neovim: inlay hints and hover on networks/resnet50.net")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
