"""Building an untrained network calibrates its BatchNorm layers through probe models; that
must not make Keras warn (the warnings used to leak into gen-accel's output)."""
import warnings

import numpy as np


def test_batchnorm_calibration_raises_no_warning():
    from quantize.model import ModelSpec, build_mobilenet, calibrate_batchnorm
    model = build_mobilenet(ModelSpec(0.25, 8))
    images = np.random.default_rng(0).normal(0, 1, (4, 8, 8, 3)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # any warning fails the test, with its message
        calibrate_batchnorm(model, images)
    bn = next(layer for layer in model.layers if layer.name == "conv1_bn")
    assert np.all(bn.get_weights()[3] > 0)   # the moving variance was set from the data
