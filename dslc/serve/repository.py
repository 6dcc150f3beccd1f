"""Triton's model repository extension and model control: which repository models are loaded, and when.

    POST /v2/repository/index                     [{name, version?, state, reason?}], body {"ready": true} filters
    POST /v2/repository/models/{name}/load        (re)load from the repository (explicit mode); 200 once ready
    POST /v2/repository/models/{name}/unload      stop serving it (explicit mode)

Modes (`--model-control-mode`, as Triton's): `none` serves what was there at startup; `explicit` loads only
`--load-model` names at startup, then what load/unload requests say; `poll` rescans the repository every
`--repository-poll-secs` and loads new models, reloads changed ones and unloads removed ones.

A reload never drops a request.  The new versions load off the event loop while the old ones keep serving;
then, in one step on the loop, the model table switches to them (new requests go to the new versions).  An old
version retires once its batcher is idle: a request that looked it up before the switch and queues after it
is handed to its successor's batcher (an unloaded model's answer 503), and only then do its worker threads
stop.  A failed reload leaves the old versions serving, the error in the index.  A model directory whose files
are still changing is left until two polls see the same files (a copy in progress is never loaded).
"""
from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from dslc.serve.model import ModelLoadError, ServedModel
from dslc.serve.protocol import ProtocolError

MODES = ("none", "explicit", "poll")
RETIRE_CHECK_S = 0.005


def _version_key(v: str):
    return (0, int(v)) if v.isdigit() else (1, v)


class _Unloaded:
    """The batcher of a retired version with no successor: a request that still reaches it is answered 503."""

    def __init__(self, name: str, loop):
        self.name = name
        self.loop = loop

    def submit(self, inputs, rows, sink=None):
        fut = self.loop.create_future() if sink is None else sink
        fut.set_exception(ProtocolError(503, f"model '{self.name}' was unloaded while the request was read"))
        return fut


def fingerprint(mdir: Path):
    """What a change to a model directory changes: config.pbtxt's and every model file's size and mtime."""
    out = []
    try:
        for root, dirs, files in os.walk(mdir):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for f in sorted(files):
                if f.startswith(".") or f.endswith(".tmp"):
                    continue
                st = os.stat(os.path.join(root, f))
                out.append((os.path.relpath(os.path.join(root, f), mdir), st.st_size, st.st_mtime_ns))
    except OSError:
        return None
    return tuple(out)


