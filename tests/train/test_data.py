"""Data sources (generated sets, IDX, .npz, CSV), --data specs, fitting to a network and its clear errors."""
from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

import dslc
from dslc.train import data as D


def write_idx(path, arr: np.ndarray, gz: bool):
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}[arr.dtype]
    raw = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(
        arr.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def graph(src: str):
    prog = dslc.load("t.net", text=src)
    assert prog.ok, prog.diagnostics.render_all()
    return prog.graph


MLP = """
network m(x: f32[N, 1, 28, 28]) {
    logits = x |> flatten |> linear(10)
    return logits
}
train {
    target label: i64[N]
    loss = cross_entropy(logits, label)
    optimizer = sgd(lr=0.1)
    data = mnist()
    epochs = 1
    batch_size = 8
}
"""

POINTS = """
network p(x: f32[N, 2], k = 1) {
    logits = x |> linear(k)
    return logits
}
train {
    target label: f32[N, 1]
    loss = bce(logits, label)
    data = linear2d()
}
"""


# ---- generated sets ---------------------------------------------------------------------------------------
def test_linear2d_is_separable_and_seeded():
    ds = D.linear2d(n=300, seed=3)
    x, y = ds.train.xs[0], ds.train.ys[0]
    assert x.shape == (300, 2) and x.dtype == np.float32 and y.dtype == np.int64
    assert len(ds.test) == 75
    assert np.array_equal(y, (x[:, 1] > 0.5 * x[:, 0] + 0.1))
    assert 0.2 < y.mean() < 0.8
    again = D.linear2d(n=300, seed=3)
    assert np.array_equal(again.train.xs[0], x)
    assert not np.array_equal(D.linear2d(n=300, seed=4).train.xs[0], x)


def test_nonseparable_labels_follow_the_rosenbrock_rule():
    ds = D.nonseparable2d(n=400)
    x, y = ds.train.xs[0].astype(np.float64), ds.train.ys[0]
    f = 100 * (x[:, 1] - x[:, 0] ** 2) ** 2 + (1 - x[:, 0]) ** 2
    assert np.array_equal(y == 1, f < 0.5)
    assert y.sum() == 200


def test_regression_sets():
    r = D.rosenbrock(n=200)
    assert r.task == "regression" and r.train.ys[0].shape == (200, 1)
    assert abs(float(r.train.ys[0].mean())) < 1e-5 and r.train.ys[0].std() == pytest.approx(1.0, rel=1e-4)
    x = r.train.xs[0].astype(np.float64)
    z = (100 * (x[:, 1] - x[:, 0] ** 2) ** 2 + (1 - x[:, 0]) ** 2 - r.info["target_mean"]) / r.info["target_std"]
    np.testing.assert_allclose(r.train.ys[0][:, 0], z, rtol=1e-4, atol=1e-4)
    s = D.sinxsiny(n=100)
    x = s.train.xs[0]
    np.testing.assert_allclose(s.train.ys[0][:, 0], np.sin(x[:, 0]) * np.sin(x[:, 1]), atol=1e-6)


# ---- files ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_t10k_only(tmp_path, gz):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (10, 28, 28)).astype(np.uint8)
    labels = rng.integers(0, 10, 10).astype(np.uint8)
    sfx = ".gz" if gz else ""
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{sfx}", imgs, gz)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{sfx}", labels, gz)
    ds = D.mnist(dir=tmp_path, train=8)
    assert len(ds.train) == 8 and len(ds.test) == 2
    np.testing.assert_allclose(ds.train.xs[0], imgs[:8] / 255.0, rtol=1e-6)
    assert ds.train.xs[0].dtype == np.float32 and ds.test.ys[0].dtype == np.int64
    assert list(ds.test.ys[0]) == list(labels[8:])
    fitted = D.fit_to_graph(ds, graph(MLP))
    assert fitted.train.xs[0].shape == (8, 1, 28, 28)


def test_mnist_with_train_files(tmp_path):
    imgs = np.zeros((6, 28, 28), np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", imgs, True)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(6, dtype=np.uint8), True)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", imgs[:3], True)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(3, dtype=np.uint8), True)
    ds = D.mnist(dir=tmp_path, train=8000)
    assert len(ds.train) == 6 and len(ds.test) == 3


def test_idx_errors(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(D.DataError, match="not an IDX file"):
        D.read_idx(tmp_path / "bad")
    arr = np.zeros((4, 2), np.uint8)
    write_idx(tmp_path / "short", arr, False)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-3])
    with pytest.raises(D.DataError, match="truncated"):
        D.read_idx(tmp_path / "short")
    with pytest.raises(D.DataError, match="not found"):
        D.mnist(dir=tmp_path / "nowhere")
    with pytest.raises(D.DataError, match="no MNIST IDX files"):
        D.mnist(dir=tmp_path)


def test_npz(tmp_path):
    x = np.random.default_rng(0).standard_normal((20, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = D.load_data(str(tmp_path / "d.npz"))
    fitted = D.fit_to_graph(ds, graph(POINTS))
    assert fitted.train.ys[0].shape == (20, 1) and fitted.train.ys[0].dtype == np.float32
    np.savez(tmp_path / "split.npz", x_train=x[:15], y_train=y[:15], x_test=x[15:], y_test=y[15:])
    ds = D.npz(tmp_path / "split.npz")
    assert len(ds.train) == 15 and len(ds.test) == 5
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object), y=y[:1])
    with pytest.raises(D.DataError, match="cannot read"):
        D.npz(tmp_path / "obj.npz")
    np.savez(tmp_path / "keys.npz", a=x)
    with pytest.raises(D.DataError, match="expected arrays `x` and `y`"):
        D.npz(tmp_path / "keys.npz")


