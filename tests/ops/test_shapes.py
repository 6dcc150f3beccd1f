"""Registry-driven shape tests for every op case, plus exact shapes and error messages of tricky cases."""
import pytest

from dslc.ops.registry import ShapeError, WeightSpec, all_ops, get, resolve_attrs
from dslc.ops.testing import all_cases, one_node_graph
from dslc.types import TensorType

CASES = all_cases()
EXPECTED_OPS = {
    "linear", "conv1d", "conv2d", "conv_transpose2d", "maxpool", "avgpool", "global_avgpool", "upsample",
    "adaptive_avgpool", "batchnorm", "layernorm", "dropout", "softmax", "log_softmax", "flatten", "reshape", "transpose", "concat",
    "slice", "split", "mean", "add", "sub", "mul", "div", "matmul", "attention", "expand_batch", "param",
    "constant", "mse", "bce", "cross_entropy", "relu", "leaky_relu", "sigmoid", "tanh", "gelu",
}


def T(*shape, dtype="f32"):
    return TensorType(tuple(shape), dtype)


def infer(name, *ins, **attrs):
    op = get(name)
    ins = list(ins)
    return op.infer(ins, resolve_attrs(op, ins, attrs))


def shape(name, *ins, **attrs):
    outs = infer(name, *ins, **attrs)
    return outs[0].shape if len(outs) == 1 else [o.shape for o in outs]


# ---- registry-driven --------------------------------------------------------------------------------------
def test_every_expected_op_is_registered_with_cases_and_a_concrete_case():
    ops = all_ops()
    assert EXPECTED_OPS <= set(ops)
    for name, op in ops.items():
        assert op.cases, name
        assert op.doc, name
        assert any(all(t.is_concrete() for t in c.inputs) for c in op.cases), f"{name}: no fully concrete case"
        for c in op.cases:
            assert all(t.rank <= 4 and (not t.is_concrete() or _numel(t) <= 2 * 4 * 8 * 8) for t in c.inputs), \
                (name, c)


def _numel(t):
    n = 1
    for d in t.shape:
        n *= d
    return n


@pytest.mark.parametrize("op,case", CASES, ids=[f"{op.name}-{i}" for i, (op, _) in enumerate(CASES)])
def test_case_builds(op, case):
    g = one_node_graph(op, case)
    node = g.nodes["node"]
    outs = node["outputs"]
    assert outs and all(isinstance(t, TensorType) for t in outs)
    for t in outs:
        assert all(isinstance(d, (int, str)) and not isinstance(d, bool) for d in t.shape)
        assert all(d > 0 for d in t.shape if isinstance(d, int))
    if op.category == "loss":
        assert [t.shape for t in outs] == [()]
    for key, spec in node["weights"].items():
        assert isinstance(spec, WeightSpec)
        assert spec.shape and all(isinstance(d, int) and d > 0 for d in spec.shape), (key, spec)
        if spec.init == "fan_in":
            assert spec.fan_in > 0 and spec.fan_out > 0
    macs = op.macs(list(case.inputs), outs, node["attrs"])
    assert isinstance(macs, int) and macs >= 0
    if op.name in ("linear", "conv1d", "conv2d", "conv_transpose2d", "matmul", "attention"):
        assert macs > 0
    # the node's graph outputs are wired
    assert list(g.graph["outputs"].values()) == [("node", j) for j in range(len(outs))]


@pytest.mark.parametrize("name", sorted(EXPECTED_OPS))
def test_params_and_short_names(name):
    op = get(name)
    assert op.short
    assert len({p.name for p in op.params}) == len(op.params)


def test_short_names_and_aliases():
    assert get("linear").short == "fc"
    assert get("conv2d").short == get("conv1d").short == "conv"
    assert get("conv_transpose2d").short == "deconv"
    assert get("maxpool").short == get("avgpool").short == "pool"
    assert get("global_avgpool").short == "gap"
    assert get("batchnorm").short == "bn" and get("layernorm").short == "ln"
    assert get("dropout").short == "drop" and get("attention").short == "attn" and get("param").short == "param"
    assert get("permute") is get("transpose")
    assert get("add").category == "elementwise"
    assert get("param").category == get("constant").category == "source"
    assert {get(n).category for n in ("mse", "bce", "cross_entropy")} == {"loss"}


