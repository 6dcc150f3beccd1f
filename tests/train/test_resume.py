"""Checkpoints: a run killed mid-epoch (SIGKILL) and resumed with --resume ends with exactly the weights of an
uninterrupted run; Ctrl-C (SIGINT) stops cleanly after a checkpoint; same seed -> same weights."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import dslc
from dslc.train.loop import load_checkpoint

NET = """
network wide(x: f32[N, 2], h = 768) {
    pred = x |> linear(h) |> tanh |> dropout(0.1) |> linear(h) |> tanh |> linear(1)
    return pred
}
train {
    target z: f32[N, 1]
    loss = mse(pred, z)
    optimizer = adam(lr=1e-3)
    data = sinxsiny(n=6000)
    epochs = 3
    batch_size = 32
}
"""
STEPS_PER_EPOCH = 6000 // 32 + 1  # 188


def _cmd(net, out, *extra):
    return [sys.executable, "-m", "dslc.cli", "train", str(net), "-o", str(out), "-q", "--checkpoint-every", "10",
            *extra]


def _env():
    env = dict(os.environ)
    env.setdefault("OPENBLAS_NUM_THREADS", "1")   # deterministic and fair on a shared machine
    return env


def _final(out):
    w, _opt, meta = load_checkpoint(str(out).replace(".onnx", ".ckpt.npz"))
    return w, meta


def _epochs(path):
    recs = [json.loads(line) for line in open(path)]
    return [(r["epoch"], r["loss"], r.get("val_loss")) for r in recs if r["kind"] == "epoch"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("ref")
    net = d / "wide.net"
    net.write_text(NET)
    out = d / "ref.onnx"
    subprocess.run(_cmd(net, out), check=True, env=_env(), timeout=600)
    w, meta = _final(out)
    assert meta["epoch"] == 3 and meta["step"] == 3 * STEPS_PER_EPOCH
    return net, out, w


def _start_and_stop(net, out, sig, min_step):
    """Start training; once a checkpoint past min_step exists (and the run is still going), send sig."""
    ckpt = str(out).replace(".onnx", ".ckpt.npz")
    for attempt in range(3):
        p = subprocess.Popen(_cmd(net, out), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 300
        while time.time() < deadline and p.poll() is None:
            try:
                _w, _o, meta = load_checkpoint(ckpt)
            except Exception:  # not there yet (or being replaced: the rename is atomic)
                meta = None
            if meta and min_step <= meta["step"] and meta["batch"] > 0:
                p.send_signal(sig)
                break
            time.sleep(0.005)
        outs, errs = p.communicate(timeout=300)
        if p.returncode != 0:
            return p.returncode, outs.decode(), errs.decode()
        os.unlink(ckpt)  # finished before the signal: try again
    pytest.fail("training finished every time before it could be interrupted")


def test_killed_run_resumes_to_identical_weights(reference, tmp_path):
    net, ref_out, ref_w = reference
    out = tmp_path / "run.onnx"
    code, _o, _e = _start_and_stop(net, out, signal.SIGKILL, min_step=STEPS_PER_EPOCH + 20)
    assert code == -signal.SIGKILL
    _w, meta = _final(out)
    assert 0 < meta["batch"] < STEPS_PER_EPOCH and meta["epoch"] >= 1      # stopped mid-epoch
    assert not out.exists()
    r = subprocess.run(_cmd(net, out, "--resume"), env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    w, meta = _final(out)
    assert meta["step"] == 3 * STEPS_PER_EPOCH
    assert sorted(w) == sorted(ref_w)
    for k in w:
        assert np.array_equal(w[k], ref_w[k]), k
    assert _epochs(tmp_path / "run.metrics.jsonl") == _epochs(str(ref_out).replace(".onnx", ".metrics.jsonl"))
    assert out.exists()


def test_sigint_stops_cleanly_with_a_checkpoint(reference, tmp_path):
    net, _ref_out, ref_w = reference
    out = tmp_path / "int.onnx"
    code, stdout, stderr = _start_and_stop(net, out, signal.SIGINT, min_step=30)
    assert code == 130, stderr
    assert "Traceback" not in stderr
    _w, meta = _final(out)
    assert meta["batch"] > 0
    r = subprocess.run(_cmd(net, out, "--resume"), env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    w, _meta = _final(out)
    for k in w:
        assert np.array_equal(w[k], ref_w[k]), k


def test_resume_refuses_a_different_run(reference, tmp_path):
    net, ref_out, _w = reference
    r = subprocess.run(_cmd(net, ref_out, "--resume", "--batch-size", "16"), env=_env(), capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 1
    assert "belongs to a different run" in r.stderr and "batch_size" in r.stderr
    r = subprocess.run(_cmd(net, tmp_path / "none.onnx", "--resume"), env=_env(), capture_output=True, text=True)
    assert r.returncode == 2 and "no checkpoint" in r.stderr


def test_same_seed_same_weights():
    src = NET.replace("h = 768", "h = 16").replace("n=6000", "n=300")
    prog = dslc.load("t.net", text=src)
    a = dslc.train(prog, epochs=2)
    b = dslc.train(prog, epochs=2)
    c = dslc.train(prog, epochs=2, seed=1)
    assert all(np.array_equal(a.weights[k], b.weights[k]) for k in a.weights)
    assert any(not np.array_equal(a.weights[k], c.weights[k]) for k in a.weights)
