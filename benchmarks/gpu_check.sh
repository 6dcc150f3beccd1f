#!/usr/bin/env bash
# One short, prepared check for a machine with an NVIDIA GPU:
#   1. makes dslc importable (installs carried wheels from $DSLC_WHEELS, default ./wheels, when it is not);
#   2. compiles ResNet-18 (networks/resnet18.net) to ONNX, fp32 and fp16 (`dslc compile --precision fp16`);
#   3. asserts that an onnxruntime session on it really runs on CUDAExecutionProvider (session.get_providers());
#   4. for fp32 and fp16: serves it with `dslc serve --device gpu`, checks the server says CUDA, puts
#      perf_analyzer-style load on it (CONCURRENCY keep-alive clients, binary tensors, batch-1 requests, dynamic
#      batching up to 32) for DURATION seconds, and prints throughput, p50 and p99, plus in-process
#      session.run throughput at batch 32 for the ratio.
# Figures go to stdout and to $OUT_DIR/gpu_check.json.
#
# usage: benchmarks/gpu_check.sh [--duration S] [--concurrency N] [--allow-cpu] [--help]
#   --allow-cpu   without a usable GPU, run the same steps on CPU for 5 s (a smoke test of the script);
#                 without it the script stops there with exit status 3.
# Environment: PYTHON (default .venv/bin/python, else python3), DSLC_WHEELS, OUT_DIR (default a temp dir).
# Exit status: 0 all checks passed, 1 a check failed, 2 setup/usage problem, 3 no usable GPU.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DURATION="${DURATION:-30}"
CONCURRENCY="${CONCURRENCY:-16}"
WHEELS="${DSLC_WHEELS:-$ROOT/wheels}"
ALLOW_CPU=0

usage() { sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION="${2:?--duration needs seconds}"; shift ;;
        --concurrency) CONCURRENCY="${2:?--concurrency needs a number}"; shift ;;
        --allow-cpu) ALLOW_CPU=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "gpu_check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
case "$DURATION$CONCURRENCY" in
    *[!0-9]*|"") echo "gpu_check: --duration and --concurrency must be whole numbers" >&2; exit 2 ;;
esac

if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"
else PY="python3"; fi
OUT_DIR="${OUT_DIR:-$(mktemp -d -t dslc-gpu-check.XXXXXX)}"
mkdir -p "$OUT_DIR"
echo "gpu_check: python $("$PY" -c 'import sys; print(sys.version.split()[0])'), results in $OUT_DIR"

