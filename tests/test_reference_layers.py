"""Randomized layer shapes (hypothesis): every op of the reference equals TFLite BUILTIN_REF
on single-layer int8 models with random weights, shapes, strides and paddings."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantize.convert import golden_interpreter, golden_run, to_int8_tflite_from_float
from quantize.reference import run_graph
from quantize.tflite_graph import load_graph
from quantize.verify import assert_bit_exact

SETTINGS = settings(max_examples=20, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


def check(build, in_shape, seed, expect_ops):
    """Build a Keras model, convert it to int8 on random calibration data, and compare our
    reference with the interpreter on random int8 inputs, tensor by tensor."""
    import keras
    keras.utils.set_random_seed(seed)
    inp = keras.Input(in_shape)
    model = keras.Model(inp, build(inp))
    rng = np.random.default_rng(seed)
    calib = rng.normal(0, 1, (16, *in_shape)).astype(np.float32)
    tflite = to_int8_tflite_from_float(model, calib)
    graph = load_graph(tflite)
    assert [op.kind for op in graph.ops] == expect_ops
    interp = golden_interpreter(tflite)
    for _ in range(2):
        x = rng.integers(-128, 128, (1, *in_shape), dtype=np.int8)
        assert_bit_exact(graph, run_graph(graph, x), golden_run(interp, x))


@SETTINGS
@given(h=st.integers(1, 9), w=st.integers(1, 9), cin=st.integers(1, 20), cout=st.integers(1, 20),
       k=st.sampled_from([1, 3]), stride=st.sampled_from([1, 2]),
       padding=st.sampled_from(["same", "valid"]), act=st.sampled_from([None, "relu", "relu6"]),
       seed=st.integers(0, 2**16))
def test_conv2d(h, w, cin, cout, k, stride, padding, act, seed):
    from keras import layers
    if padding == "valid" and (h < k or w < k):
        h, w = max(h, k), max(w, k)
    check(lambda x: layers.Conv2D(cout, k, strides=stride, padding=padding, activation=act,
                                  bias_initializer="random_normal")(x),
          (h, w, cin), seed, ["CONV_2D"])


@SETTINGS
@given(h=st.integers(1, 9), w=st.integers(1, 9), c=st.integers(1, 24),
       stride=st.sampled_from([1, 2]), padding=st.sampled_from(["same", "valid"]),
       act=st.sampled_from([None, "relu"]), seed=st.integers(0, 2**16))
def test_depthwise(h, w, c, stride, padding, act, seed):
    from keras import layers
    if padding == "valid":
        h, w = max(h, 3), max(w, 3)
    check(lambda x: layers.DepthwiseConv2D(3, strides=stride, padding=padding, activation=act,
                                           bias_initializer="random_normal")(x),
          (h, w, c), seed, ["DEPTHWISE_CONV_2D"])


@SETTINGS
@given(cin=st.integers(1, 64), cout=st.integers(2, 32), seed=st.integers(0, 2**16))
def test_fully_connected_softmax(cin, cout, seed):
    from keras import layers
    check(lambda x: layers.Softmax()(layers.Dense(cout, bias_initializer="random_normal")(x)),
          (cin,), seed, ["FULLY_CONNECTED", "SOFTMAX"])


@SETTINGS
@given(h=st.integers(1, 14), w=st.integers(1, 14), c=st.integers(1, 32), seed=st.integers(0, 2**16))
def test_mean(h, w, c, seed):
    from keras import layers
    # A conv in front gives MEAN an input scale different from the model input's.
    check(lambda x: layers.GlobalAveragePooling2D()(layers.Conv2D(c, 1)(x)),
          (h, w, c), seed, ["CONV_2D", "MEAN"])


@SETTINGS
@given(h=st.integers(3, 8), w=st.integers(3, 8), c=st.integers(1, 8),
       pads=st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 2), st.integers(0, 2)),
       seed=st.integers(0, 2**16))
def test_pad(h, w, c, pads, seed):
    from keras import layers
    t, b, l, r = pads
    if t + b + l + r == 0:
        t = 1
    # A 1x1 conv after the PAD: TFLite cannot fold it into the conv's own padding, and a
    # 3x3 conv inside a network is not something the accelerator maps (load_graph says so).
    check(lambda x: layers.Conv2D(c, 1, padding="valid")(
        layers.ZeroPadding2D(((t, b), (l, r)))(layers.Conv2D(c, 1)(x))),
          (h, w, c), seed, ["CONV_2D", "PAD", "CONV_2D"])


def test_relu6_bound_on_an_exact_float32_half():
    """TFLite's activation bound is zero_point + round(6.0f / scale) with a float32 division
    and halves away from zero: at an output scale of 2.4f, 6.0f / 2.4f is exactly 2.5f, so the
    RELU6 bound is zero_point + 3 (double precision would say 2.4999999, rounded to 2). The
    depthwise layer's weight scales are raised so its outputs reach the bound."""
    from keras_models import tiny_mobilenet_tflite
    from tflite_edit import edited
    scale = np.float32(2.4)
    assert np.float32(6) / scale == np.float32(2.5)

    def edit(m):
        sg = m.subgraphs[0]
        dw = sg.operators[1]
        dw.builtinOptions.fusedActivationFunction = 3         # RELU6
        sg.tensors[dw.outputs[0]].quantization.scale = [float(scale)]
        w = sg.tensors[dw.inputs[1]].quantization
        w.scale = [float(np.float32(v * 3000)) for v in w.scale]
    tflite = edited(tiny_mobilenet_tflite(), edit)
    graph = load_graph(tflite)
    assert graph.ops[1].kind == "DEPTHWISE_CONV_2D"
    out = graph.ops[1].outputs[0]
    interp = golden_interpreter(tflite)
    x = np.random.default_rng(0).integers(-128, 128, graph.input.shape, dtype=np.int8)
    golden = golden_run(interp, x)
    assert golden[out.index].max() == out.zp + 3          # the bound is reached
    assert_bit_exact(graph, run_graph(graph, x), golden)
