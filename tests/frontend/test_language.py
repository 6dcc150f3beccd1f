"""Positive tests of each .net language feature (docs/language.md), asserting the IR graph it builds:
node names, ops, shapes, attrs, edges and their slots."""
from __future__ import annotations

import json
import textwrap

import pytest

import dslc
from dslc import ir
from dslc.cli import main as cli_main
from dslc.ops.registry import WeightSpec
from dslc.types import TensorType


def T(*shape, dtype="f32"):
    return TensorType(tuple(shape), dtype)


def load(tmp_path, src, name="main.net", **kw):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(src))
    prog = dslc.load(path, **kw)
    assert prog.ok, prog.diagnostics.render_all()
    return prog


def graph(tmp_path, src, **kw):
    return load(tmp_path, src, **kw).graph


def write(path, src):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(src))
    return path


def op_nodes(g):
    """Non-input nodes in creation order, as (name, op)."""
    return [(n, g.nodes[n]["op"]) for n in g if g.nodes[n]["op"] != "input"]


def out(g, n, i=0):
    return g.nodes[n]["outputs"][i]


def ins(g, n):
    return g.nodes[n]["inputs"]


def slots(g, u, v):
    return g.edges[u, v]["slots"]


def warnings(prog):
    return [d.message for d in prog.diagnostics.items if d.severity == "warning"]


# ---- pipelines and calls -------------------------------------------------------------------------------------
def test_pipeline_chains_ops_and_names_them_per_op(tmp_path):
    g = graph(tmp_path, """
        network n(x: f32[N, 3, 8, 8]) {
            y = x |> conv2d(8, 3, padding=1) |> batchnorm |> relu |> maxpool(2)
            return y
        }
    """)
    assert op_nodes(g) == [("conv1", "conv2d"), ("bn1", "batchnorm"), ("relu1", "relu"), ("pool1", "maxpool")]
    assert ins(g, "conv1") == [("x", 0)] and ins(g, "bn1") == [("conv1", 0)]
    assert ins(g, "relu1") == [("bn1", 0)] and ins(g, "pool1") == [("relu1", 0)]
    assert out(g, "conv1") == T("N", 8, 8, 8)
    assert out(g, "pool1") == T("N", 8, 4, 4)
    a = g.nodes["conv1"]["attrs"]
    assert (a["out"], a["kernel"], a["stride"], a["pads"]) == (8, (3, 3), (1, 1), (1, 1, 1, 1))
    assert g.nodes["pool1"]["attrs"]["kernel"] == (2, 2) and g.nodes["pool1"]["attrs"]["stride"] == (2, 2)
    assert g.graph["inputs"] == ["x"] and g.graph["outputs"] == {"y": ("pool1", 0)}
    assert g.nodes["conv1"]["role"] == "model" and g.nodes["conv1"]["scope"] == ()
    assert set(g.nodes["conv1"]["weights"]) == {"weight", "bias"}
    assert g.nodes["conv1"]["weights"]["weight"].shape == (8, 3, 3, 3)


def test_piped_tensor_is_the_first_argument_and_call_form_is_the_same(tmp_path):
    g = graph(tmp_path, """
        network n(x: f32[N, 3, 8, 8]) {
            a = x |> conv2d(4, 3, stride=2)
            b = conv2d(x, 4, 3, stride=2)
            c = conv2d(x, out=4, kernel=3, stride=2)
            d = x |> conv2d(kernel=3, out=4, stride=[2, 2])
            y = concat([a, b, c, d])
            return y
        }
    """)
    attrs = [g.nodes[f"conv{i}"]["attrs"] for i in range(1, 5)]
    assert all(a == attrs[0] for a in attrs)
    assert all(ins(g, f"conv{i}") == [("x", 0)] for i in range(1, 5))
    assert out(g, "conv1") == T("N", 4, 3, 3)
    assert out(g, "concat1") == T("N", 16, 3, 3)


def test_keyword_arguments_fill_defaults_and_change_weights(tmp_path):
    g = graph(tmp_path, """
        network n(x: f32[N, 16]) {
            y = x |> linear(8, bias=false) |> leaky_relu(alpha=0.2) |> dropout(p=0.1) |> linear(out=2)
            return y
        }
    """)
    assert op_nodes(g) == [("fc1", "linear"), ("leaky_relu1", "leaky_relu"), ("drop1", "dropout"), ("fc2", "linear")]
    assert g.nodes["fc1"]["attrs"] == {"out": 8, "bias": False}
    assert set(g.nodes["fc1"]["weights"]) == {"weight"}
    assert g.nodes["fc1"]["weights"]["weight"].shape == (8, 16)
    assert g.nodes["leaky_relu1"]["attrs"] == {"alpha": 0.2}
    assert g.nodes["drop1"]["attrs"]["p"] == 0.1
    assert g.nodes["fc2"]["attrs"] == {"out": 2, "bias": True}
    assert out(g, "fc2") == T("N", 2)


