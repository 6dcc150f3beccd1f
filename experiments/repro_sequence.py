"""The sequence experiments of docs/REPRODUCTION.md: LSTM against a plain RNN on the adding problem, and the
character-level GPT on the shipped corpus against unigram and bigram models (run by reproduce.py)."""
from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path

import numpy as np
from repro_common import Section, _plot_curves, graph, sci

import dslc
from dslc.train import data as D, sequence_data as S

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _test_losses(r) -> list[float]:
    """The test split's loss after each epoch (the trainer evaluates it when there is no validation split)."""
    return [h["val_loss"] for h in r.history if h.get("kind") == "epoch"]


def adding(quick: bool, out: Path) -> Section:
    s = Section("6. The adding problem: LSTM against a plain RNN")
    length, hidden, batch, lr, clip = 50, 64, 50, 1e-3, 1.0
    n, epochs = (200, 2) if quick else (10000, 30)
    ds = S.adding(n=n, length=length, seed=0)
    curves, rows = {}, []
    for cell, label in (("lstm", "LSTM"), ("rnn", "tanh RNN")):
        path = HERE / "nets" / "adding_rnn.net"
        g = graph(path, cell=cell, hidden=hidden)
        params = dslc.load(path, params={"cell": cell, "hidden": hidden}).summary().trainable_params
        t = time.perf_counter()
        r = dslc.train(g, data=ds, epochs=epochs, lr=lr, batch_size=batch, seed=0, clip=clip, quiet=True)
        secs = time.perf_counter() - t
        curves[label] = _test_losses(r)
        first_below = next((i + 1 for i, v in enumerate(curves[label]) if v < 0.01), None)
        rows.append([label, f"{params:,}", sci(curves[label][0]), sci(curves[label][-1]),
                     first_below if first_below else "never", f"{secs / epochs:.1f}"])
    baseline = float(np.mean((ds.test.ys[0] - ds.train.ys[0].mean()) ** 2))
    steps = epochs * -(-len(ds.train) // batch)
    s.add(f"Data: `adding(n={n}, length={length}, seed=0)` (dslc/train/sequence_data.py): {len(ds.train):,} "
          f"training and {len(ds.test):,} test sequences of {length} steps (a value in [0, 1], a marker that is 1 "
          "once in each half); the target is the sum of the two marked values. Network: "
          f"`experiments/nets/adding_rnn.net`, one recurrent layer of width {hidden} (its last state) and a "
          f"linear head, `cell=\"lstm\"` or `cell=\"rnn\"` (tanh). Training, the same for both: MSE, Adam lr "
          f"{lr:g}, batch {batch}, gradients clipped to norm {clip:g}, {epochs} epoch(s) ({steps:,} steps), seed 0.",
          "")
    s.table(["cell", "weights", "test MSE after epoch 1", "final test MSE", "first epoch below 0.01",
             "s/epoch"], rows)
    lstm, rnn = curves["LSTM"][-1], curves["tanh RNN"][-1]
    s.add(f"Predicting the training targets' mean scores {baseline:.3f} on the test set (1/6 in expectation). "
          f"The LSTM ends at {sci(lstm)} ({lstm / baseline:.1e} of that baseline), the plain RNN of the same "
          f"width at {sci(rnn)} ({rnn / baseline:.2f} of it)." + (
              " The RNN never gets below the baseline: the error signal from the target has to pass back through "
              "25–50 tanh steps to reach the marked values and vanishes on the way, while the LSTM's additive "
              "cell state carries it — the result that made the LSTM famous (Hochreiter & Schmidhuber 1997, "
              "experiment 4)." if lstm < 0.01 and rnn > 0.5 * baseline else ""), "")
    _plot_curves(out / "adding_curves.png", curves, "test MSE (adding problem, T = 50)", log=True)
    s.add("![adding problem test MSE per epoch](reproduction/adding_curves.png)", "")
    return s


def _ngram_nats(ds) -> tuple[float, float]:
    """Test nats per character of add-one smoothed unigram and bigram models counted on the training text (its
    first 90 %), scored on the same targets as the network: every position of every test window."""
    vocab = ds.info["vocab"]
    index = {c: i for i, c in enumerate(vocab)}
    text = Path(ds.info["path"]).read_text(encoding="utf-8")
    ids = np.array([index[c] for c in text[:int(len(text) * 0.9)]])
    uni = np.bincount(ids, minlength=len(vocab)) + 1.0
    uni /= uni.sum()
    bi = np.ones((len(vocab), len(vocab)))
    np.add.at(bi, (ids[:-1], ids[1:]), 1.0)
    bi /= bi.sum(axis=1, keepdims=True)
    prev, nxt = ds.test.xs[0].ravel(), ds.test.ys[0].ravel()
    return float(-np.log(uni[nxt]).mean()), float(-np.log(bi[prev, nxt]).mean())


def char_gpt(quick: bool, out: Path) -> Section:
    s = Section("7. A character-level GPT on the shipped corpus")
    seq_len, batch, lr, stride = 64, 32, 3e-3, 32
    dims = dict(dim=32, depth=1, heads=2, mlp_dim=64) if quick else dict(dim=64, depth=2, heads=4, mlp_dim=256)
    epochs = 1 if quick else 6
    ds = S.text(seq_len=seq_len, stride=stride)
    if quick:
        ds = D.Dataset(ds.name, ds.train.take(np.arange(128)), ds.test.take(np.arange(64)), task=ds.task,
                       num_classes=ds.num_classes, info=ds.info)
    vocab = ds.num_classes
    path = ROOT / "networks" / "char_gpt.net"
    params = {"vocab": vocab, **dims}
    g = graph(path, **params)
    n_weights = dslc.load(path, params=params).summary().trainable_params
    default_weights = dslc.load(path).summary().trainable_params
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "char_gpt.onnx"
        t = time.perf_counter()
        r = dslc.train(g, data=ds, epochs=epochs, lr=lr, batch_size=batch, seed=0, clip=1.0, quiet=True,
                       output=str(onnx_path), artefacts=False)
        secs = time.perf_counter() - t
        sample = _sample(onnx_path, prompt="The network ", length=120 if quick else 400)
    curve = _test_losses(r)
    unigram, bigram = _ngram_nats(ds)
    settings = ", ".join(f"{k}={v}" for k, v in params.items())
    s.add(f"Data: `text(seq_len={seq_len}, stride={stride})` — the corpus that ships in the package "
          f"(dslc/corpus/dslc_docs.txt, dslc's own documentation, {ds.info['characters']:,} characters, "
          f"{vocab} distinct), first 90 % for training ({len(ds.train):,} windows), last 10 % for testing "
          f"({len(ds.test):,}). Network: `networks/char_gpt.net` with {settings} ({n_weights:,} weights; the "
          f"file's defaults are a {default_weights:,}-weight model). Training: next-character cross-entropy at every position, "
          f"Adam lr {lr:g}, batch {batch}, gradients clipped to norm 1, {epochs} epoch(s), seed 0, "
          f"{secs:.0f} s.", "")
    rows = [["unigram (character frequencies of the training text, add-one)", f"{unigram:.3f}"],
            ["bigram (previous character, add-one)", f"{bigram:.3f}"]]
    rows += [[f"char GPT after epoch {e}", f"{v:.3f}"] for e, v in enumerate(curve, 1)]
    s.table(["model", "test nats per character"], rows)
    train_loss = [h["loss"] for h in r.history if h.get("kind") == "epoch"][-1]
    s.add(f"The GPT ends at {curve[-1]:.3f} nats per character, {unigram - curve[-1]:+.3f} against the unigram "
          f"model and {bigram - curve[-1]:+.3f} against the bigram model (positive: the GPT is better)" + (
              f"; its training loss over the last epoch is {train_loss:.3f}: with {len(ds.train):,} windows of "
              "one small corpus the model fits the training text better than it generalises to the held-out last "
              "tenth" if train_loss < curve[-1] - 0.1 else "") + ". A sample, "
          "`dslc generate MODEL.onnx --prompt \"The network \" --length "
          f"{len(sample) - len('The network ')} --temperature 0.8 --seed 0` on the exported model (the vocabulary "
          "travels in its metadata):", "", fence(sample), sample, fence(sample), "")
    return s


def fence(text: str) -> str:
    """A code fence longer than any run of backticks in `text` (generated text has runs of its own)."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _sample(onnx_path: Path, prompt: str, length: int) -> str:
    from dslc.runtime.generate import Generator, vocab_of
    from dslc.runtime.session import create_session
    session, _ = create_session(str(onnx_path), prefer_gpu=False)
    return prompt + Generator(session, vocab_of(session)).generate(prompt, length, temperature=0.8, seed=0)
