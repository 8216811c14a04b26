"""Check images as each model expects them: the seed's CIFAR standardization, or the pixel range
a model from elsewhere was calibrated on, quantized with the model's own input scale and zero
point; drawn across the classes; labelled only for a 10-class model."""
from types import SimpleNamespace

import numpy as np
import pytest
from keras_models import tiny_mobilenet_tflite

from quantize import assets
from quantize.data import normalize
from quantize.input_norm import PIXEL_RANGES, infer, input_range, quantize_pixels
from quantize.pipeline import across_classes, sample_inputs
from quantize.tflite_graph import load_graph
from flow.cli import input_kind, input_norm

PIXELS = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)


@pytest.mark.parametrize("name", PIXEL_RANGES)
def test_a_pixel_range_is_recognised_and_quantized_within_half_a_step(name):
    """An input calibrated on exactly that range: `infer` names it, and every pixel value
    lands on the int8 step nearest to its real value (within half a step)."""
    a, b = PIXEL_RANGES[name]
    scale = (b - a) / 255
    zp = int(round(-128 - a / scale))
    assert input_range(scale, zp) == pytest.approx((a, b), abs=scale)  # zp rounds
    assert infer(scale, zp) == name
    q = quantize_pixels(PIXELS, scale, zp, name).astype(np.float64)
    real = a + PIXELS * (b - a) / 255
    assert np.all(np.abs((q - zp) * scale - real) <= scale / 2 + 1e-9)
    assert q.max() - q.min() >= 253          # the pixels span the whole int8 range


def test_standardized_inputs_are_no_pixel_range():
    """The seed's inputs span the standardized data ([-2, 2.1] or so): no pixel range; "cifar"
    is the seed's own standardization."""
    assert infer(0.0163, -6) is None
    q = quantize_pixels(PIXELS.repeat(3, axis=3), 0.0163, -6, "cifar")
    want = np.clip(np.round(normalize(PIXELS.repeat(3, axis=3)) / 0.0163) - 6, -128, 127)
    assert np.array_equal(q, want.astype(np.int8))


def test_check_images_take_turns_over_the_classes():
    _, labels = assets.sample_test_images()
    order = across_classes(labels)
    assert sorted(order) == list(range(len(labels)))
    classes = len(np.unique(labels))
    for start in range(0, len(labels), classes):
        assert len(set(labels[order[start:start + classes]])) == classes


def test_labels_only_for_ten_classes_and_the_norm_is_used():
    """The tiny test model has 5 classes: real images, no labels (no accuracy); its input is
    quantized as asked."""
    graph = load_graph(tiny_mobilenet_tflite())
    assert graph.output.shape[-1] == 5
    xs_cifar, labels = sample_inputs(graph, 4, "cifar")
    xs_unit, _ = sample_inputs(graph, 4, "0,1")
    assert labels is None and "no accuracy" in input_kind(graph, labels)
    assert xs_cifar.shape == xs_unit.shape == (4, *graph.input.shape[1:])
    assert not np.array_equal(xs_cifar, xs_unit)


def test_gen_accel_picks_the_norm():
    """auto: cifar for the seed network; for a --model, the range its input spans, else
    cifar; an explicit --input-norm wins."""
    graph = load_graph(tiny_mobilenet_tflite())
    g = graph.input
    args = SimpleNamespace(input_norm="auto", model=None)
    assert input_norm(args, graph) == "cifar"
    args.model = "tiny.tflite"
    assert input_norm(args, graph) == (infer(float(g.scale[0]), g.zp) or "cifar")
    g.scale, g.zero_point = np.array([1 / 255], np.float32), np.array([-128])
    assert input_norm(args, graph) == "0,1"
    args.input_norm = "-1,1"
    assert input_norm(args, graph) == "-1,1"
