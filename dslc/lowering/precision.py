"""Reduced-precision models: fp16 (weights and compute in half precision) and int8 (static QDQ quantization),
made from the validated fp32 model and validated the same way, then compared with it on held-out data.

fp16 is onnxconverter-common's float16 converter with `keep_io_types`: the graph inputs and outputs stay
float32 (Cast nodes at the edges), so clients send and receive exactly what they did.  int8 is onnxruntime's
static quantization in the QDQ format (QuantizeLinear/DequantizeLinear pairs around each quantized op, int8
weights per output channel, 8-bit activations with ranges from MinMax calibration); inputs and outputs stay
float32 there too.  Activations are uint8 and weights int8 ("U8S8"), the pairing onnxruntime's x86 kernels
run fastest (ResNet-18: ~0.6x fp32's CPU latency here, against ~0.9x for int8 activations; BENCHMARKS.md).
Neither is hand-written: these are the converters onnxruntime's own tooling uses.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import numpy as np
import onnx

from dslc.lowering.calibration import PrecisionData, PrecisionError, SampleSet, precision_data, random_heldout

PRECISIONS = ("fp32", "fp16", "int8")
CALIBRATION_BATCH = 32


@dataclass
class Comparison:
    """The reduced model against fp32 on held-out samples: the largest output difference relative to the
    largest fp32 output magnitude, and the top-1 accuracy of both when the data has labels."""
    precision: str
    samples: int
    source: str
    max_abs_delta: float
    rel_delta: float
    acc_fp32: float | None
    acc_reduced: float | None
    bytes_fp32: int
    bytes_reduced: int
    notes: tuple[str, ...] = ()

    def describe(self) -> str:
        text = (f"{self.precision} vs fp32 on {self.samples} held-out samples ({self.source}): max output delta "
                f"{self.rel_delta:.2e} relative ({self.max_abs_delta:.3g} absolute)")
        if self.acc_fp32 is not None:
            text += (f"; accuracy {100 * self.acc_reduced:.2f}% vs {100 * self.acc_fp32:.2f}% "
                     f"({100 * (self.acc_reduced - self.acc_fp32):+.2f} pp)")
        text += f"; size {self.bytes_reduced / max(1, self.bytes_fp32):.2f}x of fp32"
        return "\n  ".join([text, *(f"note: {n}" for n in self.notes)])


# ------------------------------------------------------------------------------------------- conversions

def to_fp16(fp32: bytes, notes: list[str] | None = None, fp16_io: bool = False) -> bytes:
    import warnings

    from onnxconverter_common import float16
    model = onnx.load_from_string(fp32)
    with warnings.catch_warnings(record=True) as caught:   # one warning per clamped weight: summarised below
        warnings.simplefilter("always")
        # keep_io_types: float32 at the graph's edges (Cast nodes), so clients do not change; fp16_io drops
        # the casts and clients send and receive FP16
        converted = float16.convert_float_to_float16(model, keep_io_types=not fp16_io)
    clamped = sum("truncated" in str(w.message) for w in caught)
    if clamped and notes is not None:
        notes.append(f"{clamped} weight value(s) outside fp16's range were clamped (to +-1e-7 or +-1e4)")
    converted.ir_version = model.ir_version
    return converted.SerializeToString()


class _Reader:
    """onnxruntime.quantization.CalibrationDataReader over SampleSet batches."""

    def __init__(self, samples: SampleSet, batch: int):
        self._it = iter(samples.batches(batch))

    def get_next(self):
        return next(self._it, None)


def to_int8(fp32: bytes, calibration: SampleSet) -> bytes:
    import logging

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    model = onnx.load_from_string(fp32)
    batch = _fixed_batch(model) or CALIBRATION_BATCH
    reader = type("Reader", (_Reader, CalibrationDataReader), {})(calibration, batch)
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)   # the quantizer logs advice on every run
    try:
        with tempfile.TemporaryDirectory(prefix="dslc-int8-") as d:
            out = os.path.join(d, "model.int8.onnx")
            quantize_static(model, out, reader, quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
            quantized = onnx.load(out)
    finally:
        logging.getLogger().setLevel(quiet)
    quantized.ir_version = model.ir_version
    return quantized.SerializeToString()


def _fixed_batch(model: onnx.ModelProto) -> int | None:
    for vi in model.graph.input:
        dims = vi.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value"):
            return dims[0].dim_value
    return None


# -------------------------------------------------------------------------------------------- validation

def _signature(model: onnx.ModelProto):
    def sig(vis):
        return [(vi.name, vi.type.tensor_type.elem_type,
                 [d.dim_value if d.HasField("dim_value") else d.dim_param for d in vi.type.tensor_type.shape.dim])
                for vi in vis]
    return sig(model.graph.input), sig(model.graph.output)


def validate_reduced(fp32: bytes, reduced: bytes, precision: str, fp16_io: bool = False) -> None:
    """As for an fp32 compile: the ONNX checker with its strict shape inference, the same inputs and outputs
    (names, dtypes, shapes) as the fp32 model (float16 for its float32 ones with fp16_io), an onnxruntime
    session.  Any failure is a converter or dslc bug (exit 3), never the user's."""
    import onnxruntime as ort
    try:
        onnx.checker.check_model(reduced, full_check=True)
    except Exception as e:  # noqa: BLE001
        raise PrecisionError(f"the {precision} model fails the ONNX checker: {e}", 3) from None
    want = _signature(onnx.load_from_string(fp32))
    if fp16_io:
        f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
        want = tuple([(n, f16 if t == f32 else t, d) for n, t, d in side] for side in want)
    if _signature(onnx.load_from_string(reduced)) != want:
        raise PrecisionError(f"the {precision} model's inputs/outputs differ from the fp32 model's", 3)
    try:
        ort.InferenceSession(reduced, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001
        raise PrecisionError(f"onnxruntime cannot load the {precision} model: {str(e).strip()[:800]}", 3) from None


# -------------------------------------------------------------------------------------------- comparison

def _run_all(session, samples: SampleSet, batch: int) -> list[np.ndarray]:
    """Outputs over all samples; float inputs cast to what the session takes (fp16 with --fp16-io)."""
    dtypes = {i.name: np.float16 if i.type == "tensor(float16)" else None for i in session.get_inputs()}
    outs = [session.run(None, {k: v.astype(dtypes[k]) if dtypes.get(k) else v for k, v in feed.items()})
            for feed in samples.batches(batch)]
    return [np.concatenate([o[k] for o in outs]).astype(np.float32, copy=False) if outs[0][k].dtype == np.float16
            else np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))]


