"""Reduced precision benchmark: fp32 vs fp16 vs int8 models of LeNet-5 and ResNet-18, side by side in one run.

    python benchmarks/bench_precision.py [--quick] [--markdown]

For each model: file size, onnxruntime CPU latency at two batch sizes (same session options for all three),
and, for LeNet-5 (trained here for 2 epochs on MNIST's 8,000 training images), top-1 accuracy on the 2,000
held-out test images and the largest output delta against fp32.  ResNet-18 has seeded weights and is calibrated
on random images: its figures are for size and speed only (its accuracy needs ImageNet).

Timing on a shared 2-core machine: the three precisions run interleaved (round-robin), each round timing a
block of runs; a latency is the minimum over rounds of the block median, and the ratios (x of fp32) are what
to read.  Load from other processes only ever adds time.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def sessions(models: dict[str, bytes]):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return {p: ort.InferenceSession(b, so, providers=["CPUExecutionProvider"]) for p, b in models.items()}


def latencies(sess: dict, x: np.ndarray, rounds: int, block: int) -> dict[str, float]:
    """Seconds per run: min over rounds of the median of a block; precisions interleaved in each round."""
    name = {p: s.get_inputs()[0].name for p, s in sess.items()}
    for p, s in sess.items():   # warm-up
        s.run(None, {name[p]: x})
    best = {p: float("inf") for p in sess}
    for _ in range(rounds):
        for p, s in sess.items():
            ts = []
            for _ in range(block):
                t0 = time.perf_counter()
                s.run(None, {name[p]: x})
                ts.append(time.perf_counter() - t0)
            best[p] = min(best[p], statistics.median(ts))
    return best


def lenet_models():
    import dslc
    from dslc.lowering.compile import compile_graph, load_program
    from dslc.lowering.precision import reduce_for_graph
    net = ROOT / "networks" / "lenet5.net"
    result = dslc.train(str(net), epochs=2)
    _prog, g = load_program(net)
    _m, info = compile_graph(g, weights=result.weights, materialize=False)
    models, comparisons = {"fp32": info.data}, {}
    for p in ("fp16", "int8"):
        models[p], comparisons[p] = reduce_for_graph(info.data, p, g)
    return models, comparisons


def resnet_models(calibration_images: int):
    from dslc.lowering.calibration import SampleSet
    from dslc.lowering.compile import compile_graph, load_program
    from dslc.lowering.precision import to_fp16, to_int8
    _prog, g = load_program(ROOT / "networks" / "resnet18.net")
    _m, info = compile_graph(g, materialize=False)
    rng = np.random.default_rng(0)
    calib = SampleSet({"x": rng.random((calibration_images, 3, 224, 224), dtype=np.float32)}, None, "random")
    return {"fp32": info.data, "fp16": to_fp16(info.data), "int8": to_int8(info.data, calib)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run, figures noisier)")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = ap.parse_args()
    rounds = 3 if args.quick else 7
    rows = []
    t0 = time.perf_counter()
    lenet, cmp = lenet_models()
    rng = np.random.default_rng(1)
    for batch, block in ((1, 200), (64, 40)):
        lat = latencies(sessions(lenet), rng.random((batch, 1, 28, 28), dtype=np.float32), rounds, block)
        rows.append(("LeNet-5", batch, lenet, lat, cmp))
    resnet = resnet_models(16 if args.quick else 32)
    for batch, block in ((1, 10 if args.quick else 20), (8, 3 if args.quick else 5)):
        lat = latencies(sessions(resnet), rng.random((batch, 3, 224, 224), dtype=np.float32), rounds, block)
        rows.append(("ResNet-18", batch, resnet, lat, {}))
    import onnxruntime as ort
    print(f"onnxruntime {ort.__version__} CPU, {rounds} interleaved rounds ({time.perf_counter() - t0:.0f} s)")
    head = "| model | batch | precision | size | size x fp32 | latency | latency x fp32 | LeNet-5 accuracy (delta vs fp32) |"
    print(head if args.markdown else head.replace("|", " ").strip())
    if args.markdown:
        print("|---|---:|---|---:|---:|---:|---:|---|")
    for model, batch, models, lat, comparisons in rows:
        for p in ("fp32", "fp16", "int8"):
            acc = ""
            c = comparisons.get(p)
            if c is not None and c.acc_fp32 is not None:
                acc = (f"{100 * c.acc_reduced:.2f}% vs {100 * c.acc_fp32:.2f}% "
                       f"({100 * (c.acc_reduced - c.acc_fp32):+.2f} pp; max output delta {c.rel_delta:.1e} rel.)")
            cells = [model, str(batch), p, f"{len(models[p]) / 2 ** 20:.2f} MiB",
                     f"{len(models[p]) / len(models['fp32']):.2f}", f"{lat[p] * 1e3:.3f} ms",
                     f"{lat[p] / lat['fp32']:.2f}", acc]
            print("| " + " | ".join(cells) + " |" if args.markdown else "  ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
