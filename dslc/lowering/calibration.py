"""Data for reduced-precision compiles: calibration batches for int8 (onnxruntime static quantization) and a
held-out set on which the reduced model is compared with the fp32 one.

Where the data comes from, in order: `--calibration SPEC` (any `dslc train --data` spec -- `mnist`, `FILE.npz`,
`FILE.csv`, a built-in set -- or a folder of images), else the network's train section `data = ...`.
Calibration samples come from the training split; the comparison uses the test split (the validation split, or
the training samples calibration did not use, when there is none).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

CALIBRATION_SAMPLES = 512     # MinMax calibration settles long before this on the networks of the course
HELDOUT_SAMPLES = 2000        # the whole MNIST test split of the t10k files
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


class PrecisionError(Exception):
    """A reduced-precision compile that cannot be done as asked; `code` is the exit status (1: the program or
    its data, 2: usage / missing files, 3: a dslc or converter bug)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


@dataclass
class SampleSet:
    """Inputs keyed by ONNX input name (samples along axis 0), the class labels when the data has them."""
    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    source: str

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values()))) if self.inputs else 0

    def batches(self, size: int):
        for start in range(0, len(self), size):
            yield {k: v[start:start + size] for k, v in self.inputs.items()}


@dataclass
class PrecisionData:
    calibration: SampleSet
    heldout: SampleSet


def _input_types(g) -> list[tuple[str, object]]:
    return [(n, g.nodes[n]["outputs"][0]) for n in g.graph.get("inputs") or []]


def _labels(ds, split) -> np.ndarray | None:
    """Class indices of the first target, when the data is a classification set (or, for files, which do
    not say, when the target is integer labels)."""
    if ds.task not in ("classification", None) or not split.ys:
        return None
    y = split.ys[0]
    if ds.task is None and not (y.ndim == 1 and y.dtype.kind in "iu"):
        return None
    if y.ndim == 2 and y.dtype.kind == "f":      # one-hot (fit_to_graph made it for a float target)
        return y.argmax(axis=1)
    # one label per sample; per-position labels [N, T] (a sequence model's) have no single class to compare
    one_each = y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1)
    return y.reshape(len(y)) if one_each and y.dtype.kind in "iu" else None


def from_dataset(ds, g) -> PrecisionData:
    """Calibration and held-out samples from a dataset already fitted to the graph (fit_to_graph)."""
    names = [n for n, _t in _input_types(g)]
    train = ds.train
    held, what = ds.test, "test split"
    if held is None or len(held) == 0:
        held, what = ds.val, "validation split"
    n_cal = min(CALIBRATION_SAMPLES, len(train))
    if held is None or len(held) == 0:   # no split of its own: hold out the training samples past calibration
        if len(train) < 2:
            raise PrecisionError(f"the data `{ds.name}` has {len(train)} sample(s): at least 2 are needed (some "
                                 f"to calibrate, the rest to compare the reduced model with fp32 on)")
        n_cal = min(n_cal, len(train) - max(1, len(train) // 5))
        held, what = train.take(np.arange(n_cal, len(train))), "training samples not used for calibration"
    # np.asarray: a streamed split (image folder, .npy) is read here, only the samples used
    cal = SampleSet({n: np.asarray(x[:n_cal]) for n, x in zip(names, train.xs)}, _labels(ds, train), f"{ds.name} train split")
    held = held.take(np.arange(min(HELDOUT_SAMPLES, len(held))))
    labels = _labels(ds, held)
    return PrecisionData(cal, SampleSet({n: np.asarray(x) for n, x in zip(names, held.xs)}, labels, f"{ds.name} {what}"))


def image_folder(path: Path, g) -> PrecisionData:
    """Images (any size, resized) for a network with one [N, C, H, W] input, C 1 (grey) or 3 (RGB), pixels
    scaled to [0, 1]; a fifth of them held out for the comparison."""
    from PIL import Image
    ins = _input_types(g)
    shape = ins[0][1].shape if len(ins) == 1 else ()
    if len(shape) != 4 or not all(isinstance(d, int) for d in shape[1:]) or shape[1] not in (1, 3):
        raise PrecisionError(f"calibration from an image folder needs a network with one input [N, C, H, W] with "
                             f"C 1 or 3 and fixed H, W; network `{g.graph.get('name')}` has "
                             f"{', '.join(f'{n}: {t}' for n, t in ins)}; give a .npz instead")
    _n, c, h, w = shape
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) < 2:
        raise PrecisionError(f"calibration folder {path} holds {len(files)} image(s); it needs at least 2 "
                             f"(some calibrate, the rest are held out)", 2)
    files = files[:CALIBRATION_SAMPLES + HELDOUT_SAMPLES]
    arrays = []
    for f in files:
        try:
            with Image.open(f) as im:
                im = im.convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR)
                a = np.asarray(im, dtype=np.float32) / 255.0
        except OSError as e:
            raise PrecisionError(f"calibration image {f}: cannot read it: {e}", 2) from None
        arrays.append(a[None] if c == 1 else a.transpose(2, 0, 1))
    x = np.stack(arrays)
    n_held = max(1, len(x) // 5)
    name = ins[0][0]
    return PrecisionData(SampleSet({name: x[:-n_held]}, None, f"images in {path}"),
                         SampleSet({name: x[-n_held:]}, None, f"held-out images in {path}"))


def precision_data(g, spec: str | None) -> PrecisionData | None:
    """Data for the network `g`: `spec` (--calibration), else its train section's data; None when neither."""
    from dslc.train import data as D
    if spec is not None and Path(spec).is_dir() and not list(Path(spec).glob("*-idx*-ubyte*")):
        return image_folder(Path(spec), g)
    source = spec if spec is not None else (g.graph.get("train") or {}).get("data")
    if source is None:
        return None
    if spec is not None and not Path(spec).exists() and Path(spec).suffix.lower() in (".npz", ".csv"):
        raise PrecisionError(f"--calibration {spec}: no such file", 2)
    try:
        ds = D.fit_to_graph(D.load_data(source), g)
    except D.DataError as e:
        where = f"--calibration {spec}" if spec is not None else "the train section's data"
        raise PrecisionError(f"{where}: {e}") from None
    return from_dataset(ds, g)


def random_heldout(model_inputs, n: int = 64, seed: int = 0) -> SampleSet:
    """Standard-normal inputs for an fp16 comparison when the network has no data (the delta is still the
    output difference the conversion makes; no accuracy)."""
    import onnx
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in model_inputs:
        dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        shape = [n if i == 0 and d is None else (d or 1) for i, d in enumerate(dims)]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        # integer inputs (token ids, indices): zeros are always in range
        feeds[vi.name] = (rng.standard_normal(shape).astype(dtype) if dtype.kind == "f" else np.zeros(shape, dtype))
    return SampleSet(feeds, None, f"{n} random standard-normal inputs (the network has no data)")
