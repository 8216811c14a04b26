"""ImageNet's MobileNet, keras.applications.MobileNet(224x224, alpha 1, 1000 classes)
exported as the TF docs show, on the default configuration (64 KiB activation buffers: its
large maps run as bands of rows through DDR): bit-exact with TFLite BUILTIN_REF on every layer
in the functional model and in Verilator, and the cycle model exact per descriptor. Slow
(about 4 minutes: the export, TFLite's reference kernels and ~6 M simulated cycles)."""
import numpy as np
import pytest
from keras_models import mobilenet_tflite

from firmware.compiler import compile_graph
from firmware.executor import run_image
from firmware.fit_check import model_blockers
from quantize.convert import golden_interpreter, golden_run
from quantize.tflite_graph import load_graph
from quantize.verify import assert_bit_exact
from rtl_gen.config import AccelConfig
from sim.verilator_runner import verilator_available
from verilator_checks import assert_verilator_exact

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def imagenet():
    tflite = mobilenet_tflite(fixed_batch=False, classes=1000, side=224, alpha=1.0)
    graph = load_graph(tflite)
    x = np.random.default_rng(5).integers(-128, 128, graph.input.shape[1:], dtype=np.int8)
    return graph, compile_graph(graph, AccelConfig()), x, golden_run(golden_interpreter(tflite),
                                                                      x[None])


def test_fits_the_default_buffers_in_bands(imagenet):
    graph, fw, _, _ = imagenet
    assert model_blockers(fw, graph) == []
    assert graph.output.shape[-1] == 1000
    assert any(bands > 1 for _, bands in fw.bands)      # tiled through DDR


def test_functional_model_bit_exact(imagenet):
    graph, fw, x, golden = imagenet
    assert assert_bit_exact(graph, run_image(fw, x[None]), golden) == len(graph.ops)
    assert np.unique(golden[graph.output.index]).size > 1


@pytest.mark.skipif(verilator_available() is not None, reason=verilator_available() or "")
def test_verilator_bit_exact_and_cycle_exact(imagenet):
    graph, fw, x, golden = imagenet
    r, _ = assert_verilator_exact(graph, fw, x, golden)
    print(f"ImageNet MobileNet 224 alpha 1: {r.cycles:,} cycles measured = predicted, "
          f"{len(fw.descriptors) - 1} descriptors")
