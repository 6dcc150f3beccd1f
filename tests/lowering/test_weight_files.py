"""Weights in and out: .safetensors and PyTorch state_dicts for `--weights`, name maps, `dslc export-weights`."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from dslc.cli import main
from dslc.weight_files import read_tensors, torchvision_resnet_names, write_tensors

ROOT = Path(__file__).resolve().parents[2]

TINY = """\"\"\"conv + batchnorm + linear, for weights-file tests.\"\"\"
network tiny(x: f32[N, 3, 8, 8]) {
    h = x |> conv2d(4, 3, padding=1) as conv |> batchnorm as bn |> relu
    logits = h |> global_avgpool |> linear(2) as head
    return logits
}
"""
SHAPES = {"conv.weight": (4, 3, 3, 3), "conv.bias": (4,), "bn.weight": (4,), "bn.bias": (4,),
          "bn.running_mean": (4,), "bn.running_var": (4,), "head.weight": (2, 4), "head.bias": (2,)}


@pytest.fixture
def tiny(tmp_path):
    p = tmp_path / "tiny.net"
    p.write_text(TINY)
    return p


def _random_weights(seed=0):
    rng = np.random.default_rng(seed)
    w = {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
    w["bn.running_var"] = np.abs(w["bn.running_var"]) + 0.5
    return w


def _onnx_out(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _compile(tiny, weights_path, tmp_path, *extra):
    out = tmp_path / "m.onnx"
    rc = main(["compile", str(tiny), "-q", "-o", str(out), "--weights", str(weights_path), *extra])
    return rc, out


def test_safetensors_and_npz_weights_give_the_same_model(tiny, tmp_path, capsys):
    w = _random_weights()
    write_tensors(tmp_path / "w.safetensors", w)
    write_tensors(tmp_path / "w.npz", w)
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    outs = []
    for name in ("w.safetensors", "w.npz"):
        rc, out = _compile(tiny, tmp_path / name, tmp_path)
        assert rc == 0, capsys.readouterr().err
        outs.append(_onnx_out(out, x))
    np.testing.assert_array_equal(outs[0], outs[1])
    rc, out = _compile(tiny, tmp_path / "w.npz", tmp_path, "--seed", "3")   # the file wins over the seed
    np.testing.assert_array_equal(_onnx_out(out, x), outs[0])
    rc, out = main(["compile", str(tiny), "-q", "-o", str(tmp_path / "init.onnx")]), tmp_path / "init.onnx"
    assert not np.allclose(_onnx_out(out, x), outs[0])


def test_serve_loads_a_net_with_safetensors_weights(tiny, tmp_path, capsys):
    from dslc.serve.model import ModelLoadError, load_model_source
    from dslc.weight_files import WeightsFile
    w = _random_weights()
    write_tensors(tmp_path / "w.safetensors", {f"net.{k}": v for k, v in w.items()})
    write_tensors(tmp_path / "w.npz", w)
    rc, ref = _compile(tiny, tmp_path / "w.npz", tmp_path)
    data = load_model_source(tiny, WeightsFile(tmp_path / "w.safetensors", (("net.", ""),)))
    (tmp_path / "served.onnx").write_bytes(data)
    x = np.random.default_rng(3).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(_onnx_out(tmp_path / "served.onnx", x), _onnx_out(ref, x))
    with pytest.raises(ModelLoadError, match="missing weight `conv.weight`"):
        load_model_source(tiny, WeightsFile(tmp_path / "w.safetensors"))


def test_every_offender_is_listed_with_both_shapes(tiny, tmp_path, capsys):
    w = _random_weights()
    del w["head.bias"]
    w["conv.weight"] = np.zeros((4, 3, 5, 5), np.float32)
    w["stray.weight"] = np.zeros((7, 2), np.float32)
    write_tensors(tmp_path / "bad.safetensors", w)
    rc, out = _compile(tiny, tmp_path / "bad.safetensors", tmp_path)
    err = capsys.readouterr().err
    assert rc != 0 and not out.exists()
    assert "missing weight `head.bias` [2]" in err
    assert "`conv.weight` has shape [4, 3, 5, 5], the network needs [4, 3, 3, 3]" in err
    assert "unexpected weight `stray.weight` [7, 2]" in err
    assert "3 problems" in err and "Traceback" not in err


def test_weights_map_renames_prefixes(tiny, tmp_path, capsys):
    w = {f"model.backbone.{k}" if not k.startswith("head") else f"model.{k}": v for k, v in _random_weights().items()}
    write_tensors(tmp_path / "w.safetensors", w)
    rc, _ = _compile(tiny, tmp_path / "w.safetensors", tmp_path)
    assert rc != 0 and "--weights-map" in capsys.readouterr().err
    rc, out = _compile(tiny, tmp_path / "w.safetensors", tmp_path, "--weights-map", "model.backbone.=",
                       "--weights-map", "model.=")
    assert rc == 0, capsys.readouterr().err
    rc, _ = _compile(tiny, tmp_path / "w.safetensors", tmp_path, "--weights-map", "no-equals-sign")
    assert rc == 2 and "OLD=NEW" in capsys.readouterr().err


def test_unreadable_weights_files_are_clear_errors(tiny, tmp_path, capsys):
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    (tmp_path / "junk.pt").write_bytes(b"not a zip either")
    for name in ("junk.safetensors", "junk.pt"):
        rc, _ = _compile(tiny, tmp_path / name, tmp_path)
        err = capsys.readouterr().err
        assert rc == 2 and name in err and "Traceback" not in err, err


def test_torchvision_names_map_onto_dslc_resnet_names():
    names = {"layer1.0.conv1.weight": 0, "layer3.1.downsample.0.weight": 0, "layer3.1.downsample.1.running_var": 0,
             "fc.weight": 0, "bn1.num_batches_tracked": 0}
    assert sorted(torchvision_resnet_names(names)) == sorted([
        "layer1.block1.conv1.weight", "layer3.block2.downsample_conv.weight",
        "layer3.block2.downsample_bn.running_var", "fc.weight", "bn1.num_batches_tracked"])


def test_export_weights_from_a_checkpoint(tmp_path, capsys):
    from dslc.train.loop import save_checkpoint
    from dslc.train.optim import make_optimizer
    w = _random_weights()
    opt = make_optimizer({"name": "adam", "lr": 1e-3}, dict(w))
    save_checkpoint(tmp_path / "run.ckpt.npz", w, opt, {"epoch": 1})
    assert main(["export-weights", str(tmp_path / "run.ckpt.npz"), "-o", str(tmp_path / "w.safetensors")]) == 0
    got = read_tensors(tmp_path / "w.safetensors")
    assert sorted(got) == sorted(w)   # weights only: no optimiser state, no metadata
    for k in w:
        np.testing.assert_array_equal(got[k], w[k])
    assert main(["export-weights", str(tmp_path / "run.ckpt.npz"), "-o", str(tmp_path / "w.bin")]) == 2
    assert "unknown weights format" in capsys.readouterr().err
    assert not (tmp_path / "w.bin").exists()
    assert main(["export-weights", str(tmp_path / "absent.npz"), "-o", str(tmp_path / "x.safetensors")]) == 2


# ------------------------------------------------------------------------------------- PyTorch files
def test_pt_state_dict_round_trip_and_unsafe_pickles_are_refused(tiny, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    w = _random_weights()
    sd = {k: torch.from_numpy(v) for k, v in w.items()}
    sd["bn.num_batches_tracked"] = torch.tensor(100)   # dropped deliberately: dslc's batchnorm has no counter
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "ckpt.pth")
    rc, out = _compile(tiny, tmp_path / "ckpt.pth", tmp_path)
    assert rc == 0, capsys.readouterr().err
    write_tensors(tmp_path / "ref.npz", w)
    rc, ref = _compile(tiny, tmp_path / "ref.npz", tmp_path / "ref")
    x = np.random.default_rng(2).standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(_onnx_out(out, x), _onnx_out(ref, x))

    class Evil:   # an arbitrary object: weights_only=True must refuse to unpickle it
        def __reduce__(self):
            return (print, ("unpickled!",))
    torch.save({"conv.weight": Evil()}, tmp_path / "evil.pt")
    rc, _ = _compile(tiny, tmp_path / "evil.pt", tmp_path)
    captured = capsys.readouterr()
    assert rc == 2 and "weights_only" in captured.err and "unpickled!" not in captured.out

    assert main(["export-weights", str(tmp_path / "ref.npz"), "-o", str(tmp_path / "w.pt")]) == 0
    back = torch.load(tmp_path / "w.pt", weights_only=True)
    assert sorted(back) == sorted(w) and torch.equal(back["head.weight"], torch.from_numpy(w["head.weight"]))


def _torchvision_resnet(depth):
    """ResNet-18/50 in torchvision's module layout and names, from plain torch.nn (no torchvision package): the
    compile benchmark's reference models."""
    spec = importlib.util.spec_from_file_location("bench_compile", ROOT / "benchmarks" / "bench_compile.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench.torch_resnet(depth)


def test_torchvision_resnet18_state_dict_loads_into_resnet18_net(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = _torchvision_resnet(18)
    with torch.no_grad():   # non-trivial batchnorm: random affine and running statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.num_batches_tracked.fill_(1234)
    model.eval()
    torch.save(model.state_dict(), tmp_path / "resnet18.pth")
    out = tmp_path / "resnet18.onnx"
    rc = main(["compile", str(ROOT / "networks" / "resnet18.net"), "-q", "-o", str(out),
               "--weights", str(tmp_path / "resnet18.pth")])
    assert rc == 0, capsys.readouterr().err
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        want = model(x).numpy()
    got = _onnx_out(out, x.numpy())
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= 1e-5 * scale, (np.abs(got - want).max(), scale)
