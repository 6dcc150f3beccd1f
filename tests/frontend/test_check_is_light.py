"""`dslc check` stays fast to start: it loads neither the ONNX stack nor the training kernels' compiler."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_check_imports_no_onnx_onnxruntime_or_numba():
    code = ("import sys, json; from dslc.cli import main; rc = main(['check', '-q', sys.argv[1]]); "
            "print(json.dumps([rc, sorted(m for m in ('onnx', 'onnxruntime', 'numba') if m in sys.modules)]))")
    r = subprocess.run([sys.executable, "-c", code, str(ROOT / "networks" / "resnet50.net")],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    rc, loaded = json.loads(r.stdout.strip().splitlines()[-1])
    assert rc == 0, r.stderr
    assert loaded == [], f"`dslc check` imported {loaded}"
