"""LSTM training step: dslc's numpy executor vs PyTorch's nn.LSTM, side by side in one process.

    python benchmarks/bench_lstm.py [--sizes adding,wide] [--steps 40] [--seconds 30] [--threads 2]

The same model in both: one `lstm(hidden, return_sequences=false)` layer (PyTorch: nn.LSTM(batch_first=True),
the last step's output), a linear head to one value, MSE against a target, Adam 1e-3; the same random batches
[B, T, D] (the adding problem's values and markers for D = 2, Gaussian inputs otherwise). One step is forward,
backward through time and the Adam update (dslc: Executor.loss_and_grads + dslc.train.optim.Adam; PyTorch:
zero_grad, forward, MSELoss, backward, torch.optim.Adam). The two alternate in blocks of --steps steps for
--seconds per size, so that both see the same machine state; each line is one pair of blocks and the figure is
the median of the pairs' ratios (> 1: dslc slower). Threads: --threads for both (BLAS / OpenMP variables set
before numpy loads, torch.set_num_threads).

Sizes (B x T x D -> H): adding = 50 x 50 x 2 -> 64 (the adding problem of docs/REPRODUCTION.md section 6),
wide = 32 x 64 x 128 -> 256 (a word-level layer).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"adding": (50, 50, 2, 64), "wide": (32, 64, 128, 256)}

NET = """network bench_lstm(x: f32[N, {T}, {D}]) {{
    y = x |> lstm({H}, return_sequences=false) |> linear(1) as head
    return y
}}

train {{
    target t: f32[N, 1]
    loss = mse(y, t)
}}
"""


def _batches(B, T, D, n=64, seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    if D == 2:
        from dslc.train.sequence_data import adding
        ds = adding(n=n * B, length=T, seed=seed)
        x, y = ds.train.xs[0], ds.train.ys[0]
        return [(x[i * B:(i + 1) * B], y[i * B:(i + 1) * B]) for i in range(len(x) // B)]
    return [(rng.standard_normal((B, T, D)).astype(np.float32), rng.standard_normal((B, 1)).astype(np.float32))
            for _ in range(n)]


def _dslc_step(B, T, D, H):
    import dslc
    from dslc.train.executor import Executor
    from dslc.train.optim import Adam
    prog = dslc.load("bench_lstm.net", text=NET.format(T=T, D=D, H=H))
    if not prog.ok:
        raise SystemExit(prog.diagnostics.render_all())
    exe = Executor(prog.graph, seed=0)
    opt = Adam({k: exe.weights[k] for k in exe.trainable}, lr=1e-3)
    n_params = sum(int(exe.weights[k].size) for k in exe.trainable)

    def step(x, y):
        loss, _aux, grads = exe.loss_and_grads([x], [y])
        opt.step(grads)
        return float(loss)
    return step, n_params


def _torch_step(B, T, D, H):
    import torch
    nn = torch.nn
    torch.manual_seed(0)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(D, H, batch_first=True)
            self.head = nn.Linear(H, 1)

        def forward(self, x):
            out, _ = self.lstm(x)
            return self.head(out[:, -1])
    m = Model()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    loss_fn = nn.MSELoss()
    n_params = sum(p.numel() for p in m.parameters())

    def step(x, y):
        opt.zero_grad()
        loss = loss_fn(m(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        opt.step()
        return float(loss)
    return step, n_params


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="adding,wide", help=f"which of {', '.join(SIZES)} (comma-separated)")
    ap.add_argument("--steps", type=int, default=40, help="steps per block")
    ap.add_argument("--seconds", type=float, default=30, help="time spent alternating blocks, per size")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[k] = str(a.threads)   # before numpy and torch load (this script's own process only)
    sys.path.insert(0, str(ROOT))
    import torch
    torch.set_num_threads(a.threads)
    print(f"threads {a.threads}; torch {torch.__version__}; load average {os.getloadavg()[0]:.2f}; "
          f"milliseconds per training step (forward + backward through time + Adam)")
    summary = []
    for name in a.sizes.split(","):
        B, T, D, H = SIZES[name]
        batches = _batches(B, T, D)
        runs = {"dslc": _dslc_step(B, T, D, H), "torch": _torch_step(B, T, D, H)}
        assert runs["dslc"][1] == runs["torch"][1], "the two models must have the same parameters"
        pos = {"dslc": 0, "torch": 0}

        def block(fw):
            step, _ = runs[fw]
            time.sleep(0.1)
            t0 = time.perf_counter()
            for _ in range(a.steps):
                x, y = batches[pos[fw] % len(batches)]
                pos[fw] += 1
                step(x, y)
            return (time.perf_counter() - t0) * 1e3 / a.steps

        block("dslc"), block("torch")   # warm-up: compiled kernels, caches, allocator
        print(f"{name}: B {B}, T {T}, D {D}, H {H} ({runs['dslc'][1]:,} parameters)")
        pairs = []
        t_end = time.time() + a.seconds
        while time.time() < t_end or len(pairs) < 3:
            d, t = block("dslc"), block("torch")
            pairs.append((d, t))
            print(f"  dslc {d:8.2f} ms   torch {t:8.2f} ms   ratio {d / t:.2f}", flush=True)
        r = [d / t for d, t in pairs]
        summary.append((name, statistics.median(d for d, _ in pairs), statistics.median(t for _, t in pairs),
                        statistics.median(r), min(r), max(r), len(r)))
    print(f"load average now {os.getloadavg()[0]:.2f}")
    print(f"{'size':<8} {'dslc ms/step':>13} {'torch ms/step':>14} {'ratio':>7}  range (pairs)")
    for name, d, t, med, lo, hi, n in summary:
        print(f"{name:<8} {d:>13.2f} {t:>14.2f} {med:>7.2f}  {lo:.2f}-{hi:.2f} ({n})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
