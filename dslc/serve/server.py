"""`dslc serve`: gather the models, print one provider line, bind, and run the ASGI app under uvicorn.

Shutdown: SIGTERM or SIGINT stops accepting connections, lets every request already accepted finish (batches
in the queue included), then exits 0.  A second SIGINT forces the exit.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import sys
import threading
from pathlib import Path

from dslc.serve.app import ServeApp, log
from dslc.serve.model import ModelLoadError, ServedModel, load_model_source

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?)(i?b?)\s*$", re.I)


def parse_size(text: str) -> int:
    """'67108864', '64MiB', '64M', '512k' -> bytes (K/M/G are powers of 1024)."""
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError(f"not a size: {text!r} (e.g. 64MiB, 1048576)")
    n = float(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]
    return int(n)


def resolve_grpc_port(text, http_port: int) -> int | None:
    """--grpc-port: a port, 'off' (None), or unset: 8001 beside the default HTTP port, a free one (0) when
    --port 0 asks for free ports."""
    if text is None:
        return 0 if http_port == 0 else 8001
    if str(text).strip().lower() == "off":
        return None
    try:
        port = int(text)
    except ValueError:
        raise ValueError(f"not a port: {text!r} (a number 0..65535, or off)") from None
    if not 0 <= port <= 65535:
        raise ValueError("must be 0..65535 (or off)")
    return port


class UsageError(Exception):
    pass


def _settings_from_config(cfg: dict) -> dict:
    """Batching/instances for a repository model: config.pbtxt wins, the command line fills what it omits."""
    if not cfg:
        return {}
    out = {}
    if "max_batch_size" in cfg:
        out["max_batch_size"] = int(cfg["max_batch_size"] or 0)
    if "max_batch_size" in cfg or "dynamic_batching" in cfg:
        db = cfg.get("dynamic_batching")
        out["dynamic_batching"] = db is not None
        if db is not None:
            out["queue_delay_ms"] = int((db or {}).get("max_queue_delay_microseconds") or 0) / 1000.0
    groups = cfg.get("instance_group") or []
    if groups:
        out["instances"] = sum(int(g.get("count", 1) or 1) for g in groups)
        kinds = {g.get("kind", "KIND_AUTO") for g in groups}
        if kinds == {"KIND_GPU"}:
            out["device"] = "gpu"
        elif kinds == {"KIND_CPU"}:
            out["device"] = "cpu"
    return out


def gather_models(args) -> list[ServedModel]:
    from dslc.serve import triton
    common = common_settings(args)
    models: list[ServedModel] = []
    seen: dict[str, str] = {}
    nets = [p for p in args.models if Path(p).suffix == ".net"]
    if args.weights is not None and len(nets) != 1:
        raise UsageError("--weights goes with exactly one .net model" + (f"; got {len(nets)}" if nets else ""))
    from dslc.weight_files import WeightsFileError, weights_source
    try:
        weights_file = weights_source(args)
    except WeightsFileError as e:
        raise UsageError(str(e)) from None
    for p in args.models:
        path = Path(p)
        if not path.is_file():
            raise UsageError(f"no such model file: {p}")
        if path.suffix not in (".onnx", ".net"):
            raise UsageError(f"{p}: expected an .onnx model (or a .net file with --weights)")
        name = path.stem
        if name in seen:
            raise UsageError(f"two models named '{name}': {seen[name]} and {p}; rename one")
        seen[name] = p
        if path.suffix == ".net" and args.weights is None:
            log(f"{p}: no --weights given: serving the network with dslc's seeded initial weights")
        if path.suffix != ".net" and getattr(args, "precision", "fp32") != "fp32":
            raise UsageError(f"{p}: --precision applies to .net models; make a reduced .onnx with "
                             f"`dslc compile --precision {args.precision}`")
        source = load_model_source(path, weights_file if path.suffix == ".net" else None,
                                   precision=getattr(args, "precision", "fp32"),
                                   calibration=getattr(args, "calibration", None),
                                   fp16_io=getattr(args, "fp16_io", False))
        models.append(ServedModel(name, "1", source, origin=str(path), **common))
    if args.repository:
        try:
            entries = startup_entries(args)
        except triton.ConfigError as e:
            raise ModelLoadError(str(e)) from None
        for e in entries:
            if e["name"] in seen:
                raise UsageError(f"two models named '{e['name']}': {seen[e['name']]} and the repository's")
            seen[e["name"]] = str(Path(args.repository) / e["name"])
            models.extend(models_for_entry(e, common))
    return models


def common_settings(args) -> dict:
    return dict(max_batch_size=args.max_batch_size, queue_delay_ms=args.max_queue_delay_ms,
                instances=args.instances, device=args.device, threads=args.threads)


def models_for_entry(entry: dict, common: dict) -> list[ServedModel]:
    """The ServedModels (one per version the version_policy selects) of one scanned repository entry."""
    settings = {**common, **_settings_from_config(entry["config"])}
    return [ServedModel(entry["name"], str(version), load_model_source(mpath), origin=str(mpath),
                        repo_config=entry["config"] or None, **settings) for version, mpath in entry["versions"]]


def startup_entries(args) -> list[dict]:
    """The repository models to load at startup: all of them, except in explicit model control, where only
    the --load-model ones are (Triton's rule; `*` loads all).  With model control a repository may start
    empty (models are loaded, or polled, into it later)."""
    from dslc.serve import triton
    mode = getattr(args, "model_control_mode", "none")
    wanted = getattr(args, "load_model", None) or []
    if mode == "none":
        return triton.scan_repository(args.repository)
    root = Path(args.repository)
    if not root.is_dir():
        raise triton.ConfigError(f"model repository {root} is not a directory")
    if mode == "poll" or "*" in wanted:
        return [triton.scan_model(d) for d in triton.model_dirs(root)]
    missing = [n for n in wanted if not (root / n).is_dir()]
    if missing:
        raise triton.ConfigError(f"--load-model {missing[0]}: no such model directory in {root}")
    return [triton.scan_model(root / n) for n in dict.fromkeys(wanted)]


def _bind(host: str, port: int) -> socket.socket:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family = infos[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind(infos[0][4])
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _server_class():
    import uvicorn

    class _Server(uvicorn.Server):
        """uvicorn.Server that marks the app as stopping on the first signal and exits with a status instead
        of re-raising the signal after its graceful shutdown."""

        app_ref: ServeApp | None = None

        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            sigs = (signal.SIGINT, signal.SIGTERM)
            original = {s: signal.signal(s, self.handle_exit) for s in sigs}
            try:
                yield
            finally:
                for s, h in original.items():
                    signal.signal(s, h)

        def handle_exit(self, sig, frame):
            app = self.app_ref
            if app is not None and not app.stopping:
                app.stopping = True
                try:
                    name = signal.Signals(sig).name
                except ValueError:  # pragma: no cover
                    name = str(sig)
                log(f"{name}: no new connections; finishing {app.accepted - app.answered} request(s) in flight")
            super().handle_exit(sig, frame)

    return _Server


def http_protocol():
    """uvicorn's httptools protocol with the infer route answered by the protocol itself (dslc.serve.infer_http);
    without httptools, uvicorn's choice ("auto": h11), every route through the ASGI app."""
    try:
        from dslc.serve.infer_http import InferHttpProtocol
    except ImportError:
        return "auto"
    return InferHttpProtocol


def serve(models: list[ServedModel], *, host: str, port: int, api_key: str | None, max_body_size: int,
          banner: str = "", control: dict | None = None, grpc_port: int | None = None, sock=None,
          share: tuple[str, int] | None = None) -> int:
    """`control`: ModelControl's options (repository, mode, poll_secs, make_models, fixed).  `grpc_port`: also
    serve the gRPC API there (None: HTTP only).  Under --workers (dslc.serve.workers): `sock`, the HTTP socket
    the parent bound, and `share`, (metrics directory, worker index)."""
    import uvicorn
    from dslc.serve.metrics import Metrics, MetricsSnapshots

    if sock is None:
        try:
            sock = _bind(host, port)
        except OSError as e:
            log(f"error: cannot listen on {host}:{port}: {e.strerror or e}")
            return 1
    bound = sock.getsockname()
    shown_host = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    listen_line = f"listening on http://{shown_host}:{bound[1]} (Open Inference Protocol v2; metrics at /metrics)"
    server_box: list = []

    def fatal():
        if server_box:
            server_box[0].should_exit = True

    if banner:
        log(banner)
    metrics = Metrics()
    app = ServeApp(models, metrics=metrics, api_key=api_key, max_body_size=max_body_size, on_fatal=fatal,
                   banner=listen_line)
    if control:
        from dslc.serve.repository import ModelControl
        app.control = ModelControl(app, **control)
    if grpc_port is not None:
        from dslc.serve.grpc_server import GrpcService
        app.services.append(GrpcService(host, grpc_port, max_body_size, on_listening=log, reuse_port=share is not None))
    if share is not None:
        from dslc.serve.workers import SNAPSHOT_SECONDS
        metrics.share(*share)
        app.services.append(MetricsSnapshots(metrics, SNAPSHOT_SECONDS))
    # loop "auto": uvloop when installed
    config = uvicorn.Config(app, loop="auto", http=http_protocol(), lifespan="on", log_level="warning", access_log=False,
                            server_header=False, date_header=False, proxy_headers=False, timeout_keep_alive=30,
                            timeout_graceful_shutdown=None)
    server = _server_class()(config)
    server.app_ref = app
    server_box.append(server)
    server.run(sockets=[sock])
    return app.exit_code


def main(args) -> int:
    from dslc.runtime.session import describe, probe_providers
    if not args.models and not args.repository:
        print("dslc serve: give model files (MODEL.onnx ...) or --repository DIR", file=sys.stderr)
        return 2
    try:
        max_body = parse_size(args.max_body_size)
    except ValueError as e:
        print(f"dslc serve: --max-body-size: {e}", file=sys.stderr)
        return 2
    for flag, val in (("--max-batch-size", args.max_batch_size), ("--max-queue-delay-ms", args.max_queue_delay_ms)):
        if val < 0:
            print(f"dslc serve: {flag} must be >= 0", file=sys.stderr)
            return 2
    if args.instances < 1:
        print("dslc serve: --instances must be >= 1", file=sys.stderr)
        return 2
    if not 0 <= args.port <= 65535:
        print("dslc serve: --port must be 0..65535", file=sys.stderr)
        return 2
    try:
        grpc_port = resolve_grpc_port(getattr(args, "grpc_port", "off"), args.port)
    except ValueError as e:
        print(f"dslc serve: --grpc-port: {e}", file=sys.stderr)
        return 2
    from dslc.commands.compile import precision_usage_error
    if getattr(args, "precision", None) and precision_usage_error(args):
        print(f"dslc serve: {precision_usage_error(args)}", file=sys.stderr)
        return 2
    mode = getattr(args, "model_control_mode", "none")
    if mode != "none" and not args.repository:
        print(f"dslc serve: --model-control-mode {mode} needs --repository DIR", file=sys.stderr)
        return 2
    if getattr(args, "load_model", None) and mode != "explicit":
        print("dslc serve: --load-model goes with --model-control-mode explicit", file=sys.stderr)
        return 2
    if not getattr(args, "repository_poll_secs", 1) > 0:
        print("dslc serve: --repository-poll-secs must be > 0", file=sys.stderr)
        return 2
    from dslc.runtime.session import cpu_count
    from dslc.serve.workers import resolve_workers
    try:
        workers = resolve_workers(getattr(args, "workers", "1"), cpu_count())
    except ValueError as e:
        print(f"dslc serve: --workers: {e}", file=sys.stderr)
        return 2
    if workers > 1 and args.threads is None:   # the cores are shared among the workers' sessions
        args.threads = max(1, cpu_count() // (workers * args.instances))
    try:
        models = gather_models(args)
    except UsageError as e:
        print(f"dslc serve: {e}", file=sys.stderr)
        return 2
    except ModelLoadError as e:
        print(str(e) if e.plain else f"dslc serve: error: {e}", file=sys.stderr)
        return e.code
    probe = probe_providers(args.device != "cpu")
    if args.device == "gpu" and not probe.gpu:
        print(f"dslc serve: error: --device gpu, but no usable GPU: {probe.reason}", file=sys.stderr)
        return 1
    api_key = args.api_key or os.environ.get("DSLC_API_KEY") or None
    if api_key is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"dslc serve: warning: listening on {args.host} without --api-key: anyone who can reach this "
              f"address can run the models", file=sys.stderr)
    from dslc.serve.model import default_threads
    import functools
    control = None
    if args.repository:
        control = dict(repository=args.repository, mode=mode, poll_secs=getattr(args, "repository_poll_secs", 15.0),
                       make_models=functools.partial(models_for_entry, common=common_settings(args)),
                       fixed={Path(p).stem for p in args.models})
    options = dict(host=args.host, port=args.port, api_key=api_key, max_body_size=max_body, control=control,
                   banner=describe(probe, threads=args.threads or default_threads(args.instances)))
    if workers == 1:
        return serve(models, grpc_port=grpc_port, **options)
    return serve_workers(workers, models, grpc_port, options)


def serve_workers(n: int, models: list[ServedModel], grpc_port: int | None, options: dict) -> int:
    """--workers n: bind once here, then n forked `serve`s share the sockets (dslc.serve.workers)."""
    from dslc.serve import workers
    host, port = options["host"], options["port"]
    try:
        sock = _bind(host, port)
    except OSError as e:
        log(f"error: cannot listen on {host}:{port}: {e.strerror or e}")
        return 1
    reserved = None
    if grpc_port is not None:
        try:
            reserved, grpc_port = workers.reserve_port(host, grpc_port)
        except OSError as e:
            log(f"error: cannot listen for gRPC on {host}:{grpc_port}: {e.strerror or e}")
            return 1
    try:
        return workers.supervise(n, lambda i, share_dir: serve(
            models, grpc_port=grpc_port, sock=sock, share=(share_dir, i),
            **{**options, "banner": options["banner"] if i == 0 else ""}), log)
    finally:
        sock.close()
        if reserved is not None:
            reserved.close()
