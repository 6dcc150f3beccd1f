"""What bounds dslc's convolution speed: numpy's GEMM vs PyTorch's on the GEMM shapes of a network's convolutions.

    python benchmarks/gemm_bound.py [--net benchmarks/nets/resnet18_32.net] [--batch 32] [--threads 1] [--rounds 3]

A convolution in dslc's numpy executor is im2col + three GEMMs per training step (forward, weight gradient,
input gradient: M x K x N = N*OH*OW x C*KH*KW x O and its transposes; no input gradient for the first layer).
For every convolution of the network this measures, at one thread count, in worker processes that alternate
(numpy, PyTorch, numpy, ...; best of the rounds per shape):
- numpy: the three GEMMs alone (plain row-major `@` on contiguous operands of those shapes), and dslc's whole
  convolution (the registry op's forward + vjp, as the executor calls them);
- PyTorch: torch.mm on the same shapes, and F.conv2d forward + backward (oneDNN) on the same layer.
It prints per layer and in total: GFLOP per step, GFLOP/s of each GEMM, the share of dslc's convolution time
that is GEMM, and the bound: numpy's GEMM time alone against PyTorch's whole convolution time. numpy's OpenBLAS
kernel family (its core name, which OPENBLAS_CORETYPE overrides) is printed; the script never sets it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import _env  # noqa: E402  (the workers' thread variables, as bench_train sets them)


def layers(net: str, batch: int) -> list[dict]:
    """Distinct convolution geometries of the network, with how many layers share each."""
    sys.path.insert(0, str(ROOT))
    import dslc
    g = dslc.load(net).graph
    out: dict[tuple, dict] = {}
    first = True
    for n in g:   # graph order is the program's order: the first convolution reads the data
        nd = g.nodes[n]
        if nd["op"] != "conv2d":
            continue
        src, i = nd["inputs"][0]
        _, c, h, w = g.nodes[src]["outputs"][i].shape
        a = nd["attrs"]
        key = (c, h, w, a["out"], tuple(a["kernel"]), tuple(a["stride"]), tuple(a["pads"]), first)
        first = False
        if key in out:
            out[key]["count"] += 1
        else:
            out[key] = {"name": n, "count": 1, "x": (batch, c, h, w), "out": a["out"], "kernel": tuple(a["kernel"]),
                        "stride": tuple(a["stride"]), "pads": tuple(a["pads"]), "first": key[-1]}
    return list(out.values())


def gemm_shapes(L: dict) -> list[tuple[str, int, int, int]]:
    """(what, M, K, N) of the layer's GEMMs, as im2col + GEMM computes them."""
    N, C, H, W = L["x"]
    kh, kw = L["kernel"]
    (sh, sw), (pt, pl, pb, pr) = L["stride"], L["pads"]
    P = ((H + pt + pb - kh) // sh + 1) * ((W + pl + pr - kw) // sw + 1)
    K, O = C * kh * kw, L["out"]
    shapes = [("forward", N * P, K, O), ("weight grad", K, N * P, O)]
    if not L["first"]:
        shapes.append(("input grad", N * P, O, K))
    return shapes


def _best(f, reps: int) -> float:
    f()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t0)
    return best


def worker_numpy(ls: list[dict], reps: int) -> dict:
    import ctypes

    import numpy as np

    from dslc.kernels.context import ExecContext
    from dslc.kernels.openblas import libraries
    from dslc.ops.registry import get
    from dslc.train.executor import tune_malloc
    tune_malloc()
    core = "?"
    for lib in libraries():
        for nm in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename", "openblas_get_corename"):
            f = getattr(lib, nm, None)
            if f is not None:
                f.restype = ctypes.c_char_p
                core = f().decode()
                break
    rng = np.random.default_rng(0)
    op = get("conv2d")
    res = []
    for L in ls:
        gemm = []
        for _what, M, K, N in gemm_shapes(L):
            a, b = rng.standard_normal((M, K), dtype=np.float32), rng.standard_normal((K, N), dtype=np.float32)
            gemm.append(_best(lambda: a @ b, reps))
        x = rng.standard_normal(L["x"], dtype=np.float32)
        w = rng.standard_normal((L["out"], L["x"][1]) + L["kernel"], dtype=np.float32)
        attrs = {"stride": L["stride"], "pads": L["pads"], "dilation": (1, 1), "groups": 1, "bias": False}
        ctx = ExecContext(True)
        ctx.needs_input_grad = (not L["first"],)
        ys, sv = op.forward(ctx, [x], {"weight": w}, attrs)
        gy = rng.standard_normal(ys[0].shape, dtype=np.float32)
        fwd = _best(lambda: op.forward(ctx, [x], {"weight": w}, attrs), reps)
        bwd = _best(lambda: op.vjp(ctx, [gy], sv, [x], {"weight": w}, attrs), reps)
        res.append({"gemm": gemm, "fwd": fwd, "bwd": bwd})
    return {"core": core, "layers": res, "numpy": np.__version__}


