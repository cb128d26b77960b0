"""The channel analysis, the rule registry, the FROZEN default and the emitter, on tiny graphs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import inputs_for
from onnx import TensorProto, helper
from rules_helpers import (
    SHIFT,
    SHIFTED,
    ZERO,
    analysis,
    assert_close,
    build,
    channel_values,
    evaluate,
    mask,
    masked,
    node,
    node_input,
    shape_of,
    shrunk,
    states,
)

from chainx.channels.emitter import Emitter, WeightSlice
from chainx.channels.registry import FROZEN, RULES, rule_for
from chainx.channels.rules import base
from chainx.channels.rules.base import Cases, Rule
from chainx.channels.rules.channelwise import (
    AveragePoolRule,
    BatchNormRule,
    ClipRule,
    NonZeroPreservingRule,
    ReduceRule,
    ResizeRule,
    SoftmaxRule,
    SqueezeRule,
    ZeroPreservingRule,
)
from chainx.channels.rules.heads import (
    HeadMatMulRule,
    HeadMergeRule,
    HeadSplitRule,
    OffAxisRule,
    TransposeRule,
    UnitAxesRule,
)
from chainx.channels.rules.mixing import BinaryRule, ConvRule, GemmRule
from chainx.channels.rules.reindex import (
    ConcatRule,
    GatherRule,
    PadRule,
    ShapeRule,
    SliceRule,
    SplitRule,
)
from chainx.channels.rules.reshape import FlattenRule, UnitReshapeRule
from chainx.onnx.graph import GraphIndex


def flags(width: int, true: list[int]) -> np.ndarray:
    out = np.zeros(width, bool)
    out[true] = True
    return out


# ---------------------------------------------------------------- registry

EXPECTED_RULES = {
    **dict.fromkeys(
        "Relu LeakyRelu HardSwish Tanh Identity Neg Abs Erf Gelu Elu Selu Softsign Mish "
        "MaxPool GlobalAveragePool GlobalMaxPool LpPool Dropout PRelu".split(),
        ZeroPreservingRule,
    ),
    **dict.fromkeys(
        "Sigmoid HardSigmoid Softplus Exp Cos InstanceNormalization".split(),
        NonZeroPreservingRule,
    ),
    "AveragePool": AveragePoolRule,
    **dict.fromkeys("ReduceMean ReduceMax ReduceMin ReduceSum".split(), ReduceRule),
    "Squeeze": (SqueezeRule, OffAxisRule),
    "Unsqueeze": OffAxisRule,
    "Transpose": TransposeRule,
    "Softmax": SoftmaxRule,
    "Resize": ResizeRule,
    "Upsample": ResizeRule,
    "Clip": ClipRule,
    "BatchNormalization": BatchNormRule,
    "Pad": PadRule,
    "Slice": (SliceRule, OffAxisRule),
    "Gather": GatherRule,
    "Split": (SplitRule, OffAxisRule),
    **dict.fromkeys("Add Sub Mul Div Pow".split(), BinaryRule),
    "Concat": ConcatRule,
    "Conv": ConvRule,
    "Gemm": GemmRule,
    "MatMul": (GemmRule, HeadMatMulRule),
    "Flatten": FlattenRule,
    "Reshape": (UnitReshapeRule, FlattenRule, HeadSplitRule, HeadMergeRule, UnitAxesRule),
    "Shape": ShapeRule,
}


def test_registry_has_one_rule_of_the_right_kind_per_op() -> None:
    assert set(RULES) == set(EXPECTED_RULES)
    for op, expected in EXPECTED_RULES.items():
        if isinstance(expected, tuple):  # several cases, the first that applies answers
            assert isinstance(RULES[op], Cases), op
            assert tuple(type(case) for case in RULES[op].cases) == expected, op
            assert not any(case.frozen for case in RULES[op].cases)
        else:
            assert type(RULES[op]) is expected, op
            assert RULES[op].frozen is False
    assert FROZEN.frozen is True and type(FROZEN) is Rule
    assert base.FROZEN is FROZEN  # the registry's default is the base rule itself


def test_registry_parameters_of_prelu_and_instance_norm() -> None:
    assert RULES["PRelu"].params == (1,) and not RULES["PRelu"].vectors
    assert RULES["InstanceNormalization"].params == (1, 2)
    assert RULES["InstanceNormalization"].vectors
    assert RULES["BatchNormalization"].params == (1, 2, 3, 4)
    assert RULES["Relu"].params == ()


def lrn_model(lines: str = "n = LRN <size = 3> (m)") -> onnx.ModelProto:
    text = f"""
    net (float[N, 3, 4, 4] x) => (float[N, 2, 4, 4] y) {{
        c = Conv (x, w0, b0)
        m = Mul (c, mask)
        {lines}
        o = Mul (n, mask_out)
        y = Conv <pads = [1, 1, 1, 1]> (o, w1, b1)
    }}
    """
    shapes = {"w0": (5, 3, 1, 1), "b0": (5,), "w1": (2, 5, 3, 3), "b1": (2,)}
    values = {"mask": mask(5, [1, 3]), "mask_out": mask(5, [4])}
    return build(text, shapes, values)


def test_rule_for_an_unknown_op_or_a_refused_node_is_frozen() -> None:
    model = lrn_model("n0 = LRN <size = 3> (m)\n        n = Concat <axis = 2> (n0)")
    g = GraphIndex.build(model)
    by_name = {n.name: n for n in g.nodes}
    assert rule_for(by_name["n0"], g) is FROZEN  # no rule for LRN
    assert rule_for(by_name["n"], g) is FROZEN  # Concat's rule refuses axis 2
    assert rule_for(by_name["c"], g) is RULES["Conv"]
    assert analysis(model).rules["n0"] is FROZEN


# ---------------------------------------------------------------- FROZEN


def test_frozen_op_outputs_are_live_and_need_every_input_channel() -> None:
    model = lrn_model()
    s = states(model)
    np.testing.assert_array_equal(s.zero["m"], flags(5, [1, 3]))
    assert not s.zero["n"].any() and np.isnan(s.const["n"]).all()  # zero in, live out
    np.testing.assert_array_equal(s.need["n"], ~flags(5, [4]))
    assert s.need["m"].all()  # LRN mixes neighbours: every channel it sees is needed


def test_frozen_op_sees_every_channel_in_the_original_order() -> None:
    model = lrn_model()
    result = shrunk(model)
    assert result.frozen == [("n", "LRN")]
    assert result.refilled == 2  # channels 1 and 3, re-created as zeros
    assert node_input(result.model, "c", 1).shape[0] == 3
    # The LRN's input in the chain is the original one, channel for channel.
    x = inputs_for(model)
    fed = node(result.model, "n").input[0]
    (expected,) = evaluate(model, x, ("m",))[1:]
    (actual,) = evaluate(result.model, x, (fed,))[1:]
    assert_close(expected, actual)
    # Downstream of it, channel 4, masked after the LRN, is dropped again.
    assert node_input(result.model, "y", 1).shape == (2, 4, 3, 3)


# ---------------------------------------------------------------- analysis


def test_analysis_starts_live_ends_needed_and_names_each_rule() -> None:
    model = masked("r = Relu (k)")
    result = analysis(model)
    s = result.states
    assert not s.zero["x"].any() and np.isnan(s.const["x"]).all()
    assert s.need["y"].all()
    assert set(result.rules) == {n.name for n in model.graph.node}
    assert isinstance(result.rules["r"], ZeroPreservingRule)
    assert isinstance(result.rules["y"], ConvRule)


def test_analysis_makes_every_zero_channel_the_constant_zero() -> None:
    """ConvRule knows no constants, but a filter with zero weights and bias is 0."""
    w0 = np.random.default_rng(0).standard_normal((5, 3, 1, 1)).astype(np.float32)
    b0 = np.ones(5, np.float32)
    w0[2], b0[2] = 0, 0
    model = masked("r = Relu (c)", values={"w0": w0, "b0": b0})
    s = states(model)
    np.testing.assert_array_equal(s.zero["c"], flags(5, [2]))
    np.testing.assert_array_equal(s.const["c"], [np.nan, np.nan, 0, np.nan, np.nan])


def test_analysis_turns_non_finite_constants_into_unknown() -> None:
    """Exp(1000) overflows: not a constant the export could use."""
    model = masked(
        "r = Exp (k)", values={"shift": channel_values([0, 0, 0, 1000, 0])}, consumer="Conv"
    )
    s = states(model)
    assert s.const["k"][SHIFTED] == 1000
    assert np.isnan(s.const["r"][SHIFTED])
    assert s.const["r"][ZERO] == 1.0


def test_analysis_needs_flow_back_through_rules() -> None:
    text = """
    net (float[N, 3, 4, 4] x) => (float[N, 2, 4, 4] y) {
        c = Conv (x, w0, b0)
        r = Relu (c)
        p = MaxPool <kernel_shape = [3, 3], pads = [1, 1, 1, 1]> (r)
        m = Mul (p, mask)
        y = Conv (m, w1, b1)
    }
    """
    shapes = {"w0": (5, 3, 1, 1), "b0": (5,), "w1": (2, 5, 1, 1), "b1": (2,)}
    model = build(text, shapes, {"mask": mask(5, [0, 3])})
    s = states(model)
    for tensor in ("c", "r", "p"):
        np.testing.assert_array_equal(s.need[tensor], ~flags(5, [0, 3]), tensor)
    assert not s.zero["c"].any()  # not zero: just not needed
    assert s.need["x"].all()


def test_states_live_and_dead_nodes() -> None:
    text = """
    net (float[N, 3, 4, 4] x) => (float[N, 2, 4, 4] y) {
        c1 = Conv (x, w1, b1)
        c2 = Conv (x, w2, b2)
        a = Mul (c1, dead)
        b = Mul (c2, mask)
        s = Add (a, b)
        y = Conv (s, w3, b3)
    }
    """
    shapes = {"w1": (5, 3, 1, 1), "b1": (5,), "w2": (5, 3, 1, 1), "b2": (5,)}
    shapes |= {"w3": (2, 5, 1, 1), "b3": (2,)}
    model = build(text, shapes, {"dead": mask(5, list(range(5))), "mask": mask(5, [2])})
    s = states(model)
    np.testing.assert_array_equal(s.live("b"), ~flags(5, [2]))
    assert not s.live("a").any() and not s.live("c1").any()
    assert s.is_dead(node(model, "c1")) and s.is_dead(node(model, "a"))
    assert not s.is_dead(node(model, "c2")) and not s.is_dead(node(model, "s"))


# ---------------------------------------------------------------- emitter


def emitter_through(model: onnx.ModelProto, last: str) -> Emitter:
    """An Emitter that has written the graph's nodes up to `last`, as shrink does."""
    result = analysis(model)
    em = Emitter(result.states)
    for n in em.g.nodes:
        if result.states.is_dead(n):
            for name in n.output:
                em.set(name, "", np.arange(0))
        else:
            result.rules[n.name].emit(n, em)
        if n.name == last:
            break
    return em


