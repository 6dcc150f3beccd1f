"""dslc's own per-request cost in `dslc serve`, without HTTP: the ASGI app called directly by `c` concurrent
tasks on one uvloop loop with pre-built binary-tensor requests.  Prints requests/s and process CPU per request
(ORT's threads included); --profile prints cProfile's top functions.

    python experiments/serve_path_cost.py --concurrency 32 --seconds 3 [--profile]
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build(model_name, input_name, shape, n=64):
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        x = rng.standard_normal(shape).astype(np.float32)
        head = json.dumps({"inputs": [{"name": input_name, "datatype": "FP32", "shape": list(shape),
                                       "parameters": {"binary_data_size": x.nbytes}}],
                           "parameters": {"binary_data_output": True}}).encode()
        out.append((head + x.tobytes(), str(len(head)).encode()))
    return out


async def drive(app, model_name, reqs, c, seconds):
    path = f"/v2/models/{model_name}/infer"
    done = 0
    errors = 0

    async def client(k):
        nonlocal done, errors
        i = k * 7
        while time.perf_counter() < stop:
            body, hl = reqs[i % len(reqs)]
            i += 1
            scope = {"type": "http", "method": "POST", "path": path,
                     "headers": [(b"host", b"x"), (b"inference-header-content-length", hl),
                                 (b"content-length", str(len(body)).encode())]}
            sent = False

            async def receive():
                nonlocal sent
                if sent:
                    await asyncio.sleep(3600)
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            status = []

            async def send(msg):
                if msg["type"] == "http.response.start":
                    status.append(msg["status"])
            await app(scope, receive, send)
            if status[0] != 200:
                errors += 1
            done += 1
    stop = time.perf_counter() + 0.3
    await asyncio.gather(*(client(k) for k in range(c)))
    done = 0
    stop = time.perf_counter() + seconds
    c0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(c)))
    return done, errors, time.perf_counter() - t0, time.process_time() - c0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--net", default=str(ROOT / "networks" / "lenet5.net"))
    a = ap.parse_args()
    import onnx
    import uvloop
    from dslc.lowering.compile import compile_file
    from dslc.serve.app import ServeApp
    from dslc.serve.metrics import Metrics
    from dslc.serve.model import ServedModel
    proto = compile_file(a.net)
    m = ServedModel("m", "1", proto.SerializeToString())
    app = ServeApp([m], metrics=Metrics())

    async def run():
        await app._load_all()
        spec = m.inputs[0]
        reqs = build("m", spec.name, (1, *[d for d in spec.shape[1:]]))
        prof = cProfile.Profile() if a.profile else None
        if prof:
            prof.enable()
        done, errors, wall, cpu = await drive(app, "m", reqs, a.concurrency, a.seconds)
        if prof:
            prof.disable()
        print(f"c={a.concurrency}: {done / wall:,.0f} req/s, {cpu / done * 1e6:.1f} µs CPU/request, "
              f"errors {errors}, executions {m.batcher.executions}, inline {m.batcher.inline_executions}, "
              f"run1 {m.run1_ms:.3f} ms")
        m.batcher.close()
        if prof:
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    uvloop.run(run())


if __name__ == "__main__":
    main()
