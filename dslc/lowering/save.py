"""Writing a model: atomically, with the weights as external data when the model would pass protobuf's 2 GB
limit (`model.onnx` + `model.onnx.data` beside it)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx

from dslc.lowering.validate import EXTERNAL_DATA_THRESHOLD


def save_model(model: onnx.ModelProto, path, threshold: int = EXTERNAL_DATA_THRESHOLD,
               copy: bool = True, data: bytes | None = None) -> list[Path]:
    """Write `model` to `path`; returns the files written. Weights go to `<name>.data` when they reach
    `threshold` bytes. `copy` keeps the caller's ModelProto untouched (external data rewrites it); `data`:
    the model already serialized (validation made it), written as is."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = sum(_tensor_bytes(t) for t in model.graph.initializer)
    external = size >= threshold
    tmpdir = tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        tmp = Path(tmpdir) / path.name
        written = [path]
        if external:
            m = onnx.ModelProto()
            if copy:
                m.CopyFrom(model)
            else:
                m = model
            data_name = path.name + ".data"
            onnx.save_model(m, str(tmp), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data_name, size_threshold=1024)
            os.replace(Path(tmpdir) / data_name, path.parent / data_name)
            written.append(path.parent / data_name)
        else:
            with open(tmp, "wb") as f:
                f.write(data if data is not None else model.SerializeToString())
                f.flush()
                os.fsync(f.fileno())
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
    return n * 4
