"""Training speed: dslc's numpy executor vs PyTorch (CPU), same models, data, batch size, optimiser and threads.

    python benchmarks/bench_train.py [--epochs 3] [--threads 2] [--models mlp,lenet5] [--json out.json]

Models: the 784-256-10 MLP (networks/mlp_mnist.net) and LeNet-5 (networks/lenet5.net); batch 64, Adam 1e-3,
8,000 training samples (the first 8,000 MNIST t10k images when $DSLC_DATA_DIR/mnist has them, random images of
the same shape otherwise). Each (framework, model) runs in its own subprocess with the thread count fixed before
numpy / torch load (OMP / OpenBLAS / MKL variables and torch.set_num_threads), one warm-up epoch, then
--epochs timed epochs; with --rounds R the two alternate R times (a shared machine's load drifts). Reported:
median seconds per epoch, the dslc / PyTorch ratio (< 1: dslc faster; the median of the rounds' ratios), the
ratio of each framework's fastest epoch over all rounds ("best/best": on a shared machine whose speed for
two-thread work flips between states from minute to minute, the least noisy estimate), and the
peak resident memory of each process (ru_maxrss; it includes the libraries: torch itself is ~300 MB). The
CPU-time ratio (process CPU seconds per epoch, all threads) is less sensitive to other load on the machine; with
one thread it is the fairest figure on a busy machine, with two it also counts the threads' spinning.

dslc runs its real training loop (dslc.train.loop.run_training: batching, executor forward + backward, Adam,
running loss and accuracy; no artefacts). PyTorch runs the usual loop: randperm, index the batch, zero_grad,
forward, CrossEntropyLoss, backward, torch.optim.Adam (defaults) step, accumulate the loss and accuracy.
PyTorch must be importable by the interpreter given with --torch-python (default: this one); dslc's extra
`dslc[torch]` pins the version (torch==2.13.0, CPU build).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"mlp": "mlp_mnist.net", "lenet5": "lenet5.net"}
N_TRAIN, BATCH, LR = 8000, 64, 1e-3


def _data():
    """(x [8000, 1, 28, 28] float32 in [0, 1], y [8000] int64, source description)."""
    import numpy as np
    try:
        from dslc.train.data import DataError, mnist
        ds = mnist(train=N_TRAIN)
        return ds.train.xs[0].reshape(-1, 1, 28, 28), ds.train.ys[0], "MNIST t10k[:8000]"
    except (DataError, ImportError):
        rng = np.random.default_rng(0)
        return (rng.random((N_TRAIN, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, N_TRAIN),
                "random images (MNIST not found)")


def _peak_mb() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker_dslc(model: str, epochs: int) -> dict:
    import dslc
    from dslc.train import data as D
    from dslc.train.loop import Settings, run_training
    x, y, src = _data()
    g = dslc.load(str(ROOT / "networks" / MODELS[model])).graph
    ds = D.Dataset("bench", D.Split([x], [y]), task="classification", num_classes=10)
    s = Settings.resolve(g, data="bench", epochs=epochs + 1, batch_size=BATCH, lr=LR, optimizer="adam", seed=0)
    cpu = []
    last = [time.process_time()]

    def on_epoch(_rec):
        now = time.process_time()
        cpu.append(now - last[0])
        last[0] = now
    r = run_training(g, s, dataset=ds, quiet=True, export=False, artefacts=False, on_epoch=on_epoch)
    times = [h["time_s"] for h in r.history if h["kind"] == "epoch"]
    return {"times": times[1:], "cpu": cpu[1:], "peak_mb": _peak_mb(), "data": src, "final_loss": r.final["loss"]}


def worker_torch(model: str, epochs: int, threads: int) -> dict:
    import numpy as np
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    nn = torch.nn
    x, y, src = _data()
    X, Y = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)
    if model == "mlp":
        m = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    else:
        m = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                          nn.Linear(84, 10))
    opt = torch.optim.Adam(m.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    times, cpu = [], []
    for _e in range(epochs + 1):
        t = time.perf_counter()
        c = time.process_time()
        perm = torch.randperm(N_TRAIN)
        total, correct = 0.0, 0
        for i in range(0, N_TRAIN, BATCH):
            idx = perm[i:i + BATCH]
            xb, yb = X[idx], Y[idx]
            opt.zero_grad()
            out = m(xb)
            loss = loss_fn(out, yb)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            correct += int((out.argmax(1) == yb).sum())
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return {"times": times[1:], "cpu": cpu[1:], "peak_mb": _peak_mb(), "data": src, "final_loss": total / N_TRAIN,
            "torch": torch.__version__}


def _env(threads: int) -> dict:
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = str(threads)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_worker(python: str, framework: str, model: str, epochs: int, threads: int) -> dict:
    cmd = [python, __file__, "--worker", framework, "--models", model, "--epochs", str(epochs),
           "--threads", str(threads)]
    r = subprocess.run(cmd, env=_env(threads), capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{framework} {model} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs (after one warm-up epoch)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1, help="alternate dslc / PyTorch runs this many times; the "
                    "ratio reported is the median of the rounds' ratios")
    ap.add_argument("--models", default="mlp,lenet5")
    ap.add_argument("--torch-python", default=sys.executable, help="interpreter with torch installed")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--worker", choices=["dslc", "torch"], help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        model = a.models
        res = worker_dslc(model, a.epochs) if a.worker == "dslc" else worker_torch(model, a.epochs, a.threads)
        print(json.dumps(res))
        return 0
    load = os.getloadavg()[0]
    print(f"threads {a.threads}, batch {BATCH}, Adam {LR:g}, {N_TRAIN} samples/epoch, {a.epochs} timed epochs, "
          f"{a.rounds} alternating round(s); load average {load:.2f}"
          + ("  (busy machine: timings are noisy)" if load > 0.5 else ""))
    rows = []
    for model in a.models.split(","):
        ds, ts, ratios, dmem, tmem, dcpu, tcpu = [], [], [], [], [], [], []
        dall, tall = [], []   # every timed epoch of every round
        for _r in range(a.rounds):   # alternate, so that both see the same machine conditions
            d = run_worker(sys.executable, "dslc", model, a.epochs, a.threads)
            t = run_worker(a.torch_python, "torch", model, a.epochs, a.threads)
            dm, tm = statistics.median(d["times"]), statistics.median(t["times"])
            ds.append(dm)
            dall += d["times"]
            tall += t["times"]
            ts.append(tm)
            ratios.append(dm / tm)
            dcpu.append(statistics.median(d["cpu"]))
            tcpu.append(statistics.median(t["cpu"]))
            dmem.append(d["peak_mb"])
            tmem.append(t["peak_mb"])
        rows.append({"model": model, "dslc_s_per_epoch": statistics.median(ds),
                     "torch_s_per_epoch": statistics.median(ts), "ratio": statistics.median(ratios),
                     "ratios": ratios, "dslc_cpu_s_per_epoch": statistics.median(dcpu),
                     "torch_cpu_s_per_epoch": statistics.median(tcpu),
                     "best_ratio": min(dall) / min(tall), "dslc_best_s": min(dall), "torch_best_s": min(tall),
                     "cpu_ratio": statistics.median([a / b for a, b in zip(dcpu, tcpu)]),
                     "dslc_peak_mb": max(dmem), "torch_peak_mb": max(tmem), "data": d["data"],
                     "torch": t.get("torch"), "dslc_final_loss": d["final_loss"], "torch_final_loss": t["final_loss"]})
    print(f"data: {rows[0]['data']}; torch {rows[0]['torch']}; load average now {os.getloadavg()[0]:.2f}")
    print(f"{'model':<8} {'dslc s/epoch':>13} {'torch s/epoch':>14} {'ratio':>7} {'best/best':>10} "
          f"{'CPU-time ratio':>15} "
          f"{'dslc peak MB':>13} {'torch peak MB':>14}  wall ratios per round")
    for r in rows:
        print(f"{r['model']:<8} {r['dslc_s_per_epoch']:>13.3f} {r['torch_s_per_epoch']:>14.3f} {r['ratio']:>7.2f} "
              f"{r['best_ratio']:>10.2f} "
              f"{r['cpu_ratio']:>15.2f} {r['dslc_peak_mb']:>13.0f} {r['torch_peak_mb']:>14.0f}  "
              + " ".join(f"{x:.2f}" for x in r["ratios"]))
    if a.json:
        Path(a.json).write_text(json.dumps({"load_average": load, "threads": a.threads, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
