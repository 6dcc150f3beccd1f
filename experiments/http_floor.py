"""What uvicorn's ASGI machinery costs per request, against answering from its HTTP protocol (dslc/serve/infer_http.py).

Two empty servers on the same stack (uvloop + httptools), hit by wrk with the same 3 KiB POST: an ASGI app that
reads the body and answers a canned JSON body (bench_serve.py's HTTP floor), and a subclass of uvicorn's
HttpToolsProtocol that writes the same answer from on_message_complete in one write.  Prints requests/s, p50 and
server CPU per request at each concurrency.  Needs wrk on PATH.

    python experiments/http_floor.py [--seconds 3] [--concurrency 1 32]
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_serve import _FLOOR  # noqa: E402 - the empty ASGI app on uvicorn, bench_serve's HTTP floor

# the same server with the answer written from the protocol: no ASGI task, one write
_PROTOCOL = r"""
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
RESP = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body) + body
class Protocol(HttpToolsProtocol):
    def on_headers_complete(self):
        pass
    def on_body(self, b):
        pass
    def on_message_complete(self):
        self.transport.write(RESP)
"""
SERVERS = {"asgi": _FLOOR,
           "protocol": _FLOOR.replace("sock = socket.create_server", _PROTOCOL + "sock = socket.create_server")
                             .replace('http="httptools"', "http=Protocol")}


def cpu_s(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / 100.0


def measure(kind: str, c: int, seconds: float, lua: Path) -> str:
    p = subprocess.Popen([sys.executable, "-c", SERVERS[kind]], stdout=subprocess.PIPE, text=True)
    try:
        port = re.search(r"127.0.0.1:(\d+)", p.stdout.readline()).group(1)
        url = f"http://127.0.0.1:{port}/v2/models/floor/infer"
        time.sleep(0.5)
        subprocess.run(["wrk", "-t1", f"-c{c}", "-d1s", "-s", str(lua), url], capture_output=True)
        c0 = cpu_s(p.pid)
        out = subprocess.run(["wrk", "-t1", f"-c{c}", f"-d{seconds:g}s", "--latency", "-s", str(lua), url],
                             capture_output=True, text=True).stdout
        cpu = cpu_s(p.pid) - c0
    finally:
        p.terminate()
        p.wait()
    n = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)
    return f"{kind:9} c={c:<3} {rps:>10,.0f} req/s  p50 {p50:>8}  server CPU {cpu / n * 1e6:5.1f} µs/request"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        lua = Path(tmp) / "post.lua"
        lua.write_text('wrk.method = "POST"\nwrk.body = string.rep("x", 3136)\n')
        for _ in range(args.rounds):
            for c in args.concurrency:
                for kind in ("asgi", "protocol"):
                    print(measure(kind, c, args.seconds, lua), flush=True)


if __name__ == "__main__":
    main()
