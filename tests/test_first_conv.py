"""A first convolution of any kernel, stride and padding (keyword spotting's 10x4 stride-2 conv
on 49x10 MFCCs, 5x5 VALID, a strided 1x1, non-square strides): the host makes its input's
patches (`firmware.layout.im2col`) and the MAC array runs it as a 1x1 convolution. The
functional model equals TFLite BUILTIN_REF on every layer; the keyword-spotting network also
in Verilator, with the cycle model exact."""
import functools

import numpy as np
import pytest
from keras_models import int8_tflite

from firmware.compiler import compile_graph
from firmware.executor import Memory, execute, host_input, read_tensor
from firmware.fit_check import model_blockers
from firmware.program import Flags, Opcode
from quantize.convert import golden_interpreter, golden_run
from quantize.tflite_graph import load_graph
from quantize.verify import assert_bit_exact
from rtl_gen.config import AccelConfig
from rtl_gen.sequencer import check_fits
from sim.verilator_runner import verilator_available

# (input shape, kernel, strides, padding, explicit ZeroPadding2D before it or None)
FIRST_CONVS = {
    "kws 10x4 s2 same": ((49, 10, 1), (10, 4), (2, 2), "same", None),
    "5x5 valid": ((16, 16, 3), (5, 5), (1, 1), "valid", None),
    "1x1 s2": ((16, 16, 3), (1, 1), (2, 2), "valid", None),
    "3x3 s2x1 same": ((12, 12, 2), (3, 3), (2, 1), "same", None),
    # A PAD no SAME equals stays a PAD op and folds into the host's patches.
    "pad + 5x5 valid": ((16, 16, 3), (5, 5), (1, 1), "valid", ((1, 2), (2, 0))),
}


@functools.lru_cache(maxsize=None)
def first_conv_tflite(name: str) -> bytes:
    """The first conv, then a depthwise-separable block at stride 2 and a classifier."""
    from keras import layers
    shape, kernel, strides, padding, pad = FIRST_CONVS[name]

    def net(x):
        if pad is not None:
            x = layers.ZeroPadding2D(pad, name="pad")(x)
        y = layers.Conv2D(8, kernel, strides=strides, padding=padding, activation="relu",
                          name="first")(x)
        y = layers.DepthwiseConv2D(3, strides=2, padding="same", activation="relu", name="dw")(y)
        y = layers.Conv2D(16, 1, activation="relu", name="pw")(y)
        y = layers.GlobalAveragePooling2D(name="gap")(y)
        return layers.Softmax(name="softmax")(layers.Dense(12, name="fc")(y))
    return int8_tflite(net, shape)


def _inputs(graph, n):
    rng = np.random.default_rng(2)
    return [rng.integers(-128, 128, graph.input.shape[1:], dtype=np.int8) for _ in range(n)]


@pytest.mark.parametrize("name", FIRST_CONVS)
def test_first_conv_runs_on_host_patches_bit_exact(name):
    tflite = first_conv_tflite(name)
    graph = load_graph(tflite)
    shape, kernel, strides, _, pad = FIRST_CONVS[name]
    fw = compile_graph(graph, AccelConfig(pw_out=4, pw_in=4, dw_lanes=2))
    assert model_blockers(fw, graph) == []
    assert fw.im2col[:2] == (kernel, strides)
    assert [graph.op(i).kind for i in fw.layer_ops[:1]] == ["CONV_2D"]
    assert len(fw.folded) == (pad is not None)
    first = fw.descriptors[0]
    assert first.opcode == Opcode.CONV and first.flags & Flags.IM2COL
    assert first.in_c >= kernel[0] * kernel[1] * shape[2]
    interp = golden_interpreter(tflite)
    for x in _inputs(graph, 3):
        mem = Memory(bytearray(fw.image), fw.base)
        mem.write(fw.regions["input"][0], host_input(fw, x[None]))
        assert execute(mem, fw.program_addr, fw.cfg) == len(fw.descriptors) - 1
        ours = {t: read_tensor(fw, mem, t) for t in fw.tensors if t != fw.input_tensor}
        checked = assert_bit_exact(graph, ours, golden_run(interp, x[None]), fw.folded)
        assert checked == len(graph.ops) - len(fw.folded)


@pytest.mark.skipif(verilator_available() is not None, reason=verilator_available() or "")
def test_keyword_spotting_net_on_verilator():
    from sim.accel_sim import DDR_TIMING, simulate
    from sim.perf_model import predict
    tflite = first_conv_tflite("kws 10x4 s2 same")
    graph = load_graph(tflite)
    cfg = AccelConfig()
    fw = compile_graph(graph, cfg)
    check_fits(fw)
    xs = _inputs(graph, 1)
    (r,) = simulate(fw, xs, cfg, progress=False)
    assert r.ok and r.layer_count == len(fw.descriptors) - 1, r
    golden = golden_run(golden_interpreter(tflite), xs[0][None])
    assert assert_bit_exact(graph, r.tensors, golden) == len(graph.ops)
    prediction = predict(fw, ddr=DDR_TIMING)
    assert [layer.cycles for layer in prediction.layers] == r.layer_cycles
    assert prediction.total == r.cycles
