"""`dslc train` from the command line: artefacts, flag overrides, exit codes and clear errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from dslc.cli import main

from train_helpers import ort_session

NETWORKS = Path(__file__).resolve().parents[2] / "networks"


def test_train_writes_model_log_plot_checkpoint(tmp_path, capsys):
    out = tmp_path / "p.onnx"
    code = main(["train", str(NETWORKS / "perceptron.net"), "-o", str(out), "--epochs", "3", "--lr", "0.5",
                 "--data", "linear2d:n=100,seed=2"])
    assert code == 0
    text = capsys.readouterr().out
    assert "epoch 1/3" in text and "epoch 3/3" in text and "test_acc" in text and "samples/s" in text
    assert "sgd lr 0.5" in text
    recs = [json.loads(line) for line in (tmp_path / "p.metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in recs if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3]
    assert all({"loss", "acc", "val_loss", "val_acc", "samples_per_s"} <= set(r) for r in epochs)
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    with np.load(tmp_path / "p.ckpt.npz", allow_pickle=False) as z:
        assert "w/fc1.weight" in z.files or any(k.startswith("w/") for k in z.files)
    model = onnx.load(str(out))
    assert {i.name for i in model.graph.initializer}
    x = np.array([[0.0, 1.0], [0.5, -1.0]], np.float32)
    y = ort_session(model).run(None, {"x": x})[0]
    assert y.shape == (2, 1) and y[0, 0] > 0 > y[1, 0]        # above / below the line x2 = 0.5 x1 + 0.1


@pytest.mark.parametrize("argv,code,message", [
    (["nope.net"], 2, "no such file"),
    ([str(NETWORKS / "perceptron.net"), "--data", "mnist:/nowhere"], 1, "not found"),
    ([str(NETWORKS / "perceptron.net"), "--data", "sinxsiny"], 1, "regression set"),
    ([str(NETWORKS / "perceptron.net"), "--data", "imagenet"], 1, "unknown data"),
    ([str(NETWORKS / "perceptron.net"), "--epochs", "0"], 2, "--epochs must be a positive integer"),
    ([str(NETWORKS / "perceptron.net"), "--lr", "-1"], 2, "--lr must be positive"),
    ([str(NETWORKS / "resnet18.net")], 1, "no training data"),
])
def test_errors_are_clear(tmp_path, capsys, argv, code, message):
    assert main(["train", *argv, "-o", str(tmp_path / "m.onnx")]) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "m.onnx").exists()


def test_data_shape_mismatch_before_training(tmp_path, capsys):
    np.savez(tmp_path / "d.npz", x=np.zeros((10, 3), np.float32), y=np.zeros(10, np.int64))
    code = main(["train", str(NETWORKS / "perceptron.net"), "--data", str(tmp_path / "d.npz"), "-o",
                 str(tmp_path / "m.onnx")])
    assert code == 1
    err = capsys.readouterr().err
    assert "input `x` takes samples of shape [2]" in err and "[3]" in err


def test_program_errors_exit_1(tmp_path, capsys):
    bad = tmp_path / "bad.net"
    bad.write_text("network b(x: f32[N, 2]) { y = x |> linear(3) |> nonsense\n return y }\n")
    assert main(["train", str(bad), "-o", str(tmp_path / "m.onnx")]) == 1
    assert "error" in capsys.readouterr().err


BN_NET = """
network bnnet(x: f32[N, 2, 6, 6]) {
    logits = x |> conv2d(4, 3, padding=1) |> batchnorm |> relu |> dropout(0.3)
               |> global_avgpool |> linear(3)
    return logits
}
train {
    target label: i64[N]
    loss = cross_entropy(logits, label)
    optimizer = sgd(lr=0.1, momentum=0.9)
    epochs = 2
    batch_size = 8
}
"""


def test_exported_model_is_the_evaluation_mode_network(tmp_path):
    """After training, onnxruntime on the exported model equals the executor's evaluation-mode forward:
    batchnorm uses the trained running statistics (not the initial 0 / 1), dropout is off."""
    import dslc
    from dslc.train.executor import Executor
    from dslc.train.loop import load_checkpoint
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((40, 2, 6, 6)) * 3 + 1).astype(np.float32)
    y = rng.integers(0, 3, 40)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    net = tmp_path / "bn.net"
    net.write_text(BN_NET)
    out = tmp_path / "bn.onnx"
    assert main(["train", str(net), "--data", str(tmp_path / "d.npz"), "-o", str(out), "-q"]) == 0
    g = dslc.load(str(net)).graph
    w, _opt, _meta = load_checkpoint(tmp_path / "bn.ckpt.npz")
    stats = [k for k in w if "mean" in k.rsplit(".", 1)[-1]]
    assert stats and all(np.abs(w[k]).max() > 0 for k in stats)      # running statistics were learned
    ref = Executor(g, weights=w).forward([x[:10]])["logits"]
    got = ort_session(onnx.load(str(out))).run(None, {"x": x[:10]})[0]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_no_fold_bn_exports_the_running_statistics_as_a_batchnorm_node(tmp_path):
    """By default the exported model folds batchnorm into the conv (the test above checks its numbers);
    --no-fold-bn keeps a BatchNormalization node whose statistics are the trained running statistics."""
    from dslc.train.loop import load_checkpoint
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "d.npz", x=(rng.standard_normal((24, 2, 6, 6)) + 2).astype(np.float32),
             y=rng.integers(0, 3, 24))
    net = tmp_path / "bn.net"
    net.write_text(BN_NET)
    folded, plain = tmp_path / "folded.onnx", tmp_path / "plain.onnx"
    for out, flags in ((folded, []), (plain, ["--no-fold-bn"])):
        assert main(["train", str(net), "--data", str(tmp_path / "d.npz"), "-o", str(out), "-q", *flags]) == 0
    assert "BatchNormalization" not in [n.op_type for n in onnx.load(str(folded)).graph.node]
    m = onnx.load(str(plain))
    bn = next(n for n in m.graph.node if n.op_type == "BatchNormalization")
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    w, _opt, _meta = load_checkpoint(tmp_path / "plain.ckpt.npz")
    mean_name, var_name = bn.input[3], bn.input[4]
    np.testing.assert_array_equal(inits[mean_name], w[mean_name])
    np.testing.assert_array_equal(inits[var_name], w[var_name])
    assert np.abs(w[mean_name]).max() > 0
