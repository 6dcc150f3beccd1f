"""`dslc compile`, `dslc run` and `dslc graph` through the CLI entry point (in-process)."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnx
import pytest

from dslc.cli import main

ROOT = Path(__file__).resolve().parents[2]
LENET = ROOT / "networks" / "lenet5.net"

TINY = """\"\"\"A tiny conv net for CLI tests.\"\"\"
block stem(x, c) {
    y = x |> conv2d(c, 3, padding=1) |> batchnorm |> relu
    return y
}

network tiny(x: f32[N, 3, 8, 8]) {
    h = x |> stem(4) as stem1
    logits = h |> global_avgpool |> linear(2) as head
    return logits
}
"""


@pytest.fixture
def tiny(tmp_path):
    p = tmp_path / "tiny.net"
    p.write_text(TINY)
    return p


def _tiny_ok(tiny, capsys):
    from dslc.api import load
    prog = load(tiny)
    if not prog.ok:
        pytest.fail("test program does not check:\n" + prog.diagnostics.render_all())
    return prog


def test_compile_writes_a_valid_model(tmp_path, capsys):
    out = tmp_path / "lenet.onnx"
    assert main(["compile", str(LENET), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "wrote" in text and "validated" in text
    m = onnx.load(out)
    onnx.checker.check_model(m, full_check=True)
    meta = {p.key: p.value for p in m.metadata_props}
    assert meta["source_file"] == "lenet5.net" and len(meta["source_sha256"]) == 64


def test_compile_options(tiny, tmp_path, capsys):
    _tiny_ok(tiny, capsys)
    out = tmp_path / "t.onnx"
    assert main(["compile", str(tiny), "-o", str(out), "--batch", "2", "--fold-bn", "--opset", "18"]) == 0
    m = onnx.load(out)
    assert m.opset_import[0].version == 18
    assert "BatchNormalization" not in [n.op_type for n in m.graph.node]
    assert [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim] == [2, 3, 8, 8]
    assert "[2, 3, 8, 8]" in capsys.readouterr().out


def test_batchnorm_folds_by_default_and_no_fold_bn_keeps_it(tiny, tmp_path, capsys):
    """Like torch.onnx.export, the inference export folds conv + batchnorm; --no-fold-bn keeps the
    BatchNormalization node with its running statistics. Both compute the same function."""
    _tiny_ok(tiny, capsys)
    folded, plain = tmp_path / "folded.onnx", tmp_path / "plain.onnx"
    assert main(["compile", str(tiny), "-o", str(folded)]) == 0
    assert main(["compile", str(tiny), "-o", str(plain), "--no-fold-bn"]) == 0
    ops_folded = [n.op_type for n in onnx.load(folded).graph.node]
    m_plain = onnx.load(plain)
    ops_plain = [n.op_type for n in m_plain.graph.node]
    assert "BatchNormalization" not in ops_folded
    assert ops_plain.count("BatchNormalization") == 1 and len(ops_plain) == len(ops_folded) + 1
    inits = {t.name for t in m_plain.graph.initializer}
    assert {"stem1.bn1.running_mean", "stem1.bn1.running_var"} <= inits
    from dslc.runtime.session import create_session
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    y_folded = create_session(str(folded))[0].run(None, {"x": x})[0]
    y_plain = create_session(str(plain))[0].run(None, {"x": x})[0]
    np.testing.assert_allclose(y_folded, y_plain, rtol=1e-4, atol=1e-5)


def test_compile_with_weights_file(tiny, tmp_path, capsys):
    from dslc.api import load
    from dslc.weights import init_weights, save_weights
    g = load(tiny).graph
    w = {k: v + 1.0 for k, v in init_weights(g, 0).items()}
    wpath = tmp_path / "w.npz"
    save_weights(wpath, w)
    out = tmp_path / "t.onnx"
    assert main(["compile", str(tiny), "-o", str(out), "--weights", str(wpath), "-q"]) == 0
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(out).graph.initializer}
    np.testing.assert_array_equal(inits["head.weight"], w["head.weight"])
    bad = tmp_path / "bad.npz"
    save_weights(bad, {k: v for k, v in w.items() if k != "head.bias"})
    assert main(["compile", str(tiny), "-o", str(out), "--weights", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "missing weight `head.bias`" in err


def test_compile_errors_and_exit_codes(tmp_path, capsys):
    bad = tmp_path / "bad.net"
    bad.write_text("network broken(x: f32[N, 4]) {\n    y = x |> linear(3) |> conv2d(2, 3)\n    return y\n}\n")
    assert main(["compile", str(bad), "-o", str(tmp_path / "b.onnx")]) == 1
    err = capsys.readouterr().err
    assert "bad.net:2" in err and "error" in err
    assert not (tmp_path / "b.onnx").exists()
    assert main(["compile", str(tmp_path / "missing.net")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["compile", str(LENET), "--opset", "9", "-o", str(tmp_path / "x.onnx")]) == 2
    assert "opset 9" in capsys.readouterr().err


def test_internal_error_exit_code(tiny, tmp_path, capsys, monkeypatch):
    from dslc.ops.registry import get
    monkeypatch.setattr(get("relu"), "lower",
                        lambda ctx, node: ctx.emit("Transpose", [ctx.x(node)], ctx.out(node), perm=[0, 2, 3, 1]))
    assert main(["compile", str(tiny), "-o", str(tmp_path / "t.onnx")]) == 3
    err = capsys.readouterr().err
    assert "internal error" in err and "`relu`" in err and "tiny.net:3:" in err


def test_run_onnx_with_inputs_and_outputs(tmp_path, capsys):
    model = tmp_path / "lenet.onnx"
    assert main(["compile", str(LENET), "-o", str(model), "-q"]) == 0
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out_dir = tmp_path / "out"
    assert main(["run", str(model), "--input", f"x={tmp_path / 'x.npy'}", "--output", str(out_dir), "--cpu"]) == 0
    text = capsys.readouterr().out
    assert "CPUExecutionProvider" in text and "output logits: f32[2, 10]" in text
    y = np.load(out_dir / "logits.npy")
    assert y.shape == (2, 10)
    assert not [p for p in out_dir.iterdir() if p.name.startswith(".")]   # no temporary files left


@pytest.mark.parametrize("arr,flag,needle", [
    (np.zeros((2, 1, 28, 28), np.float32), "y", "no input named `y`"),
    (np.zeros((2, 1, 28, 27), np.float32), "x", "dim 3 must be 28"),
    (np.zeros((2, 1, 28, 28), np.float64), "x", "dtype f64"),
    (np.zeros((1, 28, 28), np.float32), "x", "rank 3"),
])
def test_run_rejects_wrong_inputs(tmp_path, capsys, arr, flag, needle):
    model = tmp_path / "lenet.onnx"
    assert main(["compile", str(LENET), "-o", str(model), "-q"]) == 0
    np.save(tmp_path / "a.npy", arr)
    assert main(["run", str(model), "--input", f"{flag}={tmp_path / 'a.npy'}", "--cpu"]) == 2
    err = capsys.readouterr().err
    assert needle in err and "the model expects:" in err and "x: f32[N, 1, 28, 28]" in err


def test_run_net_file_with_random_inputs(tiny, capsys):
    _tiny_ok(tiny, capsys)
    assert main(["run", str(tiny), "--cpu"]) == 0
    text = capsys.readouterr().out
    assert "input  x: f32[1, 3, 8, 8]" in text and "output logits: f32[1, 2]" in text
    assert main(["run", str(tiny), "--cpu", "--dim", "N=4"]) == 0
    assert "output logits: f32[4, 2]" in capsys.readouterr().out


def test_graph_svg_and_dot(tiny, tmp_path, capsys):
    _tiny_ok(tiny, capsys)
    svg = tmp_path / "t.svg"
    assert main(["graph", str(tiny), "-o", str(svg)]) == 0
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")
    text = svg.read_text()
    assert "stem1" in text and "[N, 4, 8, 8]" in text and "logits" in text
    assert main(["graph", str(tiny), "-o", str(tmp_path / "c.svg"), "--depth", "0"]) == 0
    collapsed = (tmp_path / "c.svg").read_text()
    assert "stem1 (3 layers)" in collapsed and "· batchnorm" not in collapsed and "· batchnorm" in text
    capsys.readouterr()
    assert main(["graph", str(tiny), "--format", "dot", "-o", "-"]) == 0
    dot = capsys.readouterr().out
    assert dot.startswith('digraph "tiny"') and "subgraph cluster_" in dot and "->" in dot


def test_graph_of_big_networks_is_layered(tmp_path):
    from dslc.api import load
    from dslc.viz.display import build_display
    from dslc.viz.layout import layout
    for name in ("unet", "resnet50"):
        g = load(ROOT / "networks" / f"{name}.net").graph
        d = build_display(g)
        lay = layout(d)
        # every edge points downwards, no two boxes overlap
        for u, v, _t, pts in lay.edges:
            assert lay.boxes[u].y < lay.boxes[v].y
        boxes = list(lay.boxes.values())
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                if abs(a.y - b.y) < 1:
                    assert abs(a.x - b.x) >= (a.w + b.w) / 2 - 0.5
