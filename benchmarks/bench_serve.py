"""Benchmark `dslc serve`: throughput and p50/p99 latency at concurrency 1, 8, 32, with dynamic batching on and
off, and the server's overhead over a bare session.run -- all in one run.

    python benchmarks/bench_serve.py                 # LeNet-5 built with onnx.helper (the test model)
    python benchmarks/bench_serve.py --model m.onnx  # any model with one FP32 input [N, ...]
    python benchmarks/bench_serve.py --seconds 2 --json out.json

Each configuration is a real `python -m dslc.cli serve` process on 127.0.0.1.  The load generator is a small
asyncio HTTP/1.1 keep-alive client (uvloop when installed) in this process, one connection per concurrent client,
sending binary-tensor requests (what tritonclient.http sends by default) with pre-built bodies, each a different
input; it checks every response is 200 and counts errors.  Both share the machine's cores with the server: on a
small machine the client's own CPU time is part of what limits throughput.

Overhead: p50 end-to-end latency at concurrency 1 minus p50 of session.run on the same input with the same
session options, in-process.  Also shown: the server-internal overhead from the Triton statistics endpoint (mean
request time in the server minus mean execution time), which excludes the client and the TCP round trip.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# --------------------------------------------------------------------------------------------------- server

class Server:
    def __init__(self, model_path: str, extra: list[str]):
        cmd = [sys.executable, "-m", "dslc.cli", "serve", model_path, "--port", "0", *extra]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.port = None
        ev = threading.Event()

        def read():
            for line in self.proc.stdout:
                self.lines.append(line.rstrip())
                m = re.search(r"listening on http://[^ ]+:(\d+) ", line)
                if m:
                    self.port = int(m.group(1))
                    ev.set()
            ev.set()
        threading.Thread(target=read, daemon=True).start()
        if not ev.wait(60) or self.port is None:
            raise RuntimeError("server did not start:\n" + "\n".join(self.lines))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("server not ready:\n" + "\n".join(self.lines))

    def stats(self, model: str) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v2/models/{model}/stats", timeout=10) as r:
            return json.loads(r.read())["model_stats"][0]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# --------------------------------------------------------------------------------------------------- client

def build_requests(model: str, input_name: str, shape: tuple, n: int, port: int, as_json: bool = False) -> list:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        x = rng.standard_normal(shape).astype(np.float32)
        if as_json:
            body = json.dumps({"inputs": [{"name": input_name, "datatype": "FP32", "shape": list(shape),
                                           "data": x.ravel().tolist()}]}).encode()
            extra = b""
        else:
            head = json.dumps({"inputs": [{"name": input_name, "datatype": "FP32", "shape": list(shape),
                                           "parameters": {"binary_data_size": x.nbytes}}],
                               "parameters": {"binary_data_output": True}}).encode()
            body = head + x.tobytes()
            extra = b"Inference-Header-Content-Length: %d\r\n" % len(head)
        req = (b"POST /v2/models/%s/infer HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % (model.encode(), port) + extra +
               b"Content-Length: %d\r\n\r\n" % len(body) + body)
        out.append(req)
    return out


async def _worker(port, reqs, offset, stop_at, lat, errors):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = offset
    n = len(reqs)
    perf = time.perf_counter
    try:
        while perf() < stop_at:
            t0 = perf()
            writer.write(reqs[i % n])
            head = await reader.readuntil(b"\r\n\r\n")
            m = re.search(rb"(?i)content-length: *(\d+)", head)
            await reader.readexactly(int(m.group(1)))
            lat.append(perf() - t0)
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(head[:40])
            i += 1
    finally:
        writer.close()


def run_load(port, reqs, concurrency, seconds, warmup=0.5) -> dict:
    async def main():
        lat: list[float] = []
        errors: list = []
        # warm-up (connections, server arenas), not recorded
        await asyncio.gather(*(_worker(port, reqs, c * 7, time.perf_counter() + warmup, [], errors)
                               for c in range(concurrency)))
        t0 = time.perf_counter()
        await asyncio.gather(*(_worker(port, reqs, c * 7, t0 + seconds, lat, errors) for c in range(concurrency)))
        return lat, errors, time.perf_counter() - t0

    try:
        import uvloop
        lat, errors, wall = uvloop.run(main())
    except ImportError:
        lat, errors, wall = asyncio.run(main())
    a = np.array(lat) * 1e3
    return {"concurrency": concurrency, "requests": len(lat), "errors": len(errors), "rps": len(lat) / wall,
            "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99))}


def bare_session_p50(model_path: str, input_name: str, shape: tuple, n: int = 3000) -> dict:
    from dslc.runtime.session import create_session
    out = {}
    sess, _ = create_session(model_path, spinning=False)           # the server's session options
    default, _ = create_session(model_path)                        # onnxruntime's default spinning
    xs = [np.random.default_rng(i).standard_normal(shape).astype(np.float32) for i in range(16)]
    for label, s in (("server_options", sess), ("spinning", default)):
        for x in xs:
            s.run(None, {input_name: x})
        t = []
        for i in range(n):
            t0 = time.perf_counter()
            s.run(None, {input_name: xs[i % 16]})
            t.append(time.perf_counter() - t0)
        out[label] = float(np.median(t) * 1e3)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="an .onnx model with one FP32 input [N, ...] (default: LeNet-5)")
    ap.add_argument("--seconds", type=float, default=3.0, help="measured seconds per configuration (default 3)")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--max-batch-size", type=int, default=32)
    ap.add_argument("--max-queue-delay-ms", type=float, default=0.0)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    import onnxruntime as ort
    tmp = None
    if args.model:
        model_path = args.model
    else:
        sys.path.insert(0, str(ROOT / "tests" / "serve"))
        import serve_models
        import tempfile
        tmp = tempfile.mkdtemp(prefix="bench_serve_")
        model_path = serve_models.save(serve_models.lenet(), Path(tmp) / "lenet.onnx")
    name = Path(model_path).stem
    s = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    inp = s.get_inputs()[0]
    shape = tuple([1] + [d if isinstance(d, int) else 1 for d in inp.shape[1:]])
    levels = [int(c) for c in args.concurrency.split(",")]

    print(f"model {name}, input {inp.name}{list(shape)}, {os.cpu_count()} CPU(s), {args.seconds:g} s per point")
    bare = bare_session_p50(model_path, inp.name, shape)
    print(f"bare session.run p50 at batch 1: {bare['server_options']:.3f} ms (server's options), "
          f"{bare['spinning']:.3f} ms (onnxruntime default spinning)")

    results = {"model": name, "cpus": os.cpu_count(), "bare_session_run_p50_ms": bare, "runs": {}}
    modes = {"batching": ["--max-batch-size", str(args.max_batch_size), "--max-queue-delay-ms",
                          str(args.max_queue_delay_ms)],
             "no_batching": ["--max-batch-size", "1"]}
    for mode, extra in modes.items():
        srv = Server(model_path, extra)
        try:
            reqs = build_requests(name, inp.name, shape, 64, srv.port)
            rows = []
            for c in levels:
                before = srv.stats(name)
                r = run_load(srv.port, reqs, c, args.seconds)
                after = srv.stats(name)
                ex = after["execution_count"] - before["execution_count"]
                inf = after["inference_count"] - before["inference_count"]
                r["mean_batch"] = inf / ex if ex else 0.0
                if c == 1:
                    d_ok = after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"]
                    d_req = after["inference_stats"]["success"]["ns"] - before["inference_stats"]["success"]["ns"]
                    d_cmp = (after["inference_stats"]["compute_infer"]["ns"] -
                             before["inference_stats"]["compute_infer"]["ns"])
                    r["server_internal_overhead_ms"] = (d_req - d_cmp) / max(d_ok, 1) / 1e6
                    r["overhead_p50_ms"] = r["p50_ms"] - bare["server_options"]
                rows.append(r)
                print(f"  {mode:12s} c={c:<3d} {r['rps']:8.0f} req/s  p50 {r['p50_ms']:6.3f} ms  p99 {r['p99_ms']:6.3f} ms"
                      f"  mean batch {r['mean_batch']:5.2f}  errors {r['errors']}")
            if mode == "no_batching":
                jr = run_load(srv.port, build_requests(name, inp.name, shape, 64, srv.port, as_json=True), 1,
                              args.seconds)
                results["json_c1_no_batching"] = jr
                print(f"  {'JSON tensors':12s} c=1   {jr['rps']:8.0f} req/s  p50 {jr['p50_ms']:6.3f} ms")
            results["runs"][mode] = rows
        finally:
            srv.stop()

    on = {r["concurrency"]: r for r in results["runs"]["batching"]}
    off = {r["concurrency"]: r for r in results["runs"]["no_batching"]}
    print()
    for c in levels:
        print(f"concurrency {c:>3}: batching / no batching throughput = {on[c]['rps'] / off[c]['rps']:.2f}x")
    if 1 in levels:
        for mode, rows in (("no batching", off), ("batching", on)):
            r = rows[1]
            print(f"overhead at c=1 ({mode}): p50 {r['p50_ms']:.3f} ms - session.run {bare['server_options']:.3f} ms"
                  f" = {r['overhead_p50_ms']:.3f} ms end to end; {r['server_internal_overhead_ms']:.3f} ms inside "
                  f"the server")
    results["ratios"] = {str(c): on[c]["rps"] / off[c]["rps"] for c in levels}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