def run_emitted(model: onnx.ModelProto, em: Emitter, output: str) -> np.ndarray:
    """Run what the emitter wrote, reading `output`, on the test inputs of `model`."""
    graph = helper.make_graph(
        em.nodes,
        "emitted",
        list(model.graph.input),
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
        initializer=list(em.initializers.values()),
    )
    emitted = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=9)
    (value,) = evaluate(emitted, inputs_for(model, count=3))
    return value


def original_of(model: onnx.ModelProto, tensor: str) -> np.ndarray:
    return evaluate(model, inputs_for(model, count=3), (tensor,))[-1]


def emitted_ops(em: Emitter, since: int) -> list[str]:
    return [n.op_type for n in em.nodes[since:]]


def test_emitter_layout_of_a_masked_tensor_lacks_zero_and_constant_channels() -> None:
    model = masked("r = Relu (k)")
    em = emitter_through(model, "k")
    np.testing.assert_array_equal(em.layout("k"), [0, 2, 4])
    assert em.layout("x").tolist() == [0, 1, 2]
    value = run_emitted(model, em, em.src("k"))
    assert_close(original_of(model, "k")[:, [0, 2, 4]], value)


def test_remapped_fills_missing_constant_channels() -> None:
    model = masked("r = Relu (k)")
    em = emitter_through(model, "k")
    before = len(em.nodes)
    name = em.remapped("k", np.arange(5))
    assert emitted_ops(em, before) == ["Pad", "Gather", "Add"]
    fill = next(v for k, v in em.initializers.items() if k.startswith("k_chainx_fill"))
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(fill).ravel(), [0, 0, 0, SHIFT, 0])
    assert_close(original_of(model, "k"), run_emitted(model, em, name))


