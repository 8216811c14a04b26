"""Depthwise padding as other pipelines export it: PyTorch-style graphs (an explicit symmetric
PAD, then a VALID depthwise at stride 2) and VALID depthwise layers at stride 1. The
DepthwiseEngine pads 0 or 1 rows and columns on each side, so these run on the accelerator:
the functional model and the RTL in Verilator equal TFLite BUILTIN_REF on every layer, and the
cycle model stays exact."""
import functools

import numpy as np
import pytest
from keras_models import int8_tflite

from firmware.compiler import compile_graph
from firmware.executor import Memory, execute, host_input, read_tensor
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


@functools.lru_cache(maxsize=None)
def pytorch_style_tflite() -> bytes:
    """Stem, then PAD(1) + VALID stride-2 depthwise on an even map (PyTorch's padding=1:
    TFLite SAME would pad 0 before), a VALID stride-1 depthwise, a PAD(1) + VALID stride-1
    depthwise (SAME by another name) and PAD(1) + VALID stride-2 on an odd map."""
    from keras import layers

    def dw(y, name, stride=1, pad=False):
        if pad:
            y = layers.ZeroPadding2D(1, name=f"{name}_pad")(y)
        y = layers.DepthwiseConv2D(3, strides=stride, padding="valid", activation="relu",
                                   name=name)(y)
        return layers.Conv2D(8, 1, activation="relu", name=f"{name}_pw")(y)

    def net(x):
        y = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="stem")(x)
        y = dw(y, "dw_s2_even", stride=2, pad=True)     # 10x10 -> 5x5
        y = dw(y, "dw_valid", stride=1)                 # 5x5 -> 3x3
        y = dw(y, "dw_pad_s1", stride=1, pad=True)      # 3x3 -> 3x3
        y = layers.ZeroPadding2D(((1, 1), (1, 1)), name="grow")(y)
        y = dw(y, "dw_valid_s2_odd", stride=2)          # the PAD folds here: 3x3 -> 2x2
        y = layers.GlobalAveragePooling2D(name="gap")(y)
        return layers.Softmax(name="softmax")(layers.Dense(5, name="fc")(y))
    return int8_tflite(net, SHAPE)


@pytest.fixture(scope="module")
def model():
    tflite = pytorch_style_tflite()
    graph = load_graph(tflite)
    return tflite, graph, golden_interpreter(tflite)


def _inputs(graph, n):
    rng = np.random.default_rng(1)
    return [rng.integers(-128, 128, graph.input.shape[1:], dtype=np.int8) for _ in range(n)]


def _dw_pads(fw):
    return [(d.stride, d.in_h, d.in_w, d.pad_top, d.pad_left, d.pad_bottom, d.pad_right)
            for d in fw.descriptors if d.opcode == Opcode.DWCONV]


def test_pads_fold_into_the_depthwise_layers(model):
    _, graph, _ = model
    fw = compile_graph(graph, AccelConfig())
    assert model_blockers(fw, graph) == []
    check_fits(fw)
    # The converter turns PAD + VALID into SAME where they agree; the PyTorch-style PAD of
    # the even map stays a PAD op and folds into the depthwise layer's padding.
    assert [op.kind for op in graph.ops if op.outputs[0].index in fw.folded] == ["PAD"]
    assert _dw_pads(fw) == [(2, 10, 10, 1, 1, 1, 1), (1, 5, 5, 0, 0, 0, 0),
                            (1, 3, 3, 1, 1, 1, 1), (2, 3, 3, 1, 1, 1, 1)]


def test_functional_model_bit_exact_vs_tflite(model):
    _, graph, interp = model
    fw = compile_graph(graph, AccelConfig(pw_out=4, pw_in=4, dw_lanes=2))
    for x in _inputs(graph, 3):
        mem = Memory(bytearray(fw.image), fw.base)
        mem.write(fw.regions["input"][0], host_input(fw, x[None]))
        assert execute(mem, fw.program_addr, fw.cfg) == len(fw.descriptors) - 1
        ours = {t: read_tensor(fw, mem, t) for t in fw.tensors if t != fw.input_tensor}
        checked = assert_bit_exact(graph, ours, golden_run(interp, x[None]), fw.folded)
        assert checked == len(graph.ops) - len(fw.folded)


@pytest.mark.skipif(verilator_available() is not None, reason=verilator_available() or "")
def test_bit_exact_and_cycle_exact_on_verilator(model):
    _, graph, interp = model
    fw = compile_graph(graph, AccelConfig())
    (x,) = _inputs(graph, 1)
    assert_verilator_exact(graph, fw, x, golden_run(interp, x[None]), fw.folded)
