"""`dslc export-weights CKPT -o FILE`: a training checkpoint's (or weights file's) weights as .safetensors / .pt."""
from __future__ import annotations

import argparse

NAME = "export-weights"
HELP = "write the weights of a training checkpoint or weights file as .safetensors, .pt (PyTorch) or .npz"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="WEIGHTS", help="a `dslc train` checkpoint (.ckpt.npz) or a weights file "
                                                   "(.npz, .safetensors, .pt, .pth)")
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="output: .safetensors, .pt / .pth (a state_dict of torch tensors; needs PyTorch) or .npz; "
                        "written atomically")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")


def run(args) -> int:
    import sys
    from pathlib import Path

    import numpy as np

    from dslc.weight_files import WeightsFileError, read_tensors, write_tensors

    def fail(msg: str, code: int) -> int:
        print(f"dslc export-weights: error: {msg}", file=sys.stderr)
        return code

    src, out = Path(args.file), Path(args.output)
    try:
        tensors = read_tensors(src)
    except FileNotFoundError:
        return fail(f"{src} not found", 2)
    except WeightsFileError as e:
        return fail(str(e), 2)
    if not tensors:
        return fail(f"{src} holds no weights", 1)
    try:
        write_tensors(out, tensors)
    except WeightsFileError as e:
        return fail(str(e), 2)
    except OSError as e:
        return fail(f"cannot write {out}: {e.strerror or e}", 2)
    if not args.quiet:
        n = sum(int(np.asarray(v).size) for v in tensors.values())
        print(f"wrote {out}: {len(tensors)} tensors, {n:,} values")
    return 0
