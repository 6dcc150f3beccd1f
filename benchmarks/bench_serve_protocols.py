"""The serving ratio table: `dslc serve` throughput over HTTP-binary, HTTP-JSON and gRPC at concurrency 1/8/32,
each as a ratio to onnxruntime in-process on the same model at the same batch sizes -- in one run.

    python benchmarks/bench_serve.py --protocols           # (this script) LeNet-5 and ResNet-18
    python benchmarks/bench_serve_protocols.py --models lenet5 --seconds 2 --rounds 2 --json out.json

The in-process reference at concurrency c is session.run on a batch of c rows, back to back, with the server's
session options: what the server's dynamic batcher could at best make of c concurrent batch-1 requests.  The
ratio is server inferences/s over those rows/s; at c=1 the table also gives the p50 overhead over session.run.
One `dslc serve` (dynamic batching up to 32, no queue delay) answers all three protocols; `--workers` adds rows
for a server with that many worker processes.  Load generators, in this process, one connection per concurrent
client, pre-built requests, every answer checked: HTTP through a small asyncio HTTP/1.1 keep-alive client
(bench_serve.py's), gRPC through grpc.aio with tritonclient's generated messages (what tritonclient.grpc sends).
Client and server share the machine's cores: on a small machine the client is part of what limits throughput.
So HTTP-binary is also loaded by wrk (C, one thread; rows marked "(wrk)", with their own floor row) where wrk is
installed: it spends a fraction of the asyncio client's CPU per request, leaving the cores to the server.
Rounds alternate the order of the protocols; each point keeps its best round (the least disturbed).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from bench_serve import FloorServer, Server, best, build_requests, load_with_cpu, process_cpu_s  # noqa: E402

MODELS = {"lenet5": ROOT / "networks" / "lenet5.net", "resnet18": ROOT / "benchmarks" / "nets" / "resnet18_32.net"}


def compile_model(name: str, out_dir: Path) -> tuple[str, str, tuple]:
    import onnx
    import onnxruntime as ort
    from dslc.lowering.compile import compile_file
    path = out_dir / f"{name}.onnx"
    onnx.save(compile_file(str(MODELS[name])), str(path))
    inp = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()[0]
    return str(path), inp.name, tuple(d if isinstance(d, int) else 1 for d in inp.shape[1:])


def in_process(model_path: str, input_name: str, row_shape: tuple, batch: int, seconds: float) -> dict:
    """rows/s and p50 of session.run on `batch` rows, with the server's session options."""
    from dslc.runtime.session import create_session
    from dslc.serve.model import default_threads
    sess, _ = create_session(model_path, spinning=False, intra_op_threads=default_threads())
    xs = [np.random.default_rng(i).standard_normal((batch, *row_shape)).astype(np.float32) for i in range(8)]
    for x in xs:
        sess.run(None, {input_name: x})
    times = []
    t_end = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        sess.run(None, {input_name: xs[i % 8]})
        times.append(time.perf_counter() - t0)
        i += 1
    return {"rows_per_s": batch * len(times) / sum(times), "p50_ms": float(np.median(times) * 1e3)}


# ------------------------------------------------------------------------------------------------ gRPC load

def build_grpc_requests(model: str, input_name: str, shape: tuple, n: int) -> list[bytes]:
    from tritonclient.grpc import service_pb2 as pb
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        x = rng.standard_normal(shape).astype(np.float32)
        req = pb.ModelInferRequest(model_name=model)
        req.inputs.add(name=input_name, datatype="FP32", shape=list(shape))
        req.raw_input_contents.append(x.tobytes())
        out.append(req.SerializeToString())
    return out