def test_call_with_as_and_name_stage_with_as(tmp_path):
    g = graph(tmp_path, """
        network n(x: f32[N, 4]) {
            h = linear(x, 8) as embed
            y = h |> relu as act |> linear(2) as head
            return y
        }
    """)
    assert op_nodes(g) == [("embed", "linear"), ("act", "relu"), ("head", "linear")]
    assert ins(g, "head") == [("act", 0)]


def test_permute_is_an_alias_of_transpose(tmp_path):
    g = graph(tmp_path, """
        network n(x: f32[N, 3, 4, 5]) {
            y = x |> permute([0, 2, 3, 1])
            return y
        }
    """)
    assert op_nodes(g) == [("transpose1", "transpose")]
    assert out(g, "transpose1") == T("N", 4, 5, 3)


# ---- multiple outputs ------------------------------------------------------------------------------------------
def test_split_gives_several_outputs_and_edges_record_output_indices(tmp_path):
    g = graph(tmp_path, """
        network n(x: f32[N, 8, 4]) {
            a, b = x |> split([2, 6], axis=1)
            parts = split(x, [4, 4]) as halves
            y = concat([b, a])
            z = parts[1] + parts[0]
            return y, z
        }
    """)
    assert g.nodes["split1"]["outputs"] == [T("N", 2, 4), T("N", 6, 4)]
    assert g.nodes["split1"]["attrs"]["sizes"] == (2, 6)
    assert ins(g, "concat1") == [("split1", 1), ("split1", 0)]
    assert slots(g, "split1", "concat1") == [(0, 1), (1, 0)]
    assert out(g, "concat1") == T("N", 8, 4)
    assert ins(g, "add1") == [("halves", 1), ("halves", 0)]
    assert g.graph["outputs"] == {"y": ("concat1", 0), "z": ("add1", 0)}


# ---- skip connections and arithmetic ---------------------------------------------------------------------------
def test_named_skip_connections_with_add_and_concat(tmp_path):
    g = graph(tmp_path, """
        network n(x: f32[N, 4, 8, 8]) {
            skip = x |> conv2d(4, 1) as shortcut
            h = x |> conv2d(4, 3, padding=1) |> relu
            r = h + skip
            u = r |> concat([skip, x], axis=1)
            return u
        }
    """)
    assert ins(g, "add1") == [("relu1", 0), ("shortcut", 0)]
    assert slots(g, "relu1", "add1") == [(0, 0)] and slots(g, "shortcut", "add1") == [(1, 0)]
    # the piped tensor is prepended to concat's list
    assert ins(g, "concat1") == [("add1", 0), ("shortcut", 0), ("x", 0)]
    assert out(g, "concat1") == T("N", 12, 8, 8)
    assert g.nodes["concat1"]["attrs"] == {"axis": 1}


def test_x_plus_x_is_one_edge_with_two_slots(tmp_path):
    g = graph(tmp_path, """
        network n(x: f32[N, 4]) {
            y = x + x
            return y
        }
    """)
    assert ins(g, "add1") == [("x", 0), ("x", 0)]
    assert g.number_of_edges() == 1
    assert slots(g, "x", "add1") == [(0, 0), (1, 0)]
    assert g.edges["x", "add1"]["type"] == T("N", 4)


def test_numbers_in_tensor_arithmetic_become_constant_nodes(tmp_path):
    g = graph(tmp_path, """
        network n(x: f32[N, 4]) {
            a = x * 0.5
            b = 1 - a
            c = -b
            d = c / 2
            return d
        }
    """)
    assert op_nodes(g) == [("constant1", "constant"), ("mul1", "mul"), ("constant2", "constant"), ("sub1", "sub"),
                           ("constant3", "constant"), ("mul2", "mul"), ("constant4", "constant"), ("div1", "div")]
    assert g.nodes["constant1"]["attrs"] == {"value": 0.5, "dtype": "f32"}
    assert out(g, "constant1") == T()
    assert ins(g, "mul1") == [("x", 0), ("constant1", 0)]
    assert ins(g, "sub1") == [("constant2", 0), ("mul1", 0)]  # the number keeps its side
    assert g.nodes["constant2"]["attrs"]["value"] == 1.0
    assert g.nodes["constant3"]["attrs"]["value"] == -1.0  # -b is b * -1
    assert ins(g, "div1") == [("mul2", 0), ("constant4", 0)]
    assert out(g, "div1") == T("N", 4)
    assert g.nodes["constant1"]["weights"] == {}


def test_number_constants_take_the_tensor_dtype(tmp_path):
    g = graph(tmp_path, """
        network n(x: f64[N, 4]) {
            y = x * 2 + 1
            return y
        }
    """)
    assert g.nodes["constant1"]["attrs"] == {"value": 2.0, "dtype": "f64"}
    assert out(g, "constant1") == T(dtype="f64")
    assert out(g, "add1") == T("N", 4, dtype="f64")


