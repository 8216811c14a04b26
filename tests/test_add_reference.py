"""int8 ADD, the residual connection of MobileNetV2: the reader admits an elementwise sum of
two activations (its fused activation included) and refuses a broadcasting one, and the
numpy reference (`reference.add`, `add_params`) equals TFLite's BUILTIN_REF kernel bit for
bit: on Keras residual blocks tensor by tensor, exhaustively over every pair of int8 inputs
for very different and equal scales, and on keras.applications.MobileNetV2."""
import copy
import warnings
from collections import Counter

import numpy as np
import pytest
from keras_models import int8_tflite
from tflite_edit import edited, schema, unpack

from quantize import fixedpoint as fx
from quantize.convert import golden_interpreter, golden_run
from quantize.reference import (ADD_LEFT_SHIFT, AddParams, activation_range, add,
                                add_params, add_scaled_input, run_graph, run_op)
from quantize.tflite_graph import (Op, Tensor, UnsupportedModelError,
                                   activation_inputs, load_graph)
from quantize.verify import assert_bit_exact

RESIDUAL_OPS = ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "ADD", "MEAN", "FULLY_CONNECTED",
                "SOFTMAX"]


def _residual_net(activation):
    """An inverted-residual block on its own input: 1x1 expand + ReLU6, 3x3 depthwise,
    linear 1x1 projection, added to the block's input (then `activation`, which the
    converter fuses into the ADD), global average, dense, softmax."""
    from keras import layers

    def net(x):
        y = layers.Conv2D(8, 1, activation="relu6", name="expand")(x)
        y = layers.DepthwiseConv2D(3, padding="same", name="dw")(y)
        y = layers.Conv2D(8, 1, name="project")(y)
        y = layers.Add(name="res_add")([x, y])
        if activation == "RELU":
            y = layers.ReLU(name="post_relu")(y)
        elif activation == "RELU6":
            y = layers.ReLU(6.0, name="post_relu6")(y)
        y = layers.GlobalAveragePooling2D(name="gap")(y)
        return layers.Softmax(name="softmax")(layers.Dense(10, name="fc")(y))
    return net


_residual_models: dict[str, bytes] = {}


def residual_tflite(activation: str) -> bytes:
    if activation not in _residual_models:
        _residual_models[activation] = int8_tflite(_residual_net(activation), (8, 8, 8))
    return _residual_models[activation]


def _random_inputs(graph, n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(-128, 128, graph.input.shape, dtype=np.int8) for _ in range(n)]


def _assert_every_tensor_bit_exact(tflite: bytes, graph, n: int) -> list[dict]:
    interp = golden_interpreter(tflite)
    runs = []
    for x in _random_inputs(graph, n):
        ours = run_graph(graph, x)
        assert assert_bit_exact(graph, ours, golden_run(interp, x)) == len(graph.ops)
        assert np.unique(ours[graph.output.index]).size > 1     # not vacuous
        runs.append(ours)
    return runs


def _add_op(graph) -> Op:
    return next(op for op in graph.ops if op.kind == "ADD")

# ---------------------------------------------------------------------------- the reader


@pytest.mark.parametrize("activation", ["NONE", "RELU", "RELU6"])
def test_residual_block_is_admitted_with_its_fused_activation(activation):
    g = load_graph(residual_tflite(activation))
    assert [op.kind for op in g.ops] == RESIDUAL_OPS
    op = _add_op(g)
    assert op.options == {"activation": activation}
    # Both summands are activations: the block's input (here the model input) and the
    # projection's output.
    a, b = activation_inputs(op)
    assert {a.index, b.index} == {g.input.index, g.ops[2].outputs[0].index}
    assert a.shape == b.shape == op.outputs[0].shape == (1, 8, 8, 8)


def test_broadcasting_add_refused_naming_the_op():
    """A squeeze-excite-like sum of a map and its per-channel mean broadcasts (1, 1, 1, C)
    over (1, H, W, C): one line naming the layer, the op and both shapes."""
    from keras import layers

    def net(x):
        y = layers.Conv2D(8, 1, name="pw")(x)
        m = layers.GlobalAveragePooling2D(keepdims=True, name="gap")(y)
        return layers.Conv2D(4, 1, name="head")(layers.Add(name="bc_add")([y, m]))
    with pytest.raises(UnsupportedModelError) as e:
        load_graph(int8_tflite(net, (8, 8, 8)))
    msg = str(e.value)
    assert "\n" not in msg and len(e.value.blockers) == 1
    assert e.value.blockers[0] == msg
    assert msg.startswith("layer 2 '") and "bc_add" in msg.split("(ADD)")[0]
    assert msg.endswith("(ADD): broadcasting ADD of shapes (1, 8, 8, 8) and (1, 1, 1, 8) is "
                        "not supported (only an elementwise sum of two tensors of one shape)")


