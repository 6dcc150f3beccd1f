"""Neovim's built-in LSP client, headless, against `dslc lsp`: a diagnostic and a hover read back. Skipped where
`nvim` is not installed (`apt-get install neovim`)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

BROKEN = """network broken(x: f32[N, 64, 56, 56]) {
    a = x |> conv2d(128, 3, stride=2, padding=1)
    out = a + x
    return out
}
"""


@pytest.mark.skipif(shutil.which("nvim") is None, reason="nvim is not installed")
def test_headless_neovim_reads_a_diagnostic_and_a_hover(tmp_path):
    src = tmp_path / "broken.net"
    src.write_text(BROKEN)
    out = tmp_path / "out.txt"
    env = {**os.environ, "DSLC_NVIM_OUT": str(out), "DSLC_NVIM_FILE": str(src),
           "DSLC_NVIM_CMD": "\t".join([sys.executable, "-m", "dslc.cli", "lsp"])}
    subprocess.run(["nvim", "--headless", "--clean", "-u", "NONE", "-c", f"luafile {HERE / 'nvim_check.lua'}"],
                   env=env, cwd=tmp_path, timeout=60, check=True, capture_output=True)
    lines = out.read_text().splitlines()
    assert lines[0] == ("diagnostic 2:10 cannot add [N, 128, 28, 28] and [N, 64, 56, 56]: dims 1 differ (128 vs 64)"
                        " | hint: a residual add needs a projection shortcut, e.g. conv2d(c, 1, stride=s)")
    assert lines[1] == "hover `a`: `f32[N, 128, 28, 28]` |  | made by `conv1` (conv2d)"
