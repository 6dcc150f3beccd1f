"""Threads for training: how many the executor and optimiser may use, and the BLAS library's own thread count.

`thread_budget()`: 2 when two or more cores are ours and no DSLC_NUM_THREADS / OMP_NUM_THREADS /
OPENBLAS_NUM_THREADS variable asks for fewer (capped at 2: the machines this targets have 2 cores).

`blas_threads(n)`: a context manager that sets the BLAS thread count (the OpenBLAS that numpy wheels ship, through
ctypes) and restores it; where that library is not found it does nothing and says so (yields False). The executor's
batch-parallel mode runs two single-threaded halves of a batch at once; BLAS threads on top of that would
oversubscribe the cores (and OpenBLAS threads spin while they wait).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

from dslc.kernels.split_dense import split_column as halves_cut  # noqa: F401  (where a parameter is halved)

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def helper() -> ThreadPoolExecutor:
    """A Python helper thread for coarse work (created on first use): the other half of a large optimiser
    update, or of a batch (the executor's batch-parallel step)."""
    global _POOL
    if _POOL is None:
        with _POOL_LOCK:
            if _POOL is None:
                _POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dslc-helper")
    return _POOL


def thread_budget() -> int:
    for var in ("DSLC_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        v = os.environ.get(var, "").strip()
        if v.isdigit():
            return max(1, min(int(v), 2))
    try:
        return min(len(os.sched_getaffinity(0)), 2)
    except (AttributeError, OSError):
        return min(os.cpu_count() or 1, 2)


def run_pair(on_helper, on_main):
    """Run on_helper() on the Python helper thread while on_main() runs here; returns (helper's, main's)."""
    fut = helper().submit(on_helper)
    try:
        b = on_main()
    finally:
        a = fut.result()
    return a, b


class _OpenBLAS:
    def __init__(self, lib, get, set_):
        self.get = getattr(lib, get)
        self.set = getattr(lib, set_)
        self.get.restype = ctypes.c_int
        self.set.argtypes = [ctypes.c_int]


@lru_cache(maxsize=1)
def _controller():
    """An object with get() / set(n) for the BLAS thread count, or None when it cannot be controlled."""
    from dslc.kernels.openblas import libraries
    for lib in libraries():
        for get, set_ in (("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
                          ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
                          ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
                          ("openblas_get_num_threads", "openblas_set_num_threads")):
            if hasattr(lib, get) and hasattr(lib, set_):
                return _OpenBLAS(lib, get, set_)
    return None


def can_control_blas() -> bool:
    return _controller() is not None


@contextlib.contextmanager
def blas_threads(n: int):
    ctl = _controller()
    if ctl is None:
        yield False
        return
    old = ctl.get()
    if old == n:
        yield True
        return
    ctl.set(n)
    try:
        yield True
    finally:
        ctl.set(old)