def test_broadcasting_arithmetic_and_matmul_with_a_param(tmp_path):
    g = graph(tmp_path, """
        network n(x: f32[N, 3, 4, 4]) {
            scale = param([3, 1, 1], init="ones")
            w = param([4, 2], init="normal", std=0.1)
            y = x * scale
            z = y @ w
            return z
        }
    """)
    assert g.nodes["param1"]["weights"] == {"value": WeightSpec((3, 1, 1), "ones")}
    assert g.nodes["param2"]["weights"] == {"value": WeightSpec((4, 2), "normal:0.1")}
    assert g.nodes["param2"]["attrs"] == {"shape": (4, 2), "init": "normal", "std": 0.1}
    assert out(g, "param1") == T(3, 1, 1) and ins(g, "param1") == []
    assert ins(g, "mul1") == [("x", 0), ("param1", 0)]
    assert out(g, "mul1") == T("N", 3, 4, 4)
    assert ins(g, "matmul1") == [("mul1", 0), ("param2", 0)]
    assert out(g, "matmul1") == T("N", 3, 4, 2)


def test_param_position_embedding_with_expand_batch(tmp_path):
    g = graph(tmp_path, """
        network vit_tail(x: f32[N, 4, 8]) {
            cls = param([1, 1, 8]) |> expand_batch(x)
            pos = param([1, 5, 8], init="normal", std=0.02)
            t = concat([cls, x]) + pos
            return t
        }
    """)
    assert ins(g, "expand_batch1") == [("param1", 0), ("x", 0)]
    assert out(g, "expand_batch1") == T("N", 1, 8)
    assert g.nodes["param1"]["weights"]["value"] == WeightSpec((1, 1, 8), "zeros")
    assert g.nodes["param2"]["weights"]["value"].init == "normal:0.02"
    assert out(g, "add1") == T("N", 5, 8)


# ---- blocks ---------------------------------------------------------------------------------------------------
def test_blocks_with_defaults_nesting_and_scoped_names(tmp_path):
    g = graph(tmp_path, """
        block inner(x, c) {
            y = x |> linear(c) |> relu
            return y
        }
        block outer(x, c = 4, widen = 2) {
            h = x |> inner(c) |> inner(c * widen) as wide
            return h
        }
        network n(x: f32[N, 3]) {
            a = x |> outer
            b = a |> outer(8, widen=1) as enc
            y = b |> linear(2)
            return y
        }
    """)
    assert op_nodes(g) == [
        ("outer1.inner1.fc1", "linear"), ("outer1.inner1.relu1", "relu"),
        ("outer1.wide.fc1", "linear"), ("outer1.wide.relu1", "relu"),
        ("enc.inner1.fc1", "linear"), ("enc.inner1.relu1", "relu"),
        ("enc.wide.fc1", "linear"), ("enc.wide.relu1", "relu"),
        ("fc1", "linear"),
    ]
    assert g.nodes["outer1.inner1.fc1"]["attrs"]["out"] == 4
    assert g.nodes["outer1.wide.fc1"]["attrs"]["out"] == 8
    assert g.nodes["enc.inner1.fc1"]["attrs"]["out"] == 8 and g.nodes["enc.wide.fc1"]["attrs"]["out"] == 8
    assert g.nodes["outer1.wide.fc1"]["scope"] == ("outer1", "wide")
    assert ins(g, "enc.inner1.fc1") == [("outer1.wide.relu1", 0)]
    assert ins(g, "fc1") == [("enc.wide.relu1", 0)]
    assert out(g, "fc1") == T("N", 2)


def test_block_instances_are_numbered_per_scope_and_names_restart_inside(tmp_path):
    g = graph(tmp_path, """
        block unit(x) {
            y = x |> linear(4) |> linear(4)
            return y
        }
        network n(x: f32[N, 4]) {
            y = x |> unit |> unit |> linear(4)
            return y
        }
    """)
    assert [n for n, _ in op_nodes(g)] == ["unit1.fc1", "unit1.fc2", "unit2.fc1", "unit2.fc2", "fc1"]


def test_block_default_may_use_earlier_parameters_and_shapes(tmp_path):
    g = graph(tmp_path, """
        block widen(x, factor = 2, c = x.shape[1] * factor) {
            y = x |> linear(c)
            return y
        }
        network n(x: f32[N, 3]) {
            a = x |> widen
            b = a |> widen(factor=3)
            y = b |> widen(c=5)
            return y
        }
    """)
    assert [g.nodes[f"widen{i}.fc1"]["attrs"]["out"] for i in (1, 2, 3)] == [6, 18, 5]


def test_block_with_several_returns_and_tensor_keyword_argument(tmp_path):
    g = graph(tmp_path, """
        block heads(x, classes, boxes = 4) {
            h = x |> linear(16) |> relu
            cls = h |> linear(classes) as cls_head
            box = h |> linear(boxes) as box_head
            return cls, box
        }
        block mix(a, b) {
            y = concat([a, b], axis=1)
            return y
        }
        network det(x: f32[N, 8]) {
            c, b = heads(x, 3)
            both = heads(x, classes=2, boxes=2) as second
            m = mix(b=c, a=both[1])
            return c, b, m
        }
    """)
    assert g.graph["outputs"] == {"c": ("heads1.cls_head", 0), "b": ("heads1.box_head", 0), "m": ("mix1.concat1", 0)}
    assert out(g, "heads1.cls_head") == T("N", 3) and out(g, "heads1.box_head") == T("N", 4)
    assert ins(g, "mix1.concat1") == [("second.box_head", 0), ("heads1.cls_head", 0)]
    assert out(g, "mix1.concat1") == T("N", 5)