# ---- exact shapes -----------------------------------------------------------------------------------------
def test_linear():
    assert shape("linear", T("N", 7, 16), out=3) == ("N", 7, 3)
    ws = get("linear").weights([T(2, 16)], resolve_attrs(get("linear"), [T(2, 16)], {"out": 3}))
    assert ws["weight"] == WeightSpec((3, 16), "fan_in", fan_in=16, fan_out=3)
    assert ws["bias"].shape == (3,) and ws["bias"].init == "zeros"
    with pytest.raises(ShapeError) as e:
        infer("linear", T("N", "D"), out=3)
    assert e.value.hint


def test_conv_same_padding_stride2():
    op = get("conv2d")
    attrs = resolve_attrs(op, [T(1, 3, 7, 7)], {"out": 8, "kernel": 3, "stride": 2, "padding": "same"})
    assert attrs["pads"] == (1, 1, 1, 1) and attrs["kernel"] == (3, 3) and attrs["stride"] == (2, 2)
    assert shape("conv2d", T(1, 3, 7, 7), out=8, kernel=3, stride=2, padding="same") == (1, 8, 4, 4)
    # even input: total pad 1, extra at the end (SAME_UPPER)
    attrs = resolve_attrs(op, [T(1, 3, 8, 8)], {"out": 8, "kernel": 3, "stride": 2, "padding": "same"})
    assert attrs["pads"] == (0, 0, 1, 1)
    assert shape("conv2d", T(1, 3, 8, 8), out=8, kernel=3, stride=2, padding="same") == (1, 8, 4, 4)
    # even kernel stride 1
    attrs = resolve_attrs(op, [T(1, 3, 8, 8)], {"out": 2, "kernel": 4, "padding": "same"})
    assert attrs["pads"] == (1, 1, 2, 2)
    assert shape("conv2d", T(1, 3, 8, 8), out=2, kernel=4, padding="same") == (1, 2, 8, 8)
    # symbolic spatial with stride 2: pads deferred, ceil(H/2)
    attrs = resolve_attrs(op, [T("N", 3, "H", "W")], {"out": 2, "kernel": 3, "stride": 2, "padding": "same"})
    assert attrs["pads"] is None and attrs["auto_pad"] == "SAME_UPPER"
    assert shape("conv2d", T("N", 3, "H", "W"), out=2, kernel=3, stride=2, padding="same") == \
        ("N", 2, "(H+1)//2", "(W+1)//2")
    assert shape("conv2d", T("N", 3, "H", "W"), out=2, kernel=3, padding="same") == ("N", 2, "H", "W")


def test_conv_padding_forms_and_dilation_groups():
    op = get("conv2d")
    assert resolve_attrs(op, [T(1, 2, 8, 8)], {"out": 2, "kernel": 3, "padding": 1})["pads"] == (1, 1, 1, 1)
    assert resolve_attrs(op, [T(1, 2, 8, 8)], {"out": 2, "kernel": 3, "padding": [1, 2]})["pads"] == (1, 2, 1, 2)
    assert resolve_attrs(op, [T(1, 2, 8, 8)], {"out": 2, "kernel": 3, "padding": "valid"})["pads"] == (0, 0, 0, 0)
    assert resolve_attrs(get("conv1d"), [T(1, 2, 8)], {"out": 2, "kernel": 3, "padding": 2})["pads"] == (2, 2)
    # dilation 2, kernel 3 -> effective 5
    assert shape("conv2d", T(2, 4, 8, 8), out=4, kernel=3, dilation=2) == (2, 4, 4, 4)
    assert shape("conv1d", T(2, 4, 8), out=6, kernel=3, dilation=2, padding=2, groups=2) == (2, 6, 8)
    ws = get("conv2d").weights([T(2, 4, 8, 8)], resolve_attrs(op, [T(2, 4, 8, 8)],
                                                              {"out": 8, "kernel": 3, "groups": 2}))
    assert ws["weight"] == WeightSpec((8, 2, 3, 3), "fan_in", fan_in=18, fan_out=36)
    assert shape("conv2d", T("N", 3, 32, 32), out=4, kernel=[3, 5], stride=[1, 2]) == ("N", 4, 30, 14)


