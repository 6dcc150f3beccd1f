"""Training data: built-in generated sets, MNIST (IDX files), `.npz` and CSV files; fitting them to a network;
validation split, shuffling, mini-batches.

Sources (the names of a `.net` file's `data = ...` and of `dslc train --data SPEC`):

    linear2d(n, seed)        two classes of 2-D points separated by the line x2 = 0.5 x1 + 0.1 (a margin of 0.05
                             kept clear), points uniform in [-1, 1]^2; labels 0/1
    nonseparable2d(n, seed)  2-D points in [-0.5, 2] x [-0.5, 3], positive when
                             100 (x2 - x1^2)^2 + (1 - x1)^2 < 0.5 (the Rosenbrock banana); half of the points are
                             drawn inside it, so the classes are balanced; labels 0/1
    rosenbrock(n, seed)      regression of z = 100 (x2 - x1^2)^2 + (1 - x1)^2 on [-1, 1]^2, z standardised
                             (zero mean, unit variance over the generating distribution's sample; the scale is in
                             `Dataset.info`)
    sinxsiny(n, seed, extent) regression of z = sin(x) sin(y) on [-extent, extent]^2 (default pi)
    mnist(dir, train)        IDX files (gzip or raw) from dir (default $DSLC_DATA_DIR/mnist, DSLC_DATA_DIR
                             defaulting to ../shared/data from the working directory, then beside the repo).
                             With train-* files: those train and t10k-* test. With only t10k-*: the first
                             `train` (8,000) images train and the rest (2,000) test. Pixels scaled to [0, 1].
    npz(path)                arrays x / y (or x_train, y_train, x_test, y_test; or x0, x1, ... / y0, ...),
                             read with allow_pickle=False
    csv(path, target=-1)     numeric CSV, optional header row; `target` = the label column (index or name),
                             the other columns are the features
    images(path, augment, mean, std)  an ImageFolder directory, decoded batch by batch: dslc/train/image_data.py
    npy(x, y)                a memory-mapped .npy pair, read batch by batch: dslc/train/streaming.py
    adding, copy, text       sequence data: dslc/train/sequence_data.py

Generated sets also hold a test split of n // 4 samples drawn from an independent stream of the same seed.
`fit_to_graph` checks a dataset against the network before training starts (sample shape, dtype, number of
classes) and reshapes / casts what can be converted without guessing; what cannot fit is a DataError.
"""
from __future__ import annotations

import csv as _csv
import gzip
import io
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dslc.train.streaming import LazyArray, gather, is_lazy, prefetched
from dslc.types import NUMPY_DTYPE
from dslc.weights import load_weights


class DataError(ValueError):
    """Data that cannot be read, or does not fit the network; the message is meant for the user."""


@dataclass
class Split:
    xs: list[np.ndarray]   # one array per network input, samples along axis 0
    ys: list[np.ndarray]   # one array per target

    def __len__(self) -> int:
        return len(self.xs[0]) if self.xs else 0

    def take(self, idx) -> "Split":
        return Split([x[idx] for x in self.xs], [y[idx] for y in self.ys])


@dataclass
class Dataset:
    name: str
    train: Split
    test: Split | None = None
    val: Split | None = None
    task: str | None = None          # "classification" | "regression" | None (unknown)
    num_classes: int | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        parts = [f"{len(self.train)} train"]
        if self.val is not None:
            parts.append(f"{len(self.val)} validation")
        if self.test is not None:
            parts.append(f"{len(self.test)} test")
        return f"{self.name}: " + ", ".join(parts)


# ---------------------------------------------------------------------------------------- generated sets
def _test_count(n: int) -> int:
    return max(n // 4, 1)


def _gen(name: str, n: int, seed: int, fn) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test) from fn(rng, count), train and test from independent streams."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 2:
        raise DataError(f"{name}: n must be an integer >= 2, got {n!r}")
    rng_train = np.random.default_rng([int(seed), 0])
    rng_test = np.random.default_rng([int(seed), 1])
    xtr, ytr = fn(rng_train, n)
    xte, yte = fn(rng_test, _test_count(n))
    return xtr, ytr, xte, yte


