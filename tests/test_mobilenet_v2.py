"""keras.applications.MobileNetV2 on the accelerator: 10 ADDs (inverted residuals), 6x
expansions, linear bottlenecks, a 1280-channel head. The compiled program run by the
functional model equals TFLite BUILTIN_REF on every layer; in Verilator, bit-exact and
cycle-exact against the cycle model. The 224x224 alpha 1 ImageNet network is the slow
case."""
import numpy as np
import pytest
from keras_models import mobilenet_v2_tflite

from firmware.compiler import compile_graph
from firmware.executor import run_image
from firmware.fit_check import model_blockers
from firmware.program import Opcode
from quantize.convert import golden_interpreter, golden_run
from quantize.tflite_graph import load_graph
from quantize.verify import assert_bit_exact
from rtl_gen.config import AccelConfig
from rtl_gen.sequencer import check_fits
from sim.perf_model import predict
from sim.verilator_runner import verilator_available
from verilator_checks import assert_verilator_exact

def _inputs(graph, n, seed=6):
    rng = np.random.default_rng(seed)
    return [rng.integers(-128, 128, graph.input.shape[1:], dtype=np.int8) for _ in range(n)]


def _check_functional(tflite, cfg, n=1):
    graph = load_graph(tflite)
    fw = compile_graph(graph, cfg)
    assert model_blockers(fw, graph) == []
    check_fits(fw)
    interp = golden_interpreter(tflite)
    for x in _inputs(graph, n):
        golden = golden_run(interp, x[None])
        assert assert_bit_exact(graph, run_image(fw, x[None]), golden) == len(graph.ops)
        assert np.unique(golden[graph.output.index]).size > 1
    return graph, fw


@pytest.mark.parametrize("side, alpha, classes, cfg", [
    (96, 0.35, 10, AccelConfig()),
    (32, 0.35, 10, AccelConfig(pw_out=8, pw_in=8, dw_lanes=2)),     # CIFAR-sized
    pytest.param(128, 0.5, 10, AccelConfig(), marks=pytest.mark.slow),
], ids=["96-a0.35", "cifar32-a0.35", "128-a0.5"])
def test_functional_model_bit_exact_vs_tflite(side, alpha, classes, cfg):
    graph, fw = _check_functional(mobilenet_v2_tflite(side, alpha, classes), cfg)
    assert sum(d.opcode == Opcode.ADD for d in fw.descriptors) >= 10
    assert sum(op.kind == "ADD" for op in graph.ops) == 10


def test_1000_classes_bit_exact():
    """The dense layer of 1280 inputs: a tile of 16 output channels is 20 KiB, in half of
    the default 64 KiB weight buffer."""
    _check_functional(mobilenet_v2_tflite(96, 0.35, 1000), AccelConfig())


@pytest.mark.skipif(verilator_available() is not None, reason=verilator_available() or "")
def test_bit_exact_and_cycle_exact_on_verilator():
    tflite = mobilenet_v2_tflite(32, 0.35, 10)
    graph = load_graph(tflite)
    fw = compile_graph(graph, AccelConfig())
    (x,) = _inputs(graph, 1)
    assert_verilator_exact(graph, fw, x, golden_run(golden_interpreter(tflite), x[None]))


@pytest.mark.slow
@pytest.mark.skipif(verilator_available() is not None, reason=verilator_available() or "")
def test_imagenet_mobilenet_v2_224_on_verilator():
    """keras.applications.MobileNetV2, 224x224, alpha 1, 1000 classes: every layer bit-exact
    in the functional model and in Verilator, cycles as predicted (README)."""
    tflite = mobilenet_v2_tflite(224, 1.0, 1000)
    graph, fw = _check_functional(tflite, AccelConfig())
    (x,) = _inputs(graph, 1)
    r, prediction = assert_verilator_exact(graph, fw, x,
                                           golden_run(golden_interpreter(tflite), x[None]))
    print(f"MobileNetV2 224 alpha 1: {len(fw.descriptors) - 1} descriptors, "
          f"{r.cycles:,} cycles measured = predicted ({prediction.total:,})")
