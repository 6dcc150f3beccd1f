"""Streamed data: `images(...)` image folders (generated here as small PNGs) and `npy(x, y)` memory-mapped pairs."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

import dslc
from dslc.cli import main
from dslc.train import data as D
from dslc.train import image_data as I

CLASSES = ("cat", "dog", "eel")


def make_folder(root, per_class=(6, 2), size=(20, 24), seed=0):
    """root/train/<class>/*.png and root/val/<class>/*.png: class k's images are bright in channel k."""
    rng = np.random.default_rng(seed)
    for split, n in zip(("train", "val"), per_class):
        for k, c in enumerate(CLASSES):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                a = rng.integers(0, 40, size + (3,), dtype=np.uint8)
                a[..., k] += 200
                Image.fromarray(a).save(d / f"{i:03d}.png")
    return root


def net_src(data: str, c: int = 3, hw: int = 16, classes: int = 3, epochs: int = 2) -> str:
    return f"""
network small(x: f32[N, {c}, {hw}, {hw}]) {{
    logits = x |> conv2d(4, 3, padding=1) |> relu |> global_avgpool |> linear({classes}) as head
    return logits
}}
train {{
    target label: i64[N]
    loss = cross_entropy(logits, label)
    data = {data}
    epochs = {epochs}
    batch_size = 4
    optimizer = adam(lr = 0.05)
}}
"""


def fitted(src: str):
    prog = dslc.load("t.net", text=src)
    assert prog.ok, prog.diagnostics.render_all()
    g = prog.graph
    return D.fit_to_graph(D.load_data(g.graph["train"]["data"]), g), g


def test_folder_layout_classes_and_eval_decoding(tmp_path):
    make_folder(tmp_path, size=(16, 16))
    ds, _g = fitted(net_src(f'images("{tmp_path}", mean=[0.5], std=[0.25])'))
    assert ds.info["classes"] == list(CLASSES) and ds.num_classes == 3
    assert len(ds.train) == 18 and len(ds.test) == 6
    np.testing.assert_array_equal(ds.train.ys[0], np.repeat([0, 1, 2], 6))
    x = ds.train.xs[0]
    assert x.shape == (18, 3, 16, 16) and x.dtype == np.float32
    got = D.gather(x, np.array([7]))[0]      # dog/001.png, same size as the input: no resampling
    raw = np.asarray(Image.open(tmp_path / "train" / "dog" / "001.png"), np.float32).transpose(2, 0, 1)
    np.testing.assert_allclose(got, (raw / 255 - 0.5) / 0.25, rtol=1e-6, atol=1e-6)


def test_resize_center_crop_and_grey_images_convert(tmp_path):
    make_folder(tmp_path, size=(20, 40))
    Image.fromarray(np.full((10, 10), 51, np.uint8)).save(tmp_path / "train" / "cat" / "grey.png")
    ds, _g = fitted(net_src(f'images("{tmp_path}")', hw=8))
    files = ds.train.xs[0].files
    grey = D.gather(ds.train.xs[0], np.array([files.index(tmp_path / "train" / "cat" / "grey.png")]))[0]
    assert grey.shape == (3, 8, 8)
    np.testing.assert_allclose(grey, 51 / 255, atol=1e-6)   # L -> RGB: every channel the grey value
    wide = Image.new("RGB", (40, 20))
    wide.paste((255, 0, 0), (0, 0, 20, 20))               # left half red, right half blue
    wide.paste((0, 0, 255), (20, 0, 40, 20))
    cropped = I.resize_center_crop(wide, 8, 8)              # shorter side to 8 (16 x 8), centre 8 x 8
    a = np.asarray(cropped)
    assert cropped.size == (8, 8) and a[:, 0, 0].min() > 200 and a[:, -1, 2].min() > 200
    ds1, _ = fitted(net_src(f'images("{tmp_path}")', c=1, hw=8))   # and RGB -> grey for a grey network
    assert ds1.train.xs[0].shape == (len(files), 1, 8, 8)


def test_augmentations_are_seeded_per_sample_and_epoch(tmp_path):
    make_folder(tmp_path, size=(16, 16))
    ds, _g = fitted(net_src(f'images("{tmp_path}", augment=["flip"])'))
    x, idx = ds.train.xs[0], np.arange(18)
    plain = D.gather(x, idx)                               # evaluation: no augmentation
    flips = []
    for epoch in range(3):
        a = D.gather(x, idx, (0, epoch))
        np.testing.assert_array_equal(a, D.gather(x, idx, (0, epoch)))   # deterministic
        flipped = np.all(a == plain[..., ::-1], axis=(1, 2, 3))
        assert np.all(flipped | np.all(a == plain, axis=(1, 2, 3)))       # each sample: itself or its mirror
        flips.append(flipped)
    assert 0 < np.mean(flips) < 1 and not np.array_equal(flips[0], flips[1])
    # one sample's augmentation does not depend on the batch it is in (DataLoader workers, resumes)
    np.testing.assert_array_equal(D.gather(x, idx[5:6], (0, 1))[0], D.gather(x, idx, (0, 1))[5])
    ds2, _ = fitted(net_src(f'images("{tmp_path}", augment=["crop", "pad_crop", "flip"])'))
    a, b = D.gather(ds2.train.xs[0], idx, (0, 0)), D.gather(ds2.train.xs[0], idx, (1, 0))
    assert a.shape == (18, 3, 16, 16) and not np.array_equal(a, b)   # another seed, other crops
    box = I.random_resized_box(100, 50, np.random.default_rng(0))
    assert 0 <= box[0] < box[2] <= 100 and 0 <= box[1] < box[3] <= 50


def test_batches_stream_decode_in_a_background_thread(tmp_path, monkeypatch):
    make_folder(tmp_path, size=(16, 16))
    ds, _g = fitted(net_src(f'images("{tmp_path}")'))
    threads, opened = set(), []
    real_load = I.ImageFolderArray.load

    def load(self, i, rng):
        threads.add(threading.current_thread().name)
        opened.append(i)
        return real_load(self, i, rng)
    monkeypatch.setattr(I.ImageFolderArray, "load", load)
    order = D.epoch_order(18, 0, 0)
    it = D.batches(ds.train, order, 4)
    b, xs, ys = next(it)
    np.testing.assert_array_equal(ys[0], ds.train.ys[0][order[:4]])
    assert threads == {"dslc-prefetch"}
    assert len(opened) <= 12      # only the batches read ahead are decoded, never the whole folder
    it.close()
    assert not [t for t in threading.enumerate() if t.name == "dslc-prefetch"]


def test_image_folder_errors_name_the_file(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "train" / "fox").mkdir()
    with pytest.raises(D.DataError, match=r"class folder .*fox has no images"):
        I.images(tmp_path)
    (tmp_path / "train" / "fox").rmdir()
    (tmp_path / "val" / "owl").mkdir()
    with pytest.raises(D.DataError, match=r"owl.*training set"):
        I.images(tmp_path)
    (tmp_path / "val" / "owl").rmdir()
    with pytest.raises(D.DataError, match="not found"):
        I.images(tmp_path / "absent")
    with pytest.raises(D.DataError, match="predicts 2 classes"):   # labels out of range
        fitted(net_src(f'images("{tmp_path}")', classes=2))
    with pytest.raises(D.DataError, match="mean has 2 values"):
        fitted(net_src(f'images("{tmp_path}", mean=[0.1, 0.2])'))
    bad = tmp_path / "train" / "dog" / "000.png"
    bad.write_bytes(bad.read_bytes()[:60])                         # truncated
    ds, _g = fitted(net_src(f'images("{tmp_path}")'))
    with pytest.raises(D.DataError, match=r"dog/000.png: cannot decode"):
        list(D.batches(ds.train, np.arange(18), 4))


def test_train_section_diagnostics(tmp_path):
    for data, message in (('images("x", augment=["flp"])', "unknown augmentation"),
                          ('images("x", mean=0.5)', "must be a list of numbers"),
                          ('images("x", std=[0.0])', "positive numbers"),
                          ("images()", "needs a `path`"),
                          ('npy("x.npy")', "needs two files")):
        prog = dslc.load("t.net", text=net_src(data))
        assert not prog.ok
        text = prog.diagnostics.render_all()
        assert message in text and "t.net:" in text, text
    assert 'did you mean "flip"' in dslc.load("t.net", text=net_src('images("x", augment=["flp"])')) \
        .diagnostics.render_all().replace("`", '"')


def test_dslc_train_on_an_image_folder(tmp_path, monkeypatch, capsys):
    make_folder(tmp_path / "imgs")
    net = tmp_path / "small.net"
    net.write_text(net_src('images("imgs", augment=["flip", "crop"], mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])',
                           epochs=4))
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(net), "-q", "-o", "out.onnx"]) == 0, capsys.readouterr().err
    assert (tmp_path / "out.onnx").is_file()
    import json
    epochs = [r for r in map(json.loads, (tmp_path / "out.metrics.jsonl").read_text().splitlines())
              if r.get("kind") == "epoch"]
    assert len(epochs) == 4 and epochs[-1]["loss"] < epochs[0]["loss"]
    # the way out and back in: the checkpoint's weights as .safetensors start another run
    assert main(["export-weights", "out.ckpt.npz", "-q", "-o", "w.safetensors"]) == 0
    assert main(["train", str(net), "-q", "-o", "again.onnx", "--epochs", "1", "--weights", "w.safetensors"]) == 0
    first = json.loads((tmp_path / "again.metrics.jsonl").read_text().splitlines()[0])
    assert first["loss"] < epochs[0]["loss"]          # it started from the trained weights, not a fresh init
    assert main(["train", str(net), "-q", "-o", "x.onnx", "--weights", "w.safetensors", "--weights-map",
                 "head.=fc."]) == 1
    assert "missing weight `head.weight` [3, 4]" in capsys.readouterr().err
    # int8 calibration reads the streamed image split too
    assert main(["compile", str(net), "-q", "--precision", "int8", "-o", "q.onnx"]) == 0
    bad = tmp_path / "imgs" / "train" / "eel" / "001.png"
    bad.write_bytes(b"\x89PNG not really")
    assert main(["train", str(net), "-q", "-o", "out2.onnx"]) == 1
    err = capsys.readouterr().err
    assert "eel/001.png: cannot decode" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------- npy
NPY_NET = """
network m(x: f32[N, 6]) {
    logits = x |> linear(3)
    return logits
}
train {
    target label: i64[N]
    loss = cross_entropy(logits, label)
    data = npy("x.npy", "y.npy")
    epochs = 3
    batch_size = 16
    optimizer = adam(lr = 0.05)
}
"""


def test_npy_pair_is_memory_mapped_and_trains(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 120)
    x = (rng.standard_normal((120, 2, 3)) + y[:, None, None]).astype(np.float64)   # reshaped + cast per batch
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    monkeypatch.chdir(tmp_path)
    ds, _g = fitted(NPY_NET)
    lazy = ds.train.xs[0]
    assert isinstance(lazy, D.LazyArray) and lazy.shape == (120, 6)
    b = D.gather(lazy, np.array([5, 1, 90]))
    assert b.dtype == np.float32
    np.testing.assert_allclose(b, x[[5, 1, 90]].reshape(3, 6).astype(np.float32))
    (tmp_path / "m.net").write_text(NPY_NET)
    assert main(["train", "m.net", "-q", "-o", "m.onnx"]) == 0, capsys.readouterr().err
    np.save(tmp_path / "y.npy", y + 1)                                       # labels 1..3 for 3 classes
    assert main(["train", "m.net", "-q", "-o", "m.onnx"]) == 1
    assert "npy(x.npy, y.npy)" in capsys.readouterr().err
    np.save(tmp_path / "y.npy", y[:100])
    with pytest.raises(D.DataError, match="x.npy holds 120 samples, y.npy holds 100"):
        D.load_data("npy:x.npy,y.npy")
    np.save(tmp_path / "x.npy", x.reshape(120, 3, 2, 1)[:, :, :1])
    np.save(tmp_path / "y.npy", y)
    with pytest.raises(D.DataError, match=r"samples of shape \[6\].*gives samples of shape \[3, 1, 1\]"):
        fitted(NPY_NET)


def test_torch_dataset_matches_the_numpy_batches(tmp_path):
    torch = pytest.importorskip("torch")
    make_folder(tmp_path, size=(16, 16))
    ds, _g = fitted(net_src(f'images("{tmp_path}", augment=["flip", "crop"])'))
    tds = I.torch_dataset(ds.train, seed=3)
    tds.set_epoch(2)
    loader = torch.utils.data.DataLoader(tds, batch_size=5, shuffle=False, num_workers=2)
    got_x = torch.cat([xs[0] for xs, _ys in loader]).numpy()
    got_y = torch.cat([ys[0] for _xs, ys in loader]).numpy()
    np.testing.assert_array_equal(got_x, D.gather(ds.train.xs[0], np.arange(18), (3, 2)))
    np.testing.assert_array_equal(got_y, ds.train.ys[0])
    sampler = torch.utils.data.DistributedSampler(tds, num_replicas=2, rank=1, shuffle=True, seed=3)
    idx = list(sampler)
    xs, _ys = tds[idx[0]]
    np.testing.assert_array_equal(xs[0].numpy(), D.gather(ds.train.xs[0], np.array([idx[0]]), (3, 2))[0])
