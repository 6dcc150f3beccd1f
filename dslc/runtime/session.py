"""onnxruntime sessions: a quiet GPU probe, deliberate session options, and a one-line provider report.

    probe = probe_providers()                       # cached; never prints CUDA library errors
    session, provider = create_session("m.onnx")    # CUDA first when usable, CPU otherwise
    print(describe(probe, provider))

onnxruntime-gpu asks for CUDA/cuDNN libraries when a session names CUDAExecutionProvider, logs loud errors when
they are missing and then silently falls back to CPU.  So the probe (1) checks the build has the CUDA provider,
(2) asks the NVIDIA driver through ctypes whether a device exists, and only then (3) opens a tiny session in a
subprocess whose output is swallowed, reading back `session.get_providers()`.  Only a probe that saw CUDA really
selected makes create_session ask for CUDA in this process.  `DSLC_DEVICE=cpu` (or `gpu`) overrides `auto`.
"""
from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

# ORT logging: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal.
_QUIET = 3


@dataclass(frozen=True)
class ProviderProbe:
    provider: str          # CUDA or CPU: what create_session(prefer_gpu=True) will use
    reason: str            # one short phrase: why this provider
    device: str            # "NVIDIA H200", or "CPU"
    preload: bool = False  # ort.preload_dlls() was needed for CUDA libraries installed from wheels
    ort_version: str = ""

    @property
    def gpu(self) -> bool:
        return self.provider == CUDA


def cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _driver_device() -> tuple[str | None, str]:
    """(name of CUDA device 0 or None, reason) from the NVIDIA driver API, without touching onnxruntime."""
    names = ["libcuda.so.1", "libcuda.so"] if sys.platform != "win32" else ["nvcuda.dll"]
    lib = None
    for n in names:
        try:
            lib = ctypes.CDLL(n)
            break
        except OSError:
            continue
    if lib is None:
        return None, "no NVIDIA driver (libcuda not found)"
    try:
        rc = lib.cuInit(0)
        if rc != 0:
            return None, f"CUDA driver did not initialise (cuInit error {rc})"
        count = ctypes.c_int(0)
        if lib.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
            return None, "no CUDA device visible"
        dev = ctypes.c_int(0)
        buf = ctypes.create_string_buffer(256)
        name = "CUDA device 0"
        if lib.cuDeviceGet(ctypes.byref(dev), 0) == 0 and lib.cuDeviceGetName(buf, 256, dev) == 0:
            name = buf.value.decode(errors="replace") or name
        return name, f"{count.value} CUDA device(s)"
    except (AttributeError, OSError) as e:  # pragma: no cover - broken driver install
        return None, f"CUDA driver unusable ({e})"


# Runs in a child process: its stderr (where a failing CUDA provider shouts) is discarded.
_CHILD = r"""
import json, sys
import onnxruntime as ort
ort.set_default_logger_severity(4)
from onnx import TensorProto, helper
g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]); m.ir_version = 8
data = m.SerializeToString()
def attempt():
    so = ort.SessionOptions(); so.log_severity_level = 4
    s = ort.InferenceSession(data, so, providers=[("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"])
    import numpy as np
    s.run(None, {"x": np.ones(2, np.float32)})
    return s.get_providers()
out = {"providers": [], "preload": False, "error": ""}
try:
    out["providers"] = attempt()
except Exception as e:
    out["error"] = str(e).strip().splitlines()[-1][:200] if str(e).strip() else type(e).__name__
if "CUDAExecutionProvider" not in out["providers"] and hasattr(ort, "preload_dlls"):
    try:
        ort.preload_dlls(); out["preload"] = True
        out["providers"] = attempt()
    except Exception as e:
        out["error"] = out["error"] or str(e).strip()[:200]
print("DSLC_PROBE " + json.dumps(out))
"""


