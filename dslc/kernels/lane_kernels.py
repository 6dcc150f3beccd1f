"""Compiled, GIL-free hand-off of work between the main thread and one helper thread (see dslc/train/lanes.py).

A Python hand-off (a queue, a condition variable, a future) costs 20-50 us on the 2-vCPU machines this targets,
and each of the two threads then needs the GIL again, which costs the same again: more than half of what a
split 784 x 256 GEMM saves. Here both sides stay in compiled code for the whole parallel region:

    main:    fill the helper's task descriptor, publish it (a release store of a sequence number), run its own
             task, spin on the helper's done number (acquire loads)
    helper:  spin on the published number, run the task, publish done; after `idle_spins` polls with no work it
             returns to Python and sleeps on a condition variable (dslc/train/lanes.py wakes it)
Both spins call sched_yield every few polls: on a loaded machine the thread being waited for may be queued
behind the spinning one on the same core.

Tasks are plain int64 / float32 descriptors, so the helper never touches a Python object. One descriptor per
side is enough: the main thread posts the next task only once the helper has finished the last.
    GEMM  C = op(A) @ op(B) (+ C): single-threaded OpenBLAS sgemm, called through its CBLAS entry point in the
          library numpy ships (the executor holds OpenBLAS at one thread meanwhile: the lanes are the cores);
    ADAM  dslc.kernels.jit.adam_update over raw float32 pointers;
    SGD   dslc.kernels.jit.sgd_update likewise (momentum buffer optional).
Only float32, unit-stride 2-D operands. Every kernel is checked against numpy in tests/train/test_lanes.py.
"""
from __future__ import annotations

import ctypes

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

from dslc.kernels.jit import adam_update, jit, sgd_update

GEMM, ADAM, SGD = 1, 2, 3
DESC = 16                  # int64 slots per task descriptor
POSTED, DONE = 0, 8        # sequence numbers in the flags array, a cache line apart
YIELD = 16                 # flags[YIELD]: the address of libc's sched_yield (0: none), called while spinning
OWN, WAIT = 20, 21         # the last pair's cycles (time-stamp counter): the main thread's own task, its wait after
FLAGS = 24                 # length of the flags array
YIELD_EVERY = 32           # polls between sched_yield calls


# ---------------------------------------------------------------------------------------- memory primitives
@intrinsic
def load_acquire(typingctx, arr, idx):
    """arr[idx] as an atomic acquire load (a plain load in a loop could be hoisted out of it)."""
    sig = arr.dtype(arr, idx)

    def codegen(context, builder, sig, args):
        a = context.make_array(sig.args[0])(context, builder, args[0])
        return builder.load_atomic(builder.gep(a.data, [args[1]]), "acquire", 8)
    return sig, codegen


@intrinsic
def store_release(typingctx, arr, idx, val):
    """arr[idx] = val as an atomic release store (everything written before it is visible first)."""
    sig = types.void(arr, idx, val)

    def codegen(context, builder, sig, args):
        a = context.make_array(sig.args[0])(context, builder, args[0])
        v = context.cast(builder, args[2], sig.args[2], sig.args[0].dtype)
        builder.store_atomic(v, builder.gep(a.data, [args[1]]), "release", 8)
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def _f32ptr(typingctx, addr):
    sig = types.CPointer(types.float32)(addr)

    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], context.get_value_type(sig.return_type))
    return sig, codegen


@intrinsic
def _cycles(typingctx):
    """The time-stamp counter (llvm.readcyclecounter: rdtsc on x86)."""
    sig = types.int64()

    def codegen(context, builder, sig, args):
        from llvmlite import ir
        fn = builder.module.declare_intrinsic("llvm.readcyclecounter", fnty=ir.FunctionType(ir.IntType(64), []))
        return builder.call(fn, [])
    return sig, codegen


@intrinsic
def _call_int_void(typingctx, fn):
    """Call `int f(void)` at address fn."""
    sig = types.void(fn)

    def codegen(context, builder, sig, args):
        from llvmlite import ir
        fnty = ir.FunctionType(ir.IntType(32), [])
        builder.call(builder.inttoptr(args[0], fnty.as_pointer()), [])
        return context.get_dummy_value()
    return sig, codegen


# ---------------------------------------------------------------------------------------- BLAS
def _find_sgemm() -> int:
    """The address of the ILP64 CBLAS sgemm in the OpenBLAS that numpy's wheel ships, or 0. The address is
    passed to the kernels as an argument (not a global) so that they can be cached on disk."""
    from dslc.kernels.openblas import libraries
    for lib in libraries():
        for name in ("scipy_cblas_sgemm64_", "cblas_sgemm64_"):
            f = getattr(lib, name, None)
            if f is not None:
                return ctypes.cast(f, ctypes.c_void_p).value or 0
    return 0


