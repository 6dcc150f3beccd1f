"""Sequence data sources: the adding problem, the copy task, character windows of a text file."""
from __future__ import annotations

import numpy as np
import pytest

import dslc
from dslc.train import data as D
from dslc.train.sequence_data import CORPUS


def test_adding_problem_layout_and_baseline():
    ds = D.load_data({"name": "adding", "n": 4000, "length": 12, "seed": 3})
    x, y = ds.train.xs[0], ds.train.ys[0]
    assert x.shape == (4000, 12, 2) and y.shape == (4000, 1) and x.dtype == np.float32
    marker = x[:, :, 1]
    assert np.all(marker.sum(axis=1) == 2)
    assert np.all(marker[:, :6].sum(axis=1) == 1) and np.all(marker[:, 6:].sum(axis=1) == 1)
    np.testing.assert_allclose(y[:, 0], (x[:, :, 0] * marker).sum(axis=1), rtol=1e-6)
    assert np.mean((y - 1.0) ** 2) == pytest.approx(1 / 6, abs=0.015)   # predicting the mean
    again = D.load_data("adding:n=4000,length=12,seed=3")
    np.testing.assert_array_equal(again.train.xs[0], x)
    assert len(ds.test) == 1000 and not np.array_equal(ds.test.xs[0][:10], x[:10])


def test_copy_task_layout():
    ds = D.load_data({"name": "copy", "n": 50, "symbols": 4, "delay": 3})
    x, y = ds.train.xs[0], ds.train.ys[0]
    assert x.shape == (50, 12, 10) and y.shape == (50, 12) and y.dtype == np.int64
    ids = x.argmax(-1)
    assert np.all(x.sum(-1) == 1)
    assert np.all((ids[:, :4] >= 1) & (ids[:, :4] <= 8)) and np.all(ids[:, 4:7] == 0) and np.all(ids[:, 7] == 9)
    np.testing.assert_array_equal(y[:, 8:], ids[:, :4])
    assert np.all(y[:, :8] == 0)
    assert ds.num_classes == 10


def test_text_windows(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("abcab" * 100, encoding="utf-8")
    ds = D.load_data({"name": "text", "path": str(f), "seq_len": 8})
    assert ds.info["vocab"] == "abc" and ds.num_classes == 3
    x, y = ds.train.xs[0], ds.train.ys[0]
    assert x.shape[1] == 8 and x.dtype == np.int64
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])        # the target is the next character
    text = "abcab" * 100
    assert "".join("abc"[i] for i in x[1]) == text[8:16]


def test_text_uses_the_shipped_corpus():
    assert CORPUS.is_file()
    ds = D.load_data({"name": "text", "seq_len": 32})
    assert len(ds.train) > 1000 and len(ds.test) > 100
    assert "|" in ds.info["vocab"] and ds.num_classes == len(ds.info["vocab"])


@pytest.mark.parametrize("spec, message", [
    ({"name": "text", "path": "/nowhere.txt"}, "not found"),
    ({"name": "adding", "length": 1}, "at least 2"),
    ({"name": "copy", "symbols": 0}, "positive integer"),
])
def test_bad_specs(spec, message):
    with pytest.raises(D.DataError, match=message):
        D.load_data(spec)


def test_text_refuses_binary_and_short_files(tmp_path):
    bad = tmp_path / "b.txt"
    bad.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(D.DataError, match="not UTF-8"):
        D.load_data({"name": "text", "path": str(bad)})
    short = tmp_path / "s.txt"
    short.write_text("tiny")
    with pytest.raises(D.DataError, match="ten windows"):
        D.load_data({"name": "text", "path": str(short), "seq_len": 8})


def test_a_train_section_reads_the_adding_problem(tmp_path):
    src = tmp_path / "add.net"
    src.write_text("network adder(x: f32[N, 10, 2]) {\n    y = x |> flatten |> linear(16) |> relu |> linear(1)\n"
                   "    return y\n}\ntrain {\n    target s: f32[N, 1]\n    loss = mse(y, s)\n"
                   "    data = adding(n=512, length=10)\n    epochs = 3\n}\n")
    prog = dslc.load(src)
    assert prog.ok, prog.diagnostics.render_all()
    r = dslc.train(prog, quiet=True)
    losses = [h["loss"] for h in r.history if h.get("kind") == "epoch"]
    assert losses[-1] < losses[0]


def test_sequence_logits_train_with_a_vocabulary_larger_than_the_context(tmp_path):
    """[N, T, V] logits with [N, T] targets: the class count and the accuracy are read along V (class-last),
    also when T is fixed and smaller than V; text(stride=) is an integer in a train section."""
    text = tmp_path / "t.txt"
    text.write_text("abcdefghijklmnopqrstuvwxyz" * 40, encoding="utf-8")
    src = tmp_path / "lm.net"
    src.write_text("network lm(tokens: i64[N, 8]) {\n    logits = tokens |> embedding(26, 8) |> linear(26)\n"
                   "    return logits\n}\ntrain {\n    target next: i64[N, 8]\n    loss = cross_entropy(logits, next)\n"
                   f"    optimizer = adam(lr=0.05)\n    data = text(\"{text}\", seq_len=8, stride=3)\n"
                   "    epochs = 4\n    batch_size = 16\n}\n")
    prog = dslc.load(src)
    assert prog.ok, prog.diagnostics.render_all()
    assert prog.graph.graph["train"]["data"]["stride"] == 3
    r = dslc.train(prog, quiet=True)
    assert len(r.dataset.train) == len(range(0, int(1040 * 0.9) - 9, 3))
    assert r.final["acc"] > 0.9 and r.test["acc"] > 0.9   # next letter from this letter: learnable exactly


def test_text_vocab_is_the_vocabulary_of_text(tmp_path):
    from dslc.train.sequence_data import text_vocab
    f = tmp_path / "t.txt"
    f.write_text("hello, world\n" * 20, encoding="utf-8")
    assert text_vocab(str(f)) == D.load_data({"name": "text", "path": str(f), "seq_len": 4}).info["vocab"]
    assert text_vocab(str(f)) == "\n ,dehlorw"


def test_the_sequence_module_imports_first():
    import subprocess
    import sys
    code = "from dslc.train import sequence_data as S; from dslc.train import data as D; print(D.SOURCES['text'] is S.text)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr
