"""The compiled two-thread lane (dslc/train/lanes.py, dslc/kernels/lane_kernels.py) and the split linear layer
(dslc/kernels/split_dense.py): every task against numpy, the sleep / wake hand-off, bad operands, fork, and
the executor's use of it (deterministic, close to the unsplit computation)."""
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dslc.train import lanes as L

pytestmark = pytest.mark.skipif(not L.native_available(), reason="numpy's wheel does not ship an OpenBLAS with the "
                                "ILP64 CBLAS sgemm the compiled lane calls; the executor falls back to whole GEMMs")

RNG = np.random.default_rng(7)
NETWORKS = Path(__file__).resolve().parents[2] / "networks"


def _r(*shape):
    return RNG.standard_normal(shape, dtype=np.float32)


def _ops():
    """(A, B) pairs covering each operand layout the split layer uses: plain, transposed, column slices."""
    x, w, gy = _r(33, 70), np.asfortranarray(_r(20, 70)), _r(33, 20)
    k = 31
    return [
        (x[:, :k], w[:, :k].T),          # forward: row slice of x, transposed column block of W
        (x[:, k:], w[:, k:].T),
        (x[:, :k].T, gy),                 # weight gradient: transposed slice of x
        (gy, w[:, k:]),                   # input gradient: a column-major block of W
        (_r(5, 9), _r(9, 4)),             # plain
    ]


