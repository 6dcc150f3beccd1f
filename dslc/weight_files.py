"""Weights files in and out: dslc `.npz`, `.safetensors` and PyTorch `state_dict` files (`.pt` / `.pth`).

Reading (`--weights FILE` of compile, train and serve; `read_tensors`, `load_for_graph`):

    .npz          numpy, allow_pickle=False; a training checkpoint (OUT.ckpt.npz) gives its weights
    .safetensors  the `safetensors` package's numpy API (no torch needed)
    .pt / .pth    torch.load(weights_only=True): tensors, dicts and lists only, never arbitrary pickled objects;
                  torch is imported here only, lazily. A checkpoint dict that wraps its state_dict under
                  `state_dict` or `model` (as many training scripts save it) is unwrapped.

Names map onto dslc's hierarchical weight names (`layer2.block1.conv1.weight`) by name. `--weights-map old=new`
(repeatable) renames a name prefix first. When the names still do not fit, the torchvision ResNet layout
(`layer1.0.conv1.weight`, `layer1.0.downsample.0.weight` / `.1.`) is tried: a torchvision ResNet-18/50
checkpoint loads into networks/resnet18.net / resnet50.net unchanged. `*.num_batches_tracked` (PyTorch's count
of batchnorm updates, only used by momentum=None batchnorm, which dslc does not have) is dropped deliberately
when the network has the batchnorm it belongs to. Everything else must fit exactly: a missing, unexpected or
wrongly shaped tensor is an error (WeightsMismatch) listing every offender with both shapes.

Writing (`dslc export-weights`; `write_tensors`): `.safetensors`, `.pt` (a plain state_dict of torch tensors)
or `.npz`, atomically.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SUFFIXES = (".npz", ".safetensors", ".pt", ".pth")
TORCH_INSTALL = "install PyTorch: pip install 'dslc[torch]' (the CPU build: torch==2.13.0)"


class WeightsFileError(ValueError):
    """A weights file that cannot be read or written; the message names the file and is meant for the user."""


@dataclass(frozen=True)
class WeightsFile:
    """A `--weights` file with its `--weights-map` prefix renames (applied in order)."""
    path: str | Path
    renames: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def __str__(self) -> str:
        return str(self.path)


def parse_weights_map(values) -> tuple[tuple[str, str], ...]:
    """`--weights-map old=new` values -> ((old, new), ...); raises WeightsFileError on a malformed one."""
    out = []
    for v in values or ():
        old, eq, new = v.partition("=")
        if not eq or not old:
            raise WeightsFileError(f"--weights-map {v!r}: expected OLD=NEW (a name prefix and its replacement, "
                                   f"e.g. backbone.=)")
        out.append((old, new))
    return tuple(out)


# ---------------------------------------------------------------------------------------- reading
def read_tensors(path: str | Path) -> dict[str, np.ndarray]:
    """name -> array from a .npz, .safetensors, .pt or .pth file. Raises WeightsFileError, FileNotFoundError."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"weights file {p} not found")
    suffix = p.suffix.lower()
    if suffix == ".safetensors":
        return _read_safetensors(p)
    if suffix in (".pt", ".pth"):
        return _read_torch(p)
    try:
        with np.load(p, allow_pickle=False) as z:
            if "__meta__" in z.files:   # a training checkpoint: weights `w/NAME`, the optimiser state `opt/...`
                return {k[2:]: z[k] for k in z.files if k.startswith("w/")}
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as e:
        hint = "" if suffix == ".npz" else f" (weights files are {', '.join(SUFFIXES)})"
        raise WeightsFileError(f"cannot read {p} as a .npz weights file: {e}{hint}") from None


