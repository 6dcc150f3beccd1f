"""Helpers for the serving tests: real `dslc serve` processes on loopback, inputs.  (A uniquely named module,
not conftest, so test files can import it whatever other conftest.py files the suite grows.)"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import serve_models  # noqa: E402,F401  (re-exported for tests)

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0


class ServerProcess:
    """`python -m dslc.cli serve ARGS --port 0` as a subprocess; learns its port from the startup line."""

    def __init__(self, args: list[str], env: dict | None = None):
        self.args = list(args)
        self.lines: list[str] = []
        self._listening = threading.Event()
        self.url = None
        self.host_port = None
        self.grpc_target = None     # host:port of the gRPC API, once its listening line is read
        cmd = [sys.executable, "-m", "dslc.cli", "serve", *self.args]
        if "--port" not in self.args:
            cmd += ["--port", "0"]
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, **(env or {})})
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            g = re.search(r"listening on grpc://(\S+?):(\d+) ", line)
            if g:
                self.grpc_target = f"{g.group(1)}:{g.group(2)}"
            m = re.search(r"listening on http://(\S+?):(\d+) ", line)
            if m:
                self.host_port = f"{m.group(1)}:{m.group(2)}"
                self.url = f"http://{self.host_port}"
                self._listening.set()
        self._listening.set()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> "ServerProcess":
        deadline = time.monotonic() + timeout
        if not self._listening.wait(timeout) or self.url is None:
            self.kill()
            raise RuntimeError(f"server did not start:\n{self.output}")
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output}")
            try:
                with urllib.request.urlopen(self.url + "/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"server not ready after {timeout}s:\n{self.output}")

    def stop(self, sig=signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise
        self._reader.join(5)
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def lenet_input(seed: int, batch: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 1, 28, 28)).astype(np.float32)


def two_io_inputs(seed: int, batch: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((batch, 4)).astype(np.float32),
            rng.integers(-1000, 1000, (batch, 3)).astype(np.int64))