def _edit_add(tflite: bytes, edit) -> bytes:
    """`tflite` with `edit(model, add_operator)` applied to its (only) ADD."""
    def apply(m):
        sg = m.subgraphs[0]
        add_code = schema().BuiltinOperator.ADD
        codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in m.operatorCodes]
        edit(m, next(o for o in sg.operators if codes[o.opcodeIndex] == add_code))
    return edited(tflite, apply)


def test_add_of_a_constant_refused_as_unmappable():
    """ADD of an activation and a constant (a bias-like sum) is a well-formed op the flow has
    no unit for; the ops after it are still checked."""
    def make_input_1_constant(m, op):
        sg = m.subgraphs[0]
        t = copy.deepcopy(sg.tensors[op.inputs[1]])
        t.name = b"constant_summand"
        buf = schema().BufferT()
        buf.data = np.ones(int(np.prod(t.shape)), np.int8).tobytes()
        m.buffers.append(buf)
        t.buffer = len(m.buffers) - 1
        sg.tensors.append(t)
        op.inputs[1] = len(sg.tensors) - 1
    with pytest.raises(UnsupportedModelError) as e:
        load_graph(_edit_add(residual_tflite("NONE"), make_input_1_constant))
    adds = [b for b in e.value.blockers if "(ADD)" in b]
    assert len(adds) == 1 and "input 1 'constant_summand'" in adds[0]
    assert adds[0].endswith("is a constant; only ADD of two activations computed by the "
                            "network (a residual connection) is supported")


def test_add_whose_output_multiplier_tflite_cannot_hold_is_refused():
    """An output scale below 2^-19 x the larger input scale: TFLite's Prepare would
    CHECK-fail (abort the process) in QuantizeMultiplierSmallerThanOneExp."""
    def tiny_output_scale(m, op):
        m.subgraphs[0].tensors[op.outputs[0]].quantization.scale = [1e-12]
    with pytest.raises(UnsupportedModelError, match=r"\(ADD\): output scale 1e-12 must be above "
                       r"2\^-19 x the larger input scale"):
        load_graph(_edit_add(residual_tflite("NONE"), tiny_output_scale))


def test_unsupported_fused_activation_refused():
    def tanh(m, op):
        op.builtinOptions.fusedActivationFunction = 4
    with pytest.raises(UnsupportedModelError, match=r"\(ADD\): fused activation code 4 is not "
                       "supported"):
        load_graph(_edit_add(residual_tflite("RELU"), tanh))

# ---------------------------------------------------------------------------- the graph


@pytest.mark.parametrize("activation", ["NONE", "RELU", "RELU6"])
def test_residual_block_bit_exact_on_every_tensor(activation):
    tflite = residual_tflite(activation)
    g = load_graph(tflite)
    _assert_every_tensor_bit_exact(tflite, g, n=4)


@pytest.mark.parametrize("activation", ["RELU", "RELU6"])
def test_fused_activation_clamps_the_sum_bit_exactly(activation):
    """As converted, a fused ReLU's output zero point is -128 and clamps nothing in int8;
    with the ADD's output moved to zero point 0 (and, for RELU6, a scale on which 6 is 32,
    its summands' scales 8 times larger) the clamp bites, and the reference still equals
    TFLite, which it would not without it."""
    def requantize_output(m, op):
        q = m.subgraphs[0].tensors[op.outputs[0]].quantization
        q.zeroPoint = [0]
        if activation == "RELU6":
            q.scale = [6.0 / 32]
            for i in op.inputs:     # summands well beyond 6
                m.subgraphs[0].tensors[i].quantization.scale[0] *= 8
    tflite = _edit_add(residual_tflite(activation), requantize_output)
    g = load_graph(tflite)
    op = _add_op(g)
    p = add_params(op)
    assert (p.act_min, p.act_max) == ((0, 127) if activation == "RELU" else (0, 32))
    runs = _assert_every_tensor_bit_exact(tflite, g, n=3)
    sums = np.concatenate([r[op.outputs[0].index].ravel() for r in runs])
    assert (sums == p.act_min).sum() > 10
    unclamped = AddParams(**{**p.__dict__, "act_min": -128, "act_max": 127})
    a, b = (np.concatenate([r[t.index] for r in runs]) for t in activation_inputs(op))
    assert not np.array_equal(add(a, b, unclamped), add(a, b, p))
    if activation == "RELU6":
        assert (sums == 32).sum() > 0 and (add(a, b, unclamped) > 32).any()


