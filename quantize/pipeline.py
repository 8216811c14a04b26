"""From a width multiplier to a verified int8 model: build the Keras network (shipped
trained weights when there are some), convert it to full int8 with the shipped real
calibration images, and evaluate it."""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np

from . import assets
from .data import center_crop, normalize
from .model import ModelSpec, build_mobilenet, calibrate_batchnorm

log = logging.getLogger(__name__)


class WeightsError(ValueError):
    """A weights file that is missing, corrupt or made for another network."""


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
        _load_weights_strictly(model, path, spec)
        return model, True
    images = assets.calibration_images()[:32]
    calibrate_batchnorm(model, normalize(fit_to_input(images, spec.input_size)), seed)
    return model, False


def _load_weights_strictly(model, path, spec: ModelSpec) -> None:
    """Load every weight of `model` from `path` or raise `WeightsError`: Keras only warns
    when it skips a layer that is missing from the file, and lists every layer in its errors."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(path)
        except (OSError, ValueError) as e:
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()][:2]
            raise WeightsError(f"{path}: cannot load weights for {spec.name} "
                               f"({' '.join(lines)[:300] or type(e).__name__})") from e
    skipped = [str(w.message) for w in caught if "freshly-initialized" in str(w.message)]
    if skipped:
        raise WeightsError(f"{path}: does not hold every weight of {spec.name} "
                           f"({len(skipped)} layer groups missing: {skipped[0][:200]})")


def fit_to_input(images_u8: np.ndarray, size: int, width: int | None = None) -> np.ndarray:
    """Fit 32x32 images to a size x size (or size x width) model input: center-crop each axis
    that is smaller than the image, resize (nearest) each one that is larger."""
    width = size if width is None else width
    h, w = images_u8.shape[1:3]
    if size > h:
        images_u8, h = images_u8[:, (np.arange(size) * h) // size], size
    if width > w:
        images_u8, w = images_u8[:, :, (np.arange(width) * w) // width], width
    return center_crop(images_u8, size, width)


def build_int8_model(spec: ModelSpec, weights: str | None = None, seed: int = 0) -> Int8Model:
    from .convert import to_int8_tflite
    model, trained = load_keras_model(spec, weights, seed)
    calib = fit_to_input(assets.calibration_images(), spec.input_size)
    return Int8Model(spec, model, to_int8_tflite(model, calib), trained)


def input_images(spec: ModelSpec, images_u8: np.ndarray) -> np.ndarray:
    return fit_to_input(images_u8, spec.input_size)


def takes_images(graph) -> bool:
    """Whether `graph`'s input is an RGB image batch (NHWC, 3 channels, batch 1)."""
    shape = graph.input.shape
    return len(shape) == 4 and shape[0] == 1 and shape[3] == 3


def across_classes(labels: np.ndarray) -> np.ndarray:
    """Indices of `labels` ordered so the classes take turns (one of each class, then a
    second of each, ...): the first n check images cover min(n, classes) classes."""
    rank = np.zeros(len(labels), np.int64)
    for c in np.unique(labels):
        where = np.flatnonzero(labels == c)
        rank[where] = np.arange(len(where))
    return np.lexsort((labels, rank))


def sample_inputs(graph, n: int, norm: str = "cifar") -> tuple[np.ndarray, np.ndarray | None]:
    """`n` int8 inputs for `graph` and their labels.

    An RGB image input gets `n` real CIFAR-10 test images shipped with the package, drawn
    across the classes, fitted to its height and width, preprocessed as `norm`
    (`input_norm`: the seed's standardization, or a pixel range) and quantized with the
    input's scale and zero point; labels are their classes when the model has 10 outputs
    (else None: no accuracy for another label set). Any other input shape gets `n` seeded
    random int8 tensors (labels: None), so a model whose input is not an image is still
    checked bit-exact, just not for accuracy."""
    from .convert import quantize_images
    images, labels = assets.sample_test_images()
    if n > len(images):
        raise ValueError(f"only {len(images)} sample test images ship with the package, "
                         f"asked for {n}")
    g = graph.input
    if not takes_images(graph):
        rng = np.random.default_rng(0)
        return rng.integers(-128, 128, (n, *g.shape[1:]), dtype=np.int8), None
    pick = across_classes(labels)[:n]
    fitted = fit_to_input(images[pick], g.shape[1], g.shape[2])
    classes = int(graph.output.shape[-1])
    return (quantize_images(fitted, g.scale[0], g.zp, norm),
            labels[pick] if classes == 10 else None)
