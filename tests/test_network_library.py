"""The network library (networks/*.net): every file checks cleanly, its header states a reference parameter
count that dslc reproduces, and the summary of a big network stays readable at --depth 2."""
import re
import time
from pathlib import Path

import pytest

from dslc.api import load
from dslc.cli import main

ROOT = Path(__file__).resolve().parents[1]
NETWORKS = sorted((ROOT / "networks").glob("*.net"))
REFERENCE = re.compile(r"Reference parameter count:\s*([\d,]+)")

# The library the course relies on; a file missing here is a deleted network, not a skipped test.
EXPECTED = {
    "perceptron", "softmax_regression", "mlp_rosenbrock", "mlp_classifier", "mlp_mnist", "resmlp", "lenet5",
    "allconv_mnist", "alexnet", "vgg16", "resnet18", "resnet50", "unet", "vit", "vit_b16", "mlp_mixer",
    "mlp_mixer_b16", "transunet", "googlenet", "densenet121", "resnext50_32x4d", "wide_resnet50_2", "nin", "highway",
    "mobilenet_v2", "efficientnet_b0", "convnext_tiny", "lstm_classifier", "text_cnn", "char_gpt",
}


@pytest.fixture(scope="module")
def programs():
    return {p.stem: load(p) for p in NETWORKS}


def test_library_is_complete():
    assert EXPECTED <= {p.stem for p in NETWORKS}


@pytest.mark.parametrize("path", NETWORKS, ids=lambda p: p.stem)
def test_checks_cleanly(programs, path):
    prog = programs[path.stem]
    assert not prog.diagnostics.items, prog.diagnostics.render_all()
    assert prog.ok
    assert prog.network == path.stem, "name each file after its network"


@pytest.mark.parametrize("path", NETWORKS, ids=lambda p: p.stem)
def test_reference_parameter_count(programs, path):
    prog = programs[path.stem]
    doc = prog.doc
    for field in ("Source:", "Input:"):
        assert field in doc, f"{path.name}: the header has no `{field}` line"
    found = REFERENCE.findall(doc)
    assert len(found) == 1, f"{path.name}: the header must state `Reference parameter count: N` once"
    reference = int(found[0].replace(",", ""))
    assert prog.summary().trainable_params == reference


def test_check_all_is_fast():
    t0 = time.perf_counter()
    for p in NETWORKS:
        load(p)
    assert time.perf_counter() - t0 < 10


def test_resnet50_depth2_summary_is_readable(capsys):
    assert main(["check", "--depth", "2", str(ROOT / "networks" / "resnet50.net")]) == 0
    out = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(out) if line.startswith("━"))
    end = next(i for i, line in enumerate(out) if line.startswith("inputs"))
    table = out[start + 1:end]
    assert 15 <= len(table) <= 40, "\n".join(out)
    assert any(line.startswith("layer3.block6 ") for line in table)
    assert not any(line.startswith("layer1.block1.") for line in table)


def test_repeat_alias_after_a_call_in_the_range_names_the_repeat(programs):
    # allconv_mnist writes `repeat i in 0..len(widths) as stage { ... }`: `as stage` names the iterations
    g = programs["allconv_mnist"].graph
    assert "stage1.downsample" in g and "stage2.downsample" in g
