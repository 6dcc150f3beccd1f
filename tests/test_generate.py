"""`dslc generate`: sampling text from a character-level model trained by `dslc train` on text data.

A tiny causal decoder learns a text in which every digit is followed by the next one (mod 10), a second's work;
the generated text must then continue any prompt that way, which it can only do when the ids the model was
trained with map back to the right characters."""
import onnx
import pytest

from dslc.cli import main
from dslc.train.sequence_data import VOCAB_KEY

NET = """import std.transformer

network digits_gpt(tokens: i64[N, 16], vocab = 10, dim = 16) {
    x = tokens |> embedding(vocab, dim) as token_embedding
    h = x + param([1, tokens.shape[1], dim], init="normal", std=0.02) as position_embedding
    logits = h |> decoder(1, 2, 32) |> linear(vocab) as head
    return logits
}

train {
    target next: i64[N, 16]
    loss = cross_entropy(logits, next)
    optimizer = adam(lr=1e-2)
    data = text("digits.txt", seq_len=16, stride=3)
    epochs = 2
    batch_size = 32
}
"""
CYCLE = "0123456789" * 10


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("generate")
    (d / "digits.txt").write_text("0123456789" * 200)
    (d / "digits.net").write_text(NET.replace("digits.txt", str(d / "digits.txt")))
    assert main(["train", str(d / "digits.net"), "-o", str(d / "digits.onnx"), "-q"]) == 0
    return d


def generate(capsys, *args):
    code = main(["generate", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_training_stores_the_vocabulary(trained):
    meta = {p.key: p.value for p in onnx.load(str(trained / "digits.onnx")).metadata_props}
    assert meta[VOCAB_KEY] == "0123456789"


def test_greedy_text_continues_the_learned_pattern(trained, capsys):
    code, out, _ = generate(capsys, trained / "digits.onnx", "--prompt", "345", "--length", 40, "--temperature", 0)
    assert code == 0
    assert out == "345" + CYCLE[6:6 + 40] + "\n"
    # a prompt longer than the model's 16-position context slides the window
    code, out, _ = generate(capsys, trained / "digits.onnx", "-p", CYCLE[:25], "-n", 12, "-t", 0)
    assert out.strip() == CYCLE[:37]


def test_sampling_is_deterministic_for_a_seed(trained, capsys):
    runs = {}
    for seed in (1, 1, 2):
        code, out, _ = generate(capsys, trained / "digits.onnx", "-p", "7", "-n", 60, "-t", 3.0, "--seed", seed)
        assert code == 0
        text = out.rstrip("\n")
        assert len(text) == 61 and set(text) <= set("0123456789")
        runs.setdefault(seed, []).append(text)
    assert runs[1][0] == runs[1][1]
    assert runs[2][0] != runs[1][0]   # at temperature 3 the samples leave the cycle, differently per seed
    code, out, _ = generate(capsys, trained / "digits.onnx", "-p", "7", "-n", 30, "--top-k", 1, "--seed", 5)
    assert out.strip() == CYCLE[7:7 + 31]   # top-1 sampling is the greedy choice


def test_a_net_file_with_its_checkpoint_samples_the_same(trained, capsys):
    args = ["-p", "12", "-n", 30, "--seed", 4]
    _, from_onnx, _ = generate(capsys, trained / "digits.onnx", *args)
    code, from_net, err = generate(capsys, trained / "digits.net", "--weights", trained / "digits.ckpt.npz", *args)
    assert code == 0, err
    assert from_net == from_onnx   # the vocabulary comes from the train section's text(...)


@pytest.mark.parametrize("args, message", [
    (["-p", "3x"], "the prompt's character 'x' (position 1) is not in the model's vocabulary of 10 characters"),
    (["-p", ""], "the prompt is empty"),
    (["-n", -1], "--length must be a non-negative integer, got -1"),
    (["-t", -0.5], "--temperature must be >= 0"),
    (["--top-k", 0], "--top-k must be a positive integer, got 0"),
    (["--weights", "w.npz"], "--weights is for a .net file"),
])
def test_bad_arguments_are_diagnostics(trained, capsys, args, message):
    code, out, err = generate(capsys, trained / "digits.onnx", *args)
    assert code == 2 and out == ""
    assert err.startswith("dslc generate: error: ") and message in err and "Traceback" not in err


def test_models_that_cannot_be_sampled_are_diagnostics(trained, tmp_path, capsys):
    compiled = tmp_path / "plain.onnx"   # `dslc compile` writes no vocabulary
    assert main(["compile", str(trained / "digits.net"), "-o", str(compiled), "-q"]) == 0
    code, _, err = generate(capsys, compiled)
    assert code == 2 and "it carries no vocabulary" in err and "--text FILE" in err
    other = tmp_path / "other.txt"
    other.write_text("abcdefghijklmnopqrstuvwxyz" * 50)
    code, _, err = generate(capsys, compiled, "--text", other)
    assert code == 2 and "the model predicts 10 tokens but the vocabulary has 26 characters" in err
    code, out, _ = generate(capsys, compiled, "--text", trained / "digits.txt", "-n", 5)
    assert code == 0 and len(out.strip()) == 6   # the right text makes the compiled model usable
    mlp = tmp_path / "mlp.onnx"
    assert main(["compile", "networks/perceptron.net", "-o", str(mlp), "-q"]) == 0
    code, _, err = generate(capsys, mlp, "--text", other)
    assert code == 2 and "one integer input of token ids [N, T]" in err
    code, _, err = generate(capsys, "networks/lstm_classifier.net")
    assert code == 2 and "its train section reads no text(...) data" in err
    code, _, err = generate(capsys, tmp_path / "missing.onnx")
    assert code == 2 and "no such file" in err


def test_a_half_precision_model_keeps_its_vocabulary(trained, capsys):
    """--precision fp16 rewrites the exported model (calibrated on the per-position targets of the text data):
    the metadata survives and the model still continues the pattern."""
    half = trained / "digits16.onnx"
    assert main(["train", str(trained / "digits.net"), "-o", str(half), "-q", "--precision", "fp16"]) == 0
    capsys.readouterr()
    code, out, err = generate(capsys, half, "-p", "89", "-n", 12, "-t", 0)
    assert code == 0, err
    assert out.strip() == CYCLE[8:8 + 14]