def test_conv_errors():
    with pytest.raises(ShapeError, match="divisible by groups"):
        infer("conv2d", T(1, 3, 8, 8), out=4, kernel=3, groups=2)
    with pytest.raises(ShapeError, match="out=6 is not divisible by groups=4"):
        infer("conv2d", T(1, 4, 8, 8), out=6, kernel=3, groups=4)
    with pytest.raises(ShapeError) as e:
        infer("conv2d", T(1, 3, 4, 4), out=4, kernel=5)
    m = e.value.message
    assert m.startswith("spatial size shrinks to 0:") and "input size 4" in m and "kernel 5" in m \
        and "stride 1" in m and "padding 0+0" in m and "gives size 0" in m
    assert e.value.hint
    with pytest.raises(ShapeError, match="rank-4"):
        infer("conv2d", T(1, 3, 8), out=4, kernel=3)
    with pytest.raises(TypeError, match="kernel"):
        infer("conv2d", T(1, 3, 8, 8), out=4, kernel=[3, 3, 3])
    with pytest.raises(TypeError, match="missing required argument `kernel`"):
        infer("conv2d", T(1, 3, 8, 8), out=4)
    with pytest.raises(TypeError, match="unknown argument `strides`"):
        infer("conv2d", T(1, 3, 8, 8), out=4, kernel=3, strides=2)
    with pytest.raises(TypeError, match="padding"):
        infer("conv2d", T(1, 3, 8, 8), out=4, kernel=3, padding="full")


def test_conv_transpose():
    assert shape("conv_transpose2d", T(1, 2, 3, 4), out=2, kernel=3, stride=2, padding=1, output_padding=1) == \
        (1, 2, 6, 8)
    assert shape("conv_transpose2d", T(1, 2, 3, 4), out=2, kernel=3, stride=2, padding=1) == (1, 2, 5, 7)
    assert shape("conv_transpose2d", T(2, 4, 4, 4), out=3, kernel=2, stride=2) == (2, 3, 8, 8)
    op = get("conv_transpose2d")
    a = resolve_attrs(op, [T(1, 4, 4, 4)], {"out": 6, "kernel": 3, "groups": 2})
    assert op.weights([T(1, 4, 4, 4)], a)["weight"].shape == (4, 3, 3, 3)
    assert shape("conv_transpose2d", T("N", 4, "H", 4), out=2, kernel=2, stride=2)[2] != "H"
    with pytest.raises(TypeError, match="output_padding"):
        infer("conv_transpose2d", T(1, 2, 3, 4), out=2, kernel=3, stride=2, output_padding=2)


