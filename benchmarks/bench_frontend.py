"""Front-end speed: `dslc check resnet50.net` wall time including interpreter start-up, and elaboration +
shape inference time as the network grows to 1,000+ layers (it should grow linearly: flat time per layer).

Run: python benchmarks/bench_frontend.py
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

DEEP_MLP = """
network deep(x: f32[N, 64]) {{
    y = x |> repeat {n} as layer {{ linear(64) |> relu }}
    return y
}}
"""

DEEP_RESNET = """
import std.resnet
network deep(x: f32[N, 16, 32, 32]) {{
    y = x |> repeat {n} as block {{ basic_block(16) }}
    return y
}}
"""


def check_wall(path: Path, runs: int = 7) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "dslc.cli", "check", "-q", str(path)], check=True,
                       stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def python_startup(runs: int = 7) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def elaborate_time(template: str, n: int, nodes_per_unit: int) -> tuple[int, float]:
    import dslc
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "deep.net"
        p.write_text(template.format(n=n))
        best = float("inf")
        layers = 0
        for _ in range(3):
            t = time.perf_counter()
            prog = dslc.load(p)
            best = min(best, time.perf_counter() - t)
            assert prog.ok, prog.diagnostics.render_all()
            layers = prog.graph.number_of_nodes() - 1
    return layers, best


def main() -> None:
    import dslc  # warm imports and the grammar cache before timing in-process work
    dslc.load(ROOT / "networks" / "lenet5.net")
    startup = python_startup()
    wall = check_wall(ROOT / "networks" / "resnet50.net")
    print(f"python -c pass:                       {startup * 1000:7.1f} ms")
    print(f"dslc check resnet50.net (wall, median): {wall * 1000:7.1f} ms   target < 500 ms")
    print()
    print(f"{'network':<12} {'repeat':>6} {'layers':>7} {'time ms':>9} {'us/layer':>9}")
    for name, template in (("deep MLP", DEEP_MLP), ("deep ResNet", DEEP_RESNET)):
        for n in (125, 250, 500, 1000) if name == "deep MLP" else (32, 64, 128, 256):
            layers, t = elaborate_time(template, n, 2)
            print(f"{name:<12} {n:>6} {layers:>7} {t * 1000:>9.1f} {t / layers * 1e6:>9.1f}")


if __name__ == "__main__":
    main()
