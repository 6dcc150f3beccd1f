"""Benchmark `dslc serve`: throughput and p50/p99 latency at concurrency 1, 8, 32, with dynamic batching on and
off, and the server's overhead over a bare session.run -- all in one run.

    python benchmarks/bench_serve.py                 # LeNet-5: networks/lenet5.net compiled by dslc
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


# A trivial ASGI app on the same uvicorn stack (httptools, uvloop): the floor that HTTP, the client and the
# loopback round trip cost before dslc does anything.
_FLOOR = r"""
import socket, sys, uvicorn
body = b'{"model_name":"floor","outputs":[]}'
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})
sock = socket.create_server(("127.0.0.1", 0))
print("listening on http://127.0.0.1:%d " % sock.getsockname()[1], flush=True)
cfg = uvicorn.Config(app, loop="uvloop", http="httptools", lifespan="off", log_level="warning", access_log=False,
                     server_header=False, date_header=False, proxy_headers=False)
uvicorn.Server(cfg).run(sockets=[sock])
"""


class FloorServer(Server):
    """A script that prints its listening line first; `address` is what LISTENING matched."""
    SCRIPT, LISTENING = _FLOOR, r"listening on http://[^ ]+:(\d+) "

    def __init__(self):  # noqa: D107 - same start-up protocol, different command
        self.proc = subprocess.Popen([sys.executable, "-c", self.SCRIPT], cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        line = self.proc.stdout.readline()
        m = re.search(self.LISTENING, line)
        if not m:
            raise RuntimeError(f"{type(self).__name__} did not start: " + line + self.proc.stdout.read())
        self.address = m.group(1)
        self.port = int(self.address) if self.address.isdigit() else None


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
    import onnxruntime as ort
    from dslc.runtime.session import create_session
    from dslc.serve.model import default_threads
    out = {}
    sess, _ = create_session(model_path, spinning=False, intra_op_threads=default_threads())  # the server's options
    default = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])             # onnxruntime defaults
    xs = [np.random.default_rng(i).standard_normal(shape).astype(np.float32) for i in range(16)]
    for label, s in (("server_options", sess), ("ort_defaults", default)):
        for x in xs:
            s.run(None, {input_name: x})
        t = []
        for i in range(n):
            t0 = time.perf_counter()
            s.run(None, {input_name: xs[i % 16]})
            t.append(time.perf_counter() - t0)
        out[label] = float(np.median(t) * 1e3)
    return out


def process_cpu_s(pid: int) -> float:
    """user + system CPU seconds of a process and its live children -- a `--workers` server's worker processes --
    (Linux /proc; nan elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except (OSError, ValueError, IndexError):
        return float("nan")
    return own + sum(process_cpu_s(int(c)) for c in children)


def load_with_cpu(srv, reqs, c, seconds) -> dict:
    c0 = process_cpu_s(srv.proc.pid)
    r = run_load(srv.port, reqs, c, seconds)
    r["server_cpu_us_per_req"] = (process_cpu_s(srv.proc.pid) - c0) / max(r["requests"], 1) * 1e6
    return r


def measure(srv: Server, name: str, reqs: list, c: int, seconds: float) -> dict:
    before = srv.stats(name)
    r = load_with_cpu(srv, reqs, c, seconds)
    after = srv.stats(name)
    ex = after["execution_count"] - before["execution_count"]
    inf = after["inference_count"] - before["inference_count"]
    r["mean_batch"] = inf / ex if ex else 0.0
    d_ok = after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"]
    d_req = after["inference_stats"]["success"]["ns"] - before["inference_stats"]["success"]["ns"]
    d_cmp = after["inference_stats"]["compute_infer"]["ns"] - before["inference_stats"]["compute_infer"]["ns"]
    r["server_internal_overhead_ms"] = (d_req - d_cmp) / max(d_ok, 1) / 1e6
    return r


def best(runs: list[dict]) -> dict:
    """Best of the rounds: the least disturbed by whatever else the machine was doing."""
    b = dict(max(runs, key=lambda r: r["rps"]))
    b["p50_ms"] = min(r["p50_ms"] for r in runs)
    b["p99_ms"] = min(r["p99_ms"] for r in runs)
    if "server_internal_overhead_ms" in runs[0]:
        b["server_internal_overhead_ms"] = min(r["server_internal_overhead_ms"] for r in runs)
    cpu = sorted(r["server_cpu_us_per_req"] for r in runs)
    b["server_cpu_us_per_req"] = cpu[len(cpu) // 2]
    b["errors"] = sum(r["errors"] for r in runs)
    b["rounds_rps"] = [round(r["rps"]) for r in runs]
    return b


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="an .onnx model with one FP32 input [N, ...] (default: LeNet-5)")
    ap.add_argument("--seconds", type=float, default=2.0, help="measured seconds per point and round (default 2)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds; modes are interleaved within each, and each point keeps its best round (default 3)")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--max-batch-size", type=int, default=32)
    ap.add_argument("--max-queue-delay-ms", type=float, default=0.0)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    import shutil
    import tempfile

    import onnxruntime as ort
    tmp = tempfile.mkdtemp(prefix="bench_serve_")
    try:
        if args.model:
            model_path = args.model
        else:
            try:   # networks/lenet5.net through the dslc compiler (seeded weights)
                import onnx
                from dslc.lowering.compile import compile_file
                model_path = str(Path(tmp) / "lenet5.onnx")
                onnx.save(compile_file(str(ROOT / "networks" / "lenet5.net")), model_path)
            except (ImportError, OSError):   # the same architecture built with onnx.helper (the tests' model)
                sys.path.insert(0, str(ROOT / "tests" / "serve"))
                import serve_models
                model_path = serve_models.save(serve_models.lenet(), Path(tmp) / "lenet5.onnx")
        return run_all(args, model_path, ort)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_all(args, model_path: str, ort) -> int:
    name = Path(model_path).stem
    s = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    inp = s.get_inputs()[0]
    shape = tuple([1] + [d if isinstance(d, int) else 1 for d in inp.shape[1:]])
    levels = [int(c) for c in args.concurrency.split(",")]
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    print(f"model {name}, input {inp.name}{list(shape)}, {os.cpu_count()} CPU(s), load average {load:.1f}; "
          f"{args.rounds} round(s) x {args.seconds:g} s per point, best round kept")
    bare = bare_session_p50(model_path, inp.name, shape)
    print(f"bare session.run p50 at batch 1: {bare['server_options']:.3f} ms (the server's session options), "
          f"{bare['ort_defaults']:.3f} ms (onnxruntime defaults)")

    results = {"model": name, "cpus": os.cpu_count(), "load_average": load, "bare_session_run_p50_ms": bare,
               "runs": {}}
    modes = {"batching": ["--max-batch-size", str(args.max_batch_size), "--max-queue-delay-ms",
                          str(args.max_queue_delay_ms)],
             "no_batching": ["--max-batch-size", "1"]}
    servers = {}
    try:
        for mode, extra in modes.items():
            servers[mode] = Server(model_path, extra)
        reqs = {mode: build_requests(name, inp.name, shape, 64, srv.port) for mode, srv in servers.items()}
        json_reqs = build_requests(name, inp.name, shape, 64, servers["no_batching"].port, as_json=True)
        raw: dict = {(m, c): [] for m in modes for c in levels}
        json_runs = []
        floor_runs = []
        floor = FloorServer()
        floor_reqs = build_requests("floor", inp.name, shape, 64, floor.port)
        floor_raw: dict = {c: [] for c in levels}
        for rnd in range(args.rounds):
            for c in levels:
                floor_raw[c].append(load_with_cpu(floor, floor_reqs, c, args.seconds))
            floor_runs.append(floor_raw[levels[0]][-1])
            for c in levels:
                for mode in (modes if rnd % 2 == 0 else reversed(list(modes))):
                    raw[(mode, c)].append(measure(servers[mode], name, reqs[mode], c, args.seconds))
            json_runs.append(run_load(servers["no_batching"].port, json_reqs, 1, args.seconds))
            print(f"  round {rnd + 1}/{args.rounds} done")
        floor.stop()
    finally:
        for srv in servers.values():
            srv.stop()

    bare_ms = bare["server_options"]
    for mode in modes:
        rows = []
        for c in levels:
            r = best(raw[(mode, c)])
            if c == 1:
                r["overhead_p50_ms"] = r["p50_ms"] - bare_ms
            rows.append(r)
            print(f"  {mode:12s} c={c:<3d} {r['rps']:8.0f} req/s  p50 {r['p50_ms']:6.3f} ms  p99 {r['p99_ms']:6.3f} ms"
                  f"  server CPU {r['server_cpu_us_per_req']:5.0f} us/req  mean batch {r['mean_batch']:5.2f}  "
                  f"errors {r['errors']}  (rounds: {r['rounds_rps']} req/s)")
        results["runs"][mode] = rows
    results["floor"] = []
    for c in levels:
        f = best(floor_raw[c])
        results["floor"].append(f)
        print(f"  {'HTTP floor':12s} c={c:<3d} {f['rps']:8.0f} req/s  p50 {f['p50_ms']:6.3f} ms  server CPU "
              f"{f['server_cpu_us_per_req']:5.0f} us/req  (trivial ASGI app: same uvicorn stack, client and request "
              f"bytes; no dslc, no model)")
    fl = min(floor_runs, key=lambda r: r["p50_ms"])
    jr = min(json_runs, key=lambda r: r["p50_ms"])
    results["json_c1_no_batching"] = jr
    print(f"  {'JSON tensors':12s} c=1   {jr['rps']:8.0f} req/s  p50 {jr['p50_ms']:6.3f} ms  (no batching)")

    on = {r["concurrency"]: r for r in results["runs"]["batching"]}
    off = {r["concurrency"]: r for r in results["runs"]["no_batching"]}
    print()
    paired = {}
    for c in levels:
        per_round = sorted(a["rps"] / b["rps"] for a, b in zip(raw[("batching", c)], raw[("no_batching", c)]))
        paired[c] = per_round[len(per_round) // 2]
        print(f"concurrency {c:>3}: batching / no batching throughput = {on[c]['rps'] / off[c]['rps']:.2f}x best vs "
              f"best; {paired[c]:.2f}x median of the rounds' back-to-back pairs {[round(r, 2) for r in per_round]}; "
              f"server CPU per request {off[c]['server_cpu_us_per_req'] / on[c]['server_cpu_us_per_req']:.2f}x less")
    if 1 in levels:
        for mode, rows in (("no batching", off), ("batching", on)):
            r = rows[1]
            print(f"overhead at c=1 ({mode}): p50 {r['p50_ms']:.3f} ms - session.run {bare_ms:.3f} ms"
                  f" = {r['overhead_p50_ms']:.3f} ms end to end, of which HTTP floor {fl['p50_ms']:.3f} ms and dslc "
                  f"{r['p50_ms'] - fl['p50_ms'] - bare_ms:.3f} ms")
    results["ratios_best"] = {str(c): on[c]["rps"] / off[c]["rps"] for c in levels}
    results["ratios_paired_median"] = {str(c): paired[c] for c in levels}
    results["cpu_per_request_ratios"] = {str(c): off[c]["server_cpu_us_per_req"] / on[c]["server_cpu_us_per_req"]
                                         for c in levels}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