def worker_torch(ls: list[dict], reps: int, threads: int) -> dict:
    import torch
    torch.set_num_threads(threads)
    F = torch.nn.functional
    res = []
    for L in ls:
        gemm = []
        for _what, M, K, N in gemm_shapes(L):
            a, b = torch.randn(M, K), torch.randn(K, N)
            gemm.append(_best(lambda: torch.mm(a, b), reps))
        x = torch.randn(*L["x"], requires_grad=not L["first"])
        w = torch.randn(L["out"], L["x"][1], *L["kernel"], requires_grad=True)
        pad = L["pads"][:2]
        y = F.conv2d(x, w, None, L["stride"], pad)
        gy = torch.randn_like(y)
        fwd = _best(lambda: F.conv2d(x, w, None, L["stride"], pad), reps)
        inputs = (x, w) if not L["first"] else (w,)

        def fb():
            torch.autograd.grad(F.conv2d(x, w, None, L["stride"], pad), inputs, gy)
        res.append({"gemm": gemm, "fwd": fwd, "bwd": _best(fb, reps) - fwd})
    return {"layers": res, "torch": torch.__version__}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--net", default=str(ROOT / "benchmarks/nets/resnet18_32.net"))
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3, help="numpy / PyTorch workers alternate this many times")
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions per shape in each worker")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--worker", choices=["numpy", "torch"], help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    ls = layers(a.net, a.batch)
    if a.worker:
        print(json.dumps(worker_numpy(ls, a.reps) if a.worker == "numpy" else worker_torch(ls, a.reps, a.threads)))
        return 0
    runs: dict[str, list] = {"numpy": [], "torch": []}
    for _ in range(a.rounds):
        for w in ("numpy", "torch"):
            cmd = [sys.executable, __file__, "--worker", w, "--net", a.net, "--batch", str(a.batch),
                   "--threads", str(a.threads), "--reps", str(a.reps)]
            r = subprocess.run(cmd, env=_env(a.threads), capture_output=True, text=True)
            if r.returncode:
                raise SystemExit(f"{w} worker failed:\n{r.stderr[-3000:]}")
            runs[w].append(json.loads(r.stdout.strip().splitlines()[-1]))

    def best(w, i, key, j=None):
        vals = [run["layers"][i][key] if j is None else run["layers"][i][key][j] for run in runs[w]]
        return min(vals)
    print(f"{Path(a.net).name}, batch {a.batch}, {a.threads} thread(s), {a.rounds} alternating rounds (best of "
          f"each); numpy {runs['numpy'][0]['numpy']} OpenBLAS core {runs['numpy'][0]['core']!r} "
          f"(OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}), torch {runs['torch'][0]['torch']}; "
          f"load average {os.getloadavg()[0]:.2f}")
    hdr = (f"{'layer (x, out, k, s)':<34} {'n':>2} {'GFLOP':>6} {'numpy GEMM':>11} {'torch.mm':>9} "
           f"{'np GF/s':>8} {'mm GF/s':>8} {'dslc conv':>10} {'GEMM share':>10} {'torch conv':>11}")
    print(hdr)
    tot = {"fl": 0.0, "np": 0.0, "mm": 0.0, "dslc": 0.0, "tconv": 0.0}
    rows = []
    for i, L in enumerate(ls):
        shapes = gemm_shapes(L)
        fl = sum(2 * M * K * N for _w, M, K, N in shapes) / 1e9
        t_np = sum(best("numpy", i, "gemm", j) for j in range(len(shapes)))
        t_mm = sum(best("torch", i, "gemm", j) for j in range(len(shapes)))
        t_d = best("numpy", i, "fwd") + best("numpy", i, "bwd")
        t_t = best("torch", i, "fwd") + best("torch", i, "bwd")
        c = L["count"]
        for k, v in (("fl", fl), ("np", t_np), ("mm", t_mm), ("dslc", t_d), ("tconv", t_t)):
            tot[k] += c * v
        desc = f"{'x'.join(map(str, L['x'][1:]))}, {L['out']}, {L['kernel'][0]}, {L['stride'][0]}"
        print(f"{desc:<34} {c:>2} {fl:>6.2f} {1e3 * t_np:>9.1f}ms {1e3 * t_mm:>7.1f}ms {fl / t_np:>8.0f} "
              f"{fl / t_mm:>8.0f} {1e3 * t_d:>8.1f}ms {100 * t_np / t_d:>9.0f}% {1e3 * t_t:>9.1f}ms")
        rows.append({"layer": L["name"], "count": c, "gflop": fl, "numpy_gemm_s": t_np, "torch_mm_s": t_mm,
                     "dslc_conv_s": t_d, "torch_conv_s": t_t})
    print(f"{'all convolutions, per step':<34} {'':>2} {tot['fl']:>6.1f} {1e3 * tot['np']:>9.0f}ms "
          f"{1e3 * tot['mm']:>7.0f}ms {tot['fl'] / tot['np']:>8.0f} {tot['fl'] / tot['mm']:>8.0f} "
          f"{1e3 * tot['dslc']:>8.0f}ms {100 * tot['np'] / tot['dslc']:>9.0f}% {1e3 * tot['tconv']:>9.0f}ms")
    print(f"bound: numpy's GEMMs alone take {tot['np'] / tot['tconv']:.2f}x PyTorch's whole convolution time "
          f"(torch.mm on the same shapes: {tot['mm'] / tot['tconv']:.2f}x); dslc's convolutions "
          f"{tot['dslc'] / tot['tconv']:.2f}x")
    if a.json:
        Path(a.json).write_text(json.dumps({"threads": a.threads, "core": runs["numpy"][0]["core"], "rows": rows,
                                            "total": tot}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
