"""Dense networks on two lanes vs OpenBLAS's own two threads, side by side in one process.

    python benchmarks/bench_lanes.py [--seconds 40] [--steps 250] [--net networks/mlp_mnist.net]

Two executors train the same network on the same batches (batch 64, Adam 1e-3; MNIST t10k when
$DSLC_DATA_DIR/mnist or ../shared has it, random images otherwise): one on two lanes (dslc/train/lanes.py:
each large linear weight cut into two column blocks, each owned by one core for its forward product, weight
gradient and Adam update; BLAS at one thread), one with OpenBLAS's two threads on whole GEMMs and Adam on the
main thread (what dslc did before the lanes). They alternate in blocks of --steps steps, with a pause between
blocks so that neither inherits the other's spinning threads, for --seconds; each line is one pair of blocks.
This machine's speed for work that crosses cores flips between states from minute to minute, so the pairs,
not the totals, are the comparison. Per step: the whole (forward + backward + Adam), then the two parts.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _data(n=8000):
    from dslc.train.data import DataError, mnist
    try:
        ds = mnist(train=n)
        return ds.train.xs[0].reshape(-1, 1, 28, 28), ds.train.ys[0]
    except DataError:
        rng = np.random.default_rng(0)
        return rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=40)
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--net", default=str(ROOT / "networks" / "mlp_mnist.net"))
    a = ap.parse_args(argv)
    import dslc
    from dslc.train.executor import Executor
    from dslc.train.optim import Adam
    g = dslc.load(a.net).graph
    x, y = _data()
    runs = {}
    for name, lanes in (("lanes", True), ("openblas", False)):
        exe = Executor(g, seed=0, lanes=lanes)
        opt = Adam({k: exe.weights[k] for k in exe.trainable}, lr=1e-3, threads=2 if lanes else 1)
        opt.use_paired_updates(exe.paired_updates() if lanes else None)
        runs[name] = (exe, opt)
    if not runs["lanes"][0]._uses_lanes():
        print("this network / machine does not use lanes (no large linear layer, one thread, or no numpy "
              "OpenBLAS)")
        return 1
    rng = np.random.default_rng(0)

    def block(name):
        exe, opt = runs[name]
        time.sleep(0.2)
        t_step = t_opt = 0.0
        t0 = time.perf_counter()
        for _ in range(a.steps):
            idx = rng.integers(0, len(x), 64)
            t1 = time.perf_counter()
            _loss, _aux, grads = exe.loss_and_grads([np.take(x, idx, axis=0)], [np.take(y, idx, axis=0)])
            t2 = time.perf_counter()
            opt.step(grads)
            t3 = time.perf_counter()
            t_step += t2 - t1
            t_opt += t3 - t2
        us = 1e6 / a.steps
        return (time.perf_counter() - t0) * us, t_step * us, t_opt * us

    block("lanes"), block("openblas")   # warm-up: compile, caches
    print(f"{Path(a.net).name}, batch 64, Adam; microseconds per step: whole (forward+backward + Adam)")
    pairs = []
    t_end = time.time() + a.seconds
    while time.time() < t_end:
        la, ob = block("lanes"), block("openblas")
        pairs.append((la[0], ob[0]))
        print(f"lanes {la[0]:6.0f} ({la[1]:4.0f} + {la[2]:4.0f})   openblas threads {ob[0]:6.0f} "
              f"({ob[1]:4.0f} + {ob[2]:4.0f})   ratio {la[0] / ob[0]:.2f}", flush=True)
    r = [p / q for p, q in pairs]
    print(f"median ratio lanes / openblas threads: {statistics.median(r):.2f} over {len(r)} pairs "
          f"(range {min(r):.2f}-{max(r):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
