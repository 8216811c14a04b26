"""From a width multiplier to a verified int8 model: build the Keras network (shipped
trained weights when there are some), convert it to full int8 with the shipped real
calibration images, and evaluate it."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from . import assets
from .data import center_crop, normalize
from .model import ModelSpec, build_mobilenet, calibrate_batchnorm

log = logging.getLogger(__name__)


@dataclass
class Int8Model:
    spec: ModelSpec
    keras_model: object
    tflite: bytes
    trained: bool          # False: BN-calibrated random weights (no checkpoint for this alpha)


def load_keras_model(spec: ModelSpec, weights: str | None = None, seed: int = 0):
    """The Keras model with `weights`, else the shipped checkpoint, else a BN-calibrated init."""
    import keras
    keras.utils.set_random_seed(seed)
    model = build_mobilenet(spec)
    path = weights or (assets.weights_path(spec.alpha, spec.input_size)
                       if assets.has_trained_weights(spec.alpha, spec.input_size) else None)
    if path is not None:
        try:
            model.load_weights(path)
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: cannot load weights for {spec.name} ({e})") from e
        return model, True
    images = assets.calibration_images()[:32]
    calibrate_batchnorm(model, normalize(fit_to_input(images, spec.input_size)), seed)
    return model, False


def fit_to_input(images_u8: np.ndarray, size: int) -> np.ndarray:
    """Center-crop 32x32 images to the model input; resize (nearest) when it is larger."""
    if size <= images_u8.shape[1]:
        return center_crop(images_u8, size)
    idx = (np.arange(size) * images_u8.shape[1]) // size
    return images_u8[:, idx][:, :, idx]


def build_int8_model(spec: ModelSpec, weights: str | None = None, seed: int = 0) -> Int8Model:
    from .convert import to_int8_tflite
    model, trained = load_keras_model(spec, weights, seed)
    calib = fit_to_input(assets.calibration_images(), spec.input_size)
    return Int8Model(spec, model, to_int8_tflite(model, calib), trained)


def input_images(spec: ModelSpec, images_u8: np.ndarray) -> np.ndarray:
    return fit_to_input(images_u8, spec.input_size)


def sample_inputs(graph, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `n` of the real CIFAR-10 test images shipped with the package, fitted and
    quantized for `graph`'s int8 input (NHWC), with their labels."""
    from .convert import quantize_input
    images, labels = assets.sample_test_images()
    if n > len(images):
        raise ValueError(f"only {len(images)} sample test images ship with the package, "
                         f"asked for {n}")
    g = graph.input
    size = g.shape[1]
    return quantize_input(fit_to_input(images[:n], size), g.scale[0], g.zp, size), labels[:n]
