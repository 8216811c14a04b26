"""MobileNetV2's inverted residual blocks (1x1 expand + ReLU6, 3x3 depthwise + ReLU6, 1x1
linear projection, ADD with the block input) on the accelerator: the ADD runs as its own
layer, the projection's output read on chip and the block input loaded from DDR into the
weight buffer (`firmware.compiler`, `rtl_gen.add_unit`). The functional model and the RTL in
Verilator equal TFLite BUILTIN_REF on every layer, whole and in bands of rows through DDR,
and the cycle model stays exact."""
import functools

import numpy as np
import pytest
from keras_models import int8_tflite

from firmware.compiler import compile_graph
from firmware.executor import run_image
from firmware.fit_check import model_blockers
from firmware.program import Opcode
from quantize.convert import golden_interpreter, golden_run
from quantize.tflite_graph import load_graph
from quantize.verify import assert_bit_exact
from rtl_gen.config import AccelConfig
from rtl_gen.sequencer import check_fits
from sim.verilator_runner import verilator_available
from verilator_checks import assert_verilator_exact

SHAPE = (20, 20, 3)
# Buffers small enough that the 10x10 ADDs run in bands (their second input fills the weight
# buffer first).
BANDED = AccelConfig(pw_out=4, pw_in=4, dw_lanes=2, act_buffer_bytes=2048,
                     weight_buffer_bytes=1024)


@functools.lru_cache(maxsize=None)
def residual_tflite() -> bytes:
    from keras import layers

    def block(x, expand, name, relu_after=False):
        c = x.shape[-1]
        h = layers.Conv2D(expand, 1, name=f"{name}_expand")(x)
        h = layers.ReLU(6.0, name=f"{name}_expand_relu")(h)
        h = layers.DepthwiseConv2D(3, padding="same", name=f"{name}_dw")(h)
        h = layers.ReLU(6.0, name=f"{name}_dw_relu")(h)
        h = layers.Conv2D(c, 1, name=f"{name}_project")(h)      # linear bottleneck
        y = layers.Add(name=f"{name}_add")([x, h])
        return layers.ReLU(name=f"{name}_relu")(y) if relu_after else y

    def net(x):
        y = layers.Conv2D(16, 3, strides=2, padding="same", name="stem")(x)
        y = layers.ReLU(6.0, name="stem_relu")(y)
        y = block(y, 48, "block1")
        y = block(y, 32, "block2", relu_after=True)      # an ADD with a fused ReLU
        y = layers.GlobalAveragePooling2D(name="gap")(y)
        return layers.Softmax(name="softmax")(layers.Dense(5, name="fc")(y))
    return int8_tflite(net, SHAPE)


@pytest.fixture(scope="module")
def model():
    tflite = residual_tflite()
    graph = load_graph(tflite)
    return tflite, graph, golden_interpreter(tflite)


def _inputs(graph, n):
    rng = np.random.default_rng(4)
    return [rng.integers(-128, 128, graph.input.shape[1:], dtype=np.int8) for _ in range(n)]


def test_each_add_is_one_layer_reading_the_projection_on_chip(model):
    _, graph, _ = model
    for cfg, bands in ((AccelConfig(), 1), (BANDED, 2)):
        fw = compile_graph(graph, cfg)
        assert model_blockers(fw, graph) == []
        check_fits(fw)
        adds = [(d, k) for d, k in zip(fw.descriptors, fw.bands) if d.opcode == Opcode.ADD]
        assert len(adds) == 2 * bands and all(n == bands for _, (_, n) in adds)
        for i, d in enumerate(fw.descriptors):
            if d.opcode == Opcode.ADD and bands == 1:
                # The projection (the layer before) wrote the first input: it stays on chip.
                assert fw.descriptors[i - 1].output_addr == d.input_addr


@pytest.mark.parametrize("cfg", [AccelConfig(pw_out=4, pw_in=4, dw_lanes=2), BANDED],
                         ids=["whole", "banded"])
def test_functional_model_bit_exact_vs_tflite(model, cfg):
    _, graph, interp = model
    fw = compile_graph(graph, cfg)
    for x in _inputs(graph, 3):
        golden = golden_run(interp, x[None])
        assert assert_bit_exact(graph, run_image(fw, x[None]), golden) == len(graph.ops)
        assert np.unique(golden[graph.output.index]).size > 1


@pytest.mark.skipif(verilator_available() is not None, reason=verilator_available() or "")
@pytest.mark.parametrize("cfg", [AccelConfig(), BANDED], ids=["default", "banded"])
def test_bit_exact_and_cycle_exact_on_verilator(model, cfg):
    _, graph, interp = model
    fw = compile_graph(graph, cfg)
    (x,) = _inputs(graph, 1)
    _, prediction = assert_verilator_exact(graph, fw, x, golden_run(interp, x[None]))
    assert sum(layer.op.startswith("ADD") for layer in prediction.layers) == \
        sum(d.opcode == Opcode.ADD for d in fw.descriptors)
