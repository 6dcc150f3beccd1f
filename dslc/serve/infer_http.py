"""The infer route answered by the HTTP protocol itself: no ASGI scope, task, coroutines or message dicts.

uvicorn's httptools protocol runs every request as an asyncio task that drives the ASGI app through receive/send
coroutines, and writes a response's head and body as two socket writes.  On the route that carries the load that
machinery costs more than dslc's own work: an empty ASGI app on uvicorn takes 24-26 µs of server CPU per request
at 32 connections under wrk, the same empty answer written from the protocol 8-10 µs (experiments/http_floor.py).
So this subclass of uvicorn's protocol answers `POST /v2/models/{name}[/versions/{v}]/infer` itself:

* headers in: ServeApp.infer_begin runs the ASGI route's checks in its order (API key, model, declared length);
* body in: ServeApp.infer_body decodes it and queues it with the batcher, with the InferReply as its sink;
* the batcher's completion calls InferReply.set_result on the loop, which encodes and writes the whole response in
  one write -- no future, no callback hop.

Everything else -- other routes and methods, `Expect: 100-continue`, upgrades, a query string, a request
pipelined behind one still in progress -- goes through uvicorn's ASGI path unchanged, and the connection stays
uvicorn's: keep-alive and its timeout, graceful shutdown (`shutdown()` clears keep_alive of the reply in
progress), pipelining order (the reply calls `on_response_complete`, which starts the next queued request).  An
InferReply has the attributes uvicorn reads of a request cycle (response_complete, keep_alive, disconnected,
message_event).  Answers, status codes and bookkeeping are the ASGI route's (tests/serve run over this path,
tests/serve/test_serve_infer_http.py holds the two paths to the same bytes).
"""
from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from dslc.serve.app import REQUEST_HEADERS, error_reply
from dslc.serve.protocol import encode_infer_response

_JSON_HEAD = b"content-type: application/json\r\ncontent-length: "
_OCTET_HEAD = b"content-type: application/octet-stream\r\ncontent-length: "


class _NoEvent:
    """uvicorn sets its cycle's message_event on a disconnect; an InferReply waits on nothing."""

    @staticmethod
    def set() -> None:
        pass


_NO_EVENT = _NoEvent()


class InferHttpProtocol(HttpToolsProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.dslc = self.config.app   # the ServeApp itself (loaded_app may be wrapped in middleware)

    def on_headers_complete(self) -> None:
        cycle = self.cycle
        if ((cycle is None or cycle.response_complete) and not self.expect_100_continue
                and self.parser.get_method() == b"POST" and not self.parser.should_upgrade()):
            target = self.dslc.infer_route(self.url)
            if target is not None:
                keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
                self.cycle = reply = InferReply(self, target, keep_alive)
                try:
                    self.dslc.infer_begin(reply)
                except Exception as e:   # ProtocolError, or a dslc bug answered 500
                    reply.set_exception(e)
                return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if type(cycle) is InferReply:
            cycle.add(body)
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        cycle = self.cycle
        if type(cycle) is InferReply:
            cycle.complete()
        else:
            super().on_message_complete()

    def connection_lost(self, exc) -> None:
        cycle = self.cycle
        if type(cycle) is InferReply and not cycle.queued and not cycle.response_complete:
            cycle.disconnected = True
            cycle.drop()   # the client left while sending the body: nothing will resolve this reply
        super().connection_lost(exc)


class InferReply:
    """One inference request from its headers to its response: to uvicorn's protocol a request cycle, to the
    batcher a future (done / set_result / set_exception)."""

    __slots__ = ("protocol", "target", "keep_alive", "disconnected", "response_complete", "headers", "chunks",
                 "size", "queued", "resolved", "model", "t0", "request")
    message_event = _NO_EVENT

    def __init__(self, protocol: InferHttpProtocol, target: tuple, keep_alive: bool):
        self.protocol = protocol
        self.target = target
        self.keep_alive = keep_alive
        self.disconnected = False
        self.response_complete = False
        self.headers = {n: v for n, v in protocol.headers if n in REQUEST_HEADERS}
        self.chunks: list[bytes] = []
        self.size = 0
        self.queued = False     # handed to the batcher (or answered): from here set_result/set_exception end it
        self.resolved = False
        self.model = None       # set once accepted (ServeApp.infer_begin)
        self.t0 = 0.0
        self.request = None

    # ------------------------------------------------------------------------------------------------ body

    def add(self, body: bytes) -> None:
        if self.response_complete:   # answered early (e.g. 413): the rest of the body is read and dropped
            return
        self.size += len(body)
        if self.size > self.protocol.dslc.max_body_size:
            self.set_exception(self.protocol.dslc.body_over_limit())
            return
        self.chunks.append(body)

    def complete(self) -> None:
        if self.response_complete:
            return
        self.queued = True
        chunks = self.chunks
        self.chunks = []
        try:
            self.protocol.dslc.infer_body(self, chunks[0] if len(chunks) == 1 else b"".join(chunks))
        except Exception as e:   # ProtocolError, or a dslc bug answered 500
            self.set_exception(e)

    # ------------------------------------------------------------------------------------- the batcher's sink

    def done(self) -> bool:
        return self.resolved

    def set_result(self, outputs: dict) -> None:
        self.resolved = self.queued = True
        app, m = self.protocol.dslc, self.model
        if self.disconnected or self.protocol.transport.is_closing():   # gone while its batch ran
            app.dropped(m)
            return
        req = self.request
        try:
            payload, hlen = encode_infer_response(m.name, m.version, req.id, req.outputs, outputs, m.datatypes)
        except Exception as e:  # a dslc bug: answered 500, the batch's other requests unaffected
            self._fail(e)
            return
        app.succeeded(m, self.t0)
        if hlen is None:
            self._write(200, _JSON_HEAD, payload, b"")
        else:
            self._write(200, _OCTET_HEAD, payload, b"inference-header-content-length: %d\r\n" % hlen)
        app.answered += 1

    def set_exception(self, exc: BaseException) -> None:
        if not self.resolved:
            self.resolved = self.queued = True
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        app = self.protocol.dslc
        e = app.as_protocol_error(exc)
        if self.model is not None:   # accepted: counts as answered, with its metrics
            if self.disconnected or self.protocol.transport.is_closing():
                app.dropped(self.model)
                return
            app.failed(self.model, self.t0, e)
        body, extra = error_reply(e)
        self._write(e.status, _JSON_HEAD, body, b"".join(n + b": " + v + b"\r\n" for n, v in extra))

    def drop(self) -> None:
        if not self.resolved and self.model is not None:
            self.resolved = True
            self.protocol.dslc.dropped(self.model)

    # -------------------------------------------------------------------------------------------- response

    def _write(self, status: int, type_and_length: bytes, body: bytes, extra: bytes) -> None:
        if self.response_complete:
            return
        self.response_complete = True
        proto = self.protocol
        if self.disconnected or proto.transport.is_closing():
            return
        parts = [STATUS_LINE[status]]
        for name, value in proto.server_state.default_headers:   # uvicorn's server/date headers, when on
            parts += (name, b": ", value, b"\r\n")
        parts += (type_and_length, b"%d\r\n" % len(body), extra)
        if not self.keep_alive:
            parts.append(b"connection: close\r\n")
        parts += (b"\r\n", body)
        transport = proto.transport
        transport.write(b"".join(parts))
        if not self.keep_alive:
            transport.close()
        proto.on_response_complete()
