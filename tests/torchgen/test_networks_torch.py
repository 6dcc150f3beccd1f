"""Every shipped network exports to PyTorch: the generated module builds, its state_dict holds exactly dslc's
weight names and shapes, its parameter count is `dslc check`'s, and (for the networks small enough to run here
in a moment) its forward equals the executor's at two batch sizes, symbolic dims staying dynamic."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import dslc  # noqa: E402
from dslc import ir  # noqa: E402
from dslc.cli import main  # noqa: E402
from dslc.torchgen import build_module, loss_module  # noqa: E402
from dslc.train.executor import Executor  # noqa: E402
from dslc.weights import init_weights  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
NETWORKS = sorted((ROOT / "networks").glob("*.net"))
RUN_BELOW = 3_000_000      # parameters: forward-compared here; bigger ones are built and counted


@pytest.mark.parametrize("path", NETWORKS, ids=lambda p: p.stem)
def test_network_exports(path):
    prog = dslc.load(path)
    g = prog.graph
    m = build_module(g)
    names = {name: tuple(spec.shape) for name, _n, spec in ir.weight_names(g)}
    sd = m.state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == names
    n_params = sum(p.numel() for p in m.parameters())
    assert n_params == prog.summary().trainable_params
    if n_params > RUN_BELOW:
        return
    w = init_weights(g, 0)
    m.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in w.items()})
    m.eval()
    exe = Executor(g, weights=w)
    for batch in (1, 3):
        rng = np.random.default_rng(batch)
        feeds = []
        for name in g.graph["inputs"]:
            t = g.nodes[name]["outputs"][0]
            # other symbolic dims (a sequence length T) change between the two runs too
            shape = tuple(batch if d == "N" else (5 + batch if isinstance(d, str) else d) for d in t.shape)
            if t.dtype.startswith("i"):   # token ids, within every embedding table that reads them
                vocab = min(g.nodes[v]["attrs"]["vocab"] for v in g.successors(name)
                            if g.nodes[v]["op"] == "embedding")
                feeds.append(rng.integers(0, vocab, shape).astype(np.int64))
            else:
                feeds.append(rng.standard_normal(shape).astype(np.float32))
        with torch.no_grad():
            out = m(*[torch.from_numpy(f) for f in feeds])
        outs = [out] if isinstance(out, torch.Tensor) else list(out)
        want = exe.forward(feeds)
        for (name, _), y in zip(g.graph["outputs"].items(), outs):
            ref = want[name]
            assert tuple(y.shape) == ref.shape
            np.testing.assert_allclose(y.numpy(), ref, rtol=1e-5, atol=1e-5 * max(np.abs(ref).max(), 1.0))


def test_loss_module_gives_the_executors_loss_and_gradients():
    g = dslc.load(ROOT / "networks" / "lenet5.net").graph
    w = init_weights(g, 0)
    net = build_module(g)
    net.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in w.items()})
    rng = np.random.default_rng(0)
    x = rng.random((4, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 4)
    loss, pred, target = loss_module(net, g)([torch.from_numpy(x)], [torch.from_numpy(y)])
    loss.backward()
    ref, aux, grads = Executor(g, weights=w).loss_and_grads([x], [y])
    assert loss.item() == pytest.approx(ref, rel=1e-5)
    np.testing.assert_allclose(pred.detach().numpy(), aux[0], rtol=1e-5, atol=1e-5)
    params = dict(net.named_parameters())
    for k, gw in grads.items():
        np.testing.assert_allclose(params[k].grad.numpy(), gw, rtol=1e-4, atol=1e-5, err_msg=k)


def test_export_torch_cli_writes_a_module_that_imports(tmp_path, capsys):
    out = tmp_path / "lenet.py"
    assert main(["export-torch", str(ROOT / "networks" / "lenet5.net"), "-o", str(out)]) == 0
    text = out.read_text()
    assert "import torch" in text and "lenet5.net:" in text   # the .net lines as comments
    ns: dict = {}
    exec(compile(text, str(out), "exec"), ns)
    assert sum(p.numel() for p in ns["Lenet5"]().parameters()) == 61706
    bad = tmp_path / "bad.net"
    bad.write_text("network bad(x: f32[N, 4]) {\n    y = x |> linear(3) |> nosuchop\n    return y\n}\n")
    assert main(["export-torch", str(bad), "-o", str(tmp_path / "bad.py")]) == 1
    assert "nosuchop" in capsys.readouterr().err and not (tmp_path / "bad.py").exists()
