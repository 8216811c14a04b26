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
    calibrate_batchnorm(model, normalize(_fit(images, spec.input_size)), seed)
    return model, False


def _fit(images_u8: np.ndarray, size: int) -> np.ndarray:
    """Center-crop 32x32 images to the model input; resize (nearest) when it is larger."""
    if size <= images_u8.shape[1]:
        return center_crop(images_u8, size)
    idx = (np.arange(size) * images_u8.shape[1]) // size
    return images_u8[:, idx][:, :, idx]


def build_int8_model(spec: ModelSpec, weights: str | None = None, seed: int = 0) -> Int8Model:
    from .convert import to_int8_tflite
    model, trained = load_keras_model(spec, weights, seed)
    calib = _fit(assets.calibration_images(), spec.input_size)
    return Int8Model(spec, model, to_int8_tflite(model, calib), trained)


def input_images(spec: ModelSpec, images_u8: np.ndarray) -> np.ndarray:
    return _fit(images_u8, spec.input_size)
