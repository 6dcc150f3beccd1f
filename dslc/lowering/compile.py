"""`dslc compile` core: .net file -> checked graph -> lean ONNX model, validated on every compile."""
from __future__ import annotations

from pathlib import Path

import networkx as nx
import numpy as np
import onnx

from dslc.lowering.errors import ProgramErrors, WeightsMismatch
from dslc.lowering.model import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, LowerInfo, lower_graph


def resolve_weights(g: nx.DiGraph, weights=None, seed: int = 0) -> dict[str, np.ndarray]:
    """The weights to export: seeded initialisation, or a weights dict / weights file (a path or a
    dslc.weight_files.WeightsFile: .npz, .safetensors, .pt) checked against the graph (WeightsMismatch lists
    every problem)."""
    from dslc.weight_files import WeightsFile, WeightsFileError, fit_problems, load_for_graph
    from dslc.weights import init_weights
    if weights is None:
        return init_weights(g, seed)
    if isinstance(weights, (str, Path, WeightsFile)):
        try:
            return load_for_graph(g, weights)   # .npz / .safetensors / .pt, names fitted, every problem listed
        except FileNotFoundError:
            raise WeightsMismatch(["cannot read it: no such file"], f"weights file {weights}") from None
        except (OSError, WeightsFileError) as e:
            raise WeightsMismatch([str(e)], f"weights file {weights}") from None
    problems = fit_problems(g, weights)
    if problems:
        raise WeightsMismatch(problems, "weights")
    return {k: np.asarray(v, dtype=np.float32) for k, v in weights.items()}


def check_opset(opset: int) -> None:
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset {opset} is not supported: dslc lowers to ONNX opsets {MIN_OPSET}..{MAX_OPSET}")


def compile_graph(g: nx.DiGraph, weights=None, batch: int | None = None, opset: int = DEFAULT_OPSET,
                  fold_bn: bool = True, seed: int = 0, validate: bool = True, ort: bool = True,
                  materialize: bool = True, output=None) -> tuple[onnx.ModelProto, LowerInfo]:
    """Lower one network graph; validates it (checker, strict shape inference vs dslc's shapes, onnxruntime)
    unless `validate` is False. Raises LoweringError (a dslc bug), WeightsMismatch, ValueError (bad option).
    materialize=False returns the model with its big weights dataless (values in info.arrays, the serialized
    model in info.data): what `dslc compile` writes without ever copying the weights into protobuf objects.
    `output`: write the model there (atomically; external data past 2 GB), the ONNX checker running on the
    written file before it replaces `output`; info.files lists what was written."""
    check_opset(opset)
    if batch is not None:
        g = bind_batch(g, batch)
    w = resolve_weights(g, weights, seed)
    # weights made here (seeded) or read from a file are ours to fold in place; a caller's dict is not
    owned = weights is None or isinstance(weights, (str, Path))
    model, info = lower_graph(g, w, opset=opset, fold_bn=fold_bn, materialize=False, fold_in_place=owned)
    if validate:
        from dslc.lowering.validate import validate as _validate
        _validate(model, info, ort=ort, checker=output is None)
    if output is not None:
        from dslc.lowering.save import save_model
        from dslc.lowering.validate import check_file
        info.files = save_model(model, output, data=info.data, arrays=info.arrays,
                                check=(lambda p: check_file(p, info)) if validate else None)
    if materialize:
        from dslc.lowering.serialize import materialize as _materialize
        _materialize(model, info.arrays)
    return model, info


def bind_batch(g: nx.DiGraph, batch: int) -> nx.DiGraph:
    from dslc.lowering.dims import batch_symbol, bind_dims
    if batch < 1:
        raise ValueError(f"--batch must be a positive integer, got {batch}")
    sym = batch_symbol(g)
    if sym is None:
        fixed = {g.nodes[n]["outputs"][0].shape[0] for n in g.graph["inputs"] if g.nodes[n]["outputs"][0].shape}
        if fixed == {batch}:
            return g
        raise ValueError(f"network `{g.graph.get('name')}` has no symbolic batch dim to fix (its inputs have "
                         f"leading dims {sorted(fixed, key=str)}); --batch needs inputs like x: [N, ...]")
    return bind_dims(g, {sym: batch})


def load_program(path, network: str | None = None):
    """Parse + check a .net file; returns (program, graph). ProgramErrors when it has errors (an unknown
    --network name is one of them); FileNotFoundError for a missing file."""
    from dslc.api import load
    program = load(str(path), network=network)
    if not program.ok or program.network is None:
        raise ProgramErrors(program)
    return program, program.graph


def compile_file(path, weights=None, batch: int | None = None, opset: int = DEFAULT_OPSET,
                 fold_bn: bool = True, seed: int = 0, network: str | None = None,
                 validate: bool = True) -> onnx.ModelProto:
    """Compile a .net file to a validated ONNX model (see compile_graph)."""
    _program, g = load_program(path, network)
    model, _info = compile_graph(g, weights=weights, batch=batch, opset=opset, fold_bn=fold_bn, seed=seed,
                                 validate=validate)
    return model
