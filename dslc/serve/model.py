"""A served model: one ONNX model version, its onnxruntime session, tensor metadata, batching settings, stats."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from dslc.serve.protocol import DTYPES, ORT_TO_DATATYPE, TensorSpec
from dslc.serve import triton


class ModelLoadError(Exception):
    """A model that cannot be served; `code` is the exit status (1 program errors, 2 usage / files, 3 dslc bug)
    and `plain` marks a message that is already fully rendered (compiler diagnostics)."""

    def __init__(self, message: str, code: int = 1, plain: bool = False):
        super().__init__(message)
        self.code = code
        self.plain = plain


def load_model_source(path, weights=None, precision: str = "fp32", calibration: str | None = None,
                      fp16_io: bool = False) -> bytes:
    """Serialized ONNX for a model file: a .onnx is read as is; a .net is compiled (with its weights) first.

    The .net path goes through dslc.lowering.compile (load_program, then compile_graph with the batch dim left
    symbolic, whose validation already serialized the model), imported only here so serving .onnx files never
    depends on the compiler.  Without weights the network gets dslc's seeded initial weights.  `precision`
    fp16 / int8 converts the compiled model (dslc.lowering.precision; .net files only).
    """
    path = Path(path)
    if path.suffix == ".net":
        try:
            from dslc.lowering.compile import compile_graph, load_program
            from dslc.lowering.errors import user_error
        except ImportError:
            raise ModelLoadError(f"{path}: serving a .net file needs the dslc compiler "
                                 f"(dslc.lowering.compile), which this build does not have; compile it to .onnx "
                                 f"first", code=2) from None
        try:
            _program, g = load_program(path)
            _model, info = compile_graph(g, weights=weights, materialize=False)
        except Exception as e:  # noqa: BLE001 - anything not the user's is re-raised
            known = user_error(e, path)
            if known is None:
                raise
            message, code, plain = known
            raise ModelLoadError(message if plain or str(path) in message else f"{path}: {message}", code=code,
                                 plain=plain) from None
        if info.data is None:
            raise ModelLoadError(f"{path}: the model is over 2 GB; compile it with `dslc compile` and serve "
                                 f"the .onnx file", code=2)
        if precision != "fp32":
            return _reduced(path, info, precision, calibration, fp16_io)
        return info.data
    if weights is not None:
        raise ModelLoadError(f"{path}: --weights applies to .net files only; an .onnx file carries its weights",
                             code=2)
    try:
        return path.read_bytes()
    except OSError as e:
        raise ModelLoadError(f"{path}: cannot read: {e.strerror or e}", code=2) from None


def _reduced(path, info, precision: str, calibration: str | None, fp16_io: bool) -> bytes:
    import sys

    from dslc.lowering.precision import PrecisionError, reduce_for_graph
    try:
        reduced, comparison = reduce_for_graph(info.data, precision, info.g, calibration, fp16_io=fp16_io)
    except PrecisionError as e:
        raise ModelLoadError(f"{path}: --precision {precision}: {e}", code=e.code) from None
    print(f"dslc serve: {path}: {comparison.describe()}", file=sys.stderr, flush=True)
    return reduced


def default_threads(instances: int = 1) -> int:
    """onnxruntime intra-op threads per model instance when serving: the cores less one, which is left to the
    event loop that parses and answers HTTP, shared among the instances that may run at once.  (Threads also do
    not spin while idle, for the same reason.)"""
    from dslc.runtime.session import cpu_count
    return max(1, (cpu_count() - 1) // max(1, instances))


def _shape(dims) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in dims)


class Stats:
    """Triton-style per-model statistics (cumulative counts and nanoseconds), updated on the event loop."""

    __slots__ = ("success_count", "success_ns", "fail_count", "fail_ns", "queue_count", "queue_ns",
                 "infer_count", "infer_ns", "inference_count", "execution_count", "last_inference_ms", "batches")

    def __init__(self):
        for s in self.__slots__:
            setattr(self, s, 0)
        self.batches = {}

    def as_triton(self, name: str, version: str) -> dict:
        def cn(c, ns):
            return {"count": c, "ns": ns}
        zero = cn(0, 0)
        return {
            "name": name, "version": version, "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count, "execution_count": self.execution_count,
            "inference_stats": {
                "success": cn(self.success_count, self.success_ns), "fail": cn(self.fail_count, self.fail_ns),
                "queue": cn(self.queue_count, self.queue_ns), "compute_input": cn(self.infer_count, 0),
                "compute_infer": cn(self.infer_count, self.infer_ns), "compute_output": cn(self.infer_count, 0),
                "cache_hit": zero, "cache_miss": zero,
            },
            "batch_stats": [
                {"batch_size": bs, "compute_input": cn(c, 0), "compute_infer": cn(c, ns), "compute_output": cn(c, 0)}
                for bs, (c, ns) in sorted(self.batches.items())
            ],
            "memory_usage": [],
        }


class ServedModel:
    """One version of one model.  `load()` (blocking, run off the event loop) opens the session, works out the
    tensors and whether the model batches, checks a repository config against the model, and warms up."""

    def __init__(self, name: str, version: str, source: bytes, *, origin: str = "", max_batch_size: int = 32,
                 queue_delay_ms: float = 0.0, dynamic_batching: bool = True, instances: int = 1,
                 device: str = "auto", threads: int | None = None, repo_config: dict | None = None):
        self.name = name
        self.version = version
        self.origin = origin
        self._source = source
        self.requested_max_batch_size = max(0, int(max_batch_size))
        self.queue_delay_ms = max(0.0, float(queue_delay_ms))
        self.dynamic_batching = dynamic_batching
        self.instances = max(1, int(instances))
        self.device = device
        self.threads = threads
        self.repo_config = repo_config
        self.state = "loading"      # loading | loaded | ready | failed
        self.error: str | None = None
        self.session = None
        self.provider = ""
        self.inputs: list[TensorSpec] = []
        self.outputs: list[TensorSpec] = []
        self.input_index: dict[str, TensorSpec] = {}
        self.output_index: dict[str, TensorSpec] = {}
        self.datatypes: dict[str, str] = {}
        self.output_names: list[str] = []
        self.max_batch_size = 0
        self.notes: list[str] = []
        self.warmup_ms = 0.0
        self.run1_ms: float | None = None   # a warm batch-1 session.run, measured after warm-up (None: unknown)
        self.run_max_ms: float | None = None   # ... and one of max_batch_size rows, when requests are merged
        self.stats = Stats()
        self.header_plans: dict = {}   # dslc.serve.protocol: checked request headers by their bytes
        self.batcher = None
        self.mmetrics = None

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @property
    def merging(self) -> bool:
        """Whether concurrent requests are merged into one execution (dynamic batching)."""
        return self.max_batch_size > 1 and self.dynamic_batching

    # ------------------------------------------------------------------------------------------------ loading

    def load(self) -> None:
        from dslc.runtime.session import create_session, probe_providers
        threads = self.threads or default_threads(self.instances)
        if self.device == "gpu" and not probe_providers(True).gpu:
            raise ModelLoadError(f"model '{self.name}' must run on a GPU (instance_group KIND_GPU, or --device gpu) "
                                 f"but none is usable: {probe_providers(True).reason}")
        try:
            self.session, self.provider = create_session(
                self._source, prefer_gpu=self.device != "cpu", require_gpu=self.device == "gpu",
                intra_op_threads=threads, spinning=False)
        except Exception as e:  # onnxruntime's errors for bad models are plain RuntimeErrors/Fail
            raise ModelLoadError(f"model '{self.name}' ({self.origin}): onnxruntime cannot load it: "
                                 f"{str(e).strip().splitlines()[-1] if str(e).strip() else e}") from None
        self._source = None
        ins, outs = self.session.get_inputs(), self.session.get_outputs()
        for arg, kind in [(a, "input") for a in ins] + [(a, "output") for a in outs]:
            dt = ORT_TO_DATATYPE.get(arg.type)
            if dt not in DTYPES:
                raise ModelLoadError(f"model '{self.name}': {kind} '{arg.name}' has type {arg.type}, which dslc "
                                     f"serve does not support")
        self.inputs = [TensorSpec(a.name, ORT_TO_DATATYPE[a.type], _shape(a.shape)) for a in ins]
        self.outputs = [TensorSpec(a.name, ORT_TO_DATATYPE[a.type], _shape(a.shape)) for a in outs]
        self.input_index = {s.name: s for s in self.inputs}
        self.output_index = {s.name: s for s in self.outputs}
        self.datatypes = {s.name: s.datatype for s in self.outputs}
        self.output_names = [s.name for s in self.outputs]

        batchable, why = self._batchable(ins, outs)
        mbs = self.requested_max_batch_size
        if mbs > 0 and not batchable:
            if self.repo_config is not None and "max_batch_size" in self.repo_config:
                raise ModelLoadError(f"model '{self.name}': config.pbtxt sets max_batch_size {mbs} but {why}; "
                                     f"set max_batch_size: 0")
            self.notes.append(f"no batch dimension, so max_batch_size 0 (no batching): {why}")
            mbs = 0
        self.max_batch_size = mbs
        if self.repo_config:
            try:
                triton.check_config_against_model(self.repo_config, self.name, self.inputs, self.outputs, mbs)
            except triton.ConfigError as e:
                raise ModelLoadError(str(e)) from None
        self._warmup()
        self.state = "loaded"       # the server makes it "ready" once its batcher exists

    @staticmethod
    def _batchable(ins, outs) -> tuple[bool, str]:
        """Rows can be merged along dim 0 when every input and output leads with the same symbolic dim."""
        named: set[str] = set()
        for kind, tensors in (("input", ins), ("output", outs)):
            for a in tensors:
                if not a.shape:
                    return False, f"{kind} '{a.name}' is a scalar"
                d0 = a.shape[0]
                if isinstance(d0, int):
                    return False, f"{kind} '{a.name}' has a fixed first dimension {d0}"
                if kind == "input":
                    if isinstance(d0, str):
                        named.add(d0)
                elif isinstance(d0, str) and named and d0 not in named:
                    return False, (f"output '{a.name}' has first dimension '{d0}', not the inputs' "
                                   f"'{next(iter(named))}'")
            if kind == "input" and len(named) > 1:
                return False, "the inputs' first dimensions are different symbols " + ", ".join(sorted(named))
        return True, ""

    def _warmup(self) -> None:
        rows = [1] + ([self.max_batch_size] if self.merging else [])
        t0 = time.perf_counter()
        for n in rows:
            try:
                self.session.run(None, self._zeros(n))
            except Exception as e:
                self.notes.append(f"warm-up with zeros of batch {n} failed ({str(e).strip().splitlines()[-1][:160]}); "
                                  f"serving anyway")
                break
        else:
            self.warmup_ms = (time.perf_counter() - t0) * 1e3
            try:   # only hints for the batcher's inline execution
                self.run1_ms = self._best_run_ms(1)
                self.run_max_ms = self._best_run_ms(self.max_batch_size) if self.merging else None
            except Exception:  # noqa: BLE001 - no hint: the batcher never runs inline
                self.run1_ms = self.run_max_ms = None
            return
        self.warmup_ms = (time.perf_counter() - t0) * 1e3

    def _zeros(self, rows: int) -> dict[str, np.ndarray]:
        """A feed of zeros with `rows` rows (variable dims 1)."""
        feed = {}
        for s in self.inputs:
            shape = [d if d >= 0 else 1 for d in s.shape]
            if self.max_batch_size > 0:
                shape[0] = rows
            feed[s.name] = np.zeros(shape, s.dtype)
        return feed

    def _best_run_ms(self, rows: int, tries: int = 3) -> float:
        feed = self._zeros(rows)
        best = float("inf")
        for _ in range(tries):
            t1 = time.perf_counter()
            self.session.run(None, feed)
            best = min(best, time.perf_counter() - t1)
        return best * 1e3

    # --------------------------------------------------------------------------------------------- execution

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self.output_names, feed)

    # ---------------------------------------------------------------------------------------------- metadata

    def metadata(self, versions: list[str]) -> dict:
        def t(s: TensorSpec):
            return {"name": s.name, "datatype": s.datatype, "shape": list(s.shape)}
        return {"name": self.name, "versions": versions, "platform": triton.PLATFORM,
                "inputs": [t(s) for s in self.inputs], "outputs": [t(s) for s in self.outputs]}

    def config(self) -> dict:
        cfg = triton.model_config(
            self.name, self.inputs, self.outputs, self.max_batch_size,
            queue_delay_us=int(round(self.queue_delay_ms * 1000)), dynamic_batching=self.dynamic_batching,
            instances=self.instances, gpu=self.provider == "CUDAExecutionProvider")
        cfg["backend"] = triton.BACKEND
        if self.repo_config and self.repo_config.get("version_policy"):
            cfg["version_policy"] = self.repo_config["version_policy"]
        else:
            cfg["version_policy"] = {"latest": {"num_versions": 1}}
        cfg["model_transaction_policy"] = {"decoupled": False}
        return cfg

    def summary(self) -> str:
        if self.max_batch_size == 0:
            b = "no batching (max_batch_size 0)"
        elif not self.merging:
            b = f"max_batch_size {self.max_batch_size}, dynamic batching off"
        else:
            b = f"dynamic batching up to {self.max_batch_size}, queue delay {self.queue_delay_ms:g} ms"
        return (f"model '{self.name}' v{self.version} ready on {self.provider}: {b}, "
                f"{self.instances} instance(s); warm-up {self.warmup_ms:.1f} ms")
