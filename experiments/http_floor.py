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

SERVER = r"""
import socket, sys, uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
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
RESP = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body) + body
class Protocol(HttpToolsProtocol):
    def on_headers_complete(self):
        pass
    def on_body(self, b):
        pass
    def on_message_complete(self):
        self.transport.write(RESP)
sock = socket.create_server(("127.0.0.1", 0))
print("port", sock.getsockname()[1], flush=True)
cfg = uvicorn.Config(app, loop="uvloop", http=Protocol if sys.argv[1] == "protocol" else "httptools",
                     lifespan="off", log_level="warning", access_log=False, server_header=False, date_header=False)
uvicorn.Server(cfg).run(sockets=[sock])
"""


def cpu_s(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / 100.0


def measure(kind: str, c: int, seconds: float, lua: Path) -> str:
    p = subprocess.Popen([sys.executable, "-c", SERVER, kind], stdout=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{int(p.stdout.readline().split()[1])}/v2/models/floor/infer"
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