def test_csv(tmp_path):
    (tmp_path / "h.csv").write_text("a,b,label\n0.5,1.0,1\n-0.5,2.0,0\n1.5,0.0,1\n")
    ds = D.load_data(f"csv:{tmp_path / 'h.csv'},target=label")
    assert ds.train.xs[0].tolist() == [[0.5, 1.0], [-0.5, 2.0], [1.5, 0.0]]
    assert ds.train.ys[0].dtype == np.int64 and ds.train.ys[0].tolist() == [1, 0, 1]
    (tmp_path / "n.csv").write_text("1,0.5,2\n0,1.5,3\n")
    ds = D.csv(tmp_path / "n.csv", target=0)
    assert ds.train.xs[0].tolist() == [[0.5, 2.0], [1.5, 3.0]] and ds.train.ys[0].tolist() == [1, 0]
    with pytest.raises(D.DataError, match="no column named `nope`"):
        D.csv(tmp_path / "h.csv", target="nope")
    (tmp_path / "ragged.csv").write_text("1,2\n3\n")
    with pytest.raises(D.DataError, match="columns"):
        D.csv(tmp_path / "ragged.csv")


def test_parse_spec():
    assert D.parse_spec("mnist") == {"name": "mnist"}
    assert D.parse_spec("mnist:/data/m") == {"name": "mnist", "dir": "/data/m"}
    assert D.parse_spec("linear2d:n=50,seed=2") == {"name": "linear2d", "n": 50, "seed": 2}
    assert D.parse_spec("x.npz") == {"name": "npz", "path": "x.npz"}
    with pytest.raises(D.DataError, match="unknown data"):
        D.parse_spec("imagenet")
    with pytest.raises(D.DataError, match="unexpected keyword|data linear2d"):
        D.load_data("linear2d:bogus=1")


# ---- fitting errors ---------------------------------------------------------------------------------------
def test_wrong_sample_shape_is_a_clear_error():
    ds = D.linear2d(n=20)
    with pytest.raises(D.DataError, match=r"input `x` takes samples of shape \[1, 28, 28\].*\[2\]"):
        D.fit_to_graph(ds, graph(MLP))


def test_too_many_classes_is_a_clear_error():
    g = graph(MLP.replace("linear(10)", "linear(5)"))
    ds = D.Dataset("digits", D.Split([np.zeros((4, 784), np.float32)], [np.array([0, 3, 9, 1])]))
    with pytest.raises(D.DataError, match=r"labels 0..9 \(10 classes\).*predicts 5 classes"):
        D.fit_to_graph(ds, g)


def test_fractional_labels_for_integer_target():
    ds = D.Dataset("r", D.Split([np.zeros((3, 784), np.float32)], [np.array([0.5, 1.0, 2.0])]))
    with pytest.raises(D.DataError, match="non-integer values"):
        D.fit_to_graph(ds, graph(MLP))


def test_bce_needs_binary_labels():
    ds = D.Dataset("r", D.Split([np.zeros((3, 2), np.float32)], [np.array([0, 1, 2])]))
    with pytest.raises(D.DataError, match="bce needs 0/1 labels"):
        D.fit_to_graph(ds, graph(POINTS))


def test_wrong_number_of_inputs():
    ds = D.Dataset("two", D.Split([np.zeros((3, 2), np.float32)] * 2, [np.zeros(3)]))
    with pytest.raises(D.DataError, match="has 1 input"):
        D.fit_to_graph(ds, graph(POINTS))


def test_validation_split_and_epoch_order():
    ds = D.linear2d(n=100)
    v = D.split_validation(ds, 0.2, seed=0)
    assert len(v.train) == 80 and len(v.val) == 20
    both = np.concatenate([v.train.xs[0], v.val.xs[0]])
    assert sorted(map(tuple, both.tolist())) == sorted(map(tuple, ds.train.xs[0].tolist()))
    a = D.epoch_order(100, 0, 3)
    assert np.array_equal(a, D.epoch_order(100, 0, 3)) and not np.array_equal(a, D.epoch_order(100, 0, 4))
    sizes = [len(xs[0]) for _b, xs, _ys in D.batches(v.train, np.arange(80), 32)]
    assert sizes == [32, 32, 16]


def test_bce_targets_must_be_probabilities():
    ds = D.Dataset("r", D.Split([np.zeros((3, 2), np.float32)], [np.array([0.0, 0.5, 1.7], np.float32)]))
    with pytest.raises(D.DataError, match=r"needs 0/1 labels or probabilities in \[0, 1\]"):
        D.fit_to_graph(ds, graph(POINTS))
    ok = D.Dataset("r", D.Split([np.zeros((3, 2), np.float32)], [np.array([0.0, 0.5, 1.0], np.float32)]))
    assert D.fit_to_graph(ok, graph(POINTS)).train.ys[0].shape == (3, 1)