def test_block_typed_tensor_parameter(tmp_path):
    g = graph(tmp_path, """
        block head(x: f32[N, C], n) {
            y = x |> linear(n)
            return y
        }
        network n(x: f32[N, 3, 4]) {
            y = x |> flatten |> head(2)
            return y
        }
    """)
    assert out(g, "head1.fc1") == T("N", 2)


# ---- repeat -----------------------------------------------------------------------------------------------------
def test_repeat_with_index_and_hierarchical_resnet_names(tmp_path):
    g = graph(tmp_path, """
        import std.resnet

        network tiny_resnet(x: f32[N, 3, 16, 16], depths = [2, 2]) {
            stem = x |> conv2d(8, 3, padding=1, bias=false) |> batchnorm |> relu
            features = stem |> repeat i in 0..len(depths) as layer {
                basic_stage(8 * 2 ** i, depths[i], stride = i == 0 ? 1 : 2)
            }
            logits = features |> global_avgpool |> linear(10) as fc
            return logits
        }
    """)
    names = set(g.nodes)
    assert {"conv1", "bn1", "relu1", "fc", "gap1"} <= names
    assert {"layer1.block1.conv1", "layer1.block1.bn1", "layer1.block1.conv2", "layer1.block1.add1",
            "layer1.block1.relu2", "layer1.block2.conv1", "layer2.block1.conv1", "layer2.block1.downsample_conv",
            "layer2.block1.downsample_bn", "layer2.block2.conv2"} <= names
    assert "layer1.block1.downsample_conv" not in names  # if: stride 1 and same width -> identity shortcut
    assert "layer2.block2.downsample_conv" not in names
    assert g.nodes["layer2.block1.conv1"]["attrs"]["stride"] == (2, 2)
    assert g.nodes["layer2.block2.conv1"]["attrs"]["stride"] == (1, 1)
    assert g.nodes["layer2.block1.downsample_conv"]["attrs"]["kernel"] == (1, 1)
    assert out(g, "layer2.block1.conv1") == T("N", 16, 8, 8)
    assert g.nodes["layer2.block1.conv2"]["scope"] == ("layer2", "block1")
    assert ins(g, "layer2.block1.add1") == [("layer2.block1.bn2", 0), ("layer2.block1.downsample_bn", 0)]
    assert ins(g, "layer1.block1.add1") == [("layer1.block1.bn2", 0), ("relu1", 0)]
    assert ins(g, "layer2.block1.conv1") == [("layer1.block2.relu2", 0)]
    assert out(g, "fc") == T("N", 10)


def test_repeat_count_form_and_multi_stage_body(tmp_path):
    g = graph(tmp_path, """
        network n(x: f32[N, 4]) {
            y = x |> repeat 3 { linear(4) |> relu }
            z = y |> repeat 2 as stage { linear(4) as proj |> tanh }
            return z
        }
    """)
    assert [n for n, _ in op_nodes(g)] == [
        "repeat1.fc1", "repeat1.relu1", "repeat2.fc1", "repeat2.relu1", "repeat3.fc1", "repeat3.relu1",
        "stage1.proj", "stage1.tanh1", "stage2.proj", "stage2.tanh1"]
    assert ins(g, "repeat2.fc1") == [("repeat1.relu1", 0)]
    assert ins(g, "stage1.proj") == [("repeat3.relu1", 0)]
    assert g.nodes["stage2.tanh1"]["scope"] == ("stage2",)


def test_repeat_range_start_and_index_in_arguments(tmp_path):
    g = graph(tmp_path, """
        network n(x: f32[N, 4]) {
            y = x |> repeat i in 1..4 as blk { linear(8 * i) }
            return y
        }
    """)
    assert [(n, g.nodes[n]["attrs"]["out"]) for n, _ in op_nodes(g)] == [
        ("blk1.fc1", 8), ("blk2.fc1", 16), ("blk3.fc1", 24)]


def test_repeat_single_block_call_takes_the_iteration_scope(tmp_path):
    g = graph(tmp_path, """
        block unit(x, c) {
            y = x |> linear(c) |> relu
            return y
        }
        network n(x: f32[N, 4]) {
            a = x |> repeat 2 as one { unit(4) }
            b = a |> repeat 1 as two { unit(4) |> tanh }
            c = b |> repeat 1 as three { unit(4) as u }
            return c
        }
    """)
    assert [n for n, _ in op_nodes(g)] == [
        "one1.fc1", "one1.relu1", "one2.fc1", "one2.relu1",          # single block: its nodes sit in oneK
        "two1.unit1.fc1", "two1.unit1.relu1", "two1.tanh1",           # several stages: the block gets a scope
        "three1.u.fc1", "three1.u.relu1"]                             # `as` names the block instance