@lru_cache(maxsize=None)
def probe_providers(prefer_gpu: bool = True) -> ProviderProbe:
    """Decide, quietly and once per process, whether sessions run on CUDA or CPU."""
    import onnxruntime as ort
    ort.set_default_logger_severity(_QUIET)
    ver = ort.__version__
    forced = os.environ.get("DSLC_DEVICE", "auto").strip().lower()
    if not prefer_gpu or forced == "cpu":
        return ProviderProbe(CPU, "CPU requested", "CPU", ort_version=ver)
    if CUDA not in ort.get_available_providers():
        return ProviderProbe(CPU, "onnxruntime built without CUDA", "CPU", ort_version=ver)
    name, why = _driver_device()
    if name is None:
        return ProviderProbe(CPU, why, "CPU", ort_version=ver)
    try:
        r = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=180,
                           env={**os.environ, "ORT_LOGGING_LEVEL": "4"})
        line = next((ln for ln in r.stdout.splitlines() if ln.startswith("DSLC_PROBE ")), None)
        if line is None:
            return ProviderProbe(CPU, f"CUDA probe failed (exit {r.returncode})", "CPU", ort_version=ver)
        res = json.loads(line[len("DSLC_PROBE "):])
    except subprocess.TimeoutExpired:
        return ProviderProbe(CPU, "CUDA probe timed out", "CPU", ort_version=ver)
    if CUDA in res.get("providers", []):
        return ProviderProbe(CUDA, f"GPU {name}", name, preload=bool(res.get("preload")), ort_version=ver)
    err = res.get("error") or "CUDA libraries (cudart/cuDNN) missing or incompatible"
    return ProviderProbe(CPU, f"{name} present but the CUDA provider is unusable: {err}", "CPU", ort_version=ver)


def session_options(*, intra_op_threads: int | None = None, inter_op_threads: int = 1,
                    optimization: str = "all", spinning: bool | None = None):
    """SessionOptions set deliberately rather than left to defaults."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = _QUIET
    so.graph_optimization_level = {
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = intra_op_threads if intra_op_threads else cpu_count()
    so.inter_op_num_threads = max(1, inter_op_threads)
    if spinning is not None:
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return so


def create_session(model, prefer_gpu: bool = True, *, device_id: int = 0, intra_op_threads: int | None = None,
                   inter_op_threads: int = 1, optimization: str = "all", spinning: bool | None = None,
                   require_gpu: bool = False):
    """Open an InferenceSession on `model` (path, bytes or onnx.ModelProto).

    Returns (session, provider) where provider is the execution provider the session really uses, read back
    from session.get_providers() (onnxruntime falls back to CPU without saying so).  With require_gpu, raises
    RuntimeError when CUDA is not usable instead of falling back.
    """
    import onnxruntime as ort
    probe = probe_providers(prefer_gpu)
    if require_gpu and not probe.gpu:
        raise RuntimeError(f"GPU requested but not usable: {probe.reason}")
    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    elif isinstance(model, os.PathLike):
        model = os.fspath(model)
    so = session_options(intra_op_threads=intra_op_threads, inter_op_threads=inter_op_threads,
                         optimization=optimization, spinning=spinning)
    if probe.gpu:
        if probe.preload and hasattr(ort, "preload_dlls"):
            _preload_once()
        providers = [(CUDA, {"device_id": device_id, "cudnn_conv_algo_search": "HEURISTIC"}), CPU]
    else:
        providers = [CPU]
    session = ort.InferenceSession(model, so, providers=providers)
    used = session.get_providers()
    provider = CUDA if CUDA in used else CPU
    if require_gpu and provider != CUDA:
        raise RuntimeError("GPU requested but onnxruntime fell back to CPU for this model")
    return session, provider


@lru_cache(maxsize=None)
def _preload_once() -> None:
    import onnxruntime as ort
    ort.preload_dlls()


def describe(probe: ProviderProbe | None = None, provider: str | None = None, threads: int | None = None) -> str:
    """One line for a startup banner: runtime version, provider, and why."""
    probe = probe or probe_providers()
    provider = provider or probe.provider
    if provider == CUDA:
        return f"onnxruntime {probe.ort_version} on {provider} ({probe.device})"
    n = threads or cpu_count()
    why = "" if probe.reason == "CPU requested" else f"; GPU not used: {probe.reason}"
    return f"onnxruntime {probe.ort_version} on {provider} ({n} intra-op thread{'s' if n != 1 else ''}){why}"
