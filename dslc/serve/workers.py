"""`dslc serve --workers N|auto`: N server processes under a supervising parent.

The parent binds the HTTP socket once and forks the workers, which all accept on it (the kernel hands each new
connection to one of them); for gRPC, whose server binds by itself, the parent reserves the port with
SO_REUSEPORT and every worker binds it the same way.  Each worker is a whole `dslc serve`: its own event loop,
onnxruntime sessions and dynamic batchers.  Forking happens before any session or thread exists.

Metrics: each worker writes a snapshot of its counters and histograms to a directory the parent made (every
SNAPSHOT_SECONDS and at exit, atomically); a scrape of /metrics, whichever worker answers it, sums its own live
values with the others' latest snapshots (metrics.Metrics.share).  The Triton statistics endpoints stay
per worker: they describe the process that answered.

Signals: SIGTERM/SIGINT to the parent go to every worker once (each shuts down gracefully: no new connections,
requests in flight finish); the parent exits when all have, with the worst exit status.  Workers sit in their own
process group so a terminal's Ctrl-C reaches them only through the parent, once, and die with the parent
(PR_SET_PDEATHSIG) if it is killed outright.  A worker that exits on its own (a model failed to load) stops
the others.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import sys
import tempfile
import time

WORKERS_CAP = 8          # auto: one worker per core, at most this many
SNAPSHOT_SECONDS = 0.5   # how stale another worker's metrics may be in a scrape


def resolve_workers(text, cpus: int) -> int:
    """'auto' -> one per core up to WORKERS_CAP; else a positive integer."""
    if str(text).strip().lower() == "auto":
        return max(1, min(cpus, WORKERS_CAP))
    try:
        n = int(text)
    except ValueError:
        raise ValueError(f"not a number of workers: {text!r} (a positive integer, or auto)") from None
    if n < 1:
        raise ValueError("must be >= 1 (or auto)")
    return n


def reserve_port(host: str, port: int) -> tuple[socket.socket, int]:
    """A socket bound (not listening) to host:port with SO_REUSEPORT, so that workers can bind the same port
    and nobody else can; port 0 picks a free one.  Returns (socket, port)."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family[0], socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(family[4])
    return sock, sock.getsockname()[1]


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG


def supervise(n: int, run_worker, log) -> int:
    """Fork n workers, each running run_worker(index, share_dir) -> exit code; wait for them all."""
    share_dir = tempfile.mkdtemp(prefix="dslc-serve-metrics-")
    children: dict[int, int] = {}
    try:
        for i in range(n):
            pid = os.fork()
            if pid == 0:   # the worker
                code = 3
                try:
                    os.setpgid(0, 0)
                    _die_with_parent()
                    signal.signal(signal.SIGINT, signal.SIG_DFL)
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
                    code = run_worker(i, share_dir)
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
            children[pid] = i
        log(f"{n} worker processes (pids {', '.join(str(p) for p in children)})")
        return _wait(children, log)
    finally:
        shutil.rmtree(share_dir, ignore_errors=True)


def _wait(children: dict[int, int], log) -> int:
    stopping = False

    def forward(sig, frame):
        nonlocal stopping
        if stopping and sig == signal.SIGINT:   # a second Ctrl-C: force, as a single server does
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            return
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    worst = 0
    try:
        while children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            except InterruptedError:   # pragma: no cover - PEP 475 retries; kept for clarity
                continue
            index = children.pop(pid, None)
            if index is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            code = 1 if code < 0 and not stopping else max(code, 0)
            worst = max(worst, code)
            if not stopping and children:
                log(f"worker {index} exited with status {code}; stopping the others")
                stopping = True
                for other in children:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(other, signal.SIGTERM)
                time.sleep(0)   # let the signals land before the next wait
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return worst
