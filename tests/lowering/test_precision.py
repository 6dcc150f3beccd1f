"""Reduced-precision compiles: fp16 (onnxconverter-common) and int8 (onnxruntime static QDQ quantization),
checked against fp32 on MNIST's held-out split with a briefly trained LeNet-5."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from dslc.cli import main
from dslc.train.data import default_mnist_dir

REPO = Path(__file__).resolve().parents[2]
LENET = REPO / "networks" / "lenet5.net"
pytestmark = pytest.mark.skipif(not (default_mnist_dir() / "t10k-images-idx3-ubyte.gz").exists()
                                and not (default_mnist_dir() / "t10k-images-idx3-ubyte").exists(),
                                reason="MNIST not found (DSLC_DATA_DIR)")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """LeNet-5 trained for 2 epochs on the 8,000 training images (~4 s), its weights and fp32 model."""
    import dslc
    from dslc.lowering.compile import compile_graph, load_program
    from dslc.weights import save_weights
    result = dslc.train(str(LENET), epochs=2)
    d = tmp_path_factory.mktemp("precision")
    wpath = d / "lenet5.npz"
    save_weights(wpath, result.weights)
    _prog, g = load_program(LENET)
    _model, info = compile_graph(g, weights=result.weights, materialize=False)
    return {"weights": wpath, "fp32": info.data, "graph": g, "dir": d, "test_acc": result.test["acc"]}


def _session(data: bytes):
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def _initializer_types(data: bytes) -> set[int]:
    return {t.data_type for t in onnx.load_from_string(data).graph.initializer}


def test_int8_lenet_within_half_a_point_of_fp32_on_the_mnist_test_split(trained):
    from dslc.lowering.precision import reduce_for_graph
    int8, cmp = reduce_for_graph(trained["fp32"], "int8", trained["graph"])
    assert cmp.samples == 2000 and "test split" in cmp.source
    assert cmp.acc_fp32 > 0.9                               # the fixture really trained
    assert abs(cmp.acc_reduced - cmp.acc_fp32) <= 0.005, cmp.describe()
    model = onnx.load_from_string(int8)
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops   # QDQ format
    assert onnx.TensorProto.INT8 in _initializer_types(int8)
    assert cmp.bytes_reduced < 0.4 * cmp.bytes_fp32
    # the same clients: float32 in, float32 out
    s = _session(int8)
    assert s.get_inputs()[0].type == "tensor(float)" and s.get_outputs()[0].type == "tensor(float)"


def test_fp16_lenet_outputs_within_1e_2_relative(trained):
    from dslc.lowering.calibration import precision_data
    from dslc.lowering.precision import reduce_for_graph
    fp16, cmp = reduce_for_graph(trained["fp32"], "fp16", trained["graph"])
    assert cmp.rel_delta < 1e-2
    assert onnx.TensorProto.FLOAT16 in _initializer_types(fp16)
    assert onnx.TensorProto.FLOAT not in _initializer_types(fp16)
    held = precision_data(trained["graph"], None).heldout
    x = held.inputs["x"][:256]
    ref = _session(trained["fp32"]).run(None, {"x": x})[0]
    got = _session(fp16).run(None, {"x": x})[0]
    assert got.dtype == np.float32
    scale = np.abs(ref).max()
    np.testing.assert_allclose(got, ref, rtol=1e-2, atol=1e-2 * scale)


def test_compile_cli_prints_the_delta_and_writes_a_valid_int8_model(trained, capsys):
    out = trained["dir"] / "lenet5.int8.onnx"
    rc = main(["compile", str(LENET), "--weights", str(trained["weights"]), "--precision", "int8", "-o", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "int8 vs fp32 on 2000 held-out samples (mnist test split)" in text
    assert "accuracy" in text and " pp)" in text
    onnx.checker.check_model(str(out), full_check=True)
    assert onnx.load(str(out)).ir_version <= 13                  # what onnxruntime reads
    x = np.zeros((3, 1, 28, 28), np.float32)
    assert _session(out.read_bytes()).run(None, {"x": x})[0].shape == (3, 10)


def test_calibration_from_npz_and_from_an_image_folder(trained, capsys):
    from PIL import Image

    from dslc.lowering.calibration import precision_data
    held = precision_data(trained["graph"], None).heldout
    x, y = held.inputs["x"][:300], held.labels[:300]
    npz = trained["dir"] / "calib.npz"
    np.savez(npz, x=x, y=y)
    out = trained["dir"] / "npz.onnx"
    rc = main(["compile", str(LENET), "--weights", str(trained["weights"]), "--precision", "int8",
               "--calibration", str(npz), "-o", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and "calib" in text and "accuracy" in text, text
    folder = trained["dir"] / "images"
    folder.mkdir()
    for i in range(40):   # written at another size: the loader resizes to the network's 28x28
        Image.fromarray((x[i, 0] * 255).astype(np.uint8)).resize((56, 56)).save(folder / f"{i:03d}.png")
    rc = main(["compile", str(LENET), "--weights", str(trained["weights"]), "--precision", "int8",
               "--calibration", str(folder), "-o", str(trained["dir"] / "img.onnx")])
    text = capsys.readouterr().out
    assert rc == 0 and f"8 held-out samples (held-out images in {folder})" in text, text


def test_int8_without_data_and_missing_calibration_are_clear_errors(tmp_path, capsys):
    net = tmp_path / "nodata.net"
    net.write_text("network nodata(x: f32[N, 4]) {\n    y = x |> linear(3)\n    return y\n}\n")
    assert main(["compile", str(net), "--precision", "int8", "-o", str(tmp_path / "a.onnx")]) == 1
    err = capsys.readouterr().err
    assert "int8 needs calibration data" in err and "--calibration" in err
    assert not (tmp_path / "a.onnx").exists()
    assert main(["compile", str(net), "--precision", "int8", "--calibration", str(tmp_path / "none.npz"),
                 "-o", str(tmp_path / "a.onnx")]) == 2
    assert "no such file" in capsys.readouterr().err
    # a .npz whose samples do not fit the network: the data's own diagnosis, exit 1
    np.savez(tmp_path / "wrong.npz", x=np.zeros((10, 7), np.float32), y=np.zeros(10, np.int64))
    assert main(["compile", str(net), "--precision", "int8", "--calibration", str(tmp_path / "wrong.npz"),
                 "-o", str(tmp_path / "a.onnx")]) == 1
    assert "--calibration" in capsys.readouterr().err
    assert main(["compile", str(net), "--calibration", "mnist", "-o", str(tmp_path / "a.onnx")]) == 2
    assert "--calibration goes with --precision" in capsys.readouterr().err
    # fp16 needs no data: compared on random inputs
    assert main(["compile", str(net), "--precision", "fp16", "-o", str(tmp_path / "h.onnx")]) == 0
    assert "random standard-normal inputs" in capsys.readouterr().out


def test_train_and_serve_take_precision(tmp_path, capsys):
    from argparse import Namespace

    from dslc.serve.server import UsageError, gather_models
    out = tmp_path / "clf.onnx"
    rc = main(["train", str(REPO / "networks" / "mlp_classifier.net"), "--epochs", "2", "-q", "--precision",
               "fp16", "-o", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and "fp16 vs fp32" in text, text
    assert onnx.TensorProto.FLOAT16 in _initializer_types(out.read_bytes())
    args = Namespace(models=[str(LENET)], repository=None, weights=None, max_batch_size=8, max_queue_delay_ms=0,
                     instances=1, device="cpu", threads=1, precision="int8", calibration=None)
    (m,) = gather_models(args)
    assert "QuantizeLinear" in {n.op_type for n in onnx.load_from_string(m._source).graph.node}
    assert "int8 vs fp32" in capsys.readouterr().err
    with pytest.raises(UsageError, match="--precision applies to .net models"):
        gather_models(Namespace(**{**vars(args), "models": [str(out)]}))


def test_fp16_io_makes_fp16_inputs_and_outputs(trained, capsys):
    out = trained["dir"] / "io16.onnx"
    rc = main(["compile", str(LENET), "--weights", str(trained["weights"]), "--precision", "fp16", "--fp16-io",
               "-o", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and "fp16 vs fp32 on 2000 held-out samples" in text, text
    s = _session(out.read_bytes())
    assert s.get_inputs()[0].type == "tensor(float16)" and s.get_outputs()[0].type == "tensor(float16)"
    x = np.zeros((2, 1, 28, 28), np.float16)
    assert s.run(None, {"x": x})[0].dtype == np.float16
    assert main(["compile", str(LENET), "--precision", "int8", "--fp16-io", "-o", str(out)]) == 2
    assert "--fp16-io goes with --precision fp16" in capsys.readouterr().err


def test_reduced_precision_compiles_never_import_torch(tmp_path):
    import subprocess
    import sys
    code = (f"import sys; from dslc.cli import main; "
            f"assert main(['compile', {str(LENET)!r}, '--precision', 'int8', '-q', '-o', {str(tmp_path / 'a.onnx')!r}]) == 0; "
            f"assert main(['compile', {str(LENET)!r}, '--precision', 'fp16', '-q', '-o', {str(tmp_path / 'b.onnx')!r}]) == 0; "
            f"assert 'torch' not in sys.modules, 'torch was imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