@pytest.mark.parametrize("accumulate", [False, True])
def test_gemm_pair_matches_numpy(accumulate):
    lane = L.lane()
    ops = _ops()
    for (a0, b0), (a1, b1) in zip(ops, ops[1:] + ops[:1]):
        c0, c1 = _r(a0.shape[0], b0.shape[1]), _r(a1.shape[0], b1.shape[1])
        want0 = (c0 if accumulate else 0) + a0.astype(np.float64) @ b0.astype(np.float64)
        want1 = (c1 if accumulate else 0) + a1.astype(np.float64) @ b1.astype(np.float64)
        lane.gemm_pair((a0, b0, c0, accumulate), (a1, b1, c1, accumulate))
        np.testing.assert_allclose(c0, want0, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(c1, want1, rtol=1e-5, atol=1e-5)


def test_gemm_pair_writes_only_its_block():
    """Each lane writes its own column block of one array, and nothing outside it."""
    x = _r(16, 40)
    gw = np.full((12, 40), np.nan, np.float32, order="F")
    gw_keep = gw.copy(order="F")
    gy = _r(16, 12)
    L.lane().gemm_pair((x[:, :20].T, gy, gw[:, :20].T, False), (x[:, 20:30].T, gy, gw[:, 20:30].T, False))
    np.testing.assert_allclose(gw[:, :30], (x[:, :30].T @ gy).T, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(gw[:, 30:], gw_keep[:, 30:])


def test_bad_operands_are_refused_not_run():
    lane = L.lane()
    a, b, c = _r(4, 6), _r(6, 3), np.empty((4, 3), np.float32)
    for bad in [(a[:, ::2], b[::2], c),                         # no unit stride
                (a.astype(np.float64), b, c),                   # not float32
                (a, b, np.empty((4, 3), np.float32, order="F")),  # result not row-major
                (a, b, np.empty((4, 2), np.float32))]:           # shapes do not match
        with pytest.raises(ValueError):
            lane.gemm_pair(bad + (False,), (a, b, c, False))
    with pytest.raises(ValueError):
        lane.adam_pair((a.ravel(),) * 4, (a[:, :3].ravel(),) * 3 + (a.ravel(),), np.zeros(6, np.float32))


def test_adam_pair_is_adam_update_on_each_half():
    from dslc.kernels.jit import adam_update
    n0, n1 = 1000, 777
    p, m, v, g = (_r(n0 + n1) for _ in range(4))
    v = np.abs(v)
    scal = np.array([0.9, 0.999, 1e-3, 1e-8, 0.01, 1.0], np.float32)
    want = [a.copy() for a in (p, m, v)]
    adam_update(*want, g, *scal)
    L.lane().adam_pair((p[:n0], m[:n0], v[:n0], g[:n0]), (p[n0:], m[n0:], v[n0:], g[n0:]), scal)
    for got, exp in zip((p, m, v), want):
        np.testing.assert_array_equal(got, exp)   # the same float32 operations: bit for bit


@pytest.mark.parametrize("momentum, nesterov, first, wd", [(0.0, False, False, 0.0), (0.9, False, True, 0.0),
                                                            (0.9, True, False, 1e-4), (0.8, False, False, 0.01)])
def test_sgd_pair_is_sgd_update_on_each_half(momentum, nesterov, first, wd):
    from dslc.kernels.jit import sgd_update
    n0, n1 = 900, 1301
    p, g = _r(n0 + n1), _r(n0 + n1)
    buf = _r(n0 + n1) if momentum else np.empty(0, np.float32)
    keep = 1.0 if nesterov else 0.7
    scal = np.array([0.05, momentum, keep, wd], np.float32)
    want_p, want_b = p.copy(), buf.copy()
    sgd_update(want_p, want_b, g, *scal, first, nesterov)
    halves = (buf[:n0], buf[n0:]) if momentum else (buf, buf)
    L.lane().sgd_pair((p[:n0], halves[0], g[:n0]), (p[n0:], halves[1], g[n0:]), scal, first, nesterov)
    np.testing.assert_array_equal(p, want_p)   # the same float32 operations: bit for bit
    np.testing.assert_array_equal(buf, want_b)


def test_serial_pairs_give_the_same_bits_as_parallel_ones():
    """On a loaded machine the lane runs both halves on the main thread: the same calls, the same results."""
    lane = L.Lane()
    x, w, gy = _r(64, 300), np.asfortranarray(_r(200, 300)), _r(64, 200)
    p, m, v, g = (np.abs(_r(5000)) for _ in range(4))
    scal = np.array([0.9, 0.999, 1e-3, 1e-8, 0.0, 1.0], np.float32)
    out = {}
    for serial in (False, True):
        lane._serial_left = 10 ** 9 if serial else 0
        y0, y1 = np.empty((64, 200), np.float32), np.empty((64, 200), np.float32)
        lane.gemm_pair((x[:, :150], w[:, :150].T, y0, False), (x[:, 150:], w[:, 150:].T, y1, False))
        gw = np.empty((200, 300), np.float32, order="F")
        lane.gemm_pair((x[:, :150].T, gy, gw[:, :150].T, False), (x[:, 150:].T, gy, gw[:, 150:].T, False))
        st = [a.copy() for a in (p, m, v)]
        lane.adam_pair((st[0][:2500], st[1][:2500], st[2][:2500], g[:2500]),
                       (st[0][2500:], st[1][2500:], st[2][2500:], g[2500:]), scal)
        out[serial] = [y0, y1, gw] + st
    assert lane._serial_left > 0   # the serial pairs ran serially
    for a, b in zip(out[False], out[True]):
        np.testing.assert_array_equal(a, b)


def test_a_late_helper_sends_the_lane_serial_for_a_while():
    from dslc.kernels import lane_kernels as K
    lane = L.Lane()
    for late in [True] * (lane.LATE_OF_16 - 1):
        lane.flags[K.OWN], lane.flags[K.WAIT] = 100, 1000 if late else 10
        lane._record(True)
    assert lane._serial_left == 0          # 11 late pairs of 16: still parallel
    lane._record(False)                    # a 12th: the helper had to be woken
    assert lane._serial_left == lane.SERIAL_PAIRS and lane.switches == 1
    a = np.ones((2, 2), np.float32)
    for _ in range(lane.SERIAL_PAIRS):
        lane.gemm_pair((a, a, np.empty_like(a), False), (a, a, np.empty_like(a), False))
    assert lane._serial_left == 0          # then the helper is tried again
    lane.flags[K.OWN], lane.flags[K.WAIT] = 100, 10
    for _ in range(16):
        lane._record(True)                 # a helper on time keeps the lane parallel
    assert lane._serial_left == 0 and lane.switches == 1


def test_helper_sleeps_when_idle_and_wakes_for_work():
    lane = L.Lane()
    lane.IDLE_SPINS = 1 << 10      # sleeps almost at once
    lane.WAIT_SPINS = 1 << 12      # and the main thread soon checks whether it must wake it
    a, b = _r(8, 5), _r(5, 6)
    for _ in range(20):
        time.sleep(0.002)
        c0, c1 = np.empty((8, 6), np.float32), np.empty((8, 6), np.float32)
        lane.gemm_pair((a, b, c0, False), (a, b, c1, False))
        np.testing.assert_allclose(c0, a @ b, rtol=1e-5)
        np.testing.assert_allclose(c1, a @ b, rtol=1e-5)
    assert lane._thread.is_alive()


def test_an_interrupt_while_waiting_waits_for_the_helper_first(monkeypatch):
    """Ctrl-C while the main thread waits must not return before the helper has finished writing our arrays."""
    from dslc.kernels import lane_kernels as K
    lane = L.Lane()
    lane.WAIT_SPINS = 0            # the main thread always falls through to the Python wait loop
    real, calls = K.wait_done, []

    def interrupted_once(flags, spins):
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real(flags, 1 << 22)
    monkeypatch.setattr(K, "wait_done", interrupted_once)
    a, b = _r(256, 300), _r(300, 200)
    c0, c1 = np.zeros((256, 200), np.float32), np.zeros((1, 1), np.float32)
    one = np.ones((1, 1), np.float32)
    with pytest.raises(KeyboardInterrupt):
        lane.gemm_pair((a, b, c0, False), (one, one, c1, False))
    assert len(calls) >= 2
    np.testing.assert_allclose(c0, a @ b, rtol=1e-4, atol=1e-3)   # complete when the interrupt got through
    # an interrupt that surfaces as the compiled call returns (here: in the bookkeeping right after it)
    monkeypatch.setattr(K, "wait_done", real)

    def interrupt(done):
        raise KeyboardInterrupt
    monkeypatch.setattr(lane, "_record", interrupt)
    c0[:] = 0
    with pytest.raises(KeyboardInterrupt):
        lane.gemm_pair((a, b, c0, False), (one, one, c1, False))
    np.testing.assert_allclose(c0, a @ b, rtol=1e-4, atol=1e-3)


def _child_gemm(q):
    a, b = np.ones((3, 4), np.float32), np.ones((4, 2), np.float32)
    c0, c1 = np.zeros((3, 2), np.float32), np.zeros((3, 2), np.float32)
    L.lane().gemm_pair((a, b, c0, False), (a, b, c1, False))
    q.put(float(c0.sum() + c1.sum()))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork start method")
def test_a_forked_child_gets_its_own_helper():
    L.lane().gemm_pair(*[(np.ones((2, 2), np.float32),) * 3 + (False,)] * 2)   # the parent's helper exists
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child_gemm, args=(q,))
    p.start()
    p.join(60)
    assert p.exitcode == 0 and q.get(timeout=5) == 48.0


# --------------------------------------------------------------------------- the split linear layer
def _ctx():
    from dslc.kernels.context import ExecContext
    c = ExecContext(True)
    c.lanes = L.lane()
    return c


def test_split_linear_forward_and_vjp_match_the_whole_layer():
    from dslc.kernels.context import ExecContext
    from dslc.ops.linear import linear_forward, linear_vjp
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 24, 300), dtype=np.float32)       # leading dims are folded into rows
    w = np.asfortranarray(rng.standard_normal((256, 300), dtype=np.float32))
    assert w.size >= L.SPLIT_MIN
    ws = {"weight": w, "bias": rng.standard_normal(256, dtype=np.float32)}
    gy = rng.standard_normal((5, 24, 256), dtype=np.float32)
    attrs = {"out": 256, "bias": True}
    split, whole = _ctx(), ExecContext(True)
    (y_s,), _ = linear_forward(split, [x], ws, attrs)
    (y_w,), _ = linear_forward(whole, [x], ws, attrs)
    assert y_s.shape == y_w.shape == (5, 24, 256) and y_s.dtype == np.float32
    np.testing.assert_allclose(y_s, y_w, rtol=2e-5, atol=2e-4)
    (gx_s,), gw_s = linear_vjp(split, [gy], None, [x], ws, attrs)
    (gx_w,), gw_w = linear_vjp(whole, [gy], None, [x], ws, attrs)
    np.testing.assert_allclose(gx_s, gx_w, rtol=2e-5, atol=2e-4)
    np.testing.assert_allclose(gw_s["weight"], gw_w["weight"], rtol=2e-5, atol=2e-3)
    np.testing.assert_array_equal(gw_s["bias"], gw_w["bias"])
    assert gw_s["weight"].flags.f_contiguous and gw_s["weight"].dtype == np.float32
    # a small or row-major weight is never split
    from dslc.kernels.split_dense import split_at
    assert split_at(split, w) == 150
    assert split_at(split, np.ascontiguousarray(w)) is None
    assert split_at(split, np.asfortranarray(w[:100, :100])) is None
    assert split_at(whole, w) is None