def test_pooling():
    assert shape("maxpool", T(1, 2, 7, 7), kernel=2) == (1, 2, 3, 3)
    assert shape("maxpool", T(1, 2, 7, 7), kernel=2, ceil_mode=True) == (1, 2, 4, 4)
    assert shape("maxpool", T(1, 1, 6, 6), kernel=2, stride=2, padding=1, ceil_mode=True) == (1, 1, 4, 4)
    # ceil-mode rule: the last window must start inside input + left pad (torch gives 3 here, not 4)
    assert shape("maxpool", T(1, 1, 5, 5), kernel=2, stride=2, padding=1, ceil_mode=True) == (1, 1, 3, 3)
    assert shape("avgpool", T(1, 1, 5, 5), kernel=2, stride=2, padding=1, ceil_mode=False) == (1, 1, 3, 3)
    assert shape("avgpool", T(1, 1, 4, 4), kernel=1, stride=3, ceil_mode=True) == (1, 1, 2, 2)
    assert shape("maxpool", T(2, 3, 7, 7), kernel=3, stride=2, padding=1) == (2, 3, 4, 4)
    assert shape("avgpool", T(2, 3, 9), kernel=3, stride=2) == (2, 3, 4)
    a = resolve_attrs(get("maxpool"), [T(1, 1, 8, 8)], {"kernel": 3})
    assert a["stride"] == (3, 3) and a["kernel"] == (3, 3) and a["pads"] == (0, 0, 0, 0)
    assert shape("global_avgpool", T("N", 8, 4, 4)) == ("N", 8)
    assert shape("global_avgpool", T("N", 8, 4, 4), keepdims=True) == ("N", 8, 1, 1)
    with pytest.raises(ShapeError, match="spatial size shrinks to 0"):
        infer("maxpool", T(1, 1, 2, 2), kernel=3)
    with pytest.raises(TypeError, match="half the kernel"):
        infer("maxpool", T(1, 1, 8, 8), kernel=2, padding=2)


def test_adaptive_avgpool():
    assert shape("adaptive_avgpool", T("N", 256, 13, 13), size=6) == ("N", 256, 6, 6)
    assert shape("adaptive_avgpool", T(2, 3, 7, 5), size=[3, 2]) == (2, 3, 3, 2)
    assert shape("adaptive_avgpool", T(1, 1, 3, 4), size=[5, 4]) == (1, 1, 5, 4)  # enlarging is allowed
    with pytest.raises(ShapeError, match="known height and width"):
        infer("adaptive_avgpool", T("N", 3, "H", 8), size=2)
    with pytest.raises(ShapeError, match="rank-4"):
        infer("adaptive_avgpool", T(2, 3, 8), size=2)
    with pytest.raises(TypeError, match="positive"):
        infer("adaptive_avgpool", T(1, 1, 4, 4), size=[2, 0])
    with pytest.raises(TypeError, match="list of 2 integers"):
        infer("adaptive_avgpool", T(1, 1, 4, 4), size=[2, 2, 2])


def test_upsample():
    assert shape("upsample", T(1, 2, 3, 4)) == (1, 2, 6, 8)
    assert shape("upsample", T(1, 2, 3, 4), scale=[1, 3], mode="bilinear") == (1, 2, 3, 12)
    with pytest.raises(TypeError, match="mode"):
        infer("upsample", T(1, 2, 3, 4), mode="cubic")


def test_norm_weights():
    op = get("batchnorm")
    ws = op.weights([T(2, 5, 3, 3)], resolve_attrs(op, [T(2, 5, 3, 3)], {}))
    assert {k: (w.shape, w.init, w.trainable) for k, w in ws.items()} == {
        "weight": ((5,), "ones", True), "bias": ((5,), "zeros", True),
        "running_mean": ((5,), "zeros", False), "running_var": ((5,), "ones", False)}
    with pytest.raises(ShapeError):
        infer("batchnorm", T(5))
    ws = get("layernorm").weights([T(2, 3, 7)], {"eps": 1e-5})
    assert ws["weight"].shape == ws["bias"].shape == (7,)