def run_grpc_load(target: str, reqs: list[bytes], concurrency: int, seconds: float, warmup: float = 0.5) -> dict:
    import grpc
    from tritonclient.grpc import service_pb2 as pb

    async def worker(call, offset, stop_at, lat, errors):
        perf = time.perf_counter
        i = offset
        while perf() < stop_at:
            t0 = perf()
            try:
                resp = await call(reqs[i % len(reqs)])
                if not resp.raw_output_contents:
                    errors.append("empty")
            except grpc.RpcError as e:
                errors.append(e.code())
            lat.append(perf() - t0)
            i += 1

    async def main():
        channels = [grpc.aio.insecure_channel(target) for _ in range(concurrency)]   # one connection per client
        calls = [ch.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                request_serializer=lambda b: b, response_deserializer=pb.ModelInferResponse.FromString)
                 for ch in channels]
        lat: list[float] = []
        errors: list = []
        await asyncio.gather(*(worker(calls[c], c * 7, time.perf_counter() + warmup, [], errors)
                               for c in range(concurrency)))
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(calls[c], c * 7, t0 + seconds, lat, errors) for c in range(concurrency)))
        wall = time.perf_counter() - t0
        for ch in channels:
            await ch.close()
        return lat, errors, wall

    lat, errors, wall = asyncio.run(main())
    a = np.array(lat) * 1e3
    return {"concurrency": concurrency, "requests": len(lat), "errors": len(errors), "rps": len(lat) / wall,
            "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99))}


def grpc_with_cpu(srv, reqs, c, seconds) -> dict:
    c0 = process_cpu_s(srv.proc.pid)
    r = run_grpc_load(srv.grpc_target, reqs, c, seconds)
    r["server_cpu_us_per_req"] = (process_cpu_s(srv.proc.pid) - c0) / max(r["requests"], 1) * 1e6
    return r


# ------------------------------------------------------------------------------------------- wrk (C) load

_WRK_SCRIPT = """
local f = io.open("{body}", "rb"); local body = f:read("*all"); f:close()
wrk.method = "POST"
wrk.body = body
wrk.headers["Inference-Header-Content-Length"] = "{hl}"
wrk.headers["Content-Type"] = "application/octet-stream"
"""
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk_with_cpu(srv, model: str, input_name: str, shape: tuple, c: int, seconds: float, tmp: Path) -> dict:
    """HTTP-binary load from wrk (one thread, c connections, the same request every time): a load generator in C,
    so that far less of the 2 cores goes to the client than with the asyncio client.  Same request bytes as
    build_requests' first request."""
    import subprocess
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    head = json.dumps({"inputs": [{"name": input_name, "datatype": "FP32", "shape": list(shape),
                                   "parameters": {"binary_data_size": x.nbytes}}],
                       "parameters": {"binary_data_output": True}}).encode()
    body = tmp / f"wrk_{model}.bin"
    body.write_bytes(head + x.tobytes())
    script = tmp / f"wrk_{model}.lua"
    script.write_text(_WRK_SCRIPT.replace("{body}", str(body)).replace("{hl}", str(len(head))))
    url = f"http://127.0.0.1:{srv.port}/v2/models/{model}/infer"
    subprocess.run(["wrk", "-t1", f"-c{c}", "-d1s", "-s", str(script), url], capture_output=True, timeout=60)  # warm-up
    c0 = process_cpu_s(srv.proc.pid)
    out = subprocess.run(["wrk", "-t1", f"-c{c}", f"-d{seconds:g}s", "--latency", "-s", str(script), url],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    cpu = process_cpu_s(srv.proc.pid) - c0
    n = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {q: float(v) * _UNITS[u] for q, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    errors += sum(int(v) for v in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    return {"concurrency": c, "requests": n, "errors": errors, "rps": rps, "p50_ms": lat.get("50", float("nan")),
            "p99_ms": lat.get("99", float("nan")), "server_cpu_us_per_req": cpu / max(n, 1) * 1e6}


# A trivial grpc.aio servicer on uvloop answering every ModelInfer with a canned response: what gRPC in Python,
# the client and the loopback round trip cost before dslc does anything (the gRPC twin of bench_serve's HTTP floor).
_GRPC_FLOOR = r"""
import asyncio, grpc, uvloop
from dslc.serve.grpc_stubs import grpc_service_pb2 as pb, grpc_service_pb2_grpc as pb_grpc
class Floor(pb_grpc.GRPCInferenceServiceServicer):
    async def ModelInfer(self, request, context):
        r = pb.ModelInferResponse(model_name=request.model_name)
        r.outputs.add(name="y", datatype="FP32", shape=[1, 10])
        r.raw_output_contents.append(bytes(40))
        return r
async def main():
    s = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Floor(), s)
    port = s.add_insecure_port("127.0.0.1:0")
    await s.start()
    print("listening on grpc://127.0.0.1:%d " % port, flush=True)
    await s.wait_for_termination()
uvloop.install()
asyncio.run(main())
"""


class GrpcFloorServer(FloorServer):
    SCRIPT, LISTENING = _GRPC_FLOOR, r"listening on grpc://(\S+) "

    @property
    def grpc_target(self) -> str:
        return self.address


def measure_floors(input_name: str, shape: tuple, levels: list[int], args) -> dict:
    """The HTTP and gRPC floors at each concurrency, best of the rounds."""
    out = {}
    for label, start, load in (("HTTP floor (no dslc, no model)", FloorServer,
                                lambda srv, c: load_with_cpu(srv, build_requests("floor", input_name, shape, 64,
                                                                                  srv.port), c, args.seconds)),
                               ("gRPC floor (no dslc, no model)", GrpcFloorServer,
                                lambda srv, c: grpc_with_cpu(srv, build_grpc_requests("floor", input_name, shape, 64),
                                                             c, args.seconds))):
        srv = start()
        try:
            out[label] = {c: best([load(srv, c) for _ in range(args.rounds)]) for c in levels}
        finally:
            srv.stop()
    return out


class GrpcServer(Server):
    """bench_serve's Server, and the gRPC address from the startup lines."""

    @property
    def grpc_target(self) -> str:
        for line in self.lines:
            m = re.search(r"listening on grpc://(\S+?) ", line)
            if m:
                return m.group(1)
        raise RuntimeError("no gRPC listening line:\n" + "\n".join(self.lines))


# -------------------------------------------------------------------------------------------------- driver

def bench_model(name: str, tmp: Path, args) -> dict:
    model_path, input_name, row_shape = compile_model(name, tmp)
    shape = (1, *row_shape)
    levels = [int(c) for c in args.concurrency.split(",")]
    ref = {c: in_process(model_path, input_name, row_shape, c, args.ref_seconds) for c in levels}
    configs = {"1 worker": ["--max-batch-size", "32"]}
    for w in args.workers:
        configs[f"{w} workers"] = ["--max-batch-size", "32", "--workers", str(w)]
    results = {"model": name, "input": [input_name, list(shape)], "in_process": ref, "rows": {}}
    for label, extra in configs.items():
        srv = GrpcServer(model_path, extra)
        try:
            time.sleep(1.0 if "workers" in label else 0.0)   # every worker loaded, not just the first
            http_bin = build_requests(name, input_name, shape, 64, srv.port)
            http_json = build_requests(name, input_name, shape, 64, srv.port, as_json=True)
            grpc_reqs = build_grpc_requests(name, input_name, shape, 64)
            protocols = {"HTTP-binary": lambda c: load_with_cpu(srv, http_bin, c, args.seconds),
                         "HTTP-JSON": lambda c: load_with_cpu(srv, http_json, c, args.seconds),
                         "gRPC": lambda c: grpc_with_cpu(srv, grpc_reqs, c, args.seconds)}
            if label != "1 worker":   # the workers rows: the protocol that scales furthest
                protocols = {"HTTP-binary": protocols["HTTP-binary"]}
            if args.wrk:
                protocols["HTTP-binary (wrk)"] = lambda c: wrk_with_cpu(srv, name, input_name, shape, c,
                                                                        args.seconds, tmp)
            raw = {(p, c): [] for p in protocols for c in levels}
            for rnd in range(args.rounds):
                order = list(protocols) if rnd % 2 == 0 else list(reversed(list(protocols)))
                for c in levels:
                    for p in order:
                        raw[(p, c)].append(protocols[p](c))
            for p in protocols:
                row = {}
                for c in levels:
                    r = best(raw[(p, c)])
                    r["ratio"] = r["rps"] / ref[c]["rows_per_s"]
                    if c == 1:
                        r["overhead_p50_us"] = (r["p50_ms"] - ref[1]["p50_ms"]) * 1e3
                    row[str(c)] = r
                results["rows"][f"{p}, {label}"] = row
        finally:
            srv.stop()
    floors = measure_floors(input_name, shape, levels, args)
    if args.wrk:
        srv = FloorServer()
        try:
            floors["HTTP floor (wrk)"] = {c: best([wrk_with_cpu(srv, "floor", input_name, shape, c, args.seconds, tmp)
                                                   for _ in range(args.rounds)]) for c in levels}
        finally:
            srv.stop()
    for label, by_c in floors.items():
        row = {}
        for c, r in by_c.items():
            r["ratio"] = r["rps"] / ref[c]["rows_per_s"]
            if c == 1:
                r["overhead_p50_us"] = (r["p50_ms"] - ref[1]["p50_ms"]) * 1e3
            row[str(c)] = r
        results["rows"][label] = row
    return results


def print_table(res: dict, levels: list[int]) -> None:
    ref = res["in_process"]
    print(f"\n{res['model']} {res['input'][1]}: onnxruntime in-process "
          + ", ".join(f"batch {c}: {ref[c]['rows_per_s']:.0f} rows/s" for c in levels)
          + f"; session.run p50 at batch 1 {ref[1]['p50_ms'] * 1e3:.0f} us")
    head = "| protocol | " + " | ".join(f"c={c}: inf/s (ratio)" for c in levels) + " | p50 overhead at c=1 | server CPU / request at c=" + str(levels[-1]) + " |"
    print(head)
    print("|" + "---|" * (len(levels) + 3))
    for label, row in res["rows"].items():
        cells = [f"{row[str(c)]['rps']:.0f} ({row[str(c)]['ratio']:.2f})" for c in levels]
        over = row[str(levels[0])].get("overhead_p50_us")
        errors = sum(row[str(c)]["errors"] for c in levels)
        cpu = row[str(levels[-1])].get("server_cpu_us_per_req", float("nan"))
        print(f"| {label} | " + " | ".join(cells) + f" | {over:.0f} us | {cpu:.0f} us |"
              + (f" errors {errors}" if errors else ""))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="lenet5,resnet18", help="of: " + ", ".join(MODELS))
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--seconds", type=float, default=2.0, help="measured seconds per point and round (default 2)")
    ap.add_argument("--ref-seconds", type=float, default=1.0, help="seconds of in-process session.run per batch size")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, action="append", default=None,
                    help="also measure a server with this many workers (repeatable; default 2)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--no-wrk", dest="wrk", action="store_false",
                    help="skip the rows loaded by wrk (a C load generator; they need `wrk` on PATH)")
    args = ap.parse_args(argv)
    import shutil
    if args.wrk and shutil.which("wrk") is None:
        print("wrk not found (apt-get install wrk): the rows loaded by wrk are left out")
        args.wrk = False
    args.workers = [2] if args.workers is None else [w for w in args.workers if w > 1]
    import shutil
    import tempfile
    tmp = Path(tempfile.mkdtemp(prefix="bench_serve_protocols_"))
    try:
        load = os.getloadavg()[0]
        print(f"{os.cpu_count()} CPU(s), load average {load:.1f} (a shared machine: see BENCHMARKS.md); "
              f"{args.rounds} round(s) x {args.seconds:g} s per point, best round kept")
        levels = [int(c) for c in args.concurrency.split(",")]
        out = []
        for name in args.models.split(","):
            res = bench_model(name.strip(), tmp, args)
            print_table(res, levels)
            out.append(res)
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
