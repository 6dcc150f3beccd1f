"""The Open Inference Protocol's gRPC service (`inference.GRPCInferenceService`, as Triton and KServe define it)
beside the REST API, on `--grpc-port` (default 8001).

It is a grpc.aio server started on the same event loop as the ASGI app (ServeApp.services), so both protocols
share one set of models, one dynamic batcher per model, the metrics, the statistics and the API key.  Errors are
gRPC status codes with the REST path's messages: the HTTP status a ProtocolError carries maps to the code below.
The API key comes as metadata `authorization: Bearer KEY` (what tritonclient.grpc sends for headers=...);
ServerLive and ServerReady need none, as /v2/health/* does not.
"""
from __future__ import annotations

import asyncio
import hmac

import grpc

from dslc.serve.grpc_codec import encode_grpc_response, parse_grpc_request
from dslc.serve.grpc_stubs import grpc_service_pb2 as pb
from dslc.serve.grpc_stubs import grpc_service_pb2_grpc as pb_grpc
from dslc.serve.grpc_stubs import model_config_pb2 as config_pb
from dslc.serve.protocol import ProtocolError

STATUS_CODE = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    503: grpc.StatusCode.UNAVAILABLE,
}
GRACE_SECONDS = 30.0    # how long shutdown waits for gRPC calls in flight


def status_code(http_status: int) -> grpc.StatusCode:
    return STATUS_CODE.get(http_status, grpc.StatusCode.INTERNAL)


def _parse_dict(obj: dict, message):
    from google.protobuf import json_format
    return json_format.ParseDict(obj, message, ignore_unknown_fields=True)


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, app):
        self.app = app
        self.api_key = app.api_key

    # ---------------------------------------------------------------------------------------------- helpers

    async def _fail(self, context, e: ProtocolError):
        await context.abort(status_code(e.status), e.message)

    def _auth(self, context) -> None:
        if self.api_key is None:
            return
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                got = value.encode() if isinstance(value, str) else value
                if got.startswith(b"Bearer ") and hmac.compare_digest(got[7:].strip(), self.api_key):
                    return
        raise ProtocolError(401, "missing or wrong API key: send metadata 'authorization: Bearer <key>'")

    async def _call(self, context, fn, *, auth=True):
        try:
            if auth:
                self._auth(context)
            return fn()
        except ProtocolError as e:
            await self._fail(context, e)

    # --------------------------------------------------------------------------------------- health, metadata

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        app = self.app
        ready = not app.stopping and all(m.ready for vs in app.models.values() for m in vs.values())
        return pb.ServerReadyResponse(ready=ready)

    async def ModelReady(self, request, context):
        return await self._call(context, lambda: pb.ModelReadyResponse(
            ready=self.app._lookup(request.name, request.version, need_ready=False).ready))

    async def ServerMetadata(self, request, context):
        from dslc import __version__
        return await self._call(context, lambda: pb.ServerMetadataResponse(
            name="dslc", version=__version__,
            extensions=["binary_tensor_data", "model_configuration", "statistics", "model_repository"]))

    async def ModelMetadata(self, request, context):
        def answer():
            from dslc.serve.app import _version_key
            m = self.app._lookup(request.name, request.version, need_ready=True)
            versions = sorted((v for v, x in self.app.models[request.name].items() if x.ready), key=_version_key)
            return _parse_dict(m.metadata(versions), pb.ModelMetadataResponse())
        return await self._call(context, answer)

    async def ModelConfig(self, request, context):
        def answer():
            m = self.app._lookup(request.name, request.version, need_ready=True)
            return pb.ModelConfigResponse(config=_parse_dict(m.config(), config_pb.ModelConfig()))
        return await self._call(context, answer)

    async def ModelStatistics(self, request, context):
        def answer():
            from dslc.serve.app import _version_key
            app = self.app
            name, version = request.name or None, request.version or None
            if name is not None:
                app._lookup(name, version, need_ready=False)
            out = pb.ModelStatisticsResponse()
            for n, vs in sorted(app.models.items()):
                if name is not None and n != name:
                    continue
                for v, m in sorted(vs.items(), key=lambda kv: _version_key(kv[0])):
                    if version is None or v == version:
                        _parse_dict(m.stats.as_triton(n, v), out.model_stats.add())
            return out
        return await self._call(context, answer)

    # ------------------------------------------------------------------------------------------------ infer

    async def _infer(self, request):
        async def answer(m):
            req = parse_grpc_request(request, m)
            results = await m.batcher.submit(req.inputs, req.batch)
            return encode_grpc_response(m, req, results)
        resp = await self.app.infer(request.model_name, request.model_version, answer)
        self.app.answered += 1
        return resp

    async def ModelInfer(self, request, context):
        try:
            self._auth(context)
            return await self._infer(request)
        except ProtocolError as e:
            await self._fail(context, e)

    async def ModelStreamInfer(self, request_iterator, context):
        """Each request's answer in request order; a bad request gets error_message and the stream goes on.
        Requests are read ahead and run concurrently, so a stream batches like concurrent unary calls."""
        try:
            self._auth(context)
        except ProtocolError as e:
            await self._fail(context, e)
            return
        answers: asyncio.Queue = asyncio.Queue()

        async def one(request):
            try:
                return pb.ModelStreamInferResponse(infer_response=await self._infer(request))
            except ProtocolError as e:
                return pb.ModelStreamInferResponse(error_message=e.message)

        async def read():
            try:
                async for request in request_iterator:
                    answers.put_nowait(asyncio.ensure_future(one(request)))
            finally:
                answers.put_nowait(None)

        reader = asyncio.ensure_future(read())
        try:
            while (task := await answers.get()) is not None:
                yield await task
        finally:
            reader.cancel()


class GrpcService:
    """The gRPC server as one of ServeApp.services: bound and started with the app, stopped (gracefully) with it."""

    def __init__(self, host: str, port: int, max_message_size: int, on_listening=None, reuse_port: bool = False):
        self.host = host
        self.reuse_port = reuse_port
        self.port = port
        self.max_message_size = max_message_size
        self.on_listening = on_listening
        self.server = None
        self.bound_port = None

    async def start(self, app) -> None:
        options = [("grpc.max_receive_message_length", self.max_message_size),
                   ("grpc.max_send_message_length", -1),
                   # only --workers processes share the port: otherwise a second server on it is an error
                   ("grpc.so_reuseport", 1 if self.reuse_port else 0)]
        self.server = grpc.aio.server(options=options)
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(app), self.server)
        host = f"[{self.host}]" if ":" in self.host else self.host
        try:
            self.bound_port = self.server.add_insecure_port(f"{host}:{self.port}")
        except RuntimeError:   # grpcio's "Failed to bind"
            self.bound_port = 0
        if not self.bound_port:
            raise OSError(f"cannot listen for gRPC on {self.host}:{self.port}")
        await self.server.start()
        if self.on_listening:
            self.on_listening(f"listening on grpc://{host}:{self.bound_port} (inference.GRPCInferenceService)")

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(GRACE_SECONDS)
