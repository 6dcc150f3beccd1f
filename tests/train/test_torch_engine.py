"""The torch engine's machinery: dslc's optimisers on torch (same arithmetic, same state), numpy-vs-torch loss
parity, checkpoints that move between engines (numpy -> torch -> numpy), DistributedDataParallel with gloo in 2
processes against 1, devices and usage errors. The network module comes from the stand-in
(tests/train/torch_stand_in.py), so these tests do not depend on the code generator; test_torch_parity.py runs
the real one (dslc.torchgen) over networks/*.net."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dslc.cli import main  # noqa: E402
from dslc.train import torch_distributed as TD  # noqa: E402
from dslc.train.loop import load_checkpoint, train  # noqa: E402
from dslc.train.optim import make_optimizer  # noqa: E402
from dslc.train.torch_optim import TorchOptimizer  # noqa: E402

HERE = Path(__file__).parent
STAND_IN = HERE / "torch_stand_in.py"

NET = """
network tiny(x: f32[N, 2]) {
    logits = x |> linear(16) as fc1 |> tanh |> linear(16) as fc2 |> relu |> linear(2) as fc3
    return logits
}
train {
    target label: i64[N]
    loss = cross_entropy(logits, label)
    optimizer = %s
    data = linear2d(n=297)
    epochs = 2
    batch_size = 16
}
"""


@pytest.fixture(autouse=True)
def stand_in(monkeypatch):
    sys.path.insert(0, str(HERE))
    import torch_stand_in
    torch_stand_in.install(monkeypatch)
    yield
    sys.path.remove(str(HERE))


def _net(tmp_path, optimizer="sgd(lr=0.1, momentum=0.9)"):
    p = tmp_path / "tiny.net"
    p.write_text(NET % optimizer)
    return p


def _step_losses(history):
    return np.array([r["loss"] for r in history if r["kind"] == "step"])


def _rel(a, b):
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-12)))


# ------------------------------------------------------------------------------------------- optimisers
OPTIMIZERS = [{"name": "sgd", "lr": 0.05}, {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3},
              {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True},
              {"name": "sgd", "lr": 0.05, "momentum": 0.5, "dampening": 0.3},
              {"name": "adam", "lr": 1e-2, "weight_decay": 1e-2}, {"name": "adamw", "lr": 1e-2, "betas": [0.8, 0.99]}]


@pytest.mark.parametrize("spec", OPTIMIZERS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_torch_optimizer_repeats_dslc_updates_and_state_moves_both_ways(spec):
    rng = np.random.default_rng(0)
    shapes = {"a.weight": (7, 5), "a.bias": (7,), "b.weight": (3, 4, 2, 2)}
    init = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    grads = [{k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()} for _ in range(12)]
    ref_params = {k: v.copy() for k, v in init.items()}
    ref = make_optimizer(spec, ref_params)
    tparams = {k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in init.items()}
    topt = TorchOptimizer(spec, tparams)
    for i, gs in enumerate(grads[:6]):
        ref.step({k: v.copy() for k, v in gs.items()}, 0.9 ** i * ref.lr)
        for k, p in tparams.items():
            p.grad = torch.from_numpy(gs[k].copy())
        topt.step(0.9 ** i * topt.lr)
    for k in shapes:
        np.testing.assert_allclose(tparams[k].detach().numpy(), ref_params[k], rtol=2e-6, atol=2e-7)
    # the state is dslc's: torch's state_dict loads into a fresh dslc optimiser, and dslc's into torch
    t_arrays, t_meta = topt.state_dict()
    r_arrays, r_meta = ref.state_dict()
    assert t_meta == r_meta and sorted(t_arrays) == sorted(r_arrays)
    for k in r_arrays:
        np.testing.assert_allclose(t_arrays[k], r_arrays[k], rtol=2e-6, atol=2e-7)
    back_params = {k: tparams[k].detach().numpy().copy() for k in shapes}
    back = make_optimizer(spec, back_params)
    back.load_state_dict(t_arrays, t_meta)
    fresh = {k: torch.nn.Parameter(torch.from_numpy(ref_params[k].copy())) for k in shapes}
    forward = TorchOptimizer(spec, fresh)
    forward.load_state_dict(r_arrays, r_meta)
    for i, gs in enumerate(grads[6:], start=6):
        ref.step({k: v.copy() for k, v in gs.items()}, 0.9 ** i * ref.lr)
        back.step({k: v.copy() for k, v in gs.items()}, 0.9 ** i * ref.lr)
        for k, p in fresh.items():
            p.grad = torch.from_numpy(gs[k].copy())
        forward.step(0.9 ** i * ref.lr)
    for k in shapes:
        np.testing.assert_allclose(back_params[k], ref_params[k], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(fresh[k].detach().numpy(), ref_params[k], rtol=1e-5, atol=1e-6)


def test_torch_optimizer_refuses_second_order_methods(tmp_path):
    r = main(["train", str(_net(tmp_path, "lbfgs()")), "-o", str(tmp_path / "m.onnx"), "-q", "--engine", "torch",
              "--device", "cpu"])
    assert r == 1


# ------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("optimizer", ["sgd(lr=0.1, momentum=0.9, nesterov=true)",
                                       "adamw(lr=0.01, weight_decay=0.05)"])
def test_same_losses_per_step_as_the_numpy_engine(tmp_path, optimizer):
    net = _net(tmp_path, optimizer)
    kw = dict(epochs=1, log_every=1, clip=0.5, schedule={"name": "cosine", "warmup_steps": 3})
    rn = train(net, engine="numpy", **kw)
    rt = train(net, engine="torch", device="cpu", **kw)
    ln, lt = _step_losses(rn.history), _step_losses(rt.history)
    assert len(ln) == len(lt) >= 15
    assert _rel(ln, lt) <= 1e-5
    assert ln[-1] < ln[0]            # it learns (the test would pass for two frozen engines otherwise)
    for k in rn.weights:
        np.testing.assert_allclose(rt.weights[k], rn.weights[k], rtol=1e-4, atol=1e-5)
    assert rt.final["acc"] == pytest.approx(rn.final["acc"])


# ------------------------------------------------------------------------------------------- checkpoints
def _cli(tmp_path, net, *extra):
    return main(["train", str(net), "-o", str(tmp_path / "m.onnx"), "-q", *extra])


def test_checkpoint_moves_numpy_to_torch_to_numpy_and_onnx_is_dslcs(tmp_path):
    import onnxruntime as ort
    net = _net(tmp_path, "adam(lr=0.01)")
    straight = tmp_path / "straight"
    straight.mkdir()
    assert _cli(straight, net, "--epochs", "6") == 0
    w_ref, _o, meta_ref = load_checkpoint(straight / "m.ckpt.npz")
    assert _cli(tmp_path, net, "--epochs", "2") == 0
    assert _cli(tmp_path, net, "--epochs", "4", "--resume", "--engine", "torch", "--device", "cpu") == 0
    _w, opt4, meta4 = load_checkpoint(tmp_path / "m.ckpt.npz")
    assert meta4["engine"] == "torch" and meta4["epoch"] == 4 and meta4["optimizer_state"]["t"] == meta4["step"]
    assert _cli(tmp_path, net, "--epochs", "6", "--resume") == 0
    w, _o, meta = load_checkpoint(tmp_path / "m.ckpt.npz")
    assert "engine" not in meta and meta["step"] == meta_ref["step"]
    for k in w_ref:
        np.testing.assert_allclose(w[k], w_ref[k], rtol=1e-4, atol=1e-5)
    losses = [r["loss"] for r in meta["history"] if r["kind"] == "epoch"]
    ref_losses = [r["loss"] for r in meta_ref["history"] if r["kind"] == "epoch"]
    assert len(losses) == 6 and _rel(np.array(ref_losses), np.array(losses)) <= 1e-5
    # the torch run's ONNX model is dslc's lowering of its weights: it computes what those weights compute
    (tmp_path / "t").mkdir()
    assert _cli(tmp_path / "t", net, "--engine", "torch", "--device", "cpu") == 0
    wt, _o, _m = load_checkpoint(tmp_path / "t" / "m.ckpt.npz")
    x = np.random.default_rng(3).uniform(-1, 1, (5, 2)).astype(np.float32)
    sess = ort.InferenceSession(str(tmp_path / "t" / "m.onnx"))
    got = sess.run(None, {"x": x})[0]
    h = np.tanh(x @ wt["fc1.weight"].T + wt["fc1.bias"])
    h = np.maximum(h @ wt["fc2.weight"].T + wt["fc2.bias"], 0)
    np.testing.assert_allclose(got, h @ wt["fc3.weight"].T + wt["fc3.bias"], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------- DDP
def _metrics(path):
    recs = [json.loads(line) for line in open(path)]
    return np.array([r["loss"] for r in recs if r["kind"] == "step"])


def test_two_gloo_processes_equal_one_process_and_resume_across_process_counts(tmp_path, monkeypatch):
    # batch 16 over 297 training samples: 19 steps an epoch, the last of 9 rows (5 and 4 per process)
    net = _net(tmp_path, "sgd(lr=0.1, momentum=0.9)")
    one, two, mixed = (tmp_path / d for d in ("one", "two", "mixed"))
    for d in (one, two, mixed):
        d.mkdir()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    command = [sys.executable, str(STAND_IN)]
    args = ["train", str(net), "-q", "--engine", "torch", "--device", "cpu", "--epochs", "2"]
    assert _cli(one, net, *args[3:]) == 0
    assert TD.launch([*args, "-o", str(two / "m.onnx")], 2, command) == 0
    assert not (two / "m.ckpt.npz.tmp").exists()
    l1, l2 = _metrics(one / "m.metrics.jsonl"), _metrics(two / "m.metrics.jsonl")
    assert len(l1) == len(l2) == 2 * 19
    assert _rel(l1, l2) <= 1e-5
    w1, _o1, _m1 = load_checkpoint(one / "m.ckpt.npz")
    w2, o2, m2 = load_checkpoint(two / "m.ckpt.npz")
    for k in w1:
        np.testing.assert_allclose(w2[k], w1[k], rtol=1e-5, atol=1e-6)
    assert (two / "m.onnx").is_file()
    # one epoch on 2 processes, the second on 1, from the checkpoint
    assert TD.launch([*args[:-1], "1", "-o", str(mixed / "m.onnx")], 2, command) == 0
    assert _cli(mixed, net, *args[3:], "--resume") == 0
    wm, _o, _m = load_checkpoint(mixed / "m.ckpt.npz")
    for k in w1:
        np.testing.assert_allclose(wm[k], w1[k], rtol=1e-5, atol=1e-6)


def test_a_failing_process_stops_the_group(tmp_path):
    net = _net(tmp_path)
    # a checkpoint that does not exist: every process fails at once; the launcher must return, not hang
    code = TD.launch(["train", str(net), "-q", "--engine", "torch", "--device", "cpu", "--resume",
                      str(tmp_path / "nope.npz")], 2, [sys.executable, str(STAND_IN)])
    assert code == 2


# ------------------------------------------------------------------------------------------- usage
def test_device_and_usage_errors(tmp_path, capsys):
    net = _net(tmp_path)
    assert _cli(tmp_path, net, "--device", "cpu") == 2
    assert "add --engine torch" in capsys.readouterr().err
    assert _cli(tmp_path, net, "--engine", "torch", "--device", "tpu") == 2
    assert "unknown device `tpu`" in capsys.readouterr().err
    assert _cli(tmp_path, net, "--engine", "torch", "--nproc", "0") == 2
    if not torch.cuda.is_available():
        assert _cli(tmp_path, net, "--engine", "torch", "--device", "cuda") == 2
        assert "no CUDA device" in capsys.readouterr().err
        assert _cli(tmp_path, net, "--engine", "torch", "--amp") == 2
        assert "--amp (bf16 autocast) needs a CUDA device" in capsys.readouterr().err


def test_first_line_says_engine_and_device(tmp_path, capsys):
    net = _net(tmp_path)
    assert main(["train", str(net), "-o", str(tmp_path / "m.onnx"), "--engine", "torch", "--device", "auto",
                 "--epochs", "1"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert first.startswith("training tiny on linear2d") and f"engine torch {torch.__version__} on {want}" in first


def test_without_torch_the_torch_engine_says_how_to_install_and_numpy_never_imports_torch(tmp_path):
    net = _net(tmp_path)
    block = "import sys; sys.modules['torch'] = None; from dslc.cli import main; "
    p = subprocess.run([sys.executable, "-c", block + f"sys.exit(main(['train', {str(net)!r}, '-q', '--engine', "
                        f"'torch', '-o', {str(tmp_path / 'm.onnx')!r}]))"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2 and "pip install 'dslc[torch]'" in p.stderr
    probe = ("import sys; from dslc.cli import main; r = main(['train', %r, '-q', '--epochs', '1', '-o', %r]); "
             "print('torch' in sys.modules); sys.exit(r)" % (str(net), str(tmp_path / "n.onnx")))
    p = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip().splitlines()[-1] == "False"
