"""The Open Inference Protocol (KServe v2) REST API as a plain ASGI application, run by uvicorn.

A raw ASGI callable rather than a framework router: the inference path is short (parse, queue, encode) and
every microsecond of per-request overhead shows at concurrency 1.  uvicorn (httptools + uvloop when installed)
does the HTTP; with httptools, POST .../infer does not come here at all but is answered by uvicorn's protocol
itself (dslc.serve.infer_http, through infer_begin / infer_body below): this ASGI route still answers it under
h11, with a query string, or with Expect: 100-continue, and the two give the same bytes.

    GET  /v2/health/live | /v2/health/ready | /v2
    GET  /v2/models/{name}[/versions/{v}]            model metadata
    GET  /v2/models/{name}[/versions/{v}]/ready
    GET  /v2/models/{name}[/versions/{v}]/config     Triton model configuration (JSON), read by perf_analyzer
    GET  /v2/models[/{name}[/versions/{v}]]/stats    Triton statistics extension
    POST /v2/models/{name}[/versions/{v}]/infer
    GET  /metrics                                    Prometheus
"""
from __future__ import annotations

import asyncio
import hmac
import json
import sys
import time
import traceback
import zlib

from dslc.serve.batcher import Batcher, ExecutionError
from dslc.serve.metrics import CONTENT_TYPE
from dslc.serve.model import ModelLoadError, ServedModel
from dslc.serve.protocol import ProtocolError, encode_infer_response, parse_infer_request

JSON = b"application/json"
OCTET = b"application/octet-stream"
METRICS_TYPE = CONTENT_TYPE.encode()
_HEALTH = (("v2", "health", "live"), ("v2", "health", "ready"))


# the request headers the server reads; every other header is skipped without a look
REQUEST_HEADERS = frozenset((b"content-length", b"inference-header-content-length", b"content-encoding",
                             b"authorization"))


def error_reply(e: ProtocolError) -> tuple[bytes, list]:
    """The body and extra headers of an error answer, whichever path sends it."""
    extra = []
    if e.status == 401:
        extra.append((b"www-authenticate", b"Bearer"))
    elif e.status == 405:
        extra.append((b"allow", getattr(e, "allow", "GET").encode()))
    return json.dumps({"error": e.message}, separators=(",", ":")).encode(), extra


def log(msg: str) -> None:
    print(f"dslc serve: {msg}", file=sys.stderr, flush=True)


def _version_key(v: str):
    return (0, int(v)) if v.isdigit() else (1, v)


class _Disconnected(Exception):
    pass


