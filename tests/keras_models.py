"""Small Keras models converted to full-int8 TFLite, for tests that need a model other than
the seed network."""
import numpy as np

from quantize.convert import to_int8_tflite_from_float


def int8_tflite(build, shape, *, seed: int = 0, calibration_images: int = 8) -> bytes:
    """`build(input) -> output` as a Keras model on `shape` inputs, converted to int8 with
    seeded weights and normal(0, 1) calibration data."""
    import keras
    keras.utils.set_random_seed(seed)
    inp = keras.Input(shape)
    model = keras.Model(inp, build(inp))
    calib = np.random.default_rng(seed).normal(0, 1, (calibration_images, *shape))
    return to_int8_tflite_from_float(model, calib.astype(np.float32))
