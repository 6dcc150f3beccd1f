"""`dslc generate MODEL.onnx|FILE.net --prompt TEXT --length N`: sample text from a trained character-level model
(networks/char_gpt.net trained on `data = text(...)`) with onnxruntime, one character at a time."""
from __future__ import annotations

import argparse

NAME = "generate"
HELP = "sample text from a trained character-level model (ids [N, T] -> next-character logits [N, T, V])"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL.onnx|FILE.net",
                   help="a model written by `dslc train` (it carries its vocabulary), or a .net file with --weights")
    p.add_argument("--prompt", "-p", help="the text to continue (default: a newline, or the vocabulary's first "
                                          "character where it has no newline)")
    p.add_argument("--length", "-n", type=int, default=200, help="characters to generate (default 200)")
    p.add_argument("--temperature", "-t", type=float, default=1.0,
                   help="sampling temperature (default 1.0); 0 always takes the most likely character")
    p.add_argument("--top-k", type=int, metavar="K", help="sample only among the K most likely characters")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling (and of a .net's initial weights)")
    p.add_argument("--text", metavar="FILE.txt",
                   help="the text the model was trained on: its sorted characters are the vocabulary (default: "
                        "the model's metadata, or the .net file's `data = text(...)`)")
    p.add_argument("--network", metavar="NAME", help="for a .net file: the network to run")
    from dslc.weight_files import add_weights_arguments
    add_weights_arguments(p, "for a .net file: trained weights (e.g. the checkpoint of `dslc train`)")
    p.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is usable")


def run(args) -> int:
    import sys
    from pathlib import Path

    def fail(msg: str, code: int = 2) -> int:
        print(f"dslc generate: error: {msg}", file=sys.stderr)
        return code

    path = Path(args.model)
    if not path.is_file():
        return fail(f"cannot read {path}: {'it is a directory' if path.is_dir() else 'no such file'}")
    if args.length < 0:
        return fail(f"--length must be a non-negative integer, got {args.length}")
    if path.suffix != ".net" and (args.weights or args.network):
        return fail(f"--{'weights' if args.weights else 'network'} is for a .net file; {path} is a compiled model")
    from dslc.runtime.generate import Generator, GenerateError, vocab_of
    from dslc.train.data import DataError
    vocab = None
    if args.text is not None:
        from dslc.train.sequence_data import text_vocab
        try:
            vocab = text_vocab(args.text)
        except DataError as e:
            return fail(str(e).removeprefix("text: "))
    if path.suffix == ".net":
        source = _compile(args, path)
        if isinstance(source, int):
            return source
        source, train_vocab = source
        vocab = vocab or train_vocab
    else:
        source = str(path)
    from dslc.runtime.session import create_session
    try:
        session, _provider = create_session(source, prefer_gpu=not args.cpu)
    except Exception as e:  # a file onnxruntime refuses (not a model, a hand-made model)
        return fail(f"onnxruntime cannot load {path}: {str(e).strip().splitlines()[-1]}")
    vocab = vocab or vocab_of(session)
    if vocab is None:
        why = ("its train section reads no text(...) data" if path.suffix == ".net"
               else "it carries no vocabulary (only `dslc train` on text data stores one)")
        return fail(f"{path}: {why}: give the text the model was trained on with --text FILE")
    prompt = args.prompt if args.prompt is not None else "\n" if "\n" in vocab else vocab[0]
    try:
        gen = Generator(session, vocab)
        text = gen.generate(prompt, args.length, temperature=args.temperature, seed=args.seed,
                            top_k=args.top_k)
    except GenerateError as e:
        return fail(str(e))
    sys.stdout.write(prompt + text + ("" if text.endswith("\n") else "\n"))
    return 0


def _compile(args, path):
    """(serialized model, the vocabulary of the train section's text data or None), or an exit code after
    printing why not."""
    import sys
    from pathlib import Path

    from dslc.lowering.compile import compile_graph, load_program
    from dslc.lowering.errors import report
    from dslc.weight_files import WeightsFileError, weights_source
    if args.weights and not Path(args.weights).is_file():
        print(f"dslc generate: error: weights file {args.weights} not found", file=sys.stderr)
        return 2
    try:
        weights = weights_source(args)
    except WeightsFileError as e:
        print(f"dslc generate: error: {e}", file=sys.stderr)
        return 2
    try:
        _prog, g = load_program(path, args.network)
        _model, info = compile_graph(g, weights=weights, seed=args.seed, materialize=False)
    except Exception as e:  # noqa: BLE001 - report() re-raises what is not the user's
        return report(e, path)
    data = (g.graph.get("train") or {}).get("data")
    vocab = None
    if isinstance(data, dict) and data.get("name") == "text":
        from dslc.train.data import DataError
        from dslc.train.sequence_data import text_vocab
        try:
            vocab = text_vocab(data.get("path"))
        except DataError as e:
            print(f"dslc generate: error: the train section's data: {e}", file=sys.stderr)
            return 2
    if weights is None:
        print(f"dslc generate: note: no --weights: sampling from the untrained (seed {args.seed}) weights of "
              f"{path}", file=sys.stderr)
    if info.data is None:
        print("dslc generate: error: the model is too large to sample from in memory (past 2 GB)", file=sys.stderr)
        return 2
    return info.data, vocab
