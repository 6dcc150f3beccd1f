"""Training speed: dslc's numpy executor vs PyTorch (CPU), same models, data, batch size, optimiser and threads.

    python benchmarks/bench_train.py [--epochs 3] [--threads 2] [--models mlp,lenet5,resnet18_32,vgg11_32] [--json F]

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
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
N_TRAIN, BATCH, LR = 8000, 64, 1e-3


@dataclass(frozen=True)
class Bench:
    """One benchmark model: its .net file, the training settings both frameworks use, its data."""
    path: str
    batch: int = BATCH
    optimizer: str = "adam"
    lr: float = LR
    momentum: float = 0.0
    n_train: int = N_TRAIN
    image: tuple = (1, 28, 28)   # MNIST; other shapes train on seeded random images (CIFAR is not here)


MODELS = {
    "mlp": Bench("networks/mlp_mnist.net"),
    "lenet5": Bench("networks/lenet5.net"),
    # convnets at 32x32: batch 32, SGD momentum; 16 steps an epoch keep a round under a minute
    "resnet18_32": Bench("benchmarks/nets/resnet18_32.net", 32, "sgd", 0.01, 0.9, 512, (3, 32, 32)),
    "vgg11_32": Bench("benchmarks/nets/vgg11_32.net", 32, "sgd", 0.01, 0.9, 512, (3, 32, 32)),
}


def _data(b: Bench):
    """(x [n, *image] float32 in [0, 1], y [n] int64, source description)."""
    import numpy as np
    if b.image == (1, 28, 28):
        try:
            from dslc.train.data import DataError, mnist
            ds = mnist(train=b.n_train)
            return ds.train.xs[0].reshape(-1, 1, 28, 28), ds.train.ys[0], f"MNIST t10k[:{b.n_train}]"
        except (DataError, ImportError):
            pass
    rng = np.random.default_rng(0)
    return (rng.random((b.n_train,) + b.image, dtype=np.float32), rng.integers(0, 10, b.n_train),
            f"random {'x'.join(map(str, b.image))} images")


def _peak_mb() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker_dslc(model: str, epochs: int) -> dict:
    import dslc
    from dslc.train import data as D
    from dslc.train.loop import Settings, run_training
    b = MODELS[model]
    x, y, src = _data(b)
    g = dslc.load(str(ROOT / b.path)).graph
    ds = D.Dataset("bench", D.Split([x], [y]), task="classification", num_classes=10)
    s = Settings.resolve(g, data="bench", epochs=epochs + 1, batch_size=b.batch, seed=0)
    s.optimizer = {"name": b.optimizer, "lr": b.lr} | ({"momentum": b.momentum} if b.optimizer == "sgd" else {})
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
    b = MODELS[model]
    x, y, src = _data(b)
    X, Y = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)
    m = torch_model(model, nn)
    if b.optimizer == "sgd":
        opt = torch.optim.SGD(m.parameters(), lr=b.lr, momentum=b.momentum)
    else:
        opt = torch.optim.Adam(m.parameters(), lr=b.lr)
    m.train()
    loss_fn = nn.CrossEntropyLoss()
    times, cpu = [], []
    for _e in range(epochs + 1):
        t = time.perf_counter()
        c = time.process_time()
        perm = torch.randperm(b.n_train)
        total, correct = 0.0, 0
        for i in range(0, b.n_train, b.batch):
            idx = perm[i:i + b.batch]
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
    return {"times": times[1:], "cpu": cpu[1:], "peak_mb": _peak_mb(), "data": src, "final_loss": total / b.n_train,
            "torch": torch.__version__}


def torch_model(model: str, nn):
    """The same architectures written in plain torch.nn (PyTorch's defaults: batchnorm momentum 0.1, eps 1e-5)."""
    if model == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    if model == "lenet5":
        return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5),
                             nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(),
                             nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))

    def conv_bn(cin, cout, stride=1):
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)]

    if model == "vgg11_32":
        layers, cin = [], 3
        for c in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"):
            if c == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += conv_bn(cin, c) + [nn.ReLU()]
                cin = c
        return nn.Sequential(*layers, nn.Flatten(), nn.Linear(512, 10))

    class Basic(nn.Module):
        def __init__(self, cin, c, stride):
            super().__init__()
            self.body = nn.Sequential(*conv_bn(cin, c, stride), nn.ReLU(), *conv_bn(c, c))
            self.short = (nn.Sequential(nn.Conv2d(cin, c, 1, stride, bias=False), nn.BatchNorm2d(c))
                          if stride != 1 or cin != c else nn.Identity())

        def forward(self, x):
            return (self.body(x) + self.short(x)).relu()

    blocks, cin = [], 64
    for i, c in enumerate((64, 128, 256, 512)):
        for j in range(2):
            blocks.append(Basic(cin, c, 2 if i and not j else 1))
            cin = c
    return nn.Sequential(*conv_bn(3, 64), nn.ReLU(), *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(512, 10))


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
    print(f"threads {a.threads}, {a.epochs} timed epochs, {a.rounds} alternating round(s); load average {load:.2f}; "
          + "; ".join(f"{m}: batch {MODELS[m].batch}, {MODELS[m].optimizer} {MODELS[m].lr:g}, {MODELS[m].n_train} "
                      f"samples/epoch" for m in a.models.split(","))
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
    print(f"{'model':<12} {'dslc s/epoch':>13} {'torch s/epoch':>14} {'ratio':>7} {'best/best':>10} "
          f"{'CPU-time ratio':>15} "
          f"{'dslc peak MB':>13} {'torch peak MB':>14}  wall ratios per round")
    for r in rows:
        print(f"{r['model']:<12} {r['dslc_s_per_epoch']:>13.3f} {r['torch_s_per_epoch']:>14.3f} {r['ratio']:>7.2f} "
              f"{r['best_ratio']:>10.2f} "
              f"{r['cpu_ratio']:>15.2f} {r['dslc_peak_mb']:>13.0f} {r['torch_peak_mb']:>14.0f}  "
              + " ".join(f"{x:.2f}" for x in r["ratios"]))
    if a.json:
        Path(a.json).write_text(json.dumps({"load_average": load, "threads": a.threads, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
