"""Writing a model: atomically (temporary file, then rename), with the weights as external data when the model
would pass protobuf's 2 GB limit (`model.onnx` + `model.onnx.data` beside it)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx

from dslc.lowering.validate import EXTERNAL_DATA_THRESHOLD


def save_model(model: onnx.ModelProto, path, threshold: int = EXTERNAL_DATA_THRESHOLD,
               data: bytes | None = None, arrays: dict | None = None,
               check=None) -> list[Path]:
    """Write `model` to `path`; returns the files written. Weights go to `<name>.data` when they reach
    `threshold` bytes. `data`: the model already serialized (validation made it), written as is; `arrays`:
    the values of dataless initializers (compile_graph(materialize=False)). The caller's ModelProto is never
    modified. `check(tmp_path)` runs on the written file before it
    replaces `path` (validation of the file itself: nothing invalid ever appears at `path`)."""
    from dslc.lowering.serialize import dataless, model_parts, write_external
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = arrays or {}
    missing = [t.name for t in model.graph.initializer if dataless(t) and t.name not in arrays
               and _tensor_bytes(t)]
    if missing:
        raise ValueError(f"initializer `{missing[0]}` has no data: pass the arrays it was lowered with")
    size = sum(_tensor_bytes(t) for t in model.graph.initializer)
    external = size >= threshold
    tmpdir = tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        tmp = Path(tmpdir) / path.name
        written = [path]
        if external:
            data_name = path.name + ".data"
            write_external(model, arrays, tmp, Path(tmpdir) / data_name, min_bytes=1024 if threshold >= 1024 else 0)
            if check is not None:
                check(tmp)
            os.replace(Path(tmpdir) / data_name, path.parent / data_name)
            written.append(path.parent / data_name)
        else:
            with open(tmp, "wb") as f:   # atomic by rename; like other compilers, no fsync
                for part in ([data] if data is not None else model_parts(model, arrays)):
                    f.write(part)
            if check is not None:
                check(tmp)
            stale = path.parent / (path.name + ".data")
            if stale.exists():
                stale.unlink()
        os.replace(tmp, path)
        return written
    finally:
        for p in Path(tmpdir).glob("*"):
            p.unlink()
        os.rmdir(tmpdir)


def _tensor_bytes(t: onnx.TensorProto) -> int:
    if t.raw_data:
        return len(t.raw_data)
    n = 1
    for d in t.dims:
        n *= d
    try:
        return n * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    except (KeyError, TypeError, ValueError):
        return n * 4
