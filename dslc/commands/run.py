"""`dslc run MODEL.onnx|FILE.net --input NAME=FILE.npy ...`: run a model with onnxruntime."""
from __future__ import annotations

import argparse

NAME = "run"
HELP = "run an ONNX model (or compile and run a .net network) with onnxruntime"


class InputError(Exception):
    """Inputs that do not fit the model: exit code 2, the message lists what the model expects."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL.onnx|FILE.net")
    p.add_argument("--input", "-i", action="append", default=[], metavar="NAME=FILE.npy",
                   help="an input tensor (repeat for several); without any, random inputs of the declared shapes "
                        "(batch 1) are used")
    p.add_argument("--output", "-o", metavar="DIR", help="save every output as DIR/NAME.npy")
    p.add_argument("--dim", action="append", default=[], metavar="NAME=SIZE",
                   help="size of a symbolic dim for random inputs (default: batch 1)")
    p.add_argument("--network", metavar="NAME", help="for a .net file: the network to run")
    p.add_argument("--weights", metavar="FILE.npz", help="for a .net file: weights to use (default: seeded init)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs and initial weights")
    p.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is usable")
    p.add_argument("--preview", type=int, default=6, metavar="K", help="values shown per output (default 6)")


def run(args) -> int:
    import sys
    from pathlib import Path

    path = Path(args.model)
    if not path.is_file():
        why = "it is a directory" if path.is_dir() else "no such file"
        print(f"dslc: error: cannot read {path}: {why}", file=sys.stderr)
        return 2
    try:
        dims = _parse_pairs(args.dim, "--dim", int)
        given = _parse_pairs(args.input, "--input", str)
    except InputError as e:
        print(f"dslc: error: {e}", file=sys.stderr)
        return 2
    source = _load_model(args, path)
    if isinstance(source, int):
        return source
    import numpy as np

    from dslc.runtime.session import create_session, describe, probe_providers
    try:
        session, provider = create_session(source, prefer_gpu=not args.cpu)
    except Exception as e:  # a model onnxruntime refuses (hand-made .onnx files)
        print(f"dslc: error: onnxruntime cannot load {path}: {str(e).strip().splitlines()[-1]}", file=sys.stderr)
        return 2
    expected = [(i.name, i.type, list(i.shape)) for i in session.get_inputs()]
    try:
        feeds = _feeds(expected, given, dims, args.seed)
    except InputError as e:
        print(f"dslc: error: {e}\n{_expects(expected)}", file=sys.stderr)
        return 2
    try:
        outs = session.run(None, feeds)
    except Exception as e:
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        print(f"dslc: error: onnxruntime failed to run the model: {msg}\n{_expects(expected)}", file=sys.stderr)
        return 2
    print(describe(probe_providers(not args.cpu), provider))
    for name, arr in feeds.items():
        print(f"input  {name}: {_dtype_name(arr.dtype)}{list(arr.shape)}")
    names = [o.name for o in session.get_outputs()]
    for name, y in zip(names, outs):
        y = np.asarray(y)
        print(f"output {name}: {_dtype_name(y.dtype)}{list(y.shape)}  {_preview(y, args.preview)}")
    if args.output:
        out_dir = Path(args.output)
        written = []
        for name, y in zip(names, outs):
            target = out_dir / (_safe(name) + ".npy")
            try:
                _save_npy(target, np.asarray(y))
            except OSError as e:
                print(f"dslc: error: cannot write {target}: {e.strerror or e}", file=sys.stderr)
                return 2
            written.append(str(target))
        print(f"saved {', '.join(written)}")
    return 0


def _load_model(args, path):
    """The serialized model / path for onnxruntime, or an exit code after printing why not."""
    from pathlib import Path
    if path.suffix == ".onnx":
        return str(path)
    from dslc.lowering.compile import compile_graph, load_program
    from dslc.lowering.errors import report
    try:
        _prog, g = load_program(path, args.network)
        model, info = compile_graph(g, weights=args.weights, seed=args.seed, materialize=False)
    except Exception as e:  # noqa: BLE001 - report() re-raises what is not the user's
        return report(e, path)
    if info.data is not None:
        return info.data
    import tempfile   # past 2 GB: onnxruntime reads it from files

    from dslc.lowering.save import save_model
    path = Path(tempfile.mkdtemp(prefix="dslc-run-")) / "model.onnx"
    save_model(model, path, arrays=info.arrays)
    return str(path)


def _parse_pairs(items, flag, conv):
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise InputError(f"{flag} expects NAME=VALUE, got {item!r}")
        try:
            out[name] = conv(value)
        except ValueError:
            raise InputError(f"{flag} {name}: {value!r} is not a valid size") from None
    return out


ORT_DTYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(int64)": "int64",
              "tensor(int32)": "int32", "tensor(bool)": "bool", "tensor(float16)": "float16",
              "tensor(uint8)": "uint8", "tensor(int8)": "int8"}
SHORT = {"float32": "f32", "float64": "f64", "int64": "i64", "int32": "i32", "bool": "bool"}


def _dtype_name(dt) -> str:
    return SHORT.get(str(dt), str(dt))


def _show_shape(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _expects(expected) -> str:
    lines = ["the model expects:"]
    for name, t, shape in expected:
        lines.append(f"  {name}: {_dtype_name(ORT_DTYPES.get(t, t))}{_show_shape(shape)}")
    return "\n".join(lines)


def _feeds(expected, given: dict, dims: dict, seed: int):
    import numpy as np
    names = [n for n, _t, _s in expected]
    unknown = [k for k in given if k not in names]
    if unknown:
        raise InputError(f"the model has no input named `{unknown[0]}`" +
                         (f" (inputs: {', '.join(names)})" if names else ""))
    if given and len(given) != len(names):
        missing = [n for n in names if n not in given]
        raise InputError(f"missing --input for {', '.join(f'`{m}`' for m in missing)}")
    rng = np.random.default_rng(seed)
    feeds = {}
    bound: dict[str, tuple[int, str]] = {}   # symbolic dim -> (size, which input set it)
    for pos, (name, t, shape) in enumerate(expected):
        want = np.dtype(ORT_DTYPES.get(t, "float32"))
        if name in given:
            arr = _load_npy(given[name], name)
            if arr.dtype != want:
                raise InputError(f"input `{name}` from {given[name]} has dtype {_dtype_name(arr.dtype)}, the model "
                                 f"expects {_dtype_name(want)}")
            if arr.ndim != len(shape):
                raise InputError(f"input `{name}` from {given[name]} has shape {list(arr.shape)} (rank {arr.ndim}), "
                                 f"the model expects {_show_shape(shape)} (rank {len(shape)})")
            for k, (d, n) in enumerate(zip(shape, arr.shape)):
                if isinstance(d, int) and d != n:
                    raise InputError(f"input `{name}` from {given[name]} has shape {list(arr.shape)}, the model "
                                     f"expects {_show_shape(shape)} (dim {k} must be {d})")
                if isinstance(d, str):
                    if d in bound and bound[d][0] != n:
                        raise InputError(f"input `{name}` has {d} = {n} (dim {k}) but `{bound[d][1]}` has "
                                         f"{d} = {bound[d][0]}")
                    bound.setdefault(d, (n, name))
            feeds[name] = arr
        else:
            size = []
            for k, d in enumerate(shape):
                if isinstance(d, int):
                    size.append(d)
                elif isinstance(d, str) and d in dims:
                    size.append(dims[d])
                elif k == 0:
                    size.append(1)            # the batch dim
                else:
                    raise InputError(f"input `{name}` has a symbolic dim {d or '?'} (dim {k}): give its size with "
                                     f"--dim {d or 'NAME'}=SIZE, or pass --input {name}=FILE.npy")
            if want.kind == "f":
                feeds[name] = rng.standard_normal(size).astype(want)
            elif want.kind == "b":
                feeds[name] = rng.random(size) > 0.5
            else:
                feeds[name] = rng.integers(0, 2, size).astype(want)
    return feeds


def _load_npy(path, name):
    import numpy as np
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"input `{name}`: file {path} not found") from None
    except (ValueError, OSError) as e:
        raise InputError(f"input `{name}`: {path} is not a .npy array file ({e})") from None


def _preview(y, k: int) -> str:
    import numpy as np
    flat = y.reshape(-1)
    if flat.size == 0:
        return "(empty)"
    vals = ", ".join(_fmt(v) for v in flat[:k]) + (", ..." if flat.size > k else "")
    stats = ""
    if y.dtype.kind in "fiu" and flat.size > 1:
        f = flat.astype(np.float64)
        stats = f"  min {_fmt(f.min())} max {_fmt(f.max())} mean {_fmt(f.mean())}"
    return f"[{vals}]{stats}"


def _fmt(v) -> str:
    if isinstance(v, (bool,)) or getattr(v, "dtype", None) is not None and v.dtype.kind == "b":
        return str(bool(v)).lower()
    if float(v).is_integer() and abs(float(v)) < 1e15 and getattr(v, "dtype", None) is not None \
            and v.dtype.kind in "iu":
        return str(int(v))
    return f"{float(v):.4g}"


def _safe(name: str) -> str:
    import re
    s = re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip(".")
    return s or "output"


def _save_npy(path, arr) -> None:
    import io

    import numpy as np

    from dslc.weights import atomic_write_bytes
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())