def test_remapped_reorders_and_caches() -> None:
    model = masked("r = Relu (k)")
    em = emitter_through(model, "k")
    assert em.remapped("k", np.array([0, 2, 4])) == em.src("k")  # already so: no node
    before = len(em.nodes)
    name = em.remapped("k", np.array([4, 0, 2]))
    assert emitted_ops(em, before) == ["Gather"]
    index = next(v for k, v in em.initializers.items() if k.startswith("k_chainx_index"))
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(index), [2, 0, 1])
    assert em.remapped("k", np.array([4, 0, 2])) == name
    assert len(em.nodes) == before + 1
    assert_close(original_of(model, "k")[:, [4, 0, 2]], run_emitted(model, em, name))


def test_remapped_pads_a_contiguous_layout_without_a_gather() -> None:
    model = masked("r = Relu (k)", values={"mask": mask(5, [0, 4]), "shift": np.float32(0)})
    em = emitter_through(model, "k")
    np.testing.assert_array_equal(em.layout("k"), [1, 2, 3])
    before = len(em.nodes)
    name = em.remapped("k", np.arange(5))
    assert emitted_ops(em, before) == ["Pad"]
    assert_close(original_of(model, "k"), run_emitted(model, em, name))


@pytest.mark.parametrize("batch", ["N", "3"])
def test_remapped_of_a_tensor_with_no_channel_is_zeros(batch: str) -> None:
    text = f"""
    net (float[{batch}, 3, 4, 4] x) => (float[{batch}, 2, 4, 4] y) {{
        c = Conv (x, w0, b0)
        m = Mul (c, dead)
        y = Conv (m, w1, b1)
    }}
    """
    shapes = {"w0": (5, 3, 1, 1), "b0": (5,), "w1": (2, 5, 1, 1), "b1": (2,)}
    model = build(text, shapes, {"dead": mask(5, list(range(5)))})
    em = emitter_through(model, "m")
    assert len(em.layout("m")) == 0 and em.src("m") == ""
    name = em.remapped("m", np.arange(2))
    # Zeros of the batch's size (from the input's shape when it is free), never a stored
    # tensor of zeros: the chain's file holds no parameters for them.
    assert "ConstantOfShape" in [n.op_type for n in em.nodes]
    stored = [onnx.numpy_helper.to_array(init) for init in em.initializers.values()]
    assert all(value.dtype == np.int64 for value in stored if value.size > 1)
    value = run_emitted(model, em, name)
    assert value.shape == (3, 2, 4, 4) and not value.any()