def test_batched_add_equals_single_runs():
    """run_op on whole batches (accuracy runs) gives each row its own single-input result."""
    g = load_graph(residual_tflite("RELU"))
    xs = np.concatenate(_random_inputs(g, 3, seed=5))
    batch = {g.input.index: xs}
    singles = [{g.input.index: x[None]} for x in xs]
    for op in g.ops:
        batch[op.outputs[0].index] = run_op(op, *(batch[t.index] for t in activation_inputs(op)))
        for v in singles:
            v[op.outputs[0].index] = run_op(op, *(v[t.index] for t in activation_inputs(op)))
    for op in g.ops:
        t = op.outputs[0].index
        np.testing.assert_array_equal(batch[t], np.concatenate([v[t] for v in singles]))

# ---------------------------------------------------------------------------- the kernel

# Every pair of int8 values: input 1 runs down the rows, input 2 along the columns.
_GRID = (1, 256, 256, 1)


@pytest.fixture(scope="module")
def single_add_tflite() -> bytes:
    """A model of one int8 ADD of two model inputs of shape _GRID (converted from Keras;
    the tests set its quantization and fused activation)."""
    import keras
    import tensorflow as tf
    from keras import layers

    from quantize import native_stderr
    a, b = keras.Input(_GRID[1:]), keras.Input(_GRID[1:])
    model = keras.Model([a, b], layers.Add()([a, b]))
    rng = np.random.default_rng(0)

    def representative():
        for _ in range(4):
            yield [rng.normal(0, 1, _GRID).astype(np.float32) for _ in range(2)]
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    with native_stderr.muted(), warnings.catch_warnings():
        warnings.simplefilter("ignore")     # "Statistics for quantized inputs were expected"
        tflite = conv.convert()
    sg = unpack(tflite).subgraphs[0]
    assert len(sg.operators) == 1 and len(sg.inputs) == 2
    return tflite


_ACT_CODES = {"NONE": 0, "RELU": 1, "RELU6": 3}


def _with_quantization(tflite: bytes, q1, q2, q_out, activation: str):
    """The single-ADD model with (scale, zero point) q1, q2 on its inputs, q_out on its
    output, and `activation` fused; and the Op the reference reads for it."""
    def edit(m):
        sg = m.subgraphs[0]
        op = sg.operators[0]
        for i, (s, zp) in zip([*op.inputs, *op.outputs], (q1, q2, q_out)):
            sg.tensors[i].quantization.scale = [s]
            sg.tensors[i].quantization.zeroPoint = [zp]
        op.builtinOptions.fusedActivationFunction = _ACT_CODES[activation]
    tflite = edited(tflite, edit)
    sg = unpack(tflite).subgraphs[0]
    tensors = [Tensor(i, f"t{i}", tuple(sg.tensors[i].shape), "int8",
                      np.array([s], np.float32), np.array([zp], np.int64))
               for i, (s, zp) in zip([*sg.operators[0].inputs, *sg.operators[0].outputs],
                                     (q1, q2, q_out))]
    return tflite, Op(0, "ADD", tensors[:2], tensors[2:], {"activation": activation})


