"""Two lanes for one training step: the calling thread and one helper thread, each owning half of every large
dense layer's weight.

Why: on the 2-vCPU machines this targets, data written by one core and then read by the other can be very
costly; the host sometimes places the two vCPUs far apart. Measured on the 784-256-10 MLP with OpenBLAS's own
two threads: 0.44 ms per step in one placement, 1.14 ms in the other, where Adam alone, reading a weight
gradient that OpenBLAS's other thread had half written, went from 0.06 to 0.56 ms. So a large linear layer's
column-major weight is cut into two column blocks (dslc/kernels/split_dense.py), and each block belongs to one
lane for the whole step: the helper computes block 0's partial forward product, its weight gradient and,
in the optimiser, its Adam update; the main thread does the same for block 1. The halves meet only in
[batch, out]-sized sums. BLAS runs single-threaded meanwhile: the lanes are the two cores.

The hand-off itself is compiled and GIL-free (dslc/kernels/lane_kernels.py): a Python queue or future costs
20-50 us per hand-off here, more than half of what splitting a 784 x 256 GEMM saves. The helper spins for
the next task for about a millisecond (as OpenBLAS's and OpenMP's worker threads do), then sleeps until woken.

The cut is static (weight shapes only), so results never depend on timing: the same seed gives the same
weights. On a loaded machine, where the helper keeps arriving late (its core is shared with other work), the
lane runs both halves on the main thread for a while: the same calls on the same data, so the same results
(measured beside a CPU hog: about 0.9-1.1 ms per MLP step, against 3.6-5.0 ms with OpenBLAS's own threads).
"""
from __future__ import annotations

import os
import threading

import numpy as np

from dslc.kernels.split_dense import SPLIT_MIN, split_column  # noqa: F401  (re-exported)
from dslc.train.parallel import helper, run_pair  # noqa: F401  (re-exported)

_LANE: "Lane | None" = None
_LOCK = threading.Lock()


def native_available() -> bool:
    """Whether the compiled lane can run here (numpy's wheel ships the OpenBLAS whose sgemm it calls)."""
    from dslc.kernels import lane_kernels
    return lane_kernels.AVAILABLE


def lane() -> "Lane":
    """The process's compiled lane (its helper thread starts on first use)."""
    global _LANE
    if _LANE is None:
        with _LOCK:
            if _LANE is None:
                _LANE = Lane()
    return _LANE


def _forget_after_fork():
    global _LANE, _POOL
    _LANE, _POOL = None, None   # a forked child has none of the parent's threads


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