def test_two_unnamed_repeats_in_one_scope_get_distinct_names(tmp_path):
    g = graph(tmp_path, """
        network n(x: f32[N, 4]) {
            a = x |> repeat 2 { relu }
            b = a |> repeat 2 { tanh }
            return b
        }
    """)
    assert [n for n, _ in op_nodes(g)] == ["repeat1.relu1", "repeat2.relu1", "repeat3.tanh1", "repeat4.tanh1"]


# ---- compile-time evaluation -------------------------------------------------------------------------------------
def test_if_elif_else_on_block_parameters_and_shapes(tmp_path):
    g = graph(tmp_path, """
        block shortcut(x, c, stride = 1) {
            if stride != 1 or x.shape[1] != c {
                s = x |> conv2d(c, 1, stride=stride) as proj
            } elif c >= 64 {
                s = x |> relu
            } else {
                s = x
            }
            return s
        }
        network n(x: f32[N, 64, 8, 8]) {
            a = shortcut(x, 64)
            b = shortcut(x, 64, stride=2)
            c = shortcut(x, 32)
            y = concat([b, c |> maxpool(2)]) |> maxpool(2)
            z = a |> maxpool(4)
            return y, z
        }
    """)
    assert ("shortcut1.relu1", "relu") in op_nodes(g)  # elif branch
    assert g.nodes["shortcut2.proj"]["attrs"]["stride"] == (2, 2)
    assert out(g, "shortcut2.proj") == T("N", 64, 4, 4)
    assert out(g, "shortcut3.proj") == T("N", 32, 8, 8)
    assert not any(n.startswith("shortcut1.proj") for n in g)


def test_if_on_network_parameter_and_symbolic_shape(tmp_path):
    src = """
        network n(x: f32[N, 4], norm = true, act = "relu") {
            if norm and x.shape[0] == "N" {
                h = x |> layernorm
            } else {
                h = x
            }
            if act == "relu" { y = h |> relu } elif act == "gelu" { y = h |> gelu } else { y = h }
            return y
        }
    """
    g = graph(tmp_path, src)
    assert op_nodes(g) == [("ln1", "layernorm"), ("relu1", "relu")]
    g = graph(tmp_path, src, params={"norm": False, "act": "gelu"})
    assert op_nodes(g) == [("gelu1", "gelu")]
    assert g.graph["params"] == {"norm": False, "act": "gelu"}


def test_compile_time_values_builtins_and_operators(tmp_path):
    g = graph(tmp_path, """
        network n(x: f32[N, 3, 8, 8], sizes = [4, 8], big = false) {
            a = x |> conv2d(len(x.shape) + x.rank, 1)                          # 4 + 4
            b = x |> conv2d(min(sizes) * max(2, 3) - int(2.9), 1)              # 12 - 2
            c = x |> conv2d(7 // 2 + 7 % 4 + 2 ** 3 + 6 / 3, 1)                # 3 + 3 + 8 + 2
            d = x |> conv2d(sizes[-1] + (sizes + [1])[2], 1)                   # 8 + 1
            e = x |> conv2d(not big and x.dtype == "f32" ? 5 : 6, 1)
            f = x |> conv2d(big or x.shape[2] > 4 ? -(-3) : 0, 1)
            y = concat([a, b, c, d, e, f])
            return y
        }
    """)
    assert [g.nodes[f"conv{i}"]["attrs"]["out"] for i in range(1, 7)] == [8, 10, 16, 9, 5, 3]
    assert out(g, "concat1") == T("N", 51, 8, 8)
    assert sum(1 for _, op in op_nodes(g) if op == "constant") == 0  # integer arithmetic makes no nodes


def test_none_is_an_absent_value_for_optional_block_parameters(tmp_path):
    g = graph(tmp_path, """
        block up(x, skip = none, c) {
            u = x |> upsample(2)
            v = skip != none ? concat([u, skip], axis=1) : u
            return v |> conv2d(c, 3, padding=1)
        }
        block first_or(xs, fallback = none) {
            return len(xs) > 0 ? xs[0] : fallback
        }
        network n(x: f32[N, 8, 4, 4], e: f32[N, 4, 8, 8], extra = none) {
            a = x |> up(e, 4) |> up(c=2)                    # with a skip, then without
            b = x |> up(skip=first_or([]), c=2) as noskip     # `none` passed on explicitly
            k = first_or([]) == none and first_or([], 3) == 3 and none == none and none != 0
            k2 = k and [none] != [0] and extra == none and x != none
            p = x |> maxpool(2, stride=none)                # `none` for an optional op argument: left out
            q = x |> maxpool(2) |> conv2d(k2 ? 1 : 2, 1)
            return a, b, p, q
        }
    """)
    assert [n for n, op in op_nodes(g) if op == "concat"] == ["up1.concat1"]
    assert out(g, "up1.conv1") == T("N", 4, 8, 8) and out(g, "up2.conv1") == T("N", 2, 16, 16)
    assert ins(g, "up2.conv1") == [("up2.up1", 0)]
    assert ins(g, "noskip.conv1") == [("noskip.up1", 0)]
    assert g.nodes["pool1"]["attrs"] == g.nodes["pool2"]["attrs"]
    assert g.nodes["conv1"]["attrs"]["out"] == 1
    assert g.graph["params"] == {"extra": None}