def test_constant_inputs_are_missing_non_zero_constants_that_are_read() -> None:
    model = masked("r = Relu (k)")
    em = emitter_through(model, "k")
    np.testing.assert_array_equal(em.constant_inputs("k", np.ones(5, bool)), [SHIFTED])
    np.testing.assert_array_equal(em.constant_inputs("k", ~flags(5, [SHIFTED])), [])


def test_channel_constant_slices_per_channel_values_only() -> None:
    model = masked("r = Relu (k)")
    em = emitter_through(model, "k")
    name = em.channel_constant("shift", em.g.constants["shift"], np.array([3, 0]), "k")
    np.testing.assert_array_equal(
        onnx.numpy_helper.to_array(em.initializers[name]).ravel(), [SHIFT, 0]
    )
    em.g.constants["scalar"] = np.array(2, np.float32)
    assert em.channel_constant("scalar", em.g.constants["scalar"], np.array([1]), "k") == "scalar"
    with pytest.raises(ValueError, match="per-channel"):
        em.channel_constant("spatial", np.ones((1, 5, 4, 4), np.float32), np.array([0]), "k")


def test_weight_slice_is_bit_identical_and_recorded() -> None:
    model = masked("r = Relu (k)")
    em = emitter_through(model, "k")
    conv = node(model, "y")
    weight = em.g.constants["w1"]
    name = em.weight_slice(conv, 1, weight, np.array([1]), np.array([0, 4]))
    np.testing.assert_array_equal(
        onnx.numpy_helper.to_array(em.initializers[name]), weight[[1]][:, [0, 4]]
    )
    assert em.slices[-1] == WeightSlice("y", "w1", ([1], [0, 4]))
    assert name != "w1"  # a fresh name: the original weight stays as it was


def test_fresh_names_never_collide() -> None:
    model = masked("r = Relu (k)")
    em = emitter_through(model, "k")
    names = {em.fresh("k") for _ in range(3)}
    assert len(names) == 3 and "k" not in names
    assert em.fresh("brand_new") == "brand_new"


def test_an_output_missing_channels_is_refilled_under_its_own_name() -> None:
    text = """
    net (float[N, 3, 4, 4] x) => (float[N, 5, 4, 4] r) {
        c = Conv (x, w0, b0)
        m = Mul (c, mask)
        k = Add (m, shift)
        r = Relu (k)
    }
    """
    values = {"mask": mask(5, [1, 3]), "shift": channel_values([0, 0, 0, SHIFT, 0])}
    model = build(text, {"w0": (5, 3, 1, 1), "b0": (5,)}, values)
    result = shrunk(model)
    producer = next(n for n in result.model.graph.node if "r" in n.output)
    assert producer.op_type == "Identity"
    assert shape_of(result.model, "r")[1] == 5
    assert node_input(result.model, "c", 1).shape[0] == 3
