"""docs/language.md stays true: its generated sections match the registry / train config / std library, every
op is documented, every op example and every complete ```net program in it checks, with the shapes it states."""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

import dslc
from dslc.frontend.train_config import KEYS, TRAIN_FUNCTIONS
from dslc.ops.registry import ALIASES, all_ops

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "language.md"


def _gen():
    spec = importlib.util.spec_from_file_location("gen_ops_reference", ROOT / "docs" / "gen_ops_reference.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


GEN = _gen()
TEXT = DOC.read_text()


@pytest.mark.parametrize("section", sorted(GEN.SECTIONS))
def test_generated_section_is_up_to_date(section):
    committed = GEN.split_section(TEXT, section)[1]
    fresh = GEN.split_section(GEN.regenerate(TEXT), section)[1]
    assert committed == fresh, (f"docs/language.md section {section} is out of date: "
                                f"run `python docs/gen_ops_reference.py` and commit the result")


def test_every_op_alias_train_setting_and_function_is_documented():
    ops_part = GEN.split_section(TEXT, "OPS")[1]
    for name, op in all_ops().items():
        assert f"### `{name}`\n" in ops_part, name
        assert f"`{GEN.signature(op)}`" in ops_part, name
    for alias in ALIASES:
        assert f"`{alias}`" in ops_part, alias
    train_part = GEN.split_section(TEXT, "TRAIN")[1]
    for key in list(KEYS) + ["loss"]:
        assert f"| `{key}` |" in train_part, key
    for fn in TRAIN_FUNCTIONS:
        assert f"| `{fn}` |" in train_part, fn


def _example_program(ex) -> str:
    decl = ", ".join(f"{n}: {t}" for n, t in ex.inputs)
    if ex.loss:
        first, *targets = ex.inputs
        body = "\n".join(f"    target {n}: {t}" for n, t in targets)
        return (f"network ex({first[0]}: {first[1]}) {{\n    return {first[0]}\n}}\n"
                f"train {{\n{body}\n    {ex.statement}\n}}\n")
    lhs = ex.statement.split(" = ")[0]
    if not ex.inputs:  # a source: the network still needs an input and an output that depends on it
        return f"network ex(z: f32[1]) {{\n    {ex.statement}\n    out = z + 0\n    return out\n}}\n"
    return f"network ex({decl}) {{\n    {ex.statement}\n    return {lhs}\n}}\n"


EXAMPLES = [(op, ex) for op in GEN.ops_in_order() for ex in GEN.examples(op)]


@pytest.mark.parametrize("op,ex", EXAMPLES, ids=[f"{op.name}-{i}" for i, (op, _) in enumerate(EXAMPLES)])
def test_op_example_checks_with_the_documented_shape(op, ex):
    src = _example_program(ex)
    prog = dslc.load("example.net", text=src)
    assert prog.ok, src + "\n" + prog.diagnostics.render_all()
    g = prog.graph
    made = [n for n in g if g.nodes[n]["op"] == op.name]
    assert made, src
    assert g.nodes[made[0]]["outputs"] == ex.outputs, src
    assert f"{ex.statement}    # -> {', '.join(str(t) for t in ex.outputs)}" in TEXT


NET_BLOCKS = re.findall(r"```net\n(.*?)```", TEXT, re.S)


def test_doc_has_complete_examples():
    assert len(NET_BLOCKS) >= 3


@pytest.mark.parametrize("i", range(len(NET_BLOCKS)))
def test_net_program_in_the_doc_checks_cleanly(i):
    prog = dslc.load(f"doc_example_{i}.net", text=NET_BLOCKS[i])
    assert prog.ok and not prog.diagnostics.items, NET_BLOCKS[i] + prog.diagnostics.render_all()


def test_worked_example_builds_what_the_doc_says():
    src = next(b for b in NET_BLOCKS if "network res_unet" in b)
    prog = dslc.load("res_unet.net", text=src)
    g = prog.graph
    assert {"res_block1.proj", "res_block1.proj_bn", "res_block2.proj", "middle1.conv1", "middle2.relu2",
            "up_block1.deconv1", "up_block1.concat1", "up_block1.res_block1.proj", "head",
            "loss.cross_entropy1"} <= set(g)
    assert not any(n.startswith("middle") and "proj" in n for n in g)
    assert g.nodes["up_block1.concat1"]["inputs"] == [("up_block1.deconv1", 0), ("res_block1.relu2", 0)]
    assert g.nodes["up_block1.concat1"]["outputs"][0].shape == ("N", 32, 32, 32)
    assert g.nodes["res_block2.proj"]["attrs"]["stride"] == (2, 2)
    assert g.nodes["head"]["outputs"][0].shape == ("N", 2, 32, 32)
    assert g.nodes["mask"]["role"] == "target" and g.nodes["loss.cross_entropy1"]["role"] == "loss"
    assert prog.summary().trainable_params == 63826
    assert "63,826 trainable parameters" in TEXT


def test_the_generator_check_mode_agrees(capsys):
    assert GEN.main(["--check"]) == 0
