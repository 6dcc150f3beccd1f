"""export-torch writes one nn.Module class per block: a block called N times with the same structure is one class
instantiated N times (sizes that differ become constructor arguments), nested blocks are nested modules at
their scope paths, and state_dict() names stay dslc's weight names. The generated module computes what the
executor computes, also for blocks with two tensor inputs, two results, a result that is an input, and block
calls inside a repeat of several stages."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import dslc  # noqa: E402
from dslc import ir  # noqa: E402
from dslc.torchgen import build_module, module_source  # noqa: E402
from dslc.train.executor import Executor  # noqa: E402
from dslc.weights import init_weights  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

NET = """
block unit(x, c) {
    y = x |> linear(c) |> relu
    return y
}

block pair(x, skip, c) {
    a = x |> linear(c)
    b = a + skip
    return b, skip
}

network blocks(x: f32[N, 6]) {
    h = x |> repeat 4 as u { unit(6) }
    wide = h |> unit(9) as widen
    p, q = pair(h, x, 6) as first
    r = p |> repeat 2 as mix { linear(6) |> unit(6) }
    out = concat([r, q, wide], axis=1)
    return out
}
"""


def _classes(src: str) -> list[str]:
    return re.findall(r"^class (\w+)\(nn\.Module\):", src, re.M)


def _compare(g, m, batches=(1, 3)):
    w = init_weights(g, 0)
    m.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in w.items()})
    m.eval()
    exe = Executor(g, weights=w)
    t = g.nodes[g.graph["inputs"][0]]["outputs"][0]
    for n in batches:
        x = np.random.default_rng(n).standard_normal((n, *t.shape[1:])).astype(np.float32)
        with torch.no_grad():
            y = m(torch.from_numpy(x))
        ref = next(iter(exe.forward([x]).values()))
        np.testing.assert_allclose(y.numpy(), ref, rtol=1e-5, atol=1e-5 * max(np.abs(ref).max(), 1.0))


def test_a_block_called_n_times_is_one_class_instantiated_n_times(tmp_path):
    path = tmp_path / "blocks.net"
    path.write_text(NET)
    prog = dslc.load(path)
    assert prog.ok, prog.diagnostics
    g = prog.graph
    src = module_source(g)
    assert _classes(src) == ["Unit", "Pair", "Blocks"]   # unit(9) too: its sizes are constructor arguments
    m = build_module(g)
    units = [name for name, mod in m.named_modules() if type(mod).__name__ == "Unit"]
    assert units == ["u1", "u2", "u3", "u4", "widen", "mix1.unit1", "mix2.unit1"]
    assert type(m.first).__name__ == "Pair"
    assert "self.widen = Unit(9)" in src and "_attach(self, 'mix1.unit1', Unit(6))" in src
    assert "_params(self, 'fc1', True, weight=((c, 6), 'fan_in'), bias=((c,), 'zeros'))" in src
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == \
        {name: tuple(spec.shape) for name, _n, spec in ir.weight_names(g)}
    # a result that is one of the block's inputs is the caller's own value: the block returns the rest
    assert "def forward(self, x, skip):" in src and "        return add1\n" in src
    assert "first = self.first(u4, x)" in src and "torch.cat([mix2_unit1, x, widen], dim=1)" in src
    assert "blocks.net:3: y = x |> linear(c) |> relu" in src     # the block's own .net lines as comments
    _compare(g, m)


def test_resnet18_blocks_are_classes_and_state_dict_keys_are_dslc_weight_names():
    g = dslc.load(ROOT / "networks" / "resnet18.net").graph
    src = module_source(g)
    assert _classes(src) == ["BasicBlock", "BasicStage", "BasicBlock2", "BasicStage2", "Resnet18"]
    m = build_module(g)
    kinds = {}
    for name, mod in m.named_modules():
        kinds.setdefault(type(mod).__name__, []).append(name)
    # stride-1 blocks share a class whatever their width; the first block of layers 2-4 has the projection
    assert kinds["BasicBlock"] == ["layer1.block1", "layer1.block2", "layer2.block2", "layer3.block2", "layer4.block2"]
    assert kinds["BasicBlock2"] == ["layer2.block1", "layer3.block1", "layer4.block1"]
    assert kinds["BasicStage2"] == ["layer2", "layer3", "layer4"]
    assert "self.layer3 = BasicStage2(256, 128)" in src and "def __init__(self, c, x_channels):" in src
    assert set(m.state_dict()) == {name for name, _n, _s in ir.weight_names(g)}
    assert "layer2.block1.downsample_conv.weight" in m.state_dict()


def test_resnet18_32_block_module_matches_the_executor():
    g = dslc.load(ROOT / "benchmarks" / "nets" / "resnet18_32.net").graph
    _compare(g, build_module(g), batches=(2,))