def linear2d(n: int = 200, seed: int = 0, margin: float = 0.05) -> Dataset:
    """Two linearly separable classes: label 1 above the line x2 = 0.5 x1 + 0.1."""
    def make(rng, m):
        out = np.empty((0, 2))
        while len(out) < m:
            p = rng.uniform(-1.0, 1.0, (2 * m, 2))
            d = (p[:, 1] - 0.5 * p[:, 0] - 0.1) / np.hypot(0.5, 1.0)
            out = np.concatenate([out, p[np.abs(d) > margin]])
        out = out[:m]
        y = (out[:, 1] > 0.5 * out[:, 0] + 0.1).astype(np.int64)
        return out.astype(np.float32), y
    xtr, ytr, xte, yte = _gen("linear2d", n, seed, make)
    return Dataset("linear2d", Split([xtr], [ytr]), Split([xte], [yte]), task="classification", num_classes=2,
                   info={"boundary": "x2 = 0.5 x1 + 0.1"})


def rosenbrock_fn(x1, x2):
    return 100.0 * (x2 - x1 ** 2) ** 2 + (1.0 - x1) ** 2


def nonseparable2d(n: int = 400, seed: int = 0) -> Dataset:
    """Positive inside the Rosenbrock valley (f < 0.5): not linearly separable; classes balanced."""
    lo, hi = np.array([-0.5, -0.5]), np.array([2.0, 3.0])

    def make(rng, m):
        n_pos = m // 2
        pos, neg = [], []
        got_pos = got_neg = 0
        while got_pos < n_pos or got_neg < m - n_pos:
            p = rng.uniform(lo, hi, (max(8 * m, 1024), 2))
            inside = rosenbrock_fn(p[:, 0], p[:, 1]) < 0.5
            pos.append(p[inside])
            neg.append(p[~inside])
            got_pos += int(inside.sum())
            got_neg += int((~inside).sum())
        x = np.concatenate([np.concatenate(pos)[:n_pos], np.concatenate(neg)[:m - n_pos]])
        y = np.concatenate([np.ones(n_pos, np.int64), np.zeros(m - n_pos, np.int64)])
        order = rng.permutation(m)
        return x[order].astype(np.float32), y[order]
    xtr, ytr, xte, yte = _gen("nonseparable2d", n, seed, make)
    return Dataset("nonseparable2d", Split([xtr], [ytr]), Split([xte], [yte]), task="classification",
                   num_classes=2, info={"positive": "100 (x2 - x1^2)^2 + (1 - x1)^2 < 0.5"})


def rosenbrock(n: int = 400, seed: int = 0, standardize: bool = True) -> Dataset:
    """Regression of the Rosenbrock function on [-1, 1]^2 (targets standardised by default)."""
    def make(rng, m):
        x = rng.uniform(-1.0, 1.0, (m, 2))
        return x.astype(np.float32), rosenbrock_fn(x[:, 0], x[:, 1]).reshape(m, 1)
    xtr, ytr, xte, yte = _gen("rosenbrock", n, seed, make)
    info = {"function": "100 (x2 - x1^2)^2 + (1 - x1)^2", "domain": [[-1, 1], [-1, 1]]}
    if standardize:
        mean, std = float(ytr.mean()), float(ytr.std()) or 1.0
        ytr, yte = (ytr - mean) / std, (yte - mean) / std
        info.update(target_mean=mean, target_std=std)
    return Dataset("rosenbrock", Split([xtr], [ytr.astype(np.float32)]), Split([xte], [yte.astype(np.float32)]),
                   task="regression", info=info)


def sinxsiny(n: int = 400, seed: int = 0, extent: float = np.pi) -> Dataset:
    """Regression of z = sin(x) sin(y) on [-extent, extent]^2 (default [-pi, pi]^2: two periods)."""
    if not extent > 0:
        raise DataError(f"sinxsiny: extent must be positive, got {extent!r}")

    def make(rng, m):
        x = rng.uniform(-extent, extent, (m, 2))
        return x.astype(np.float32), (np.sin(x[:, 0]) * np.sin(x[:, 1])).reshape(m, 1).astype(np.float32)
    xtr, ytr, xte, yte = _gen("sinxsiny", n, seed, make)
    return Dataset("sinxsiny", Split([xtr], [ytr]), Split([xte], [yte]), task="regression",
                   info={"function": "sin(x) sin(y)", "domain": [[-extent, extent]] * 2})