class ServeApp:
    def __init__(self, models: list[ServedModel], *, metrics=None, api_key: str | None = None,
                 max_body_size: int = 64 << 20, on_fatal=None, banner: str = "", control=None):
        self.models: dict[str, dict[str, ServedModel]] = {}
        for m in models:
            self.models.setdefault(m.name, {})[m.version] = m
        self.latest = {n: max(vs, key=_version_key) for n, vs in self.models.items()}
        self.metrics = metrics
        self.api_key = api_key.encode() if api_key else None
        self.max_body_size = max_body_size
        self.on_fatal = on_fatal
        self.banner = banner
        self.stopping = False
        self.exit_code = 0
        self.accepted = 0       # inference requests that reached the app
        self.answered = 0       # ... and got a response (success or error)
        self._load_task = None
        self._paths: dict[str, tuple] = {}
        self._infer_routes: dict[bytes, tuple | None] = {}
        self.services: list = []   # objects with async start(app) / stop(), run with the app (dslc.serve.grpc_server)
        if control is None:   # the repository index answers in every mode; load/unload need one
            from dslc.serve.repository import ModelControl
            control = ModelControl(self, None, fixed=set(self.models))
        self.control = control

    # ------------------------------------------------------------------------------------------------ ASGI

    async def __call__(self, scope, receive, send):
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive, send):
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                if self.banner:
                    log(self.banner)
                self._load_task = asyncio.get_running_loop().create_task(self._load_all())
                self.control.start(self._load_task)
                for svc in self.services:   # e.g. the gRPC server, on this loop so it shares the batchers
                    try:
                        await svc.start(self)
                    except OSError as e:
                        log(f"error: {e}")
                        self.exit_code = 1
                        if self.on_fatal:
                            self.on_fatal()
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                if self._load_task is not None and not self._load_task.done():
                    self._load_task.cancel()
                self.control.stop()
                for svc in self.services:   # lets its requests in flight finish before the batchers close
                    await svc.stop()
                for vs in self.models.values():
                    for m in vs.values():
                        if m.batcher is not None:
                            m.batcher.close()
                log(f"stopped: answered {self.answered} of {self.accepted} accepted inference requests")
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _load_all(self):
        loop = asyncio.get_running_loop()
        all_models = [m for vs in self.models.values() for m in vs.values()]
        for m in all_models:
            try:
                await loop.run_in_executor(None, m.load)
            except ModelLoadError as e:
                m.state, m.error = "failed", str(e)
            except Exception as e:  # pragma: no cover - unexpected
                m.state, m.error = "failed", f"model '{m.name}': {type(e).__name__}: {e}"
            if m.state == "failed":
                log(f"error: {m.error}")
                self.exit_code = 1
                if self.on_fatal:
                    self.on_fatal()
                return
            self.activate(m)
            for note in m.notes:
                log(f"model '{m.name}': {note}")
            log(m.summary() + self._inline_note(m))
        log(f"ready: {len(all_models)} model(s)")

    @staticmethod
    def _inline_note(m: ServedModel) -> str:
        b = m.batcher
        if not b.inline:
            return ""
        if b.inline_rows > 1:
            return (f"; lone requests run inline, and batches of up to {b.inline_rows} rows "
                    f"(a full batch took {m.run_max_ms:.2f} ms at warm-up)")
        return "; lone requests run inline"

    def activate(self, m: ServedModel) -> None:
        """A loaded model gets its metrics and batcher and becomes ready (on the event loop)."""
        mm = self.metrics.for_model(m.name, m.version) if self.metrics else None
        m.mmetrics = mm
        m.batcher = Batcher(m, asyncio.get_running_loop(), mm)
        m.state = "ready"

    # ------------------------------------------------------------------------------------------------ HTTP

    async def _http(self, scope, receive, send):
        method = scope["method"]
        path = scope["path"]
        parts = self._split(path)
        headers = {k: v for k, v in scope["headers"] if k in REQUEST_HEADERS}
        try:
            if self.api_key is not None and parts not in _HEALTH:
                self._check_auth(headers)
            await self._route(method, parts, headers, receive, send)
        except ProtocolError as e:
            body, extra = error_reply(e)
            await self._send(send, e.status, body, JSON, extra)
        except _Disconnected:
            return
        except Exception as e:  # a dslc bug outside inference: still a JSON 500, and the server keeps serving
            log(f"internal error on {method} {scope['path']}:\n" + traceback.format_exc().rstrip())
            await self._json(send, 500, {"error": f"internal server error: {type(e).__name__}: {e}"})

    def _split(self, path: str) -> tuple:
        parts = self._paths.get(path)
        if parts is None:   # split once per distinct path: clients send the same few paths over and over
            parts = tuple(p for p in path.split("/") if p)
            if len(self._paths) < 4096:
                self._paths[path] = parts
        return parts

    def _check_auth(self, headers):
        got = headers.get(b"authorization", b"")
        if not (got.startswith(b"Bearer ") and hmac.compare_digest(got[7:].strip(), self.api_key)):
            raise ProtocolError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'")

    @staticmethod
    def _method(method: str, allowed: str) -> None:
        ok = method == allowed or (allowed == "GET" and method == "HEAD")
        if not ok:
            e = ProtocolError(405, f"method {method} not allowed here; use {allowed}")
            e.allow = allowed + (", HEAD" if allowed == "GET" else "")
            raise e

    async def _route(self, method, parts, headers, receive, send):
        n = len(parts)
        if n >= 1 and parts[0] == "v2":
            if n == 1:
                self._method(method, "GET")
                from dslc import __version__
                return await self._json(send, 200, {"name": "dslc", "version": __version__, "extensions": [
                    "binary_tensor_data", "model_configuration", "statistics", "model_repository"]})
            if parts[1] == "repository":
                body = await self._read_body(receive, headers) if method == "POST" else b""
                return await self.control.route(method, parts[2:], body, send)
            if parts[1] == "health" and n == 3 and parts[2] in ("live", "ready"):
                self._method(method, "GET")
                if parts[2] == "live":
                    return await self._json(send, 200, {"live": True})
                return await self._ready(send)
            if parts[1] == "models":
                if n == 3 and parts[2] == "stats":
                    self._method(method, "GET")
                    return await self._stats(send, None, None)
                if n >= 3:
                    name = parts[2]
                    rest = parts[3:]
                    version = None
                    if len(rest) >= 2 and rest[0] == "versions":
                        version, rest = rest[1], rest[2:]
                    if not rest:
                        self._method(method, "GET")
                        m = self._lookup(name, version, need_ready=True)
                        versions = sorted((v for v, x in self.models[name].items() if x.ready), key=_version_key)
                        return await self._json(send, 200, m.metadata(versions))
                    if len(rest) == 1:
                        what = rest[0]
                        if what == "infer":
                            self._method(method, "POST")
                            return await self._infer(name, version, headers, receive, send)
                        if what == "ready":
                            self._method(method, "GET")
                            m = self._lookup(name, version, need_ready=False)
                            if m.ready:
                                return await self._json(send, 200, {"name": name, "version": m.version,
                                                                    "ready": True})
                            return await self._json(send, 503, {"name": name, "version": m.version, "ready": False,
                                                                "error": self._not_ready_reason(m)})
                        if what == "config":
                            self._method(method, "GET")
                            m = self._lookup(name, version, need_ready=True)
                            return await self._json(send, 200, m.config())
                        if what == "stats":
                            self._method(method, "GET")
                            self._lookup(name, version, need_ready=False)
                            return await self._stats(send, name, version)
        elif parts == ("metrics",):
            self._method(method, "GET")
            body = self.metrics.render() if self.metrics else b""
            return await self._send(send, 200, body, METRICS_TYPE)
        raise ProtocolError(404, f"no such endpoint: {method} /{'/'.join(parts)}")

    # ----------------------------------------------------------------------------------------------- models

    def _not_ready_reason(self, m: ServedModel) -> str:
        if m.state == "failed":
            return f"model '{m.name}' version {m.version} failed to load: {m.error}"
        if self.stopping:
            return "server is shutting down"
        return f"model '{m.name}' version {m.version} is not ready yet (loading)"

    def _lookup(self, name: str, version: str | None, need_ready: bool) -> ServedModel:
        vs = self.models.get(name)
        if vs is None:
            raise ProtocolError(404, f"unknown model '{name}' (serving: {', '.join(sorted(self.models))})")
        if version is None or version == "":
            m = vs[self.latest[name]]
        else:
            m = vs.get(version)
            if m is None:
                raise ProtocolError(404, f"unknown version '{version}' of model '{name}' "
                                         f"(versions: {', '.join(sorted(vs, key=_version_key))})")
        if need_ready and not m.ready:
            raise ProtocolError(503, self._not_ready_reason(m))
        return m

    async def _ready(self, send):
        waiting = [f"{m.name} v{m.version}" for vs in self.models.values() for m in vs.values() if not m.ready]
        if self.stopping:
            return await self._json(send, 503, {"ready": False, "error": "server is shutting down"})
        if waiting:
            return await self._json(send, 503, {"ready": False, "error": "not ready: " + ", ".join(waiting)})
        return await self._json(send, 200, {"ready": True})

    async def _stats(self, send, name, version):
        out = []
        for n, vs in sorted(self.models.items()):
            if name is not None and n != name:
                continue
            for v, m in sorted(vs.items(), key=lambda kv: _version_key(kv[0])):
                if version is not None and v != version:
                    continue
                out.append(m.stats.as_triton(n, v))
        await self._json(send, 200, {"model_stats": out})

    # ------------------------------------------------------------------------------------------------ infer

    async def _infer(self, name, version, headers, receive, send):
        async def answer(m):
            body = await self._read_body(receive, headers)
            req = parse_infer_request(body, self._header_length(headers), m)
            results = await m.batcher.submit(req.inputs, req.batch)
            return encode_infer_response(m.name, m.version, req.id, req.outputs, results, m.datatypes)

        payload, hlen = await self.infer(name, version, answer)
        if hlen is None:
            await self._send(send, 200, payload, JSON)
        else:
            await self._send(send, 200, payload, OCTET, [(b"inference-header-content-length", str(hlen).encode())])
        self.answered += 1

    async def infer(self, name, version, answer):
        """One inference request with its bookkeeping (accepted/answered, metrics, Triton statistics), whatever
        the protocol: `answer(model)` parses, runs through the batcher and encodes.  Every failure comes out as
        a ProtocolError (or _Disconnected); the caller sends the reply and then counts it answered -- an error
        is counted answered here."""
        m = self._lookup(name, version, need_ready=True)
        t0 = self.accept(m)
        try:
            try:
                reply = await answer(m)
            except (ProtocolError, _Disconnected):
                raise
            except Exception as e:
                raise self.as_protocol_error(e) from None
        except ProtocolError as e:
            self.failed(m, t0, e)
            raise
        except (_Disconnected, asyncio.CancelledError):   # the client went away (HTTP) or cancelled (gRPC)
            self.dropped(m)
            raise
        self.succeeded(m, t0)
        return reply

    # The bookkeeping of one inference request, shared by the ASGI route, the gRPC service and the HTTP
    # protocol's own infer path (dslc.serve.infer_http): accept, then exactly one of succeeded / failed / dropped.

    def accept(self, m: ServedModel) -> float:
        self.accepted += 1
        m.mmetrics.inflight.inc()
        return time.perf_counter()

    @staticmethod
    def succeeded(m: ServedModel, t0: float) -> None:
        """The caller counts it answered once the reply is on its way."""
        dt = time.perf_counter() - t0
        mm = m.mmetrics
        mm.request.observe(dt)
        mm.success.inc()
        mm.inflight.dec()
        st = m.stats
        st.success_count += 1
        st.success_ns += int(dt * 1e9)
        st.last_inference_ms = int(time.time() * 1000)

    def failed(self, m: ServedModel, t0: float, e: ProtocolError) -> None:
        """Counted answered here: the error reply is the caller's next step."""
        mm = m.mmetrics
        mm.inflight.dec()
        mm.failure(e.status)
        st = m.stats
        st.fail_count += 1
        st.fail_ns += int((time.perf_counter() - t0) * 1e9)
        if e.status >= 500:
            log(f"error: {e.message}")
        self.answered += 1

    def dropped(self, m: ServedModel) -> None:
        """The client went away before its reply."""
        m.mmetrics.inflight.dec()
        m.mmetrics.failure(499)
        self.answered += 1

    @staticmethod
    def as_protocol_error(e: BaseException) -> ProtocolError:
        """What an inference failure answers: onnxruntime's complaints as 400/500, a dslc bug as a logged 500."""
        if isinstance(e, ProtocolError):
            return e
        if isinstance(e, ExecutionError):
            return ProtocolError(400 if e.bad_input else 500, str(e))
        log("internal error while answering an inference request:\n" +
            "".join(traceback.format_exception(type(e), e, e.__traceback__)).rstrip())
        return ProtocolError(500, f"internal server error: {type(e).__name__}: {e}")

    # ------------------------------------------------------------------- infer, answered by the HTTP protocol

    def infer_route(self, url: bytes):
        """(model name, version or None) when `url` is an infer endpoint, else None; cached by the URL bytes.
        A query string, a %-escape or a non-ASCII byte goes the ASGI way (None)."""
        hit = self._infer_routes.get(url, False)
        if hit is False:
            hit = None
            if url.isascii() and b"?" not in url and b"%" not in url:
                parts = self._split(url.decode("ascii"))
                if len(parts) >= 4 and parts[:2] == ("v2", "models") and parts[-1] == "infer":
                    if len(parts) == 4:
                        hit = (parts[2], None)
                    elif len(parts) == 6 and parts[3] == "versions":
                        hit = (parts[2], parts[4])
            if len(self._infer_routes) < 4096:
                self._infer_routes[url] = hit
        return hit

    def infer_begin(self, reply) -> None:
        """Headers in: the same checks, in the same order, as the ASGI route before it reads the body (API key,
        model lookup, declared length).  Raises ProtocolError; sets reply.model and reply.t0 once accepted."""
        headers = reply.headers
        if self.api_key is not None:
            self._check_auth(headers)
        m = self._lookup(*reply.target, need_ready=True)
        reply.model, reply.t0 = m, self.accept(m)
        self._check_declared_length(headers)

    def infer_body(self, reply, body: bytes) -> None:
        """Body in: decode and queue; the batcher resolves `reply` (a future-like sink).  Raises ProtocolError."""
        headers = reply.headers
        req = parse_infer_request(self._decoded(body, headers), self._header_length(headers), reply.model)
        reply.request = req
        reply.model.batcher.submit(req.inputs, req.batch, reply)

    @staticmethod
    def _header_length(headers):
        v = headers.get(b"inference-header-content-length")
        return None if v is None else v.decode("latin-1")

    async def _read_body(self, receive, headers) -> bytes:
        limit = self.max_body_size
        self._check_declared_length(headers)
        chunks = []
        total = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise _Disconnected()
            chunk = msg.get("body", b"")
            if chunk:
                total += len(chunk)
                if total > limit:
                    raise self.body_over_limit()
                chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        return self._decoded(chunks[0] if len(chunks) == 1 else b"".join(chunks), headers)

    def _decoded(self, body: bytes, headers) -> bytes:
        enc = headers.get(b"content-encoding")
        if enc is None:
            return body
        return self._decompress(body, enc.decode("latin-1").strip().lower())

    def _check_declared_length(self, headers) -> None:
        cl = headers.get(b"content-length")
        if cl is not None:
            try:
                declared = int(cl)
            except ValueError:
                raise ProtocolError(400, "Content-Length is not an integer") from None
            if declared > self.max_body_size:
                raise ProtocolError(413, f"request body of {declared} bytes is over the limit of "
                                         f"{self.max_body_size} bytes (--max-body-size)")

    def body_over_limit(self) -> ProtocolError:
        return ProtocolError(413, f"request body is over the limit of {self.max_body_size} bytes (--max-body-size)")

    def _decompress(self, body: bytes, enc: str) -> bytes:
        if enc in ("", "identity"):
            return body
        if enc not in ("gzip", "deflate"):
            raise ProtocolError(415, f"unsupported Content-Encoding '{enc}' (use gzip, deflate or none)")
        d = zlib.decompressobj(wbits=31 if enc == "gzip" else 15)
        try:
            out = d.decompress(body, self.max_body_size + 1)
        except zlib.error as e:
            raise ProtocolError(400, f"request body is not valid {enc} data: {e}") from None
        if len(out) > self.max_body_size or d.unconsumed_tail:
            raise ProtocolError(413, f"decompressed request body is over the limit of {self.max_body_size} bytes "
                                     f"(--max-body-size)")
        if not d.eof:
            raise ProtocolError(400, f"request body is truncated {enc} data")
        return out

    # ---------------------------------------------------------------------------------------------- replies

    @staticmethod
    async def _send(send, status: int, body: bytes, content_type: bytes, extra=()):
        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
        headers.extend(extra)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _json(self, send, status: int, obj, extra=()):
        await self._send(send, status, json.dumps(obj, separators=(",", ":")).encode(), JSON, extra)