def test_executor_uses_lanes_for_a_large_dense_layer_only():
    import dslc
    from dslc.train.executor import Executor
    from dslc.train.parallel import can_control_blas
    if not can_control_blas():
        pytest.skip("the BLAS thread count cannot be controlled here")
    net = dslc.load(str(NETWORKS / "mlp_mnist.net")).graph
    assert Executor(net, workers=2)._uses_lanes()
    assert not Executor(net, workers=1)._uses_lanes()
    assert not Executor(net, workers=2, lanes=False)._uses_lanes()
    for other in ("lenet5.net", "vit.net"):   # convolutions / attention keep multi-threaded BLAS
        assert not Executor(dslc.load(str(NETWORKS / other)).graph, workers=2)._uses_lanes()


def test_lane_training_is_deterministic_and_close_to_one_thread():
    import dslc
    from dslc.train.executor import Executor
    from dslc.train.optim import make_optimizer
    net = dslc.load(str(NETWORKS / "mlp_mnist.net")).graph
    rng = np.random.default_rng(0)
    x = rng.random((64, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 64)

    def train(workers):
        exe = Executor(net, seed=0, workers=workers)
        opt = make_optimizer("adam", {k: exe.weights[k] for k in exe.trainable})
        losses = []
        for _ in range(5):
            loss, _aux, grads = exe.loss_and_grads([x], [y])
            opt.step(grads)
            losses.append(loss)
        out = exe.forward([x])
        return losses, {k: v.copy() for k, v in exe.weights.items()}, next(iter(out.values()))

    a, b, one = train(2), train(2), train(1)
    L.lane()._serial_left = 10 ** 9           # the lane as on a loaded machine: both halves on one thread
    try:
        serial = train(2)
    finally:
        L.lane()._serial_left = 0
    for k in a[1]:
        np.testing.assert_array_equal(serial[1][k], a[1][k])
    assert a[0] == b[0]
    for k in a[1]:
        np.testing.assert_array_equal(a[1][k], b[1][k])
        np.testing.assert_allclose(a[1][k], one[1][k], rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(a[0], one[0], rtol=1e-4)
    np.testing.assert_allclose(a[2], one[2], rtol=1e-3, atol=1e-4)
    assert a[0][-1] < a[0][0]


def test_lane_training_stopped_and_resumed_ends_bit_identical(tmp_path):
    """A run on lanes, stopped mid-epoch after a checkpoint and resumed, ends with exactly the weights of an
    uninterrupted run (with evaluation between the epochs, which runs on the lanes too)."""
    import dslc
    from dslc.train import data as D
    from dslc.train.executor import Executor
    from dslc.train.loop import Settings, run_training
    net = dslc.load(str(NETWORKS / "mlp_mnist.net")).graph
    if not Executor(net)._uses_lanes():
        pytest.skip("one thread here: no lanes")
    rng = np.random.default_rng(1)
    x = rng.random((600, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 600)
    ds = D.Dataset("rand", D.Split([x[:500]], [y[:500]]), task="classification", num_classes=10,
                   test=D.Split([x[500:]], [y[500:]]))
    s = Settings.resolve(net, data="rand", epochs=2, batch_size=64, lr=1e-3, optimizer="adam", seed=0)
    s.checkpoint_every = 3
    full = run_training(net, s, dataset=ds, quiet=True, output=tmp_path / "full.onnx", export=False)
    part = run_training(net, s, dataset=ds, quiet=True, output=tmp_path / "part.onnx", export=False,
                        stop_after_steps=11)
    assert part.interrupted and part.step == 11
    rest = run_training(net, s, dataset=ds, quiet=True, output=tmp_path / "part.onnx", export=False, resume=True)
    assert rest.step == full.step
    for k, w in full.weights.items():
        np.testing.assert_array_equal(rest.weights[k], w)
    assert rest.final["loss"] == pytest.approx(full.final["loss"], rel=1e-6)
