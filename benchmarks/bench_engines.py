"""Step time of the two training engines side by side: `dslc train --engine numpy` vs `--engine torch` (CPU).

    python benchmarks/bench_engines.py [--models resnet18_32,lenet5] [--batch 32] [--steps 5] [--rounds 5]
                                       [--threads 2] [--device cpu] [--json F]

Each engine runs dslc's own training step (dslc/train/engines.py: forward, backward, dslc's SGD/Adam update on
the engine's tensors) on the same seeded weights and the same random batch; one warm-up step, then --steps
timed steps, the two engines alternating --rounds times in ONE process (a shared machine's load drifts: the
ratio is the median of the rounds' ratios, and best/best compares each engine's fastest step). Threads are
fixed before numpy / torch load (OMP / OpenBLAS variables, torch.set_num_threads).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"resnet18_32": "benchmarks/nets/resnet18_32.net", "lenet5": "networks/lenet5.net",
          "mlp": "networks/mlp_mnist.net"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="resnet18_32")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="the torch engine's device (cpu, cuda)")
    ap.add_argument("--json")
    a = ap.parse_args()
    for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "DSLC_THREADS"):
        os.environ[v] = str(a.threads)
    import numpy as np
    import torch
    torch.set_num_threads(a.threads)
    import dslc
    from dslc.train.engines import make_engine
    from dslc.train.loop import Settings, choose_metric, load_graph
    results = []
    for name in a.models.split(","):
        g = load_graph(dslc.load(str(ROOT / MODELS[name])))
        t = g.nodes[g.graph["inputs"][0]]["outputs"][0]
        rng = np.random.default_rng(0)
        x = rng.standard_normal((a.batch, *t.shape[1:])).astype(np.float32)
        y = rng.integers(0, 10, a.batch).astype(np.int64)
        s = Settings.resolve(g, data="random", epochs=1, batch_size=a.batch)
        metric = choose_metric(g, None)
        engines = {e: make_engine(e, g, s, device=(a.device if e == "torch" else None)) for e in ("numpy", "torch")}
        for e in engines.values():
            e.step([x], [y], 1e-3, None, metric)   # warm-up: plans, kernels, allocator
        times = {e: [] for e in engines}
        ratios = []
        for _r in range(a.rounds):
            med = {}
            for e, eng in engines.items():
                ts = []
                for _ in range(a.steps):
                    t0 = time.perf_counter()
                    eng.step([x], [y], 1e-3, None, metric)
                    if a.device.startswith("cuda"):
                        torch.cuda.synchronize()
                    ts.append(time.perf_counter() - t0)
                times[e] += ts
                med[e] = statistics.median(ts)
            ratios.append(med["numpy"] / med["torch"])
        row = {"model": name, "batch": a.batch, "threads": a.threads, "device": a.device,
               "numpy_s_per_step": statistics.median(times["numpy"]),
               "torch_s_per_step": statistics.median(times["torch"]),
               "ratio_numpy_over_torch": statistics.median(ratios), "ratio_range": [min(ratios), max(ratios)],
               "best_over_best": min(times["numpy"]) / min(times["torch"]), "rounds": a.rounds, "steps": a.steps}
        results.append(row)
        print(f"{name} batch {a.batch}, {a.threads} threads: numpy {row['numpy_s_per_step'] * 1e3:.0f} ms/step, "
              f"torch ({a.device}) {row['torch_s_per_step'] * 1e3:.0f} ms/step; numpy/torch "
              f"{row['ratio_numpy_over_torch']:.2f} (rounds {min(ratios):.2f}-{max(ratios):.2f}), best/best "
              f"{row['best_over_best']:.2f}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
