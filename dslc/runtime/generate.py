"""Autoregressive sampling from a trained character-level model with onnxruntime (`dslc generate`).

The model takes integer ids [N, T] and returns next-token logits [N, T, V] at every position (networks/char_gpt.net,
or an LSTM over an embedding). The vocabulary maps ids to characters: the sorted characters of the training text
(dslc.train.sequence_data.text), which `dslc train` stores in the exported model's metadata under VOCAB_KEY.

With a fixed context (`tokens: i64[N, 64]`) the last T characters fill the window from the left and the rest is
padding whose logits are never read: exact for causal models (a masked decoder, a left-to-right recurrence),
where position t sees only positions <= t. With a symbolic T the whole text so far is fed at every step.
"""
from __future__ import annotations

import numpy as np

from dslc.train.sequence_data import VOCAB_KEY


class GenerateError(Exception):
    """A model, vocabulary or argument that cannot be sampled from: a usage error (exit code 2)."""


def vocab_of(session) -> str | None:
    """The vocabulary `dslc train` stored in the model's metadata, or None."""
    return session.get_modelmeta().custom_metadata_map.get(VOCAB_KEY) or None


class Generator:
    """Samples characters from an onnxruntime session over a model of the shape above."""

    def __init__(self, session, vocab: str):
        if len(set(vocab)) != len(vocab) or not vocab:
            raise GenerateError("the vocabulary must be a non-empty string of distinct characters")
        self.session, self.vocab = session, vocab
        self.index = {c: i for i, c in enumerate(vocab)}
        inputs = session.get_inputs()
        if len(inputs) != 1 or inputs[0].type not in ("tensor(int64)", "tensor(int32)") or len(inputs[0].shape) != 2:
            got = ", ".join(f"{i.name}: {i.type}{list(i.shape)}" for i in inputs)
            raise GenerateError(f"generate needs a model with one integer input of token ids [N, T]; this one has "
                                f"{got or 'no inputs'}")
        self.input = inputs[0].name
        self.dtype = np.int64 if inputs[0].type == "tensor(int64)" else np.int32
        batch, ctx = inputs[0].shape
        self.batch = batch if isinstance(batch, int) else 1
        self.context = ctx if isinstance(ctx, int) else None
        outs = [o for o in session.get_outputs() if len(o.shape) == 3]
        if not outs:
            raise GenerateError("generate needs a model whose output is next-token logits [N, T, V]; this one "
                                "returns " + ", ".join(f"{o.name}{list(o.shape)}" for o in session.get_outputs()))
        self.output = outs[0].name
        classes = outs[0].shape[2]
        if isinstance(classes, int) and classes != len(vocab):
            raise GenerateError(f"the model predicts {classes} tokens but the vocabulary has {len(vocab)} "
                                f"characters: give the text the model was trained on (--text FILE)")

    def encode(self, text: str) -> list[int]:
        for pos, c in enumerate(text):
            if c not in self.index:
                raise GenerateError(f"the prompt's character {c!r} (position {pos}) is not in the model's "
                                    f"vocabulary of {len(self.vocab)} characters")
        return [self.index[c] for c in text]

    def next_logits(self, ids: list[int]) -> np.ndarray:
        if self.context is None:
            window = np.asarray(ids, self.dtype)
            feed = np.broadcast_to(window, (self.batch, len(window)))
        else:
            window = np.asarray(ids[-self.context:], self.dtype)
            feed = np.zeros((self.batch, self.context), self.dtype)   # padding after the window: never read
            feed[:, :len(window)] = window
        try:
            (logits,) = self.session.run([self.output], {self.input: np.ascontiguousarray(feed)})
        except Exception as e:  # onnxruntime's own errors (a model that does not take this window)
            msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            raise GenerateError(f"onnxruntime failed to run the model on a window of {feed.shape[1]} ids: "
                                f"{msg}") from None
        return np.asarray(logits[0, len(window) - 1], np.float64)

    def generate(self, prompt: str, length: int, temperature: float = 1.0, seed: int = 0,
                 top_k: int | None = None) -> str:
        """`length` characters that follow `prompt`: sampled from softmax(logits / temperature) (only the
        top_k most likely with top_k), the most likely one at temperature 0. Same seed, same text."""
        if length < 0:
            raise GenerateError(f"--length must be a non-negative integer, got {length}")
        if not temperature >= 0:
            raise GenerateError(f"--temperature must be >= 0 (0: always the most likely character), got {temperature}")
        if top_k is not None and top_k < 1:
            raise GenerateError(f"--top-k must be a positive integer, got {top_k}")
        if not prompt:
            raise GenerateError("the prompt is empty: give at least one character to start from (--prompt)")
        ids = self.encode(prompt)
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(length):
            logits = self.next_logits(ids)
            if logits.shape != (len(self.vocab),):
                raise GenerateError(f"the model predicts {logits.shape[-1]} tokens but the vocabulary has "
                                    f"{len(self.vocab)} characters")
            if temperature == 0:
                nxt = int(np.argmax(logits))
            else:
                z = logits / temperature
                if top_k is not None and top_k < len(z):
                    z = np.where(z >= np.partition(z, -top_k)[-top_k], z, -np.inf)
                p = np.exp(z - z.max())
                nxt = int(rng.choice(len(p), p=p / p.sum()))
            ids.append(nxt)
            out.append(self.vocab[nxt])
        return "".join(out)
