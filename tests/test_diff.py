"""`dslc diff`: identical networks, a widened layer (figures checked against `dslc check`'s), an added block, a
renamed block paired as a rename, the --json shape, the exit codes, and errors in either file as diagnostics."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from dslc.api import load
from dslc.cli import main
from dslc.netdiff import diff_graphs

ROOT = Path(__file__).resolve().parents[1]

SMALL = """\
block unit(x, c) {
    y = x |> conv2d(c, 3, padding=1) |> relu
    return y
}

network small(x: f32[N, 3, 32, 32]) {
    h = x |> unit(8) as stem |> unit(16) as body
    logits = h |> global_avgpool |> linear(10) as fc
    return logits
}
"""


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def diff_json(capsys, *argv):
    code = main(["diff", *argv, "--json"])
    out = json.loads(capsys.readouterr().out)
    return code, out


def check_json(capsys, path):
    assert main(["check", path, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def block_params(path, depth=1):
    """Per-block trainable parameters as `dslc check --depth` sums them."""
    return {r.name: r.params for r in load(path).summary(depth).rows}


def test_identical_files_have_no_changes_and_exit_0(tmp_path, capsys):
    a = write(tmp_path, "a.net", SMALL)
    b = write(tmp_path, "b.net", SMALL.replace("    h = x", "    # same network, another comment\n    h = x"))
    code, d = diff_json(capsys, a, b)
    assert code == 0 and d["ok"] and d["identical"]
    assert d["layers"] == [] and d["blocks"] == [] and d["renamed"] == []
    assert d["totals"]["params"]["delta"] == 0 and d["totals"]["layers"]["unchanged"] == 7
    assert main(["diff", a, b]) == 0
    assert "no structural differences" in capsys.readouterr().out


def test_widened_layer_changes_attribute_shapes_and_params(tmp_path, capsys):
    a = write(tmp_path, "a.net", SMALL)
    b = write(tmp_path, "b.net", SMALL.replace("unit(16) as body", "unit(24) as body"))
    code, d = diff_json(capsys, a, b)
    assert code == 1 and not d["identical"]
    rows = {r["name"]: r for r in d["layers"]}
    assert set(rows) == {"body.conv1", "body.relu1", "gap1", "fc"}
    assert all(r["status"] == "changed" for r in rows.values())
    conv = rows["body.conv1"]["changes"]
    assert conv["attrs"] == {"out": [16, 24]}
    assert conv["outputs"] == [["f32[N, 16, 32, 32]"], ["f32[N, 24, 32, 32]"]]
    assert conv["weights"] == {"weight": [[16, 8, 3, 3], [24, 8, 3, 3]], "bias": [[16], [24]]}
    assert rows["body.conv1"]["params"] == {"a": 16 * 8 * 9 + 16, "b": 24 * 8 * 9 + 24, "delta": 8 * 8 * 9 + 8}
    assert rows["fc"]["changes"] == {"weights": {"weight": [[10, 16], [10, 24]]}}  # in features follow the width
    assert "attrs" not in rows["gap1"]["changes"] and rows["gap1"]["changes"]["outputs"][1] == ["f32[N, 24]"]
    # totals and per-block figures are `dslc check`'s
    ca, cb = check_json(capsys, a), check_json(capsys, b)
    assert d["totals"]["params"] == {"a": ca["trainable_params"], "b": cb["trainable_params"],
                                     "delta": cb["trainable_params"] - ca["trainable_params"]}
    assert d["totals"]["macs"]["delta"] == cb["macs"] - ca["macs"]
    pa, pb = block_params(a), block_params(b)
    blocks = {r["name"]: r for r in d["blocks"]}
    assert list(blocks) == ["body", "gap1", "fc"]
    for name in ("body", "fc"):
        assert blocks[name]["params"] == {"a": pa[name], "b": pb[name], "delta": pb[name] - pa[name]}
        assert blocks[name]["changed"] == (2 if name == "body" else 1)


def test_added_block(tmp_path, capsys):
    a = write(tmp_path, "a.net", SMALL)
    b = write(tmp_path, "b.net", SMALL.replace("unit(16) as body", "unit(16) as body |> unit(16) as extra"))
    code, d = diff_json(capsys, a, b)
    assert code == 1
    added = [r["name"] for r in d["layers"] if r["status"] == "added"]
    assert added == ["extra.conv1", "extra.relu1"]
    gap = next(r for r in d["layers"] if r["name"] == "gap1")
    assert gap["changes"] == {"inputs": [[["body.relu1", 0]], [["extra.relu1", 0]]]}   # rewired, same shape
    extra = next(r for r in d["blocks"] if r["name"] == "extra")
    assert extra["added"] == 2 and extra["params"] == {"a": 0, "b": 16 * 16 * 9 + 16, "delta": 16 * 16 * 9 + 16}
    assert d["totals"]["layers"]["added"] == 2 and d["totals"]["layers"]["removed"] == 0
    # and backwards: the block is removed
    code, back = diff_json(capsys, b, a)
    assert code == 1 and [r["name"] for r in back["layers"] if r["status"] == "removed"] == added
    assert back["totals"]["params"]["delta"] == -extra["params"]["delta"]


def test_renamed_block_is_a_rename_not_removed_and_added(tmp_path, capsys):
    a = write(tmp_path, "a.net", SMALL)
    b = write(tmp_path, "b.net", SMALL.replace("as body", "as trunk"))
    code, d = diff_json(capsys, a, b)
    assert code == 1 and not d["identical"]
    assert d["renamed"] == [{"kind": "block", "from": "body", "to": "trunk", "layers": 2, "same_structure": True}]
    assert d["layers"] == []   # nothing removed, nothing added, nothing changed (gap1's input is the renamed relu)
    assert d["totals"]["layers"] == {"added": 0, "removed": 0, "changed": 0, "renamed": 2, "unchanged": 7}
    assert [(r["name"], r["from"], r["renamed"]) for r in d["blocks"]] == [("trunk", "body", 2)]
    assert main(["diff", a, b]) == 1
    assert "renamed body → trunk (2 layers, same structure)" in capsys.readouterr().out


def test_a_renamed_block_whose_structure_changed_is_removed_and_added(tmp_path, capsys):
    a = write(tmp_path, "a.net", SMALL)
    b = write(tmp_path, "b.net", SMALL.replace("unit(16) as body", "unit(24) as trunk"))
    _, d = diff_json(capsys, a, b)
    assert d["renamed"] == []
    assert {r["name"]: r["status"] for r in d["layers"] if r["status"] != "changed"} == {
        "body.conv1": "removed", "body.relu1": "removed", "trunk.conv1": "added", "trunk.relu1": "added"}


def test_json_shape(tmp_path, capsys):
    a = write(tmp_path, "a.net", SMALL)
    b = write(tmp_path, "b.net", SMALL.replace("unit(16) as body", "unit(24) as body"))
    _, d = diff_json(capsys, a, b)
    assert set(d) == {"version", "ok", "a", "b", "identical", "totals", "renamed", "layers", "blocks", "outputs",
                      "network_params"}
    assert d["version"] == 1 and d["a"] == {"file": a, "network": "small", "ok": True, "diagnostics": []}
    assert set(d["totals"]) == {"params", "macs", "layers"}
    for r in d["layers"]:
        assert set(r) == {"status", "name", "from", "op", "attrs", "outputs", "changes", "params", "macs"}
        assert set(r["params"]) == set(r["macs"]) == {"a", "b", "delta"}
    for r in d["blocks"]:
        assert set(r) == {"name", "from", "added", "removed", "changed", "renamed", "params", "macs"}


def test_two_networks_of_one_file(tmp_path, capsys):
    net = SMALL[SMALL.index("network small"):]
    two = SMALL + "\n" + net.replace("network small", "network wider").replace("unit(16)", "unit(32)")
    f = write(tmp_path, "two.net", two)
    code, d = diff_json(capsys, f, "--networks", "small,wider")
    assert code == 1 and (d["a"]["network"], d["b"]["network"]) == ("small", "wider")
    assert next(r for r in d["layers"] if r["name"] == "body.conv1")["changes"]["attrs"] == {"out": [16, 32]}
    assert main(["diff", f, "--networks", "small,small"]) == 0
    assert main(["diff", f]) == 2   # one file needs two network names
    assert "--networks OLD,NEW" in capsys.readouterr().err


def test_an_error_in_either_file_is_a_diagnostic(tmp_path, capsys):
    a = write(tmp_path, "a.net", SMALL)
    bad = write(tmp_path, "bad.net", SMALL.replace("linear(10) as fc", "linear(10 as fc"))
    assert main(["diff", a, bad]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:8:" in err and "error:" in err and "^" in err and "Traceback" not in err
    code, d = diff_json(capsys, bad, a)
    assert code == 1 and d["ok"] is False and d["b"]["ok"] is True
    assert d["a"]["diagnostics"][0]["line"] == 8 and d["a"]["diagnostics"][0]["severity"] == "error"
    assert main(["diff", a, str(tmp_path / "missing.net")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_resnet18_with_one_stage_widened(tmp_path, capsys):
    src = (ROOT / "networks" / "resnet18.net").read_text()
    widened = src.replace("basic_stage(64 * 2 ** i,", "basic_stage(i == 2 ? 384 : 64 * 2 ** i,")
    assert widened != src
    a, b = str(ROOT / "networks" / "resnet18.net"), write(tmp_path, "resnet18_wide.net", widened)
    code, d = diff_json(capsys, a, b)
    assert code == 1
    pa, pb = block_params(a), block_params(b)
    blocks = {r["name"]: r for r in d["blocks"]}
    assert list(blocks) == ["layer3", "layer4"]   # layer4's first convolutions see 384 channels in
    for name, r in blocks.items():
        assert r["params"] == {"a": pa[name], "b": pb[name], "delta": pb[name] - pa[name]}
    assert blocks["layer3"]["params"]["delta"] == pb["layer3"] - pa["layer3"] > 2_000_000
    assert {r["name"] for r in d["layers"] if r["name"].startswith("layer4")} == {
        "layer4.block1.conv1", "layer4.block1.downsample_conv"}
    assert d["totals"]["params"]["a"] == 11_689_512
    assert d["totals"]["params"]["delta"] == sum(r["params"]["delta"] for r in d["blocks"])
    # at depth 2 the deltas sum per residual block
    d2 = diff_graphs(load(a).graph, load(b).graph, depth=2)
    p2a, p2b = block_params(a, 2), block_params(b, 2)
    assert {r["name"]: r["params"]["delta"] for r in d2["blocks"]} == {
        k: p2b[k] - p2a[k] for k in ("layer3.block1", "layer3.block2", "layer4.block1")}
    assert main(["diff", a, b]) == 1
    out = capsys.readouterr().out
    assert "layer3.block1.conv1" in out and "out 256 → 384" in out and "+2,376,960" in out


def test_resnet18_stages_renamed(tmp_path, capsys):
    src = (ROOT / "networks" / "resnet18.net").read_text()
    b = write(tmp_path, "resnet18_stages.net", src.replace(" as layer {", " as stage {"))
    _, d = diff_json(capsys, str(ROOT / "networks" / "resnet18.net"), b)
    assert [(r["from"], r["to"]) for r in d["renamed"]] == [(f"layer{i}", f"stage{i}") for i in range(1, 5)]
    assert d["layers"] == [] and d["totals"]["layers"]["renamed"] == 62


@pytest.mark.parametrize("depth", [1, 3])
def test_block_deltas_add_up_to_the_total(tmp_path, capsys, depth):
    a = write(tmp_path, "a.net", SMALL)
    b = write(tmp_path, "b.net", SMALL.replace("unit(8) as stem", "unit(4) as stem |> unit(8) as stem2"))
    d = diff_graphs(load(a).graph, load(b).graph, depth)
    assert sum(r["params"]["delta"] for r in d["blocks"]) == d["totals"]["params"]["delta"] != 0
    assert sum(r["macs"]["delta"] for r in d["blocks"]) == d["totals"]["macs"]["delta"]


def test_a_deeper_stage_adds_a_block_and_says_which_parameter_changed(tmp_path, capsys):
    src = (ROOT / "networks" / "resnet18.net").read_text()
    b = write(tmp_path, "resnet18_deeper.net", src.replace("depths = [2, 2, 2, 2]", "depths = [2, 2, 3, 2]"))
    _, d = diff_json(capsys, str(ROOT / "networks" / "resnet18.net"), b)
    assert d["network_params"] == {"depths": [[2, 2, 2, 2], [2, 2, 3, 2]]}
    assert {r["name"].rsplit(".", 1)[0] for r in d["layers"] if r["status"] == "added"} == {"layer3.block3"}
    assert [r["name"] for r in d["layers"] if r["status"] == "changed"] == ["layer4.block1.conv1",
                                                                          "layer4.block1.downsample_conv"]
    assert [r["name"] for r in d["blocks"]] == ["layer3", "layer4"] and d["blocks"][1]["params"]["delta"] == 0


MLP = """\
network s(x: f32[N, 8]) {
    h = x |> linear(16) |> relu |> linear(16) |> relu
    y = h |> linear(4) as fc
    return y
}
"""


def test_an_inserted_unnamed_layer_renumbers_the_ones_after_it_without_changing_them(tmp_path, capsys):
    a = write(tmp_path, "a.net", MLP)
    b = write(tmp_path, "b.net", MLP.replace("x |> linear(16)", "x |> relu |> linear(16)"))
    _, d = diff_json(capsys, a, b)
    # by name alone relu1 and relu2 would read as rewired and relu3 as added; aligned by op they are renumbered
    assert [(r["status"], r["name"], r["changes"]) for r in d["layers"]] == [
        ("added", "relu1", {}), ("changed", "fc1", {"inputs": [[["x", 0]], [["relu1", 0]]]})]
    assert [(r["kind"], r["from"], r["to"]) for r in d["renamed"]] == [("layer", "relu1", "relu2"),
                                                                      ("layer", "relu2", "relu3")]
    assert d["totals"]["layers"]["renamed"] == 2 and d["totals"]["params"]["delta"] == 0


def test_a_renamed_layer_with_the_same_facts_is_a_rename(tmp_path, capsys):
    a = write(tmp_path, "a.net", MLP)
    _, d = diff_json(capsys, a, write(tmp_path, "b.net", MLP.replace("as fc", "as head")))
    assert d["layers"] == [] and d["renamed"] == [{"kind": "layer", "from": "fc", "to": "head", "layers": 1,
                                                   "same_structure": True}]
    assert not d["identical"]
    _, d = diff_json(capsys, a, write(tmp_path, "c.net", MLP.replace("linear(4) as fc", "linear(5) as head")))
    assert d["renamed"] == [] and [(r["status"], r["name"]) for r in d["layers"]] == [("removed", "fc"),
                                                                                      ("added", "head")]
    assert d["outputs"] == {"y": ["f32[N, 4]", "f32[N, 5]"]}


@pytest.mark.parametrize("old,new", [("resnet18", "resnet50"), ("resnet50", "resnext50_32x4d"), ("vit", "vit_b16"),
                                     ("lenet5", "char_gpt")])
def test_unrelated_networks_keep_the_bookkeeping_straight(old, new):
    a, b = (load(ROOT / "networks" / f"{n}.net") for n in (old, new))
    d = diff_graphs(a.graph, b.graph)
    assert not d["identical"]
    assert d["totals"]["params"] == {"a": a.summary().trainable_params, "b": b.summary().trainable_params,
                                     "delta": b.summary().trainable_params - a.summary().trainable_params}
    assert sum(r["params"]["delta"] for r in d["blocks"]) == d["totals"]["params"]["delta"]
    assert sum(r["macs"]["delta"] for r in d["blocks"]) == d["totals"]["macs"]["delta"]
    n = d["totals"]["layers"]
    model = [len([v for v in g if g.nodes[v]["role"] == "model"]) for g in (a.graph, b.graph)]
    assert n["removed"] + n["unchanged"] + n["changed"] == model[0]   # every old layer accounted for once
    assert n["added"] + n["unchanged"] + n["changed"] == model[1]


UNNAMED = """\
block unit(x, c) {
    y = x |> conv2d(c, 3, padding=1) |> relu
    return y
}

network u(x: f32[N, 3, 32, 32]) {
    h = x |> unit(8) |> unit(16)
    y = h |> global_avgpool |> linear(10)
    return y
}
"""


def test_an_inserted_unnamed_block_call_renumbers_the_ones_after_it(tmp_path, capsys):
    a = write(tmp_path, "a.net", UNNAMED)
    b = write(tmp_path, "b.net", UNNAMED.replace("unit(8) |> unit(16)", "unit(8) |> unit(8) |> unit(16)"))
    _, d = diff_json(capsys, a, b)
    assert d["renamed"] == [{"kind": "block", "from": "unit2", "to": "unit3", "layers": 2, "same_structure": False}]
    assert [(r["status"], r["name"]) for r in d["layers"]] == [
        ("added", "unit2.conv1"), ("added", "unit2.relu1"), ("changed", "unit3.conv1")]
    assert d["layers"][2]["from"] == "unit2.conv1" and d["layers"][2]["changes"] == {
        "inputs": [[["unit1.relu1", 0]], [["unit2.relu1", 0]]]}
    assert main(["diff", a, b]) == 1
    assert "renamed unit2 → unit3 (2 layers, renumbered)" in capsys.readouterr().out
