"""The lanes are a planning decision of the executor: the linear op and the optimisers do not know they exist,
and the planned lane steps and paired updates compute what the plain ones do."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import dslc
from dslc.train.executor import Executor
from dslc.train.optim import SGD, Adam, AdamW


def test_the_op_and_the_optimiser_import_no_lanes():
    code = ("import sys, dslc.ops.linear, dslc.train.optim, dslc.train.loop\n"
            "bad = [m for m in ('dslc.train.lanes', 'dslc.kernels.lane_kernels') if m in sys.modules]\n"
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def _mlp(tmp_path):
    src = tmp_path / "m.net"
    src.write_text("network m(x: f32[N, 300]) {\n    y = x |> linear(256) |> relu |> linear(10)\n    return y\n}\n"
                   "train {\n    target t: i64[N]\n    loss = cross_entropy(y, t)\n}\n")
    return dslc.load(src).graph


def test_planned_lane_steps_match_the_plain_plan(tmp_path):
    g = _mlp(tmp_path)
    lanes, plain = Executor(g, seed=0, workers=2), Executor(g, seed=0, workers=2, lanes=False)
    if not lanes._uses_lanes():
        pytest.skip("the compiled lane does not run here (one thread, or numpy without its OpenBLAS)")
    assert [s.forward.__name__ for s in lanes.plan("train").steps if s.op == "linear"] == ["lane_forward"] * 2
    assert all(s.forward.__name__ == "linear_forward" for s in plain.plan("train").steps if s.op == "linear")
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((64, 300), dtype=np.float32), rng.integers(0, 10, 64)
    la, _, ga = lanes.loss_and_grads([x], [t])
    lb, _, gb = plain.loss_and_grads([x], [t])
    assert la == pytest.approx(lb, rel=1e-5)
    for k in ga:
        np.testing.assert_allclose(ga[k], gb[k], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cls,kw", [(Adam, {}), (AdamW, {}), (SGD, {"momentum": 0.9, "nesterov": True})])
def test_paired_updates_give_the_bits_of_whole_ones(cls, kw, tmp_path):
    exe = Executor(_mlp(tmp_path), workers=2)
    paired = exe.paired_updates()
    if paired is None:
        pytest.skip("the compiled lane does not run here")
    rng = np.random.default_rng(1)
    base = {"big": np.asfortranarray(rng.standard_normal((256, 300), dtype=np.float32))}
    a, b = {k: v.copy(order="K") for k, v in base.items()}, {k: v.copy(order="K") for k, v in base.items()}
    whole, pairs = cls(a, lr=0.01, threads=1, **kw), cls(b, lr=0.01, threads=2, **kw)
    pairs.use_paired_updates(paired)
    assert pairs._mode == "split"
    for _ in range(3):
        g = {"big": np.asfortranarray(rng.standard_normal((256, 300), dtype=np.float32))}
        whole.step(g)
        pairs.step(g)
    np.testing.assert_array_equal(a["big"], b["big"])
