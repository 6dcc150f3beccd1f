"""Where a training step's time goes: per op kind, forward and backward, plus the optimiser, for one network.

    python benchmarks/profile_train.py benchmarks/nets/resnet18_32.net [--batch 32] [--steps 5] [--threads 2]

Wraps every plan step's forward and vjp of a real Executor with a timer (the wrapping costs ~1 us a call),
runs --steps training steps after one warm-up step on seeded random data, and prints a table: op, calls per
step, forward ms, backward ms, share of the step. The optimiser's update and the rest (the executor's own
Python, gradient accumulation) are their own rows.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("net")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--optimizer", default="sgd")
    a = ap.parse_args(argv)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[k] = str(a.threads)
    sys.path.insert(0, str(ROOT))
    import numpy as np

    import dslc
    from dslc.train.executor import Executor
    from dslc.train.optim import make_optimizer
    from dslc.types import NUMPY_DTYPE

    prog = dslc.load(a.net)
    if not prog.ok:
        print(prog.diagnostics.render_all(), file=sys.stderr)
        return 1
    g = prog.graph
    exe = Executor(g, seed=0, workers=a.threads)
    rng = np.random.default_rng(0)
    feeds = {}
    for name in g.graph["inputs"]:
        t = g.nodes[name]["outputs"][0]
        shape = tuple(a.batch if isinstance(d, str) else d for d in t.shape)
        feeds[name] = rng.random(shape, dtype=np.float32)
    targets = {name: rng.integers(0, 10, a.batch).astype(NUMPY_DTYPE[g.nodes[name]["outputs"][0].dtype])
               for name in g.graph["targets"]}
    opt = make_optimizer({"name": a.optimizer, "lr": 0.01}, {k: exe.weights[k] for k in exe.trainable})
    fwd, bwd, calls = defaultdict(float), defaultdict(float), defaultdict(int)
    plan = exe.plan("train")
    for st in plan.steps:
        def timed(fn, table, op=st.op, count=False):
            def run(*args):
                t0 = time.perf_counter()
                out = fn(*args)
                table[op] += time.perf_counter() - t0
                if count:
                    calls[op] += 1
                return out
            return run
        st.forward = timed(st.forward, fwd, count=True)
        if st.vjp is not None:
            st.vjp = timed(st.vjp, bwd)
    t_opt = 0.0
    t_total = 0.0
    for i in range(a.steps + 1):
        if i == 1:   # the first step warms caches and compiles; start counting after it
            fwd.clear(), bwd.clear(), calls.clear()
            t_opt = t_total = 0.0
        t0 = time.perf_counter()
        _loss, _aux, grads = exe.loss_and_grads(feeds, targets)
        t1 = time.perf_counter()
        opt.step(grads)
        t2 = time.perf_counter()
        t_opt += t2 - t1
        t_total += t2 - t0
    n = a.steps
    step_ms = 1e3 * t_total / n
    rows = sorted(fwd, key=lambda op: -(fwd[op] + bwd[op]))
    print(f"{Path(a.net).name}: batch {a.batch}, {a.threads} thread(s), {n} steps: {step_ms:.1f} ms a step")
    print(f"{'op':<18} {'calls':>6} {'forward ms':>11} {'backward ms':>12} {'share':>7}")
    accounted = 0.0
    for op in rows:
        f, b = 1e3 * fwd[op] / n, 1e3 * bwd[op] / n
        accounted += f + b
        print(f"{op:<18} {calls[op] // n:>6} {f:>11.1f} {b:>12.1f} {100 * (f + b) / step_ms:>6.1f}%")
    o = 1e3 * t_opt / n
    print(f"{'optimiser':<18} {'':>6} {o:>11.1f} {'':>12} {100 * o / step_ms:>6.1f}%")
    rest = step_ms - accounted - o
    print(f"{'executor, other':<18} {'':>6} {rest:>11.1f} {'':>12} {100 * rest / step_ms:>6.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
