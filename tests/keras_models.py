"""Small Keras models converted to full-int8 TFLite, for tests that need a model other than
the seed network."""
import functools

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


@functools.lru_cache(maxsize=None)
def tiny_mobilenet_tflite() -> bytes:
    """The seed network's op sequence in miniature, on 8x8x3 inputs: 3x3/s2 conv, 3x3
    depthwise, 1x1 conv, global average, dense, softmax (six ops, 4 KB). Built once per
    session; tests edit copies of it."""
    from keras import layers

    def net(x):
        y = layers.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="stem")(x)
        y = layers.DepthwiseConv2D(3, padding="same", activation="relu", name="dw")(y)
        y = layers.Conv2D(8, 1, activation="relu", name="pw")(y)
        y = layers.GlobalAveragePooling2D(name="gap")(y)
        return layers.Softmax(name="softmax")(layers.Dense(5, name="fc")(y))
    return int8_tflite(net, (8, 8, 3))
