"""Data too large to hold in memory: array-likes read one batch at a time, and a background prefetch thread.

A `LazyArray` stands in for a split's numpy array (samples along axis 0) in `Split.xs` / `Split.ys`. It knows
its shape and dtype without reading the data, `fit(...)` checks it against a network input and returns a lazy
array that reshapes / casts each batch on the way out (`data.fit_to_graph` calls it instead of converting the
whole array), `subset(idx)` is a lazy selection (the validation split), and `batch(idx, key)` reads the samples
`idx` as one numpy array; `key` is (seed, epoch) for a training batch, which random augmentations are a
function of (and of the sample index), or None for evaluation (no augmentation). `np.asarray(lazy)` reads it
all: for consumers that want a small array (calibration samples).

`npy(x, y)` memory-maps a `.npy` pair; `image_data.images(...)` decodes an image folder.
"""
from __future__ import annotations

import queue
import threading
from pathlib import Path

import numpy as np


class LazyArray:
    shape: tuple
    dtype: np.dtype

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def batch(self, idx: np.ndarray, key=None) -> np.ndarray:
        raise NotImplementedError

    def for_input(self, ttype, what: str, src: str) -> "LazyArray":
        """This array as the network input `ttype` wants it (an image folder picks its decode size); as is here."""
        return self

    def subset(self, idx) -> "LazyArray":
        return Subset(self, np.arange(len(self))[idx])

    def fit(self, sample_shape: tuple, dtype: np.dtype, describe) -> "LazyArray":
        """Check the samples against `sample_shape` (ints, or names for symbolic dims); `describe(got)` gives the
        DataError to raise. Same total size: reshaped per batch."""
        got = tuple(self.shape[1:])
        if got == tuple(sample_shape):
            return self if self.dtype == np.dtype(dtype) else Cast(self, got, dtype)
        known = all(isinstance(d, int) for d in sample_shape)
        if known and int(np.prod(sample_shape, dtype=np.int64)) == int(np.prod(got, dtype=np.int64)):
            return Cast(self, tuple(sample_shape), dtype)
        if not known and len(got) == len(sample_shape) and all(
                not isinstance(d, int) or d == g for d, g in zip(sample_shape, got)):
            return Cast(self, got, dtype)
        raise describe(got)

    def __getitem__(self, idx):
        if isinstance(idx, (int, np.integer)):
            return self.batch(np.array([idx]))[0]
        return self.subset(idx)

    def __array__(self, dtype=None, copy=None):
        out = self.batch(np.arange(len(self)))
        return out if dtype is None else out.astype(dtype)


class Subset(LazyArray):
    def __init__(self, base: LazyArray, index: np.ndarray):
        self.base, self.index = base, np.asarray(index, dtype=np.int64)
        self.shape, self.dtype = (len(self.index),) + tuple(base.shape[1:]), base.dtype

    def batch(self, idx, key=None):
        return self.base.batch(self.index[idx], key)

    def fit(self, sample_shape, dtype, describe):
        return Subset(self.base.fit(sample_shape, dtype, describe), self.index)

    def for_input(self, ttype, what, src):
        return Subset(self.base.for_input(ttype, what, src), self.index)


class Cast(LazyArray):
    """Each batch of `base` reshaped to `sample_shape` and cast to `dtype` (what fit_to_graph does to arrays)."""

    def __init__(self, base: LazyArray, sample_shape: tuple, dtype):
        self.base, self.dtype = base, np.dtype(dtype)
        self.shape = (len(base),) + tuple(sample_shape)

    def batch(self, idx, key=None):
        out = self.base.batch(idx, key)
        return np.ascontiguousarray(out.reshape((len(out),) + self.shape[1:]), dtype=self.dtype)


class Mapped(LazyArray):
    """A memory-mapped .npy array: a batch reads only its rows (sorted, so the reads go forward in the file)."""

    def __init__(self, arr: np.memmap, path: Path):
        self.arr, self.path = arr, path
        self.shape, self.dtype = tuple(arr.shape), arr.dtype

    def batch(self, idx, key=None):
        idx = np.asarray(idx, dtype=np.int64)
        order = np.argsort(idx, kind="stable")
        out = np.empty((len(idx),) + self.shape[1:], self.dtype)
        out[order] = self.arr[idx[order]]
        return out


def gather(x, idx: np.ndarray, key=None) -> np.ndarray:
    """Rows `idx` of a split's array, lazy or not."""
    if isinstance(x, LazyArray):
        return x.batch(idx, key)
    # np.take along axis 0 is the same gather as x[idx], without fancy indexing's general machinery
    # (a 64-row MNIST batch: 27 -> 17 us)
    return np.take(x, idx, axis=0)


def is_lazy(split) -> bool:
    return split is not None and any(isinstance(a, LazyArray) for a in list(split.xs) + list(split.ys))


def prefetched(gen, depth: int = 2):
    """Yield what `gen` yields, produced `depth` items ahead by a background thread (decoding the next batches
    while the network trains on this one). An exception in `gen` is raised here; closing this generator (the
    consumer stopped early) stops the thread."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce():
        try:
            for item in gen:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((done, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer's thread, which raises it
            q.put((done, e))

    t = threading.Thread(target=produce, name="dslc-prefetch", daemon=True)
    t.start()
    try:
        while True:
            item, err = q.get()
            if item is done:
                if err is not None:
                    raise err
                return
            yield item
    finally:
        stop.set()
        while t.is_alive():   # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                pass
            t.join(timeout=0.05)


# ---------------------------------------------------------------------------------------- npy pairs
def npy(x: str, y: str):
    """Memory-mapped `x.npy` (samples along axis 0) and `y.npy` (labels or targets): nothing is read up front
    but the headers, and each batch reads its rows. 1-D integer labels are read into memory (to check their range
    against the network's classes: n int64 values, small next to the samples)."""
    from dslc.train.data import DataError, Dataset, Split
    arrays = []
    for p in (Path(x), Path(y)):
        try:
            a = np.load(p, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise DataError(f"data file {p} not found") from None
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read {p} as a .npy array ({e})") from None
        if not isinstance(a, np.ndarray) or a.dtype.kind not in "biuf":
            raise DataError(f"{p}: expected a numeric .npy array, got "
                            f"{getattr(a, 'dtype', type(a).__name__)}")
        if a.ndim == 0:
            raise DataError(f"{p}: a scalar; expected samples along axis 0")
        arrays.append((a, p))
    (xa, xp), (ya, yp) = arrays
    if len(xa) != len(ya):
        raise DataError(f"{xp} holds {len(xa)} samples, {yp} holds {len(ya)}")
    labels = np.asarray(ya) if ya.ndim == 1 else Mapped(ya, yp)
    return Dataset(f"npy({xp}, {yp})", Split([Mapped(xa, xp)], [labels]), info={"x": str(xp), "y": str(yp)})
