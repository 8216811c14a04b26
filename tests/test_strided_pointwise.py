"""1x1 convolutions at stride 2 inside the network (ResNet-style shortcuts, some MobileNet
variants): the firmware runs each as a depthwise pass that picks input pixel (2i, 2j) with an
identity kernel, then a 1x1 stride-1 convolution (`firmware.compiler`). The functional model
and the RTL in Verilator equal TFLite BUILTIN_REF on every layer, on even and odd maps and
under SAME and VALID padding, and the cycle model stays exact."""
import functools

import numpy as np
import pytest
from keras_models import int8_tflite

from firmware.compiler import SUBSAMPLE, compile_graph
from firmware.executor import run_image
from firmware.fit_check import model_blockers
from firmware.program import Opcode
from quantize.convert import golden_interpreter, golden_run
from quantize.tflite_graph import UnsupportedModelError, load_graph
from quantize.verify import assert_bit_exact
from rtl_gen.config import AccelConfig
from rtl_gen.sequencer import check_fits
from sim.verilator_runner import verilator_available
from verilator_checks import assert_verilator_exact

SHAPE = (20, 20, 3)


@functools.lru_cache(maxsize=None)
def strided_pointwise_tflite() -> bytes:
    from keras import layers

    def net(x):
        y = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="stem")(x)
        y = layers.DepthwiseConv2D(3, padding="same", activation="relu", name="dw1")(y)
        y = layers.Conv2D(16, 1, strides=2, padding="same", activation="relu",
                          name="pw_s2_same_even")(y)                        # 10x10 -> 5x5
        y = layers.DepthwiseConv2D(3, padding="same", activation="relu", name="dw2")(y)
        y = layers.Conv2D(24, 1, strides=2, padding="valid",
                          name="pw_s2_valid_odd")(y)                        # 5x5 -> 3x3
        y = layers.GlobalAveragePooling2D(name="gap")(y)
        return layers.Softmax(name="softmax")(layers.Dense(5, name="fc")(y))
    return int8_tflite(net, SHAPE)


@pytest.fixture(scope="module")
def model():
    tflite = strided_pointwise_tflite()
    graph = load_graph(tflite)
    return tflite, graph, golden_interpreter(tflite)


def _inputs(graph, n):
    rng = np.random.default_rng(2)
    return [rng.integers(-128, 128, graph.input.shape[1:], dtype=np.int8) for _ in range(n)]


def test_each_strided_1x1_is_a_subsampling_pass_and_a_1x1(model):
    _, graph, _ = model
    fw = compile_graph(graph, AccelConfig())
    assert model_blockers(fw, graph) == []
    check_fits(fw)
    passes = [(Opcode(d.opcode).name, role, d.stride, d.in_h, d.out_h)
              for d, role in zip(fw.descriptors, fw.roles) if role or d.opcode == Opcode.CONV]
    assert passes == [("CONV", "", 2, 10, 10),        # the stem over host patches (stride kept)
                      ("DWCONV", SUBSAMPLE, 2, 10, 5), ("CONV", "", 1, 5, 5),
                      ("DWCONV", SUBSAMPLE, 2, 5, 3), ("CONV", "", 1, 3, 3),
                      ("CONV", "", 1, 1, 1)]                   # the dense layer
    for d, role in zip(fw.descriptors, fw.roles):
        if role == SUBSAMPLE:
            assert d.output_zp == d.input_zp and (d.act_min, d.act_max) == (-128, 127)


def test_functional_model_bit_exact_vs_tflite(model):
    _, graph, interp = model
    fw = compile_graph(graph, AccelConfig(pw_out=4, pw_in=4, dw_lanes=2))
    for x in _inputs(graph, 3):
        golden = golden_run(interp, x[None])
        assert assert_bit_exact(graph, run_image(fw, x[None]), golden) == len(graph.ops)
        assert np.unique(golden[graph.output.index]).size > 1


def test_other_strided_1x1_still_refused_inside_the_network():
    """Stride 3 has no subsampling pass (the depthwise engine strides 1 and 2)."""
    from keras import layers

    def net(x):
        y = layers.Conv2D(8, 3, strides=2, padding="same", name="stem")(x)
        return layers.Conv2D(8, 1, strides=3, name="pw_s3")(y)
    with pytest.raises(UnsupportedModelError, match=r"layer 1 '.*' \(CONV_2D\): convolution "
                       r"kernel 1x1 at stride 3x3 is only supported as the first layer"):
        load_graph(int8_tflite(net, (18, 18, 3)))


@pytest.mark.skipif(verilator_available() is not None, reason=verilator_available() or "")
def test_bit_exact_and_cycle_exact_on_verilator(model):
    _, graph, interp = model
    fw = compile_graph(graph, AccelConfig())
    (x,) = _inputs(graph, 1)
    _, prediction = assert_verilator_exact(graph, fw, x, golden_run(interp, x[None]))
    assert [layer.op for layer in prediction.layers if "subsample" in layer.op] == \
        ["DWCONV (subsample)"] * 2