SGEMM = _find_sgemm()
AVAILABLE = SGEMM != 0


def _find_sched_yield() -> int:
    """libc's sched_yield: a spinning thread gives its core to any other runnable thread (on a loaded machine
    the thread it waits for may be queued behind it), as OpenBLAS's spinning workers do."""
    try:
        return ctypes.cast(ctypes.CDLL(None).sched_yield, ctypes.c_void_p).value or 0
    except (OSError, AttributeError):
        return 0


SCHED_YIELD = _find_sched_yield()


def new_flags() -> np.ndarray:
    flags = np.zeros(FLAGS, np.int64)
    flags[YIELD] = SCHED_YIELD
    return flags
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


@intrinsic
def _call_sgemm(typingctx, fn, order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """cblas_sgemm(order, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc) at address fn (ILP64:
    64-bit dimensions; the enums are C ints)."""
    sig = types.void(fn, order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

    def codegen(context, builder, sig, args):
        from llvmlite import ir
        i32, i64, f32, vp = ir.IntType(32), ir.IntType(64), ir.FloatType(), ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [i32, i32, i32, i64, i64, i64, f32, vp, i64, vp, i64, f32, vp, i64])
        kinds = [i32, i32, i32, i64, i64, i64, f32, vp, i64, vp, i64, f32, vp, i64]
        vals = []
        for v, t, want in zip(args[1:], sig.args[1:], kinds):
            if want is vp:
                vals.append(builder.inttoptr(v, vp))
            elif want is f32:
                vals.append(context.cast(builder, v, t, types.float32))
            else:
                vals.append(builder.trunc(v, want) if want is i32 else v)
        builder.call(builder.inttoptr(args[0], fnty.as_pointer()), vals)
        return context.get_dummy_value()
    return sig, codegen


def gemm_desc_ok(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> bool:
    """Whether C = A @ B can be a GEMM task: float32 2-D operands, each with one unit stride (C: rows)."""
    for x in (a, b, c):
        if x.dtype != np.float32 or x.ndim != 2 or 4 not in x.strides:
            return False
    return c.strides[1] == 4 and a.shape[1] == b.shape[0] and c.shape == (a.shape[0], b.shape[1])


if AVAILABLE:
    @jit
    def _fill_gemm(d, a, b, c, accumulate, sgemm):
        """Descriptor of C (+)= A @ B for row-major sgemm; a stride-1 first axis means a transposed operand."""
        d[0] = GEMM
        ta = a.strides[1] != 4
        tb = b.strides[1] != 4
        d[1] = 1 if ta else 0
        d[2] = 1 if tb else 0
        d[3] = c.shape[0]
        d[4] = c.shape[1]
        d[5] = a.shape[1]
        d[6] = a.ctypes.data
        d[7] = max(1, (a.strides[1] if ta else a.strides[0]) // 4)
        d[8] = b.ctypes.data
        d[9] = max(1, (b.strides[1] if tb else b.strides[0]) // 4)
        d[10] = c.ctypes.data
        d[11] = max(1, c.strides[0] // 4)
        d[12] = 1 if accumulate else 0
        d[13] = sgemm

    @jit
    def _fill_adam(d, fd, p, m, v, g, scalars):
        d[0] = ADAM
        d[1] = p.size
        d[2] = p.ctypes.data
        d[3] = m.ctypes.data
        d[4] = v.ctypes.data
        d[5] = g.ctypes.data
        for i in range(6):
            fd[i] = scalars[i]

    @jit
    def _fill_sgd(d, fd, p, buf, g, scalars, first, nesterov):
        d[0] = SGD
        d[1] = p.size
        d[2] = p.ctypes.data
        d[3] = buf.ctypes.data if buf.size else p.ctypes.data   # any valid address for an empty buffer
        d[4] = buf.size
        d[5] = g.ctypes.data
        d[6] = 1 if first else 0
        d[7] = 1 if nesterov else 0
        for i in range(4):
            fd[i] = scalars[i]

    @jit
    def run_task(d, fd):
        if d[0] == GEMM:
            if d[3] > 0 and d[4] > 0:
                _call_sgemm(d[13], np.int64(_ROW_MAJOR), np.int64(_TRANS if d[1] else _NO_TRANS),
                            np.int64(_TRANS if d[2] else _NO_TRANS), d[3], d[4], d[5], np.float32(1.0), d[6], d[7],
                            d[8], d[9], np.float32(d[12]), d[10], d[11])
        elif d[0] == ADAM:
            n = d[1]
            adam_update(numba.carray(_f32ptr(d[2]), n), numba.carray(_f32ptr(d[3]), n),
                        numba.carray(_f32ptr(d[4]), n), numba.carray(_f32ptr(d[5]), n),
                        fd[0], fd[1], fd[2], fd[3], fd[4], fd[5])
        elif d[0] == SGD:
            n = d[1]
            sgd_update(numba.carray(_f32ptr(d[2]), n), numba.carray(_f32ptr(d[3]), d[4]),
                       numba.carray(_f32ptr(d[5]), n), fd[0], fd[1], fd[2], fd[3], d[6] != 0, d[7] != 0)

    @jit
    def _pause(flags, spins):
        if spins % YIELD_EVERY == 0 and flags[YIELD] != 0:
            _call_int_void(flags[YIELD])

    @jit
    def helper_serve(flags, theirs, ftheirs, idle_spins):
        """The helper's loop: run each published task; return after idle_spins polls without one."""
        while True:
            seen = load_acquire(flags, DONE)
            spins = 0
            while load_acquire(flags, POSTED) <= seen:
                spins += 1
                if spins > idle_spins:
                    return
                _pause(flags, spins)
            run_task(theirs, ftheirs)
            store_release(flags, DONE, seen + 1)

    @jit
    def _post_run_wait(flags, theirs, ftheirs, mine, fmine, serial, max_spins):
        """Run the helper's task (theirs) there and ours here; serial: both here, the helper's first
        (the same calls, so the same results). Records our task's and our wait's cycles in flags[OWN/WAIT]."""
        if serial:
            run_task(theirs, ftheirs)
            run_task(mine, fmine)
            return True
        n = load_acquire(flags, POSTED) + 1
        store_release(flags, POSTED, n)
        t0 = _cycles()
        run_task(mine, fmine)
        t1 = _cycles()
        done = wait_done(flags, max_spins)
        flags[OWN] = t1 - t0
        flags[WAIT] = _cycles() - t1
        return done

    @jit
    def wait_done(flags, max_spins):
        """Spin until the helper has finished the last published task; False after max_spins polls."""
        n = load_acquire(flags, POSTED)
        spins = 0
        while load_acquire(flags, DONE) < n:
            spins += 1
            if spins > max_spins:
                return False
            _pause(flags, spins)
        return True

    @jit
    def gemm_pair(flags, theirs, ftheirs, mine, fmine, a0, b0, c0, acc0, a1, b1, c1, acc1, sgemm, serial, max_spins):
        """Helper: C0 (+)= A0 @ B0; this thread: C1 (+)= A1 @ B1 (serial: both here). False if the helper did
        not finish within max_spins polls (it may be asleep: the caller wakes it and waits again)."""
        _fill_gemm(theirs, a0, b0, c0, acc0, sgemm)
        _fill_gemm(mine, a1, b1, c1, acc1, sgemm)
        return _post_run_wait(flags, theirs, ftheirs, mine, fmine, serial, max_spins)

    @jit
    def adam_pair(flags, theirs, ftheirs, mine, fmine, p0, m0, v0, g0, p1, m1, v1, g1, scalars, serial, max_spins):
        """Adam on two flat halves: the helper updates (p0, m0, v0) from g0, this thread (p1, m1, v1) from g1
        (serial: both here). scalars: beta1, beta2, step_scale, eps_s, l2, decay (float32, as adam_update takes
        them)."""
        _fill_adam(theirs, ftheirs, p0, m0, v0, g0, scalars)
        _fill_adam(mine, fmine, p1, m1, v1, g1, scalars)
        return _post_run_wait(flags, theirs, ftheirs, mine, fmine, serial, max_spins)

    @jit
    def sgd_pair(flags, theirs, ftheirs, mine, fmine, p0, b0, g0, p1, b1, g1, scalars, first, nesterov, serial,
                 max_spins):
        """SGD on two flat halves (b: the momentum buffer's half, or empty): the helper's there, ours here.
        scalars: lr, momentum, keep (1 - dampening), wd (float32, as sgd_update takes them)."""
        _fill_sgd(theirs, ftheirs, p0, b0, g0, scalars, first, nesterov)
        _fill_sgd(mine, fmine, p1, b1, g1, scalars, first, nesterov)
        return _post_run_wait(flags, theirs, ftheirs, mine, fmine, serial, max_spins)