class ModelControl:
    def __init__(self, app, repository: str | None, mode: str = "none", poll_secs: float = 15.0,
                 make_models=None, fixed: set[str] = frozenset()):
        """`make_models(entry)` builds the ServedModels of a scanned repository entry (server.models_for_entry);
        `fixed`: models given on the command line, which no request loads or unloads."""
        if mode not in MODES:
            raise ValueError(f"model control mode must be one of {', '.join(MODES)}")
        self.app = app
        self.root = Path(repository) if repository else None
        self.mode = mode
        self.poll_secs = poll_secs
        self.make_models = make_models
        self.fixed = set(fixed)
        self.reasons: dict[str, str] = {}         # why a repository model is not (or no longer) serving
        self.loaded_prints: dict[str, tuple] = {}  # the files each loaded model was read from
        self._seen: dict[str, tuple] = {}          # the files the last poll saw
        self._failed: dict[str, tuple] = {}        # the files a load failed on (not retried until they change)
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task] = set()
        self._poll_task = None
        if self.root is not None and self.root.is_dir():
            for name in app.models:
                if name not in self.fixed:
                    self.loaded_prints[name] = fingerprint(self.root / name)

    # ------------------------------------------------------------------------------------------- lifecycle

    def start(self, after: asyncio.Task | None) -> None:
        if self.mode == "poll" and self.root is not None:
            self._poll_task = asyncio.get_running_loop().create_task(self._poll_loop(after))

    def stop(self) -> None:
        for t in [self._poll_task, *self._tasks]:
            if t is not None and not t.done():
                t.cancel()

    # ---------------------------------------------------------------------------------------------- routes

    async def route(self, method: str, rest: tuple, body: bytes, send) -> None:
        """rest: the path after /v2/repository."""
        if method != "POST":
            e = ProtocolError(405, f"method {method} not allowed here; use POST")
            e.allow = "POST"
            raise e
        request = self._json_body(body)
        if rest == ("index",):
            return await self.app._json(send, 200, self.index(bool(request.get("ready", False))))
        if len(rest) == 3 and rest[0] == "models" and rest[2] in ("load", "unload"):
            name, action = rest[1], rest[2]
            if self.mode != "explicit":
                raise ProtocolError(400, f"explicit model {action} is not allowed with --model-control-mode "
                                         f"{self.mode}; start the server with --model-control-mode explicit")
            params = request.get("parameters") or {}
            if not isinstance(params, dict):
                raise ProtocolError(400, "'parameters' must be a JSON object")
            if action == "load":
                await self.load(name, params)
            else:
                await self.unload(name)
            return await self.app._send(send, 200, b"", b"application/json")
        raise ProtocolError(404, f"no such endpoint: {method} /v2/repository/{'/'.join(rest)}")

    @staticmethod
    def _json_body(body: bytes) -> dict:
        if not body.strip():
            return {}
        try:
            obj = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise ProtocolError(400, f"request body is not valid JSON: {e}") from None
        if not isinstance(obj, dict):
            raise ProtocolError(400, "request body must be a JSON object")
        return obj

    def index(self, ready_only: bool = False) -> list[dict]:
        app = self.app
        names = set(app.models) | set(self.reasons)
        if self.root is not None and self.root.is_dir():
            names |= {p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")}
        out = []
        for name in sorted(names):
            versions = app.models.get(name) or {}
            for v in sorted(versions, key=_version_key):
                m = versions[v]
                state = "READY" if m.ready else ("UNAVAILABLE" if m.state == "failed" else "LOADING")
                entry = {"name": name, "version": v, "state": state}
                if m.state == "failed" and m.error:
                    entry["reason"] = m.error
                out.append(entry)
            if not versions and not ready_only:
                out.append({"name": name, "state": "UNAVAILABLE",
                            "reason": self.reasons.get(name, "unloaded")})
        return [e for e in out if e["state"] == "READY"] if ready_only else out

    # --------------------------------------------------------------------------------------- load / unload

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def _check_name(self, name: str, action: str) -> Path:
        if name in self.fixed:
            raise ProtocolError(400, f"model '{name}' was given on the command line, not loaded from the "
                                     f"repository; it cannot be {action}ed")
        if self.root is None:
            raise ProtocolError(400, f"no model repository: start the server with --repository DIR to {action} "
                                     f"models")
        if "/" in name or name in (".", "..") or name.startswith("."):
            raise ProtocolError(400, f"'{name}' is not a model name")
        mdir = self.root / name
        if action == "load" and not mdir.is_dir():
            raise ProtocolError(400, f"failed to load '{name}': no model directory {mdir} in the repository")
        return mdir

    async def load(self, name: str, params: dict | None = None) -> None:
        """Load or reload `name` from the repository; ProtocolError(400) with the reason when it fails (the
        versions already serving, if any, keep serving)."""
        params = params or {}
        unknown = [k for k in params if k != "config"]
        if unknown:
            raise ProtocolError(400, f"load parameter '{unknown[0]}' is not supported (dslc serve loads model files "
                                     f"from the repository only; 'config' overrides config.pbtxt)")
        mdir = self._check_name(name, "load")
        async with self._lock(name):
            error = await self._reload(name, mdir, params.get("config"))
        if error:
            raise ProtocolError(400, f"failed to load '{name}': {error}")

    async def unload(self, name: str) -> None:
        mdir = self._check_name(name, "unload")
        if name not in self.app.models and not mdir.is_dir():
            raise ProtocolError(400, f"failed to unload '{name}': no such model")
        async with self._lock(name):
            old = self.app.models.pop(name, None)
            self.app.latest.pop(name, None)
            self.loaded_prints.pop(name, None)
            self.reasons[name] = "unloaded"
            if old:
                self._spawn(self._retire(old, {}))
                from dslc.serve.app import log
                log(f"model '{name}' unloaded")

    async def _reload(self, name: str, mdir: Path, config_json=None) -> str | None:
        """Build, load and switch to the new versions of `name`; returns the error, None on success."""
        from dslc.serve import triton
        from dslc.serve.app import log
        loop = asyncio.get_running_loop()
        prints = fingerprint(mdir)
        try:
            cfg = None
            if config_json is not None:
                cfg = json.loads(config_json) if isinstance(config_json, str) else config_json
                if not isinstance(cfg, dict):
                    raise triton.ConfigError("the 'config' parameter must be a JSON model configuration")
            entry = triton.scan_model(mdir, cfg)
            models: list[ServedModel] = await loop.run_in_executor(None, self.make_models, entry)
            for m in models:
                await loop.run_in_executor(None, m.load)
        except (triton.ConfigError, ModelLoadError, ValueError) as e:
            error = str(e)
        except Exception as e:  # noqa: BLE001 - a model that breaks the loader must not stop the server
            error = f"{type(e).__name__}: {e}"
        else:
            error = None
        if error is not None:
            if name not in self.app.models:
                self.reasons[name] = error
            log(f"error: loading model '{name}' failed: {error}" +
                ("; the versions already loaded keep serving" if name in self.app.models else ""))
            return error
        self._install(name, models, prints)
        return None

    def _install(self, name: str, models: list[ServedModel], prints) -> None:
        """Switch the model table to the new versions (one step on the loop) and retire the old ones."""
        from dslc.serve.app import log
        new = {}
        for m in models:
            self.app.activate(m)
            new[m.version] = m
        old = self.app.models.get(name)
        self.app.models[name] = new
        self.app.latest[name] = max(new, key=_version_key)
        self.loaded_prints[name] = prints
        self._seen[name] = prints
        self.reasons.pop(name, None)
        log(f"model '{name}' {'reloaded' if old else 'loaded'}: version(s) {', '.join(sorted(new, key=_version_key))}")
        if old:
            self._spawn(self._retire(old, new))

    def _spawn(self, coro) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _retire(self, old: dict[str, ServedModel], new: dict[str, ServedModel]) -> None:
        loop = asyncio.get_running_loop()
        for version, m in old.items():
            b = m.batcher
            if b is None:
                continue
            # idle: nothing queued, no flush scheduled, every execution slot back
            while b.pending or b._flush_armed or b.slots < m.instances:
                await asyncio.sleep(RETIRE_CHECK_S)
            successor = new.get(version)
            m.batcher = successor.batcher if successor is not None else _Unloaded(m.name, loop)
            m.state = "retired"
            await loop.run_in_executor(None, b.close)

    # ------------------------------------------------------------------------------------------------ poll

    async def _poll_loop(self, after: asyncio.Task | None) -> None:
        if after is not None:
            try:
                await asyncio.shield(after)
            except Exception:  # noqa: BLE001 - the startup load reports its own failure
                return
        while True:
            await asyncio.sleep(self.poll_secs)
            await self.poll_once()

    async def poll_once(self) -> None:
        """One scan: load new model directories, reload changed ones, unload removed ones."""
        from dslc.serve.app import log
        root = self.root
        try:
            dirs = {p.name: p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
        except OSError as e:
            log(f"warning: cannot scan the model repository {root}: {e.strerror or e}")
            return
        for name, mdir in sorted(dirs.items()):
            if name in self.fixed:
                continue
            now = fingerprint(mdir)
            stable = now is not None and self._seen.get(name) == now
            self._seen[name] = now
            if not stable or now in (self.loaded_prints.get(name), self._failed.get(name)):
                continue   # changing, or the files serving now, or the files that failed to load last time
            async with self._lock(name):
                error = await self._reload(name, mdir)
            if error:
                self._failed[name] = now
            else:
                self._failed.pop(name, None)
        for name in [n for n in list(self.app.models) if n not in self.fixed and n not in dirs]:
            async with self._lock(name):
                old = self.app.models.pop(name, None)
                self.app.latest.pop(name, None)
                self.loaded_prints.pop(name, None)
                self._seen.pop(name, None)
                self.reasons[name] = "removed from the repository"
                if old:
                    log(f"model '{name}' unloaded: its directory left the repository")
                    self._spawn(self._retire(old, {}))