class Lane:
    """A helper thread running compiled tasks that the main thread posts (dslc/kernels/lane_kernels.py)."""
    IDLE_SPINS = 1 << 16    # polls (about a millisecond) the helper waits for the next task before sleeping
    WAIT_SPINS = 1 << 18    # polls (a few ms) the main thread waits before checking whether the helper sleeps
    LATE_OF_16 = 12         # when, in 12 of the last 16 pairs, we waited for the helper longer than our half took,
    SERIAL_PAIRS = 512      # the next 512 pairs run both halves here (a loaded machine: see _record)

    def __init__(self):
        from dslc.kernels import lane_kernels as K
        self._k = K
        self.flags = K.new_flags()
        self.theirs = np.zeros(K.DESC, np.int64)   # the helper's task
        self.ftheirs = np.zeros(8, np.float32)
        self.mine = np.zeros(K.DESC, np.int64)
        self.fmine = np.zeros(8, np.float32)
        self._cond = threading.Condition()
        self._sleeping = False
        self._busy = threading.Lock()   # one pair at a time (two executors training in two threads share it)
        self._late = 0                  # bit mask over the last 16 parallel pairs: 1 where the helper was late
        self._serial_left = 0           # pairs still to run serially
        self.switches = 0               # how often the lane has gone serial
        self._thread = threading.Thread(target=self._serve, name="dslc-lane", daemon=True)
        self._thread.start()

    def _serve(self):
        K, f = self._k, self.flags
        while True:
            K.helper_serve(f, self.theirs, self.ftheirs, self.IDLE_SPINS)
            with self._cond:
                self._sleeping = True
                while f[K.POSTED] <= f[K.DONE]:
                    self._cond.wait()
                self._sleeping = False

    def _wake(self):
        if self._sleeping:
            with self._cond:
                self._cond.notify()

    def _serial(self) -> bool:
        if self._serial_left > 0:
            self._serial_left -= 1
            return True
        return False

    def _record(self, done: bool) -> None:
        """After a parallel pair: was the helper late (we waited longer than our own half took, or it had to be
        woken)? On a loaded machine the helper's core is shared with other work and it is late again and
        again; both halves on this thread are then faster than waiting. Serial runs make the same calls on the
        same data, so results do not change, only the time; after SERIAL_PAIRS the helper is tried again."""
        K = self._k
        late = not done or self.flags[K.WAIT] > self.flags[K.OWN]
        self._late = ((self._late << 1) | int(late)) & 0xFFFF
        if bin(self._late).count("1") >= self.LATE_OF_16:
            self._late = 0
            self._serial_left = self.SERIAL_PAIRS
            self.switches += 1

    def _run(self, kernel, *args) -> None:
        serial = self._serial()
        if not serial:
            self._wake()
        done = False
        try:
            done = kernel(self.flags, self.theirs, self.ftheirs, self.mine, self.fmine, *args, serial,
                          self.WAIT_SPINS)
            if not serial:
                self._record(done)
        finally:   # a Ctrl-C surfaces as the compiled call returns: still wait for the helper before leaving
            self._finish(done)

    def _finish(self, done: bool):
        # the helper may have gone to sleep just as the task was posted: wake it and wait again. An exception
        # here (Ctrl-C) must not leave before the helper has finished: it is writing into the caller's arrays.
        pending = None
        while not done:
            try:
                self._wake()
                done = self._k.wait_done(self.flags, self.WAIT_SPINS)
            except BaseException as e:  # noqa: BLE001  (re-raised below, once the helper is done)
                pending = e
        if pending is not None:
            raise pending

    def gemm_pair(self, on_helper: tuple, on_main: tuple) -> None:
        """Each side (A, B, C, accumulate): C = A @ B, or C += A @ B; float32 2-D operands with a unit stride
        (dslc.kernels.lane_kernels.gemm_desc_ok). The helper does on_helper while this thread does on_main."""
        K = self._k
        for a, b, c, _acc in (on_helper, on_main):
            if not K.gemm_desc_ok(a, b, c):
                raise ValueError(f"not a lane GEMM: {a.dtype}{a.shape}{a.strides} @ {b.dtype}{b.shape}{b.strides} "
                                 f"-> {c.dtype}{c.shape}{c.strides}")
        with self._busy:
            self._run(K.gemm_pair, *on_helper, *on_main, K.SGEMM)

    def adam_pair(self, on_helper: tuple, on_main: tuple, scalars: np.ndarray) -> None:
        """Each side (p, m, v, g): flat float32 contiguous arrays of one length; dslc.kernels.jit.adam_update
        with scalars (beta1, beta2, step_scale, eps_s, l2, decay), the helper's half there, ours here."""
        for p, m, v, g in (on_helper, on_main):
            for a in (p, m, v, g):
                if a.dtype != np.float32 or a.ndim != 1 or not a.flags.c_contiguous or a.size != p.size:
                    raise ValueError("adam_pair needs flat contiguous float32 arrays of one length")
        if scalars.dtype != np.float32 or scalars.shape != (6,):
            raise ValueError("adam_pair needs its six scalars as a float32 array")
        with self._busy:
            self._run(self._k.adam_pair, *on_helper, *on_main, scalars)

    def sgd_pair(self, on_helper: tuple, on_main: tuple, scalars: np.ndarray, first: bool, nesterov: bool) -> None:
        """Each side (p, buf, g): flat float32 contiguous arrays, buf of p's length or empty (no momentum);
        dslc.kernels.jit.sgd_update with scalars (lr, momentum, keep, wd), the helper's half there, ours here."""
        for p, buf, g in (on_helper, on_main):
            for a in (p, buf, g):
                if a.dtype != np.float32 or a.ndim != 1 or not a.flags.c_contiguous:
                    raise ValueError("sgd_pair needs flat contiguous float32 arrays")
            if g.size != p.size or buf.size not in (0, p.size):
                raise ValueError("sgd_pair: the gradient (and a momentum buffer) must have the parameter's length")
        if scalars.dtype != np.float32 or scalars.shape != (4,):
            raise ValueError("sgd_pair needs its four scalars as a float32 array")
        with self._busy:
            self._run(self._k.sgd_pair, *on_helper, *on_main, scalars, bool(first), bool(nesterov))


_EMPTY = np.empty(0, np.float32)


def paired_update(opt, a0, g0, a1, g1, lr) -> bool:
    """An optimiser's two halves of one parameter on the compiled lane (Optimizer.use_paired_updates): the first
    half on the helper, the one that computed that block of a split linear layer's weight gradient, so it is
    still in that core's cache. The same compiled update as the optimiser's own, bit for bit."""
    scalars = opt.kernel_scalars(lr)
    if opt.kernel == "adam":
        lane().adam_pair((a0["p"], a0["m"], a0["v"], np.ascontiguousarray(g0)),
                         (a1["p"], a1["m"], a1["v"], np.ascontiguousarray(g1)), scalars)
        return True
    if opt.kernel == "sgd":
        lane().sgd_pair((a0["p"], a0.get("momentum", _EMPTY), np.ascontiguousarray(g0)),
                        (a1["p"], a1.get("momentum", _EMPTY), np.ascontiguousarray(g1)), scalars, opt.t == 1,
                        opt.nesterov)
        return True
    return False
