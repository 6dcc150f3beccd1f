"""Compile (ONNX) benchmark: dslc vs torch.onnx.export on ResNet-18 / ResNet-50, in one run.

    python benchmarks/bench_compile.py [--quick] [--markdown]

Needs torch (pinned: pip install torch==2.13.0 onnxscript) next to dslc -- a benchmark-only dependency.
Measures, side by side:
  * compile time: `dslc.lowering.compile.compile_file` (parse, elaborate, seeded weight init, lowering, full
    validation: checker + strict shape inference + onnxruntime session) + writing the file, versus
    torch.onnx.export (legacy TorchScript exporter, and the dynamo exporter) of the same architecture written in
    plain torch (torchvision's layout: torchvision itself is not needed), eval mode, dynamic batch, to a file.
    Torch's model construction is not counted; dslc's weight initialisation is.
  * ONNX node counts.
  * onnxruntime CPU latency of each exported model at batch 1 and 32 (same session options), and the node
    count of the graph onnxruntime really runs after its own fusions.
Timing on a shared machine: jobs run interleaved (round-robin); compile times are the best of 5 rounds,
latencies median and minimum (ratios of minima): load from other processes only ever adds time.
Targets: dslc compile <= 0.1x torch.onnx.export's time; dslc model latency / torch model latency <= 1.0.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# ---- the torchvision architectures, in plain torch ---------------------------------------------------------
def torch_resnet(depth: int):
    import torch.nn as nn

    class BasicBlock(nn.Module):
        expansion = 1

        def __init__(self, cin, c, stride=1):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, c, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(c)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(c)
            self.downsample = None
            if stride != 1 or cin != c:
                self.downsample = nn.Sequential(nn.Conv2d(cin, c, 1, stride, bias=False), nn.BatchNorm2d(c))

        def forward(self, x):
            idt = x if self.downsample is None else self.downsample(x)
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return self.relu(y + idt)

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, cin, c, stride=1):
            super().__init__()
            out = c * 4
            self.conv1 = nn.Conv2d(cin, c, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(c)
            self.conv2 = nn.Conv2d(c, c, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(c)
            self.conv3 = nn.Conv2d(c, out, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(out)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = None
            if stride != 1 or cin != out:
                self.downsample = nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out))

        def forward(self, x):
            idt = x if self.downsample is None else self.downsample(x)
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
            return self.relu(y + idt)

    class ResNet(nn.Module):
        def __init__(self, block, layers, classes=1000):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            cin = 64
            stages = []
            for i, n in enumerate(layers):
                c = 64 * 2 ** i
                blocks = []
                for j in range(n):
                    blocks.append(block(cin, c, 2 if (j == 0 and i > 0) else 1))
                    cin = c * block.expansion
                stages.append(nn.Sequential(*blocks))
            self.layer1, self.layer2, self.layer3, self.layer4 = stages
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(cin, classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(self.avgpool(x).flatten(1))

    if depth == 18:
        return ResNet(BasicBlock, [2, 2, 2, 2])
    return ResNet(Bottleneck, [3, 4, 6, 3])


# ---- measurements ------------------------------------------------------------------------------------------
def _interleaved(jobs: dict, rounds: int) -> dict:
    """Best (minimum) wall time of each job over `rounds` round-robin rounds: on a shared machine, load from
    other processes only ever adds time, and round-robin spreads it over every job alike."""
    times = {k: [] for k in jobs}
    for _ in range(rounds):
        for k, fn in jobs.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: min(v) for k, v in times.items()}


def dslc_compile(net: Path, out: Path, fold_bn: bool = True, weights=None):
    from dslc.lowering.compile import compile_graph, load_program
    _prog, g = load_program(net)
    compile_graph(g, fold_bn=fold_bn, weights=weights, materialize=False, output=out)   # = `dslc compile`


def torch_export(model, out: Path, dynamo: bool):
    import torch
    x = torch.randn(1, 3, 224, 224)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            batch = torch.export.Dim("N", min=1, max=1024)
            torch.onnx.export(model, (x,), str(out), dynamo=True, input_names=["x"], output_names=["logits"],
                              dynamic_shapes={"x": {0: batch}}, opset_version=21, verbose=False)
        else:
            torch.onnx.export(model, (x,), str(out), dynamo=False, input_names=["x"], output_names=["logits"],
                              dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}}, opset_version=17,
                              do_constant_folding=True)


def node_counts(path: Path) -> tuple[int, dict]:
    import onnx
    m = onnx.load(str(path), load_external_data=False)
    ops: dict[str, int] = {}
    for n in m.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return len(m.graph.node), ops


def optimized_nodes(path: Path) -> int:
    """Node count of the graph onnxruntime actually runs (after its own fusions, ORT_ENABLE_ALL)."""
    import onnx
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    out = str(path) + ".ort.onnx"
    so.optimized_model_filepath = out
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return len(onnx.load(out, load_external_data=False).graph.node)


def latencies(files: dict, batch: int, runs: int, threads: int | None = None) -> dict:
    """(median, min, per-round times) onnxruntime CPU latency per model; runs interleaved round-robin so load
    from other processes on the (shared) machine hits every model alike, and each round's models can be
    compared pairwise (the median of those ratios is the least noisy figure)."""
    import onnxruntime as ort
    sessions = {}
    for k, path in files.items():
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sessions[k] = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    times = {k: [] for k in sessions}
    for s in sessions.values():
        s.run(None, {s.get_inputs()[0].name: x})  # warm-up
    for _ in range(runs):
        for k, s in sessions.items():
            t = time.perf_counter()
            s.run(None, {s.get_inputs()[0].name: x})
            times[k].append(time.perf_counter() - t)
    return {k: (statistics.median(v), min(v), v) for k, v in times.items()}


def warm_up_torch(tmp: Path, dynamo: bool) -> None:
    """The first export of a process pays one-time costs (imports, registries): pay them before timing."""
    import torch
    tiny = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU()).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = torch.randn(1, 3, 8, 8)
        if dynamo:
            torch.onnx.export(tiny, (x,), str(tmp / "tiny_d.onnx"), dynamo=True, verbose=False)
        else:
            torch.onnx.export(tiny, (x,), str(tmp / "tiny_l.onnx"), dynamo=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, no batch-32 latency")
    ap.add_argument("--no-dynamo", action="store_true", help="skip the (slow) dynamo exporter")
    ap.add_argument("--latency-threads", type=int, help="onnxruntime intra-op threads for the latency runs "
                    "(default: every core; 1 is steadier on a shared machine)")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    import onnxruntime as ort

    import dslc
    rep = 1 if args.quick else 5
    runs = {1: 5 if args.quick else 60, 32: 6}
    batches = (1,) if args.quick else (1, 32)
    print(f"# dslc {dslc.__version__}, torch {torch.__version__}, onnxruntime {ort.__version__}, "
          f"{len(os.sched_getaffinity(0))} CPU threads")
    rows_time, rows_nodes, rows_lat = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dslc_compile(ROOT / "networks" / "resnet18.net", tmp / "warm.onnx")     # imports, caches
        warm_up_torch(tmp, False)
        if not args.no_dynamo:
            warm_up_torch(tmp, True)
        for depth in (18, 50):
            net = ROOT / "networks" / f"resnet{depth}.net"
            files = {"dslc": tmp / f"dslc{depth}.onnx", "dslc --no-fold-bn": tmp / f"dslcu{depth}.onnx",
                     "torch legacy": tmp / f"tl{depth}.onnx", "torch dynamo": tmp / f"td{depth}.onnx"}
            from dslc.lowering.compile import load_program
            from dslc.weights import init_weights
            given = init_weights(load_program(net)[1], 0)   # torch's module holds its weights before export:
            model = torch_resnet(depth).eval()              # so does dslc's "weights given" variant
            jobs = {
                "dslc": lambda: dslc_compile(net, files["dslc"]),
                "nofold": lambda: dslc_compile(net, files["dslc --no-fold-bn"], fold_bn=False),
                "given": lambda: dslc_compile(net, tmp / "given.onnx", weights=given),
                "build": lambda: torch_resnet(depth).eval(),
                "legacy": lambda: torch_export(model, files["torch legacy"], False),
            }
            if not args.no_dynamo:
                jobs["dynamo"] = lambda: torch_export(model, files["torch dynamo"], True)
            else:
                files.pop("torch dynamo")
            times = _interleaved(jobs, rep)
            t_dslc, t_fold, t_given, t_build, t_legacy = (times[k] for k in ("dslc", "nofold", "given", "build",
                                                                              "legacy"))
            t_dynamo = times.get("dynamo")
            rows_time.append((f"ResNet-{depth}", t_dslc, t_fold, t_given, t_build, t_legacy, t_dynamo))
            print(f"ResNet-{depth} compile: dslc {t_dslc:.3f}s, dslc --no-fold-bn {t_fold:.3f}s, dslc given weights "
                  f"{t_given:.3f}s, torch module construction {t_build:.3f}s, torch legacy {t_legacy:.3f}s"
                  + (f", torch dynamo {t_dynamo:.3f}s" if t_dynamo else ""), flush=True)
            for k, p in files.items():
                n, ops = node_counts(p)
                n_ort = optimized_nodes(p)
                rows_nodes.append((f"ResNet-{depth}", k, n, ops, n_ort))
                print(f"  nodes {k}: {n} {ops}; after onnxruntime's optimizations: {n_ort}", flush=True)
            for b in batches:
                lat = latencies(files, b, runs[b], args.latency_threads)
                rows_lat.append((f"ResNet-{depth}", b, lat))
                print(f"  latency batch {b} (median, min): " + ", ".join(
                    f"{k} {v[0] * 1e3:.1f} / {v[1] * 1e3:.1f} ms" for k, v in lat.items()), flush=True)

    print("\n## Markdown\n")
    print("| network | dslc compile | --no-fold-bn | dslc, weights given | torch module build | torch.onnx.export "
          "legacy | dynamo | dslc / legacy | dslc / dynamo | given / dynamo |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, a, f, gv, bld, leg, dyn in rows_time:
        dyn_s = f"{dyn:.2f} s" if dyn else "–"
        r_dyn = f"{a / dyn:.3f}×" if dyn else "–"
        r_gv = f"{gv / dyn:.3f}×" if dyn else "–"
        print(f"| {name} | {a:.2f} s | {f:.2f} s | {gv:.2f} s | {bld:.2f} s | {leg:.2f} s | {dyn_s} | "
              f"{a / leg:.2f}× | {r_dyn} | {r_gv} |")
    print("\n| network | exporter | ONNX nodes | ops | nodes onnxruntime runs |")
    print("|---|---|---|---|---|")
    for name, k, n, ops, n_ort in rows_nodes:
        ops_s = ", ".join(f"{o} {c}" for o, c in sorted(ops.items(), key=lambda t: -t[1]))
        print(f"| {name} | {k} | {n} | {ops_s} | {n_ort} |")
    print("\nLatency: median / min of interleaved runs; ratios of the minima, and the median of the rounds' "
          "paired ratios.\n")
    print("| network | batch | " + " | ".join(rows_lat[0][2]) + " | dslc / legacy | dslc / dynamo | "
          "paired median dslc / legacy | paired median dslc / dynamo |")
    print("|---|---|" + "---|" * (len(rows_lat[0][2]) + 4))
    for name, b, lat in rows_lat:
        cells = " | ".join(f"{v[0] * 1e3:.0f} / {v[1] * 1e3:.0f} ms" for v in lat.values())
        r_leg = lat["dslc"][1] / lat["torch legacy"][1]
        r_dyn = f"{lat['dslc'][1] / lat['torch dynamo'][1]:.2f}" if "torch dynamo" in lat else "–"
        p_leg = statistics.median(a / c for a, c in zip(lat["dslc"][2], lat["torch legacy"][2]))
        p_dyn = (f"{statistics.median(a / c for a, c in zip(lat['dslc'][2], lat['torch dynamo'][2])):.2f}"
                 if "torch dynamo" in lat else "–")
        print(f"| {name} | {b} | {cells} | {r_leg:.2f} | {r_dyn} | {p_leg:.2f} | {p_dyn} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