def compare(fp32: bytes, reduced: bytes, heldout: SampleSet, precision: str) -> Comparison:
    import onnxruntime as ort
    batch = _fixed_batch(onnx.load_from_string(fp32)) or 256
    so = ort.SessionOptions()
    so.log_severity_level = 3
    ref = _run_all(ort.InferenceSession(fp32, so, providers=["CPUExecutionProvider"]), heldout, batch)
    red = _run_all(ort.InferenceSession(reduced, so, providers=["CPUExecutionProvider"]), heldout, batch)
    max_abs, scale = 0.0, 0.0
    for a, b in zip(ref, red):
        if a.dtype.kind == "f" and a.size:
            max_abs = max(max_abs, float(np.max(np.abs(a.astype(np.float64) - b))))
            scale = max(scale, float(np.max(np.abs(a))))
    acc32 = accr = None
    if heldout.labels is not None and ref[0].ndim == 2 and ref[0].shape[1] > 1:
        acc32 = float(np.mean(ref[0].argmax(1) == heldout.labels))
        accr = float(np.mean(red[0].argmax(1) == heldout.labels))
    return Comparison(precision, len(heldout), heldout.source, max_abs, max_abs / scale if scale else max_abs,
                      acc32, accr, len(fp32), len(reduced))


# ---------------------------------------------------------------------------------------------- pipeline

def reduce_model(fp32: bytes, precision: str, data: PrecisionData | None,
                 network: str = "the network", fp16_io: bool = False) -> tuple[bytes, Comparison | None]:
    """The fp32 model (serialized, validated) at `precision`, validated and compared; fp32 is returned as is."""
    if precision not in PRECISIONS:
        raise PrecisionError(f"unknown precision '{precision}' (choose {', '.join(PRECISIONS)})", 2)
    if precision == "fp32":
        return fp32, None
    notes: list[str] = []
    if precision == "int8":
        if data is None:
            raise PrecisionError(f"int8 needs calibration data, and {network} has no `data = ...` in a train "
                                 f"section: give --calibration SPEC (mnist, FILE.npz, FILE.csv or a folder of "
                                 f"images)")
        reduced = to_int8(fp32, data.calibration)
    else:
        reduced = to_fp16(fp32, notes, fp16_io=fp16_io)
    validate_reduced(fp32, reduced, precision, fp16_io=fp16_io and precision == "fp16")
    heldout = data.heldout if data is not None else random_heldout(onnx.load_from_string(fp32).graph.input)
    comparison = compare(fp32, reduced, heldout, precision)
    comparison.notes = tuple(notes)
    return reduced, comparison


def reduce_for_graph(fp32: bytes, precision: str, g, calibration: str | None = None, fp16_io: bool = False):
    """reduce_model with the data of network `g` (--calibration SPEC, else its train section)."""
    if precision == "fp32":
        return fp32, None
    data = precision_data(g, calibration) if (precision == "int8" or calibration is not None
                                              or (g.graph.get("train") or {}).get("data")) else None
    return reduce_model(fp32, precision, data, network=f"network `{g.graph.get('name')}`", fp16_io=fp16_io)


__all__ = ["PRECISIONS", "Comparison", "PrecisionError", "reduce_model", "reduce_for_graph", "to_fp16", "to_int8",
           "validate_reduced", "compare"]