def test_flatten_reshape():
    assert shape("flatten", T("N", 3, 4, 4)) == ("N", 48)
    assert shape("flatten", T(2, 3, 4, 5), start=0) == (120,)
    assert shape("flatten", T("N", "T", 4), start=0, end=-2) == ("N*T", 4)
    assert shape("reshape", T(2, 3, 4), shape=[0, -1]) == (2, 12)
    assert shape("reshape", T(2, 3, 4), shape=[4, 0, -1]) == (4, 3, 2)
    assert shape("reshape", T("N", 3, 4), shape=[0, -1]) == ("N", 12)
    assert shape("reshape", T("N", 3, 4), shape=[0, 3, 2, 2]) == ("N", 3, 2, 2)
    out = shape("reshape", T("N", 3, 4), shape=[-1, 6])
    assert isinstance(out[0], str) and out[1] == 6  # count not provable: a symbolic dim
    with pytest.raises(ShapeError) as e:
        infer("reshape", T(2, 3, 4), shape=[5, 5])
    assert "[2, 3, 4]" in e.value.message and "24" in e.value.message and "[5, 5]" in e.value.message \
        and "25" in e.value.message
    with pytest.raises(ShapeError, match="24"):
        infer("reshape", T(2, 3, 4), shape=[5, -1])
    with pytest.raises(ShapeError):
        infer("reshape", T("N", 3, 4), shape=[0, 5])
    with pytest.raises(TypeError, match="-1"):
        infer("reshape", T(2, 3, 4), shape=[-1, -1])


def test_transpose_concat():
    assert shape("permute", T("N", 3, 4, 5), perm=[0, 2, 3, 1]) == ("N", 4, 5, 3)
    with pytest.raises(ShapeError, match="permutation"):
        infer("transpose", T(2, 3, 4), perm=[0, 1])
    assert shape("concat", T("N", 3, 8), T("N", 5, 8)) == ("N", 8, 8)
    assert shape("concat", T(2, 3), T(2, 4), T(2, 1), axis=-1) == (2, 8)
    with pytest.raises(ShapeError) as e:
        infer("concat", T("N", 64, 28, 28), T("N", 64, 28, 28), T("N", 64, 29, 29), axis=1)
    assert e.value.message == "cannot concat [N, 64, 28, 28] with [N, 64, 29, 29] along axis 1: dim 2 differs (28 vs 29)"
    assert e.value.operand == 2
    with pytest.raises(ShapeError) as e:
        infer("concat", T(2, 3), T(2, 3, 1))
    assert e.value.operand == 1


def test_slice_split_mean():
    assert shape("slice", T(2, 10), axis=1, start=-4, end=-1) == (2, 3)
    assert shape("slice", T(2, 10), axis=1, start=5, end=100) == (2, 5)
    assert shape("slice", T(2, 10), axis=1, start=0, end=10, step=4) == (2, 3)
    assert shape("slice", T("N", "T", 8), axis=1, start=0, end=1) == ("N", 1, 8)
    with pytest.raises(ShapeError, match="empty"):
        infer("slice", T(2, 10), axis=1, start=8, end=2)
    assert shape("split", T(2, 6, 4), sizes=[1, 2, 3]) == [(2, 1, 4), (2, 2, 4), (2, 3, 4)]
    assert len(infer("split", T(2, 6, 4), sizes=[2, 2], axis=-1)) == 2
    with pytest.raises(ShapeError, match="sum to 5"):
        infer("split", T(2, 6, 4), sizes=[2, 3])
    assert shape("mean", T(2, 3, 4, 4), axis=[2, 3]) == (2, 3)
    assert shape("mean", T(2, 3, 4, 4), axis=[-1, 2], keepdims=True) == (2, 3, 1, 1)
    assert resolve_attrs(get("mean"), [T(2, 3, 4)], {"axis": -1})["axes"] == (2,)
    with pytest.raises(ShapeError, match="out of range"):
        infer("mean", T(2, 3), axis=2)


def test_broadcasting():
    assert shape("add", T("N", 64, 56, 56), T(64, 1, 1)) == ("N", 64, 56, 56)
    assert shape("mul", T(4, 1), T(1, 5)) == (4, 5)
    assert shape("div", T(3), T(2, 1)) == (2, 3)
    with pytest.raises(ShapeError) as e:
        infer("add", T("N", 64, 56, 56), T("N", 128, 28, 28))
    assert e.value.message == "cannot add [N, 64, 56, 56] and [N, 128, 28, 28]: dims 1 differ (64 vs 128)"
    assert e.value.hint == "a residual add needs a projection shortcut, e.g. conv2d(c, 1, stride=s)"
    with pytest.raises(ShapeError, match="cannot sub"):
        infer("sub", T(3, 4), T(5))
    with pytest.raises(ShapeError, match="dtypes differ"):
        infer("add", T(3), T(3, dtype="i64"))