# ---------------------------------------------------------------------------------------- MNIST / IDX
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX file (as in MNIST), raw or gzip-compressed (detected from the content)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(f"{path}: broken gzip data ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:head])
    dt = np.dtype(_IDX_DTYPES[raw[2]])
    count = int(np.prod(dims)) if dims else 1
    if len(raw) - head < count * dt.itemsize:
        raise DataError(f"{path}: truncated IDX data (header says {list(dims)}, file holds "
                        f"{(len(raw) - head) // dt.itemsize} values)")
    arr = np.frombuffer(raw, dt, count, head).reshape(dims)
    return arr.astype(dt.newbyteorder("=")) if dt.byteorder == ">" else arr.copy()


def data_dir() -> Path:
    """$DSLC_DATA_DIR, else ../shared/data from the working directory, else ../shared/data beside the repo."""
    env = os.environ.get("DSLC_DATA_DIR")
    if env:
        return Path(env)
    cwd = Path.cwd() / ".." / "shared" / "data"
    if cwd.is_dir():
        return cwd
    repo = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
    if repo.is_dir():
        return repo.resolve()
    return cwd


def default_mnist_dir() -> Path:
    return data_dir() / "mnist"


def _find(d: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (d / name).is_file():
            return d / name
    return None


def mnist(dir: str | os.PathLike | None = None, train: int = 8000) -> Dataset:
    d = Path(dir) if dir else default_mnist_dir()
    if not d.is_dir():
        raise DataError(f"MNIST directory {d} not found" + ("" if dir else
                        "; set DSLC_DATA_DIR or use mnist(dir=...) / --data mnist:DIR"))
    files = {k: _find(d, k) for k in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                      "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}

    def load(img, lab):
        x = read_idx(files[img])
        y = read_idx(files[lab])
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{d}: {files[img].name} {list(x.shape)} and {files[lab].name} {list(y.shape)} do not "
                            f"form an image set (expected [n, rows, cols] images and [n] labels)")
        return (x.astype(np.float32) / np.float32(255.0)), y.astype(np.int64)

    have_test = files["t10k-images-idx3-ubyte"] and files["t10k-labels-idx1-ubyte"]
    have_train = files["train-images-idx3-ubyte"] and files["train-labels-idx1-ubyte"]
    if have_train:
        xtr, ytr = load("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
        test = Split(*[[a] for a in load("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")]) if have_test else None
        if train and train < len(xtr):
            xtr, ytr = xtr[:train], ytr[:train]
        info = {"dir": str(d), "split": "train-* / t10k-*"}
    elif have_test:
        x, y = load("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
        if not 0 < train < len(x):
            raise DataError(f"mnist: train={train} must be between 1 and {len(x) - 1} (only the {len(x)} t10k "
                            f"images are in {d})")
        xtr, ytr, test = x[:train], y[:train], Split([x[train:]], [y[train:]])
        info = {"dir": str(d), "split": f"t10k first {train} train / last {len(x) - train} test"}
    else:
        raise DataError(f"no MNIST IDX files in {d} (expected t10k-images-idx3-ubyte[.gz] and "
                        f"t10k-labels-idx1-ubyte[.gz], optionally train-*)")
    return Dataset("mnist", Split([xtr], [ytr]), test, task="classification", num_classes=10, info=info)


# ---------------------------------------------------------------------------------------- files
def _numbered(z, prefix):
    keys = sorted((k for k in z if k[len(prefix):].isdigit() and k.startswith(prefix)),
                  key=lambda k: int(k[len(prefix):]))
    return [z[k] for k in keys]


def npz(path: str | os.PathLike) -> Dataset:
    p = Path(path)
    try:
        z = load_weights(p)  # any .npz, read without pickle
    except FileNotFoundError:
        raise DataError(f"data file {p} not found") from None
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {p} as .npz ({e})") from None

    def pick(*names):
        for nm in names:
            if nm in z:
                return [z[nm]]
        return None
    xtr = pick("x", "x_train") or _numbered(z, "x") or None
    ytr = pick("y", "y_train") or _numbered(z, "y") or None
    if not xtr or not ytr:
        raise DataError(f"{p} holds {sorted(z) or 'no arrays'}; expected arrays `x` and `y` "
                        f"(or x_train / y_train, or x0, x1, ... / y0, ...)")
    xte, yte = pick("x_test"), pick("y_test")
    test = Split(xte, yte) if xte and yte else None
    for a in xtr + ytr:
        if a.dtype.kind not in "biuf":
            raise DataError(f"{p}: arrays must be numeric, got dtype {a.dtype}")
    n = {len(a) for a in xtr + ytr}
    if len(n) != 1:
        raise DataError(f"{p}: x and y hold different numbers of samples ({sorted(n)})")
    return Dataset(p.name, Split(list(xtr), list(ytr)), test, info={"path": str(p)})


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def csv(path: str | os.PathLike, target: int | str = -1) -> Dataset:
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise DataError(f"data file {p} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {p}: {e}") from None
    rows = [r for r in _csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
    if not rows:
        raise DataError(f"{p} is empty")
    header = None
    if not all(_is_number(c) for c in rows[0]):
        header, rows = [c.strip() for c in rows[0]], rows[1:]
    if not rows:
        raise DataError(f"{p} has a header but no data rows")
    width = len(rows[0])
    for i, r in enumerate(rows):
        if len(r) != width:
            raise DataError(f"{p}:{i + 1 + (header is not None)}: {len(r)} columns, expected {width}")
    try:
        table = np.array([[float(c) for c in r] for r in rows], dtype=np.float64)
    except ValueError as e:
        raise DataError(f"{p}: non-numeric value ({e})") from None
    if isinstance(target, str) and not target.lstrip("-").isdigit():
        if header is None or target not in header:
            raise DataError(f"{p}: no column named `{target}`" + (f" (columns: {', '.join(header)})" if header else
                                                                   " (the file has no header row)"))
        t = header.index(target)
    else:
        t = int(target)
        if not -width <= t < width:
            raise DataError(f"{p}: target column {t} is out of range for {width} columns")
        t %= width
    y = table[:, t]
    x = np.delete(table, t, axis=1).astype(np.float32)
    y = y.astype(np.int64) if np.all(y == np.round(y)) else y.astype(np.float32)
    return Dataset(p.name, Split([x], [y]), info={"path": str(p), "target_column": t})


# ---------------------------------------------------------------------------------------- specs
SOURCES = {"linear2d": linear2d, "nonseparable2d": nonseparable2d, "rosenbrock": rosenbrock,
           "sinxsiny": sinxsiny, "mnist": mnist, "npz": npz, "csv": csv}
from dslc.train import sequence_data as _seq  # noqa: E402,F401  (it builds on the classes above; registers adding, copy, text)
from dslc.train import image_data as _img, streaming as _stream  # noqa: E402

SOURCES.update(images=_img.images, npy=_stream.npy)


def _parse_value(v: str):
    low = v.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(v)
    except ValueError:
        pass
    try:
        return float(v)
    except ValueError:
        return v


def parse_spec(spec: str) -> dict:
    """--data SPEC: `mnist`, `mnist:DIR`, `linear2d:n=500,seed=1`, `file.npz`, `file.csv`, `csv:file.csv,target=3`,
    `images:DIR`, `npy:X.npy,Y.npy`, a directory (MNIST IDX files)."""
    spec = spec.strip()
    name, sep, rest = spec.partition(":")
    if name in SOURCES:
        out: dict[str, Any] = {"name": name}
        for i, part in enumerate(p for p in rest.split(",") if p) if sep else ():
            k, eq, v = part.partition("=")
            if not eq:
                if i == 0:  # the positional argument: a dir / path
                    out["dir" if name == "mnist" else "x" if name == "npy" else "path"] = k
                    continue
                if i == 1 and name == "npy":
                    out["y"] = k
                    continue
                raise DataError(f"--data {spec}: expected key=value, got `{part}`")
            out[k.strip()] = _parse_value(v.strip())
        return out
    p = Path(spec)
    if p.suffix.lower() == ".npz":
        return {"name": "npz", "path": spec}
    if p.suffix.lower() == ".csv":
        return {"name": "csv", "path": spec}
    if p.is_dir():
        return {"name": "mnist", "dir": spec}
    raise DataError(f"unknown data `{spec}`: give a built-in set ({', '.join(SOURCES)}), a .npz or .csv file, or "
                    f"an MNIST directory")


def load_data(spec: dict | str) -> Dataset:
    """A dataset from a train-section dict ({"name": "mnist", ...}) or a --data string."""
    if isinstance(spec, str):
        spec = parse_spec(spec)
    spec = {k: v for k, v in dict(spec).items() if k != "kind"}
    name = spec.pop("name", None)
    fn = SOURCES.get(name)
    if fn is None:
        raise DataError(f"unknown data source `{name}` (known: {', '.join(SOURCES)})")
    spec = {k: v for k, v in spec.items() if v is not None}
    try:
        return fn(**spec)
    except TypeError as e:
        raise DataError(f"data {name}: {e}") from None


# ---------------------------------------------------------------------------------------- fitting
def _shape_txt(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _fit_array(arr: np.ndarray, ttype, role: str, name: str, src: str) -> np.ndarray:
    if isinstance(arr, LazyArray):
        arr = arr.for_input(ttype, f"{role} `{name}`", src)   # an image folder decodes to the input's shape
    want_dtype = np.dtype(NUMPY_DTYPE[ttype.dtype])
    sample = tuple(ttype.shape[1:])
    got = tuple(arr.shape[1:])
    if isinstance(arr, LazyArray):   # streamed data: checked from its shape, converted batch by batch
        if ttype.dtype in ("i64", "i32") and arr.dtype.kind not in "biu":
            raise DataError(f"{role} `{name}` is {ttype}, the data `{src}` gives {arr.dtype}")
        return arr.fit(sample, want_dtype, lambda g_: DataError(
            f"{role} `{name}` takes samples of shape {_shape_txt(sample)} ({ttype} with the batch dim first), but "
            f"the data `{src}` gives samples of shape {_shape_txt(g_)}"))
    if ttype.dtype in ("i64", "i32"):
        if arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
                raise DataError(f"{role} `{name}` is {ttype}: integer class labels, but the data `{src}` gives "
                                f"non-integer values (e.g. {_first_fraction(arr)!r})")
        elif arr.dtype.kind not in "biu":
            raise DataError(f"{role} `{name}` is {ttype}, the data `{src}` gives {arr.dtype}")
    elif ttype.dtype == "bool":
        pass
    elif arr.dtype.kind not in "biuf":
        raise DataError(f"{role} `{name}` is {ttype}, the data `{src}` gives {arr.dtype}")
    if got != sample:
        known = all(isinstance(d, int) for d in sample)
        size = int(np.prod(got)) if got else 1
        if known and (int(np.prod(sample)) if sample else 1) == size:
            arr = arr.reshape((len(arr),) + sample)
        elif not known and len(got) == len(sample) and all(
                not isinstance(d, int) or d == g_ for d, g_ in zip(sample, got)):
            pass
        else:
            raise DataError(f"{role} `{name}` takes samples of shape {_shape_txt(sample)} "
                            f"({ttype} with the batch dim first), but the data `{src}` gives samples of shape "
                            f"{_shape_txt(got)} ({size} values)")
    return np.ascontiguousarray(arr, dtype=want_dtype)


def _first_fraction(arr: np.ndarray) -> float:
    flat = arr.reshape(-1)
    return float(flat[np.argmax(~np.isfinite(flat) | (flat != np.round(flat)))])


def fit_to_graph(ds: Dataset, g) -> Dataset:
    """Check / convert a dataset for a graph's inputs and targets (in order). Raises DataError."""
    inputs = list(g.graph.get("inputs") or [])
    targets = list(g.graph.get("targets") or [])
    src = ds.name
    if len(ds.train.xs) != len(inputs):
        raise DataError(f"network `{g.graph.get('name')}` has {len(inputs)} input(s) "
                        f"({', '.join(inputs)}), the data `{src}` gives {len(ds.train.xs)}")
    if len(ds.train.ys) < len(targets):
        raise DataError(f"the train section declares {len(targets)} target(s) ({', '.join(targets)}), the data "
                        f"`{src}` gives {len(ds.train.ys)}")
    num_classes = classes_per_target(g)

    def fit(split: Split | None) -> Split | None:
        if split is None:
            return None
        xs = [_fit_array(a, g.nodes[n]["outputs"][0], "input", n, src) for a, n in zip(split.xs, inputs)]
        ys = []
        for a, n in zip(split.ys, targets):
            t = g.nodes[n]["outputs"][0]
            loss_op, c = num_classes.get(n, (None, None))
            float_target = t.dtype in ("f32", "f64")
            if c is not None and a.dtype.kind in "iu" and a.ndim == 1:
                _check_labels(a, c, n, src, g)
                if float_target and loss_op == "cross_entropy" and tuple(t.shape[1:]) == (c,):
                    a = np.eye(c, dtype=np.float32)[a]    # class indices -> one-hot for a float target
            if loss_op is not None and ds.task == "regression":
                raise DataError(f"the data `{src}` is a regression set (real-valued targets), but target `{n}` "
                                f"feeds the classification loss {loss_op}")
            y = _fit_array(a, t, "target", n, src)
            if isinstance(y, LazyArray):
                pass   # streamed targets are not read up front (1-D labels of npy / images are in memory)
            elif c is not None and not float_target:
                _check_labels(y, c, n, src, g)
            elif loss_op is not None and y.size and (float(y.min()) < 0 or float(y.max()) > 1):
                raise DataError(f"target `{n}` feeds {loss_op}, which needs "
                                f"{'0/1 labels or probabilities' if loss_op == 'bce' else 'class probabilities'} "
                                f"in [0, 1]; the data `{src}` gives values in [{float(y.min()):g}, {float(y.max()):g}]")
            ys.append(y)
        return Split(xs, ys)

    out = Dataset(ds.name, fit(ds.train), fit(ds.test), fit(ds.val), ds.task, ds.num_classes, dict(ds.info))
    for n in inputs:
        t = g.nodes[n]["outputs"][0]
        if t.shape and isinstance(t.shape[0], int):
            out.info.setdefault("fixed_batch", {})[n] = t.shape[0]
    return out


def _check_labels(y: np.ndarray, c: int, name: str, src: str, g) -> None:
    if y.size == 0:
        return
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= c:
        raise DataError(f"the data `{src}` has class labels {lo}..{hi} ({hi + 1} classes) but the network "
                        f"`{g.graph.get('name')}` predicts {c} classes for target `{name}`" +
                        (" (bce needs 0/1 labels)" if c == 2 else ""))


def classes_per_target(g) -> dict[str, tuple[str, int]]:
    """target name -> (loss op, number of classes) for targets of classification losses (cross_entropy: the
    logits' class dim; bce: 2, labels 0/1)."""
    out = {}
    for n in g:
        nd = g.nodes[n]
        if nd.get("role") != "loss" or nd["op"] not in ("cross_entropy", "bce"):
            continue
        (lsrc, li), (tsrc, ti) = nd["inputs"][:2]
        if tsrc not in (g.graph.get("targets") or []):
            continue
        logits = g.nodes[lsrc]["outputs"][li]
        axis = -1 if nd["attrs"].get("class_last") else 1    # sequence logits [N, T, V] are read class-last
        if nd["op"] == "cross_entropy" and logits.rank >= 2 and isinstance(logits.shape[axis], int):
            out[tsrc] = ("cross_entropy", logits.shape[axis])
        elif nd["op"] == "bce":
            out[tsrc] = ("bce", 2)
    return out


def split_validation(ds: Dataset, fraction: float, seed: int) -> Dataset:
    """Hold out `fraction` of the training samples (a seeded shuffle) as the validation split."""
    if not fraction:
        return ds
    n = len(ds.train)
    k = int(round(n * fraction))
    if k < 1 or k >= n:
        raise DataError(f"val_split={fraction} of {n} training samples leaves {n - k} to train and {k} to validate")
    perm = np.random.default_rng([int(seed), 7]).permutation(n)
    return Dataset(ds.name, ds.train.take(np.sort(perm[k:])), ds.test, ds.train.take(np.sort(perm[:k])),
                   ds.task, ds.num_classes, dict(ds.info))


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The sample order of one epoch: a function of (seed, epoch) only, so a resumed run sees the same batches."""
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([int(seed), 1000 + int(epoch)]).permutation(n)


def batches(split: Split, order: np.ndarray, batch_size: int, start: int = 0, augment_key=None):
    """Yield (batch index, xs, ys) from batch `start` on; the last batch may be smaller. Streamed splits
    (dslc/train/streaming.py) are read by a background thread a batch ahead; `augment_key` = (seed, epoch) turns
    on their random train-time augmentations (None: evaluation)."""
    def make():
        for b in range(start, num_batches(len(order), batch_size)):
            idx = order[b * batch_size:(b + 1) * batch_size]
            yield (b, [gather(x, idx, augment_key) for x in split.xs],
                   [gather(y, idx, augment_key) for y in split.ys])
    return prefetched(make()) if is_lazy(split) else make()


def num_batches(n: int, batch_size: int) -> int:
    return -(-n // batch_size)