def _read_safetensors(p: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    try:
        return dict(load_file(str(p)))
    except (SafetensorError, OSError, ValueError, TypeError) as e:
        raise WeightsFileError(f"cannot read {p} as a .safetensors file: {e}") from None


def _read_torch(p: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise WeightsFileError(f"{p} is a PyTorch file; reading it needs PyTorch: {TORCH_INSTALL}") from None
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch.load raises many types for a foreign or unsafe file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsFileError(f"cannot read {p} as a PyTorch state_dict (loaded with weights_only=True, which "
                               f"refuses pickled objects other than tensors and containers): {first}") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict) and not torch.is_tensor(obj.get(key)):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise WeightsFileError(f"{p} holds a {type(obj).__name__}, not a state_dict (a dict of name -> tensor)")
    out, bad = {}, []
    for k, v in obj.items():
        if not torch.is_tensor(v):
            bad.append(f"`{k}` ({type(v).__name__})")
            continue
        v = v.detach().cpu()
        if v.is_floating_point() and v.dtype != torch.float64:
            v = v.float()   # bf16 / fp16 checkpoints: numpy has no bfloat16
        out[str(k)] = v.numpy().copy()
    if bad:
        raise WeightsFileError(f"{p}: a state_dict maps names to tensors; these entries are not tensors: "
                               + ", ".join(bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else ""))
    return out


# ---------------------------------------------------------------------------------------- names
def apply_renames(weights: dict, renames) -> dict:
    """Rename name prefixes (each (old, new) in turn; a name that does not start with `old` is kept)."""
    out = dict(weights)
    for old, new in renames:
        out = {(new + k[len(old):] if k.startswith(old) else k): v for k, v in out.items()}
    return out


_TV_BLOCK = re.compile(r"^(layer\d+)\.(\d+)\.")


def torchvision_resnet_names(weights: dict) -> dict:
    """torchvision ResNet names -> dslc's std/resnet.net names: `layer1.0.` -> `layer1.block1.` (dslc's repeat
    counts from 1), `.downsample.0.` -> `.downsample_conv.`, `.downsample.1.` -> `.downsample_bn.`."""
    out = {}
    for k, v in weights.items():
        k2 = _TV_BLOCK.sub(lambda m: f"{m.group(1)}.block{int(m.group(2)) + 1}.", k)
        k2 = k2.replace(".downsample.0.", ".downsample_conv.").replace(".downsample.1.", ".downsample_bn.")
        out[k2] = v
    return out


def drop_batch_counts(weights: dict, expected) -> dict:
    """Drop `X.num_batches_tracked` when the network has the batchnorm `X` (its `X.running_mean`)."""
    return {k: v for k, v in weights.items()
            if not (k.endswith(".num_batches_tracked")
                    and k[:-len("num_batches_tracked")] + "running_mean" in expected)}


def load_for_graph(g, source: "WeightsFile | str | Path") -> dict[str, np.ndarray]:
    """The weights of a file fitted to graph g by name (see the module docstring), float32.
    Raises FileNotFoundError, WeightsFileError (unreadable) or WeightsMismatch (every problem listed)."""
    from dslc import ir
    from dslc.lowering.errors import WeightsMismatch
    src = source if isinstance(source, WeightsFile) else WeightsFile(source)
    raw = apply_renames(read_tensors(src.path), src.renames)
    expected = {name for name, _n, _s in ir.weight_names(g)}
    weights = drop_batch_counts(raw, expected)
    problems = fit_problems(g, weights)
    if problems:
        mapped = drop_batch_counts(torchvision_resnet_names(raw), expected)
        if mapped.keys() != weights.keys() and not fit_problems(g, mapped):
            weights, problems = mapped, []
    if problems:
        if any(_TV_BLOCK.match(k) for k in raw):
            problems.append("(the names look like torchvision's ResNet layout; mapped onto dslc's "
                            "`layerN.blockM.` names they do not fit either)")
        elif set(raw) and not set(raw) & expected:
            problems.append("(no name matches; rename prefixes with --weights-map OLD=NEW)")
        raise WeightsMismatch(problems, f"weights file {src.path}")
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}


def fit_problems(g, weights: dict) -> list[str]:
    from dslc.weights import check_weights
    problems = check_weights(g, weights)
    for name, arr in weights.items():
        if np.asarray(arr).dtype.kind != "f":
            problems.append(f"weight `{name}` has dtype {np.asarray(arr).dtype}, expected a float type")
    return problems


# ---------------------------------------------------------------------------------------- writing
def write_tensors(path: str | Path, weights: dict[str, np.ndarray]) -> None:
    """Write name -> array as .safetensors, .pt (a state_dict of torch tensors) or .npz, atomically."""
    from dslc.weights import atomic_write_bytes
    p = Path(path)
    suffix = p.suffix.lower()
    arrays = {k: np.ascontiguousarray(v) for k, v in weights.items()}
    if suffix == ".safetensors":
        from safetensors.numpy import save
        data = save(arrays)
    elif suffix in (".pt", ".pth"):
        try:
            import torch
        except ImportError:
            raise WeightsFileError(f"writing {p} needs PyTorch: {TORCH_INSTALL}; or write .safetensors") from None
        buf = io.BytesIO()
        torch.save({k: torch.from_numpy(v.copy()) for k, v in arrays.items()}, buf)
        data = buf.getvalue()
    elif suffix == ".npz":
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        data = buf.getvalue()
    else:
        raise WeightsFileError(f"{p}: unknown weights format `{p.suffix}` (write {', '.join(SUFFIXES)})")
    atomic_write_bytes(p, data)


# ---------------------------------------------------------------------------------------- command line
def add_weights_arguments(p, help: str) -> None:
    """--weights FILE and --weights-map OLD=NEW, shared by compile, train and serve."""
    p.add_argument("--weights", metavar="FILE", help=help + " (.npz, .safetensors, or a PyTorch state_dict "
                                                           ".pt/.pth; torchvision ResNet names are mapped)")
    p.add_argument("--weights-map", action="append", metavar="OLD=NEW", default=[],
                   help="rename the weights file's name prefix OLD to NEW before matching (repeatable)")


def weights_source(args) -> WeightsFile | None:
    """The --weights file with its --weights-map renames; None without --weights. Raises WeightsFileError."""
    renames = parse_weights_map(getattr(args, "weights_map", None))
    if not getattr(args, "weights", None):
        if renames:
            raise WeightsFileError("--weights-map goes with --weights")
        return None
    return WeightsFile(args.weights, renames)