# ---- 1. dependencies -----------------------------------------------------------------------------------------
install_wheels() {
    if ! compgen -G "$WHEELS/*.whl" > /dev/null; then
        echo "gpu_check: error: $1, and there are no wheels in $WHEELS to install (set DSLC_WHEELS)" >&2
        exit 2
    fi
    echo "gpu_check: $1: installing the wheels in $WHEELS"
    "$PY" -m pip install -q --no-index --find-links "$WHEELS" "$WHEELS"/*.whl
}
if ! "$PY" -c 'import dslc, onnxruntime, numpy, uvicorn, onnxconverter_common' 2> /dev/null; then
    install_wheels "dslc or its dependencies are not importable"
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e "$ROOT" 2> /dev/null || true
fi
if ! "$PY" -c 'import onnxruntime as o, sys; sys.exit("CUDAExecutionProvider" not in o.get_available_providers())'; then
    if [ "$ALLOW_CPU" = 0 ] && compgen -G "$WHEELS/onnxruntime_gpu-*.whl" > /dev/null; then
        install_wheels "this onnxruntime has no CUDA provider"
    fi
fi

# ---- 2-4. compile, provider check, serve under load ------------------------------------------------------------
set +e
"$PY" - "$OUT_DIR" "$DURATION" "$CONCURRENCY" "$ALLOW_CPU" <<'PYEOF'
import asyncio, json, re, subprocess, sys, threading, time, urllib.request
from pathlib import Path

import numpy as np

out_dir, duration, concurrency, allow_cpu = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
py = sys.executable
figures = {"checks": {}, "runs": []}


def fail(msg, code=1):
    print(f"gpu_check: FAIL: {msg}", flush=True)
    figures["error"] = msg
    (out_dir / "gpu_check.json").write_text(json.dumps(figures, indent=2))
    sys.exit(code)


models = {}
for prec in ("fp32", "fp16"):
    path = out_dir / f"resnet18_{prec}.onnx"
    r = subprocess.run([py, "-m", "dslc.cli", "compile", "networks/resnet18.net", "-o", str(path), "--precision",
                        prec], capture_output=True, text=True)
    print(r.stdout.rstrip())
    if r.returncode != 0:
        fail(f"dslc compile --precision {prec} exited {r.returncode}: {r.stderr.strip()[-400:]}")
    models[prec] = path

from dslc.runtime.session import create_session, probe_providers  # noqa: E402

probe = probe_providers(True)
sess, provider = create_session(str(models["fp32"]), prefer_gpu=True)
providers = sess.get_providers()
figures["checks"]["providers"] = providers
print(f"gpu_check: session.get_providers() = {providers} ({probe.device or probe.reason})")
device = "gpu"
if providers[0] != "CUDAExecutionProvider":
    if not allow_cpu:
        fail(f"no usable GPU: onnxruntime runs on {providers[0]} ({probe.reason})", 3)
    print("gpu_check: no usable GPU; --allow-cpu: a 5 s smoke run on CPU, figures are NOT GPU figures")
    device, duration = "cpu", min(duration, 5)
figures["checks"]["cuda"] = device == "gpu"


def session_throughput(path, batch=32, seconds=5.0):
    s, _p = create_session(str(path), prefer_gpu=device == "gpu")
    x = np.random.default_rng(0).random((batch, 3, 224, 224), dtype=np.float32)
    s.run(None, {"x": x})
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        s.run(None, {"x": x})
        n += batch
    return n / (time.perf_counter() - t0)


def request_bytes(port, n=16):
    rng = np.random.default_rng(1)
    out = []
    for _ in range(n):
        x = rng.random((1, 3, 224, 224), dtype=np.float32)
        head = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3, 224, 224],
                                       "parameters": {"binary_data_size": x.nbytes}}],
                           "parameters": {"binary_data_output": True}}).encode()
        body = head + x.tobytes()
        out.append(b"POST /v2/models/resnet18/infer HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % port +
                   b"Inference-Header-Content-Length: %d\r\nContent-Length: %d\r\n\r\n" % (len(head), len(body)) + body)
    return out


async def client(port, reqs, k, stop_at, lat, errors):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = k
    try:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            writer.write(reqs[i % len(reqs)])
            head = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(int(re.search(rb"(?i)content-length: *(\d+)", head).group(1)))
            lat.append(time.perf_counter() - t0)
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(head[:60])
            i += 1
    finally:
        writer.close()


def load(port, seconds):
    reqs = request_bytes(port)

    async def main():
        warm, errors, lat = [], [], []
        await asyncio.gather(*(client(port, reqs, k, time.perf_counter() + 2, warm, errors) for k in range(concurrency)))
        t0 = time.perf_counter()
        await asyncio.gather(*(client(port, reqs, k, t0 + seconds, lat, errors) for k in range(concurrency)))
        return lat, errors, time.perf_counter() - t0
    lat, errors, wall = asyncio.run(main())
    a = np.array(lat) * 1e3
    return {"requests": len(lat), "errors": len(errors), "rps": len(lat) / wall,
            "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99))}


for prec, path in models.items():
    served = out_dir / f"serve_{prec}" / "resnet18.onnx"
    served.parent.mkdir(exist_ok=True)
    served.write_bytes(path.read_bytes())
    proc = subprocess.Popen([py, "-m", "dslc.cli", "serve", str(served), "--port", "0", "--device", device,
                             "--max-batch-size", "32", "--max-queue-delay-ms", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, ready = [], threading.Event()

    def read(p=proc):
        for line in p.stdout:
            lines.append(line.rstrip())
            if "ready:" in line or "error" in line:
                ready.set()
        ready.set()
    threading.Thread(target=read, daemon=True).start()
    try:
        if not ready.wait(180):
            fail(f"{prec} server not ready after 180 s:\n" + "\n".join(lines[-20:]))
        port = next((int(m.group(1)) for ln in lines for m in [re.search(r"listening on http://\S+:(\d+) ", ln)] if m), None)
        ready_line = next((ln for ln in lines if "ready on" in ln), "")
        if port is None or not ready_line:
            fail(f"{prec} server did not start:\n" + "\n".join(lines[-20:]))
        want = "CUDAExecutionProvider" if device == "gpu" else "CPUExecutionProvider"
        if want not in ready_line:
            fail(f"{prec} server is not on {want}: {ready_line}")
        print(f"gpu_check: {ready_line.removeprefix('dslc serve: ')}")
        r = load(port, duration)
        r.update(precision=prec, device=device, concurrency=concurrency, seconds=duration,
                 session_batch32_ips=session_throughput(path))
        figures["runs"].append(r)
        print(f"gpu_check: resnet18 {prec} on {device}: {r['rps']:.0f} inferences/s, p50 {r['p50_ms']:.2f} ms, "
              f"p99 {r['p99_ms']:.2f} ms, {r['errors']} errors of {r['requests']} (concurrency {concurrency}, "
              f"{duration} s); in-process session.run batch 32: {r['session_batch32_ips']:.0f} inferences/s "
              f"(served / in-process {r['rps'] / r['session_batch32_ips']:.2f})", flush=True)
        if r["errors"]:
            fail(f"{prec}: {r['errors']} failed requests")
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()

(out_dir / "gpu_check.json").write_text(json.dumps(figures, indent=2))
fp32, fp16 = figures["runs"]
print(f"gpu_check: OK on {device}: fp16 / fp32 served throughput {fp16['rps'] / fp32['rps']:.2f}, "
      f"p99 {fp16['p99_ms']:.2f} vs {fp32['p99_ms']:.2f} ms")
PYEOF
status=$?
set -e
exit "$status"
