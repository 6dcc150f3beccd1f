"""Language-server latency: how long after an edit of networks/resnet50.net its diagnostics arrive.

    python benchmarks/bench_lsp.py [--rounds 30] [--markdown]

End to end: two `dslc lsp` subprocesses, driven over stdio by pygls's client exactly as an editor drives them,
one with the default debounce (40 ms: diagnostics wait for a pause in typing) and one with none. Each round
edits the open buffer (a width in the stem, alternating 64 <-> 32, which changes every shape after it) and
times didChange -> publishDiagnostics of that version. Rounds alternate between the two servers.

In process: the check of one edit (`dslc.lsp.analysis.analyze`) with the parse cache the server keeps (the
parsed `import std.resnet` is reused) and with a fresh one (everything parsed again), alternating rounds.
Goal: diagnostics within 100 ms of a change (with the debounce).
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

from lsprotocol import types as T
from pygls.lsp.client import LanguageClient

ROOT = Path(__file__).resolve().parents[1]
NET = ROOT / "networks" / "resnet50.net"
A, B = "conv2d(64, 7, stride=2", "conv2d(32, 7, stride=2"


class Client(LanguageClient):
    def __init__(self):
        super().__init__("bench", "1")
        self.arrived: dict[tuple[str, int], float] = {}

        @self.feature(T.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        def published(params: T.PublishDiagnosticsParams):
            self.arrived[(params.uri, params.version)] = time.perf_counter()


async def start(debounce_ms: int) -> Client:
    c = Client()
    await c.start_io(sys.executable, "-m", "dslc.cli", "lsp")
    await c.initialize_async(T.InitializeParams(capabilities=T.ClientCapabilities(), root_uri=ROOT.as_uri(),
                                                initialization_options={"debounceMs": debounce_ms}))
    c.initialized(T.InitializedParams())
    c.text_document_did_open(T.DidOpenTextDocumentParams(T.TextDocumentItem(NET.as_uri(), "dslc", 1,
                                                                            NET.read_text())))
    await wait(c, 1)
    return c


async def wait(c: Client, version: int) -> float:
    while (NET.as_uri(), version) not in c.arrived:
        await asyncio.sleep(0.0005)
    return c.arrived[(NET.as_uri(), version)]


async def one_edit(c: Client, version: int) -> float:
    text = NET.read_text()
    new = text.replace(A, B) if version % 2 == 0 else text
    t0 = time.perf_counter()
    c.text_document_did_change(T.DidChangeTextDocumentParams(
        T.VersionedTextDocumentIdentifier(version, NET.as_uri()), [T.TextDocumentContentChangeWholeDocument(new)]))
    return (await wait(c, version)) - t0


async def end_to_end(rounds: int) -> dict[str, list[float]]:
    servers = {"debounce 40 ms (default)": await start(40), "no debounce": await start(0)}
    out = {k: [] for k in servers}
    for r in range(rounds + 2):  # two warm-up rounds
        for name, c in servers.items():
            dt = await one_edit(c, r + 2)
            if r >= 2:
                out[name].append(dt)
            await asyncio.sleep(0.05)
    for c in servers.values():
        await c.shutdown_async(None)
        c.exit(None)
        await c.stop()
    return out


def in_process(rounds: int) -> dict[str, list[float]]:
    from dslc.lsp.analysis import ParseCache, analyze
    text = NET.read_text()
    shared = ParseCache()
    analyze(NET, text, shared, lambda p: None)
    out = {"parsed imports reused": [], "everything parsed again": []}
    for r in range(rounds + 2):
        edited = text.replace(A, B) if r % 2 else text
        for name in out:
            cache = shared if name == "parsed imports reused" else ParseCache()
            t0 = time.perf_counter()
            an = analyze(NET, edited, cache, lambda p: None)
            dt = time.perf_counter() - t0
            assert an.program.ok
            if r >= 2:
                out[name].append(dt)
    return out


def row(name: str, xs: list[float]) -> str:
    xs = sorted(xs)
    p90 = xs[int(0.9 * (len(xs) - 1))]
    return f"| {name} | {statistics.median(xs) * 1e3:.1f} ms | {p90 * 1e3:.1f} ms | {xs[0] * 1e3:.1f} ms |"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    e2e = asyncio.run(end_to_end(args.rounds))
    local = in_process(args.rounds)
    print("| didChange -> publishDiagnostics, resnet50.net | median | p90 | min |\n|---|---|---|---|")
    for k, v in e2e.items():
        print(row(k, v))
    print("\n| one check in process (`analyze`), resnet50.net | median | p90 | min |\n|---|---|---|---|")
    for k, v in local.items():
        print(row(k, v))
    ratio = statistics.median(local["everything parsed again"]) / statistics.median(local["parsed imports reused"])
    print(f"\nreusing parsed imports: {ratio:.2f}x faster per check")


if __name__ == "__main__":
    main()