def _tflite_add(tflite: bytes, op: Op, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    interp = golden_interpreter(tflite)
    interp.set_tensor(op.inputs[0].index, x1)
    interp.set_tensor(op.inputs[1].index, x2)
    interp.invoke()
    return interp.get_tensor(op.outputs[0].index)


# (input 1, input 2, output) as (scale, zero point), fused activation.
KERNEL_CASES = {
    "scales 0.001 vs 0.5": ((0.001, 5), (0.5, -3), (0.5, 2), "NONE"),
    "scales 0.5 vs 0.001, extreme zero points": ((0.5, 127), (0.001, -128), (0.05, -10), "NONE"),
    "equal scales": ((0.05, 0), (0.05, 0), (0.1, 0), "NONE"),
    "equal scales and zero points, output the same": ((0.0213, -7), (0.0213, -7), (0.0213, -7),
                                                      "NONE"),
    "odd scales, RELU": ((0.0123456, 17), (0.0456789, -90), (0.0311, 3), "RELU"),
    "equal scales, RELU6": ((0.04, -20), (0.04, 40), (0.03, -128), "RELU6"),
    "fine output, saturating": ((0.02, 10), (0.03, -20), (0.001, 0), "NONE"),
    "coarse output": ((0.002, 0), (0.003, 1), (1.7, -100), "NONE"),
    "ratio 2^-20": ((2.0 ** -21, 0), (0.5, 0), (0.25, 0), "NONE"),
}


@pytest.mark.parametrize("case", KERNEL_CASES)
def test_add_kernel_equals_tflite_on_every_int8_pair(single_add_tflite, case):
    q1, q2, q_out, activation = KERNEL_CASES[case]
    tflite, op = _with_quantization(single_add_tflite, q1, q2, q_out, activation)
    values = np.arange(-128, 128, dtype=np.int8)
    x1 = np.broadcast_to(values[:, None], _GRID[1:3]).reshape(_GRID).copy()
    x2 = np.broadcast_to(values[None, :], _GRID[1:3]).reshape(_GRID).copy()
    p = add_params(op)
    ours = add(x1, x2, p)
    golden = _tflite_add(tflite, op, x1, x2)
    mismatch = np.argwhere(ours != golden)
    assert not mismatch.size, (f"{mismatch.shape[0]} of 65536 pairs differ, first "
                               f"x1={x1[tuple(mismatch[0])]} x2={x2[tuple(mismatch[0])]}: "
                               f"ours {ours[tuple(mismatch[0])]}, TFLite "
                               f"{golden[tuple(mismatch[0])]}; {p}")
    assert np.unique(ours).size > 1 or case == "coarse output"


def test_add_params_follow_tflites_prepare():
    """add.cc Prepare, written out: left shift 20, each input over twice the larger input
    scale, the output multiplier twice that scale over 2^20 x the output scale; offsets the
    negated input zero points and the output zero point."""
    s1, s2, so = np.float32(0.001), np.float32(0.5), np.float32(0.25)
    out = Tensor(2, "y", (1, 4), "int8", np.array([so]), np.array([-3]))
    op = Op(0, "ADD", [Tensor(0, "a", (1, 4), "int8", np.array([s1]), np.array([5])),
                       Tensor(1, "b", (1, 4), "int8", np.array([s2]), np.array([-128]))],
            [out], {"activation": "RELU"})
    p = add_params(op)
    twice_max = 2.0 * float(max(s1, s2))
    m1, sh1 = fx.quantize_multiplier(float(s1) / twice_max)
    m2, sh2 = fx.quantize_multiplier(float(s2) / twice_max)
    mo, sho = fx.quantize_multiplier(twice_max / ((1 << 20) * float(so)))
    assert p == AddParams(20, -5, m1, sh1, 128, m2, sh2, mo, sho, -3,
                          *activation_range("RELU", so, -3))
    assert ADD_LEFT_SHIFT == 20 and (m2, sh2) == (1 << 30, 0)     # 0.5 = 2^30 / 2^31
    assert max(p.input1_shift, p.input2_shift, p.output_shift) <= 0
    assert p.act_min == -3 and p.act_max == 127


def test_add_scaled_input_is_the_per_input_stage():
    """add() is add_scaled_input on each input, summed, requantized, clamped: the split the
    hardware implements."""
    rng = np.random.default_rng(3)
    x1, x2 = (rng.integers(-128, 128, (2, 5, 5, 3), dtype=np.int8) for _ in range(2))
    p = AddParams(20, 7, 1518500250, -3, -100, 1073741824, 0, 1234567890, -11, -4, -128, 127)
    a = add_scaled_input(x1, p.input1_offset, p.input1_multiplier, p.input1_shift)
    b = add_scaled_input(x2, p.input2_offset, p.input2_multiplier, p.input2_shift)
    assert a.dtype == np.int64 and np.abs(a).max() < 2 ** 31
    # The stage by hand: SRDHM, then a rounding right shift.
    shifted = (x1.astype(np.int64) + 7) << 20
    np.testing.assert_array_equal(a, fx.rounding_divide_by_pot(
        fx.saturating_rounding_doubling_high_mul(shifted, 1518500250), 3))
    expect = np.clip(fx.multiply_by_quantized_multiplier(a + b, 1234567890, -11) - 4, -128, 127)
    np.testing.assert_array_equal(add(x1, x2, p), expect.astype(np.int8))
    with pytest.raises(ValueError, match="no broadcasting"):
        add(x1, x2[:1], p)

# ---------------------------------------------------------------------------- MobileNetV2


def test_keras_mobilenet_v2_loads_and_is_bit_exact_vs_tflite():
    from keras_models import mobilenet_v2_tflite
    tflite = mobilenet_v2_tflite()
    g = load_graph(tflite)
    kinds = Counter(op.kind for op in g.ops)
    assert kinds == {"CONV_2D": 35, "DEPTHWISE_CONV_2D": 17, "ADD": 10, "MEAN": 1,
                     "FULLY_CONNECTED": 1, "SOFTMAX": 1}
    for op in g.ops:
        if op.kind == "ADD":
            assert op.options["activation"] == "NONE"
            assert op.inputs[0].shape == op.inputs[1].shape == op.outputs[0].shape
    # Every tensor, the final output included, on two inputs.
    _assert_every_tensor_bit_exact(tflite, g, n=2)