def test_matmul():
    assert shape("matmul", T(2, 1, 3, 4), T(5, 4, 6)) == (2, 5, 3, 6)
    assert shape("matmul", T(3, 4), T(4)) == (3,)
    assert shape("matmul", T(4), T(4)) == ()
    with pytest.raises(ShapeError, match=r"inner dims differ \(4 vs 5\)"):
        infer("matmul", T(3, 4), T(5, 6))


def test_attention_expand_param_constant():
    assert shape("attention", T("N", 5, 8), heads=2) == ("N", 5, 8)
    with pytest.raises(ShapeError, match="divisible by heads"):
        infer("attention", T(1, 5, 8), heads=3)
    op = get("attention")
    ws = op.weights([T(1, 5, 8)], {"heads": 2, "causal": False, "bias": True})
    assert {k: w.shape for k, w in ws.items()} == {"in_weight": (24, 8), "in_bias": (24,), "out_weight": (8, 8),
                                                  "out_bias": (8,)}
    assert sum(_numel(T(*w.shape)) for w in ws.values()) == 4 * 8 * 8 + 4 * 8  # torch MultiheadAttention count
    assert op.macs([T(1, 5, 8)], [T(1, 5, 8)], {}) == 4 * 5 * 64 + 2 * 25 * 8
    assert not {"in_bias", "out_bias"} & set(op.weights([T(1, 5, 8)], {"heads": 2, "bias": False}))
    assert shape("expand_batch", T(1, 1, 8), T("N", 4, 8)) == ("N", 1, 8)
    with pytest.raises(ShapeError, match=r"\[1, \.\.\.\]"):
        infer("expand_batch", T(2, 1, 8), T(2, 4, 8))
    assert shape("param", shape=[1, 5, 8]) == (1, 5, 8)
    pop = get("param")
    assert pop.weights([], resolve_attrs(pop, [], {"shape": [3], "init": "normal", "std": 0.5}))["value"].init == \
        "normal:0.5"
    with pytest.raises(TypeError):
        infer("param", shape=[-1, 4])
    assert infer("constant", value=2.0) == [T()]


def test_losses():
    assert shape("cross_entropy", T("N", 10), T("N", dtype="i64")) == ()
    assert shape("cross_entropy", T(4, 10), T(4, dtype="i32")) == ()
    assert shape("cross_entropy", T(4, 10), T(4, 10)) == ()
    assert shape("cross_entropy", T(2, 3, 4, 4), T(2, 4, 4, dtype="i64")) == ()
    with pytest.raises(ShapeError) as e:
        infer("cross_entropy", T(4, 10), T(4, 10, dtype="i64"))
    assert "[4, 10, 4, 10]" not in e.value.message and "[4, 10]" in e.value.message and e.value.operand == 1
    with pytest.raises(ShapeError, match=r"\[4, 5\].*\[4, 10\]"):
        infer("cross_entropy", T(4, 10), T(4, 5))
    with pytest.raises(ShapeError, match="same shape"):
        infer("mse", T(4, 1), T(4))
    assert shape("bce", T(4, 1), T(4, 1)) == ()
    with pytest.raises(TypeError, match="label_smoothing"):
        infer("cross_entropy", T(4, 10), T(4, dtype="i64"), label_smoothing=1.5)


def test_bad_arguments_are_type_errors():
    with pytest.raises(TypeError, match="`out` must be an integer"):
        infer("linear", T(2, 3), out=2.5)
    with pytest.raises(TypeError):
        infer("dropout", T(2, 3), p=1.0)
    with pytest.raises(ShapeError, match="out of range"):
        infer("softmax", T(2, 3), axis=2)
