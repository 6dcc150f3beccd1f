"""Sequence data: the classic long-memory benchmarks of recurrent networks (generated, seeded) and character-level
next-token windows from a text file.

    adding(n, length, seed)        Hochreiter & Schmidhuber's adding problem: x [N, length, 2] = (values in
                                   [0, 1], a marker that is 1 at two positions, one in each half); target [N, 1]
                                   the sum of the two marked values. Predicting the mean (1.0) scores an MSE of
                                   1/6 ~ 0.167; a network that remembers reaches ~0.
    copy(n, symbols, delay, seed)  the copy task (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016):
                                   `symbols` tokens from 1..8, `delay` blanks (0), a go marker (9), then
                                   `symbols` blanks during which the network must repeat the tokens. x one-hot
                                   [N, L, 10] with L = 2 symbols + delay + 1; target [N, L] class ids (0 = blank).
    text(path, seq_len, stride)    characters of a UTF-8 file (default: the corpus shipped in dslc/corpus/, the
                                   project's own documentation) as ids in a sorted vocabulary; x [N, seq_len]
                                   ids, target [N, seq_len] the next character at every position. The last 10 %
                                   of the text is the test split. The vocabulary is in `Dataset.info["vocab"]`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dslc.train.data import SOURCES, Dataset, DataError, Split, _gen

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "dslc_docs.txt"
VOCAB_KEY = "dslc.vocab"   # ONNX metadata: the characters of ids 0..V-1, written by `dslc train`, read by generate


def _positive(name: str, **values) -> None:
    for k, v in values.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise DataError(f"{name}: {k} must be a positive integer, got {v!r}")


def adding(n: int = 2000, length: int = 50, seed: int = 0) -> Dataset:
    _positive("adding", length=length)
    if length < 2:
        raise DataError("adding: length must be at least 2 (one marker in each half)")

    def make(rng, m):
        values = rng.uniform(0.0, 1.0, (m, length))
        half = length // 2
        first = rng.integers(0, half, m)
        second = rng.integers(half, length, m)
        marker = np.zeros((m, length))
        marker[np.arange(m), first] = 1.0
        marker[np.arange(m), second] = 1.0
        x = np.stack([values, marker], axis=-1).astype(np.float32)
        y = (values[np.arange(m), first] + values[np.arange(m), second]).reshape(m, 1).astype(np.float32)
        return x, y
    xtr, ytr, xte, yte = _gen("adding", n, seed, make)
    return Dataset("adding", Split([xtr], [ytr]), Split([xte], [yte]), task="regression",
                   info={"length": length, "baseline_mse": 1.0 / 6.0})


COPY_CLASSES = 10   # 0 blank, 1..8 symbols, 9 the go marker


def copy(n: int = 2000, symbols: int = 10, delay: int = 20, seed: int = 0) -> Dataset:
    _positive("copy", symbols=symbols, delay=delay)
    total = 2 * symbols + delay + 1

    def make(rng, m):
        seq = rng.integers(1, 9, (m, symbols))
        ids = np.zeros((m, total), np.int64)
        ids[:, :symbols] = seq
        ids[:, symbols + delay] = 9
        target = np.zeros((m, total), np.int64)
        target[:, total - symbols:] = seq
        x = np.eye(COPY_CLASSES, dtype=np.float32)[ids]
        return x, target
    xtr, ytr, xte, yte = _gen("copy", n, seed, make)
    return Dataset("copy", Split([xtr], [ytr]), Split([xte], [yte]), task="classification",
                   num_classes=COPY_CLASSES, info={"symbols": symbols, "delay": delay, "length": total,
                                                   "baseline": f"log(8) = {np.log(8):.3f} per copied symbol"})


def _read(path: str | None) -> tuple[Path, str]:
    p = Path(path) if path is not None else CORPUS
    try:
        return p, p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"text: {p} not found") from None
    except UnicodeDecodeError as e:
        raise DataError(f"text: {p} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise DataError(f"text: cannot read {p}: {e.strerror or e}") from None


def text_vocab(path: str | None = None) -> str:
    """The vocabulary text(path) uses: the file's distinct characters, sorted; id i is character i."""
    return "".join(sorted(set(_read(path)[1])))


def text(path: str | None = None, seq_len: int = 64, stride: int | None = None) -> Dataset:
    _positive("text", seq_len=seq_len)
    stride = seq_len if stride is None else stride
    _positive("text", stride=stride)
    p, chars = _read(path)
    vocab = sorted(set(chars))
    if len(chars) < 10 * (seq_len + 1):
        raise DataError(f"text: {p} has {len(chars)} characters; seq_len {seq_len} needs at least "
                        f"{10 * (seq_len + 1)} (ten windows)")
    index = {c: i for i, c in enumerate(vocab)}
    ids = np.fromiter((index[c] for c in chars), np.int64, len(chars))
    cut = int(len(ids) * 0.9)

    def windows(a):
        starts = np.arange(0, len(a) - seq_len - 1, stride)
        x = np.stack([a[s:s + seq_len] for s in starts])
        y = np.stack([a[s + 1:s + seq_len + 1] for s in starts])
        return x, y
    xtr, ytr = windows(ids[:cut])
    xte, yte = windows(ids[cut:])
    return Dataset(f"text({p.name})", Split([xtr], [ytr]), Split([xte], [yte]), task="classification",
                   num_classes=len(vocab), info={"path": str(p), "vocab": "".join(vocab), "seq_len": seq_len,
                                                 "characters": len(chars)})


# registered here, not in data.py, so that importing this module first works too
SOURCES.update(adding=adding, copy=copy, text=text)
