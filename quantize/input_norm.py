"""How check images become a model's int8 input: the pixel preprocessing it was trained with.

The seed networks are trained on per-channel standardized CIFAR-10 (`data.normalize`):
"cifar". Models from elsewhere usually take pixels scaled to [0, 1], [-1, 1] or left in
[0, 255]; their int8 input's quantization, calibrated on such pixels, spans about that range,
so "auto" picks the one it spans (`infer`). The real value is then quantized with the model's
own input scale and zero point, as TFLite's QUANTIZE would.
"""
from __future__ import annotations

import numpy as np

from .data import normalize

PIXEL_RANGES = {"0,1": (0.0, 1.0), "-1,1": (-1.0, 1.0), "0,255": (0.0, 255.0)}
CHOICES = ("auto", "cifar", *PIXEL_RANGES)


def input_range(scale: float, zero_point: int) -> tuple[float, float]:
    """The real values an int8 input with this quantization can hold."""
    return (-128 - zero_point) * scale, (127 - zero_point) * scale


def infer(scale: float, zero_point: int) -> str | None:
    """The pixel range an input quantized this way was calibrated on: the one whose ends lie
    within a tenth of its width of the input's range; None when none does (e.g. standardized
    inputs, whose range follows the data)."""
    lo, hi = input_range(scale, zero_point)
    for name, (a, b) in PIXEL_RANGES.items():
        if max(abs(lo - a), abs(hi - b)) <= 0.1 * (b - a):
            return name
    return None


def to_real(images_u8: np.ndarray, norm: str) -> np.ndarray:
    """uint8 NHWC pixels as the float values the model was trained on."""
    if norm == "cifar":
        return normalize(images_u8)
    a, b = PIXEL_RANGES[norm]
    return (a + images_u8.astype(np.float32) * np.float32((b - a) / 255.0)).astype(np.float32)


def quantize_pixels(images_u8: np.ndarray, scale: float, zero_point: int, norm: str) -> np.ndarray:
    """uint8 NHWC pixels as the model's int8 input under `norm` ("cifar" or a pixel range)."""
    q = np.round(to_real(images_u8, norm) / scale) + zero_point
    return np.clip(q, -128, 127).astype(np.int8)
