"""`dslc train FILE.net -o trained.onnx`: train with the numpy executor (or PyTorch: --engine torch), export the
trained model as ONNX."""
from __future__ import annotations

import argparse

NAME = "train"
HELP = "train a network with its train { } section (flags override it); write the trained ONNX model"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE.net")
    p.add_argument("-o", "--output", metavar="OUT.onnx",
                   help="trained model (default: NETWORK_trained.onnx); the metrics log OUT.metrics.jsonl, the "
                        "plot OUT.png and the checkpoint OUT.ckpt.npz go beside it")
    p.add_argument("--network", help="train this network of the file")
    p.add_argument("--data", metavar="SPEC",
                   help="training data: mnist, mnist:DIR, linear2d, nonseparable2d, rosenbrock, sinxsiny "
                        "(e.g. linear2d:n=500,seed=1), FILE.npz, FILE.csv or csv:FILE,target=COL")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="learning rate")
    p.add_argument("--optimizer", choices=["sgd", "adam", "adamw", "lbfgs", "levenberg_marquardt"])
    p.add_argument("--seed", type=int, help="seed for initial weights, shuffling and dropout")
    p.add_argument("--clip", type=float, help="clip gradients to this global L2 norm")
    p.add_argument("--val-split", type=float, help="hold out this fraction of the training data for validation")
    p.add_argument("--checkpoint-every", type=int, metavar="STEPS",
                   help="also checkpoint every STEPS optimiser steps (checkpoints are written every epoch)")
    p.add_argument("--checkpoint", metavar="PATH", help="checkpoint file (default OUT.ckpt.npz)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="CKPT",
                   help="continue from the checkpoint (default OUT.ckpt.npz) exactly where it stopped")
    from dslc.weight_files import add_weights_arguments
    add_weights_arguments(p, "start from these weights instead of a seeded initialisation")
    p.add_argument("--fold-bn", action=argparse.BooleanOptionalAction, default=True,
                   help="in the exported model, fold each batchnorm that follows a conv into the conv (default: "
                        "on, as `dslc compile`); --no-fold-bn keeps BatchNormalization nodes")
    from dslc.commands.compile import add_precision_arguments
    add_precision_arguments(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or epoch lines")
    g = p.add_argument_group("engine", "who runs the steps (docs/training.md: when to use which)")
    g.add_argument("--engine", choices=["numpy", "torch"], default="numpy",
                   help="numpy: dslc's executor (default, no PyTorch needed); torch: PyTorch (pip install "
                        "'dslc[torch]'), CPU or CUDA, DistributedDataParallel")
    g.add_argument("--device", metavar="DEV", help="torch engine: cpu, cuda, cuda:N or auto (default: CUDA when "
                                                   "torch sees one, else the CPU)")
    g.add_argument("--amp", action="store_true", help="torch engine on CUDA: bf16 autocast (mixed precision)")
    g.add_argument("--nproc", type=int, metavar="N",
                   help="torch engine: train in N processes with DistributedDataParallel (gloo on the CPU, NCCL "
                        "on CUDA); the global batch is split between them. Under torchrun, leave it out")


def run(args) -> int:
    import sys
    from pathlib import Path

    def fail(msg: str, code: int) -> int:
        print(f"dslc train: error: {msg}", file=sys.stderr)
        return code

    from dslc.commands.compile import precision_usage_error
    if precision_usage_error(args):
        return fail(precision_usage_error(args), 2)
    path = Path(args.file)
    if not path.is_file():
        return fail(f"cannot read {path}: no such file", 2)
    for flag in ("epochs", "batch_size", "checkpoint_every"):
        v = getattr(args, flag)
        if v is not None and v < (0 if flag == "checkpoint_every" else 1):
            return fail(f"--{flag.replace('_', '-')} must be a positive integer, got {v}", 2)
    if args.lr is not None and not args.lr > 0:
        return fail(f"--lr must be positive, got {args.lr}", 2)
    if args.val_split is not None and not 0 <= args.val_split < 1:
        return fail(f"--val-split must be a fraction in [0, 1), got {args.val_split}", 2)

    if args.engine != "torch" and (args.device or args.amp or args.nproc):
        flag = "--device" if args.device else "--amp" if args.amp else "--nproc"
        return fail(f"{flag} is an option of the torch engine: add --engine torch", 2)
    if args.engine == "torch":
        try:
            import torch  # noqa: F401
        except ImportError:
            from dslc.train.engines import TORCH_INSTALL_HINT
            return fail(TORCH_INSTALL_HINT, 2)
    if args.nproc is not None:
        from dslc.train import torch_distributed as TD
        if args.nproc < 1:
            return fail(f"--nproc must be a positive integer, got {args.nproc}", 2)
        if TD.current() is not None:
            return fail("--nproc under torchrun: torchrun already started the processes; leave --nproc out", 2)
        if args.nproc > 1:
            return TD.launch(_without_nproc(args._argv), args.nproc)

    import dslc
    from dslc.train import data as D
    from dslc.train.engines import EngineUnavailable
    from dslc.train.executor import ExecutorError
    from dslc.train.loop import ExportError, Settings, TrainError, default_paths, run_training
    from dslc.train.optim import OptimizerError

    try:
        program = dslc.load(str(path), network=args.network)
    except (OSError, UnicodeDecodeError) as e:
        return fail(f"cannot read {path}: {e}", 2)
    if program.diagnostics.items:
        print(program.diagnostics.render_all(), file=sys.stderr)
    if not program.ok:
        return 1
    if args.network and args.network not in program.networks:
        return fail(f"no network named `{args.network}` in {path} (networks: {', '.join(program.networks)})", 2)
    g = program.networks[args.network] if args.network else program.graph
    paths = default_paths(args.output, g)
    if args.checkpoint:
        paths["checkpoint"] = Path(args.checkpoint)
    resume = args.resume
    if resume is True and args.checkpoint:
        resume = args.checkpoint
    if resume and not Path(paths["checkpoint"] if resume is True else resume).is_file():
        return fail(f"no checkpoint at {paths['checkpoint'] if resume is True else resume} to resume from", 2)
    weights = None
    if args.weights:
        from dslc.lowering.errors import WeightsMismatch
        from dslc.weight_files import WeightsFileError, load_for_graph, weights_source
        try:
            weights = load_for_graph(g, weights_source(args))
        except (OSError, WeightsFileError) as e:
            return fail(f"cannot read weights {args.weights}: {e}", 2)
        except WeightsMismatch as e:
            return fail(f"{e} (network `{g.graph.get('name')}`)", 1)
    try:
        s = Settings.resolve(g, data=args.data, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             optimizer=args.optimizer, seed=args.seed, clip=args.clip, val_split=args.val_split,
                             checkpoint_every=args.checkpoint_every)
        result = run_training(g, s, paths=paths, resume=resume, quiet=args.quiet, weights=weights,
                              fold_bn=args.fold_bn, engine=args.engine, device=args.device, amp=args.amp)
    except EngineUnavailable as e:
        return fail(str(e), 2)
    except ExportError as e:
        return fail(str(e), 3)
    except (TrainError, D.DataError, OptimizerError, ExecutorError) as e:
        return fail(str(e), 1)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    if result.interrupted:
        return 130
    if args.precision != "fp32" and _is_writer():
        return _reduce_export(args, g, result, paths["onnx"])
    return 0


def _reduce_export(args, g, result, path) -> int:
    """Replace the exported fp32 model with its fp16 / int8 version, calibrated on the training data."""
    import sys
    from pathlib import Path

    from dslc.lowering.calibration import from_dataset, precision_data
    from dslc.lowering.precision import PrecisionError, reduce_model
    from dslc.weights import atomic_write_bytes
    try:
        data = (precision_data(g, args.calibration) if args.calibration is not None
                else from_dataset(result.dataset, g))
        reduced, comparison = reduce_model(Path(path).read_bytes(), args.precision, data,
                                           network=f"network `{g.graph.get('name')}`", fp16_io=args.fp16_io)
        atomic_write_bytes(path, reduced)
    except PrecisionError as e:
        print(f"dslc train: error: {e} (the fp32 model is in {path})", file=sys.stderr)
        return e.code
    print(f"wrote {path} as {args.precision}\n  {comparison.describe()}")
    return 0


def _without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def _is_writer() -> bool:
    """Rank 0, or no process group (only rank 0 writes artefacts)."""
    import os
    return os.environ.get("RANK", "0") == "0" or os.environ.get("WORLD_SIZE", "1") == "1"