def test_none_as_a_network_parameter_override(tmp_path):
    src = """
        network n(x: f32[N, 4], width = 8, act = none) {
            h = x |> linear(width)
            y = act == none ? h : (h |> relu)
            return y
        }
    """
    g = graph(tmp_path, src)
    assert [op for _, op in op_nodes(g)] == ["linear"]
    g = graph(tmp_path, src, params={"act": "relu"})
    assert [op for _, op in op_nodes(g)] == ["linear", "relu"] and g.graph["params"] == {"width": 8, "act": "relu"}
    g = graph(tmp_path, src, params={"act": None})  # Python's None is `none`
    assert [op for _, op in op_nodes(g)] == ["linear"] and g.graph["params"] == {"width": 8, "act": None}


def test_overriding_a_tensor_input_says_so(tmp_path):
    path = write(tmp_path / "main.net", """
        network n(x: f32[N, 4], width = 8) {
            y = x |> linear(width)
            return y
        }
    """)
    prog = dslc.load(path, params={"x": 3})
    errors = [d for d in prog.diagnostics.items if d.severity == "error"]
    assert [d.message for d in errors] == ["`x` is a tensor input of network `n` and cannot be overridden"]
    assert (errors[0].span.line, errors[0].span.col) == (2, 11)
    assert "has no parameter" not in prog.diagnostics.render_all()


def test_symbolic_dims_flow_through_shape_rules(tmp_path):
    g = graph(tmp_path, """
        network n(x: f32[N, 3, H, W], t: f32[B, T, 16]) {
            y = x |> conv2d(8, 3) |> upsample(2)
            z = t |> attention(4) |> linear(8) |> mean(1)
            return y, z
        }
    """)
    assert g.graph["inputs"] == ["x", "t"]
    assert out(g, "conv1") == T("N", 8, "H-2", "W-2")
    assert out(g, "up1").shape[:2] == ("N", 8)
    assert out(g, "attn1") == T("B", "T", 16)
    assert out(g, "mean1") == T("B", 8)


def test_scalar_and_integer_input_types(tmp_path):
    g = graph(tmp_path, """
        network n(x: f32[N, 4], s: f32[]) {
            y = x * s
            return y
        }
    """)
    assert out(g, "s") == T() and out(g, "mul1") == T("N", 4)


# ---- files, imports, docstrings, comments ---------------------------------------------------------------------
def test_import_of_a_relative_file_and_its_imports(tmp_path):
    write(tmp_path / "lib" / "base.net", """
        block dense(x, c) {
            y = x |> linear(c) |> relu
            return y
        }
    """)
    write(tmp_path / "lib" / "blocks.net", '''
        """Blocks for tests."""
        import "base.net"
        block mlp2(x, h, out = 2) {
            y = x |> dense(h) |> linear(out)
            return y
        }
    ''')
    g = graph(tmp_path, """
        import "lib/blocks.net"
        network n(x: f32[N, 4]) {
            a = x |> mlp2(8)
            b = a |> dense(3)   # blocks imported by an imported file are visible too
            return b
        }
    """)
    assert [n for n, _ in op_nodes(g)] == ["mlp21.dense1.fc1", "mlp21.dense1.relu1", "mlp21.fc1",
                                           "dense1.fc1", "dense1.relu1"]


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="needs named pipes (POSIX)")
@pytest.mark.timeout(20)
def test_import_of_a_named_pipe_is_a_diagnostic_not_a_hang(tmp_path):
    import os
    os.mkfifo(tmp_path / "pipe.net")
    net = write(tmp_path / "main.net", """
        import "pipe.net"
        network n(x: f32[N, 4]) {
            y = x |> linear(2)
            return y
        }
    """)
    prog = dslc.load(net)
    assert not prog.ok
    text = prog.diagnostics.render_all()
    assert "`pipe.net` is not a regular file" in text and "main.net:2:" in text


def test_import_std_modules(tmp_path):
    g = graph(tmp_path, """
        import std.unet
        import std.mlp
        import std.transformer

        network n(x: f32[N, 1, 16, 16], t: f32[N, 5, 8]) {
            e1 = x |> double_conv(4)
            e2 = e1 |> down(8)
            d1 = up(e2, e1, 4)
            seg = d1 |> conv2d(1, 1) as head
            h = t |> encoder(depth=2, heads=2, mlp_dim=16)
            r = h |> mean(1) |> residual_mlp(4)
            return seg, r
        }
    """)
    assert out(g, "up1.deconv1") == T("N", 4, 16, 16)
    assert ins(g, "up1.concat1") == [("up1.deconv1", 0), ("double_conv1.relu2", 0)]
    assert out(g, "up1.concat1") == T("N", 8, 16, 16)
    assert out(g, "head") == T("N", 1, 16, 16)
    assert "encoder1.layer2.attn1" in g and "encoder1.ln1" in g
    assert out(g, "residual_mlp1.add1") == T("N", 8)


