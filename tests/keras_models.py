"""Small Keras models converted to full-int8 TFLite, for tests that need a model other than
the seed network."""
import functools

import numpy as np

from quantize.convert import keras_application_int8, to_int8_tflite_from_float


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


@functools.lru_cache(maxsize=None)
def pooled_head_tflite(side: int) -> bytes:
    """The classifier head of many TinyML MobileNets: AveragePooling2D over the whole
    side x side map, Flatten, Dense, Softmax (AVERAGE_POOL_2D, not MEAN, in the .tflite).
    The 3x3/s2 conv before it has no activation, so the pool sums values of both signs
    (TFLite's rounding depends on the sign)."""
    from keras import layers

    def net(x):
        y = layers.Conv2D(8, 3, strides=2, padding="same", name="stem")(x)
        y = layers.AveragePooling2D(pool_size=(side, side), name="avg")(y)
        return layers.Softmax(name="softmax")(layers.Dense(5, name="fc")(layers.Flatten()(y)))
    return int8_tflite(net, (2 * side, 2 * side, 3))


# keras.applications.MobileNet at its smallest: what people export.
MOBILENET = dict(alpha=0.25, weights=None)
SIDE = 96


def keras_mobilenet(fixed_batch: bool, classes: int = 10, side: int = SIDE,
                    alpha: float = MOBILENET["alpha"]):
    """keras.applications.MobileNet, untrained but with BatchNorm statistics calibrated on
    random images, so its int8 version is not degenerate (a plain random init collapses the
    logits to one value, which the reader refuses: TFLite's softmax would abort on it)."""
    import keras

    from quantize.model import calibrate_batchnorm
    keras.utils.set_random_seed(0)
    shape = (side, side, 3)
    where = ({"input_tensor": keras.Input(shape, batch_size=1)} if fixed_batch
             else {"input_shape": shape})
    model = keras.applications.MobileNet(**{**MOBILENET, "alpha": alpha}, classes=classes,
                                         **where)
    calibrate_batchnorm(model, _images(4, seed=1, side=side))
    return model


def _images(n: int, seed: int, side: int = SIDE) -> np.ndarray:
    """Inputs in MobileNet's preprocessed range [-1, 1]."""
    return np.random.default_rng(seed).uniform(-1, 1, (n, side, side, 3)).astype(np.float32)


def mobilenet_tflite(fixed_batch: bool, classes: int = 10, side: int = SIDE,
                     alpha: float = MOBILENET["alpha"]) -> bytes:
    """keras.applications.MobileNet (default 96x96, alpha 0.25), converted to full int8 as
    the TF docs show (from_keras_model, representative dataset); about 5 s at the default
    size, 20 s for ImageNet's 224x224 alpha 1."""
    return to_int8_tflite_from_float(keras_mobilenet(fixed_batch, classes, side, alpha),
                                     _images(8, seed=2, side=side))


@functools.lru_cache(maxsize=None)
def mobilenet_v2_tflite(side: int = SIDE, alpha: float = 0.35, classes: int = 10) -> bytes:
    """keras.applications.MobileNetV2 (default 96x96, alpha 0.35, 10 classes) as
    `quantize.convert.keras_application_int8` builds it for `bench.zoo`; about 25 s at the
    default size."""
    return keras_application_int8("MobileNetV2", side, alpha, classes)