def test_docstring_comments_and_semicolons(tmp_path):
    prog = load(tmp_path, '''
        """A tiny network.
        Second line of the docstring."""
        # a comment line
        network n(x: f32[N, 4]) {   # trailing comment
            h = x |> relu; y = h |> tanh;
            return y;
        }
    ''')
    assert prog.doc == "A tiny network.\nSecond line of the docstring."
    assert prog.graph.graph["doc"] == prog.doc
    assert op_nodes(prog.graph) == [("relu1", "relu"), ("tanh1", "tanh")]
    assert prog.diagnostics.items == []


def test_docstring_is_shown_by_dslc_check(tmp_path, capsys):
    path = write(tmp_path / "doc.net", '''
        """Digits classifier.
        Input: f32[N, 784]."""
        network mlp(x: f32[N, 784]) {
            y = x |> linear(10)
            return y
        }
    ''')
    assert cli_main(["check", str(path)]) == 0
    stdout = capsys.readouterr().out
    assert "Digits classifier.\nInput: f32[N, 784]." in stdout
    assert "fc1" in stdout
    assert cli_main(["check", "--json", str(path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["doc"] == "Digits classifier.\nInput: f32[N, 784]."


# ---- networks ---------------------------------------------------------------------------------------------------
def test_network_parameter_overrides(tmp_path):
    src = """
        network mlp(x: f32[N, 4], hidden = 16, layers = 1) {
            y = x |> repeat layers as layer { linear(hidden) |> relu } |> linear(2)
            return y
        }
    """
    g = graph(tmp_path, src)
    assert g.nodes["layer1.fc1"]["attrs"]["out"] == 16 and "layer2.fc1" not in g
    assert g.graph["params"] == {"hidden": 16, "layers": 1}
    g = graph(tmp_path, src, params={"hidden": 32, "layers": 2})
    assert g.nodes["layer1.fc1"]["attrs"]["out"] == 32 and g.nodes["layer2.fc1"]["attrs"]["out"] == 32
    assert g.graph["params"] == {"hidden": 32, "layers": 2}


MULTI = """
    network small(x: f32[N, 4]) {
        logits = x |> linear(2)
        return logits
    }

    network big(x: f32[N, 4], width = 16) {
        logits = x |> linear(width) |> relu |> linear(2)
        return logits
    }
"""


def test_several_networks_and_network_selection(tmp_path, capsys):
    prog = load(tmp_path, MULTI)
    assert prog.network == "big" and set(prog.networks) == {"small", "big"}
    assert [n for n, _ in op_nodes(prog.graph)] == ["fc1", "relu1", "fc2"]
    prog = load(tmp_path, MULTI, network="small")
    assert prog.network == "small" and list(prog.networks) == ["small"]
    assert [n for n, _ in op_nodes(prog.graph)] == ["fc1"]
    assert cli_main(["check", "--json", "--network", "small", str(tmp_path / "main.net")]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["network"] == "small" and data["outputs"] == {"logits": ["N", 2]}


def test_parameter_overrides_go_to_the_selected_network(tmp_path):
    prog = load(tmp_path, MULTI, params={"width": 8})
    assert prog.graph.nodes["fc1"]["attrs"]["out"] == 8
    prog = load(tmp_path, MULTI, network="big", params={"width": 4})
    assert prog.graph.nodes["fc1"]["attrs"]["out"] == 4


# ---- train section ----------------------------------------------------------------------------------------------
def test_train_section_builds_targets_loss_nodes_and_config(tmp_path):
    g = graph(tmp_path, """
        network clf(x: f32[N, 8]) {
            logits = x |> linear(3)
            return logits
        }

        train {
            target label: i64[N]
            target soft: f32[N, 3]
            loss = cross_entropy(logits, label, label_smoothing=0.1) + 0.5 * mse(logits, soft)
            optimizer = sgd(0.1, momentum=0.9)
            schedule = step(step_size=2)
            data = csv(path="d.csv")
            epochs = 3
            batch_size = 16
            metric = "accuracy"
            clip = 1.0
            val_split = 0.2
            shuffle = false
        }
    """)
    assert g.graph["inputs"] == ["x"] and g.graph["targets"] == ["label", "soft"]
    assert g.nodes["label"]["op"] == "input" and g.nodes["label"]["role"] == "target"
    assert out(g, "label") == T("N", dtype="i64")
    loss_nodes = [n for n in g if g.nodes[n]["role"] == "loss"]
    assert loss_nodes == ["loss.cross_entropy1", "loss.mse1", "loss.constant1", "loss.mul1", "loss.add1"]
    assert all(g.nodes[n]["scope"] == ("loss",) for n in loss_nodes)
    assert ins(g, "loss.cross_entropy1") == [("fc1", 0), ("label", 0)]
    assert g.nodes["loss.cross_entropy1"]["attrs"]["label_smoothing"] == 0.1
    assert ins(g, "loss.add1") == [("loss.cross_entropy1", 0), ("loss.mul1", 0)]
    assert out(g, "loss.add1") == T()
    assert g.graph["loss"] == ("loss.add1", 0)
    assert ir.model_nodes(g) == ["x", "fc1"]
    train = g.graph["train"]
    assert train["optimizer"] == {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0}
    assert train["schedule"] == {"name": "step", "step_size": 2, "gamma": 0.1, "warmup": 0}
    assert train["data"] == {"name": "csv", "path": "d.csv", "target": -1}
    assert (train["epochs"], train["batch_size"], train["metric"], train["clip"]) == (3, 16, "accuracy", 1.0)
    assert (train["val_split"], train["shuffle"], train["seed"], train["checkpoint_every"]) == (0.2, False, 0, 0)


def test_train_section_defaults(tmp_path):
    g = graph(tmp_path, """
        network reg(x: f32[N, 2]) {
            y = x |> linear(1)
            return y
        }
        train {
            target t: f32[N, 1]
            loss = mse(y, t)
        }
    """)
    assert g.graph["train"] == {
        "optimizer": {"name": "adam", "lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0},
        "schedule": None, "data": None, "epochs": 10, "batch_size": 32, "seed": 0, "clip": None, "val_split": 0.0,
        "metric": None, "shuffle": True, "checkpoint_every": 0}
    assert g.graph["loss"] == ("loss.mse1", 0)


def test_checkpoint_every_zero_is_accepted(tmp_path):
    g = graph(tmp_path, """
        network reg(x: f32[N, 2]) {
            y = x |> linear(1)
            return y
        }
        train {
            target t: f32[N, 1]
            loss = mse(y, t)
            checkpoint_every = 0
        }
    """)
    assert g.graph["train"]["checkpoint_every"] == 0


def test_constant_schedule_is_the_train_function_not_the_op(tmp_path):
    g = graph(tmp_path, """
        network reg(x: f32[N, 2]) {
            y = x |> linear(1)
            return y
        }
        train {
            target t: f32[N, 1]
            loss = mse(y, t)
            schedule = constant()
            optimizer = adamw(lr=0.01)
        }
    """)
    assert g.graph["train"]["schedule"] == {"name": "constant"}
    assert g.graph["train"]["optimizer"]["weight_decay"] == 0.01
    assert not any(g.nodes[n]["op"] == "constant" for n in g)


def test_named_train_sections_with_several_networks(tmp_path):
    prog = load(tmp_path, MULTI + """
        train small {
            target t: f32[N, 2]
            loss = mse(logits, t)
            epochs = 1
        }
        train big {
            target label: i64[N]
            loss = cross_entropy(logits, label)
            epochs = 2
        }
    """)
    small, big = prog.networks["small"], prog.networks["big"]
    assert small.graph["train"]["epochs"] == 1 and small.graph["loss"] == ("loss.mse1", 0)
    assert big.graph["train"]["epochs"] == 2 and big.graph["loss"] == ("loss.cross_entropy1", 0)
    assert small.graph["targets"] == ["t"] and big.graph["targets"] == ["label"]


def test_unnamed_train_belongs_to_the_network_before_it(tmp_path):
    prog = load(tmp_path, """
        network a(x: f32[N, 2]) {
            y = x |> linear(1)
            return y
        }
        train {
            target t: f32[N, 1]
            loss = mse(y, t)
        }
        network b(x: f32[N, 2]) {
            y = x |> linear(3)
            return y
        }
    """)
    assert prog.networks["a"].graph["loss"] == ("loss.mse1", 0)
    assert prog.networks["b"].graph["train"] is None and prog.networks["b"].graph["loss"] is None


def test_loss_can_use_any_network_tensor(tmp_path):
    g = graph(tmp_path, """
        network ae(x: f32[N, 8]) {
            code = x |> linear(2) |> tanh
            recon = code |> linear(8)
            return recon
        }
        train {
            loss = mse(recon, x) + 0.01 * mse(code, code * 0)
        }
    """)
    assert ins(g, "loss.mse1") == [("fc2", 0), ("x", 0)]
    assert ins(g, "loss.mse2")[0] == ("tanh1", 0)
    assert g.graph["targets"] == []


def test_a_failed_loss_statement_is_reported_once(tmp_path):
    path = write(tmp_path / "bad.net", """
        network reg(x: f32[N, 2]) {
            y = x |> linear(1)
            return y
        }
        train {
            target t: f32[N, 1]
            loss = mse(y, tt)
        }
    """)
    prog = dslc.load(path)
    errors = [d.message for d in prog.diagnostics.items if d.severity == "error"]
    assert errors == ["unknown name `tt`"]


@pytest.mark.parametrize("path", ["networks/lenet5.net", "networks/mlp_mnist.net", "networks/unet.net",
                                  "networks/resnet18.net", "networks/resnet50.net"])
def test_shipped_networks_check_cleanly(path):
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    prog = dslc.load(root / path)
    assert prog.ok and not prog.diagnostics.items, prog.diagnostics.render_all()
