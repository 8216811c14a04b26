"""TFLite's int8 AVERAGE_POOL_2D over a whole feature map, and its lowering onto the MEAN unit.

TFLite's reference kernel (reference_integer_ops::AveragePool) sums the RAW int8 values of
the window, zero point included, and divides the sum S by the N pixels with C's truncating
division, rounding half away from zero: S > 0 ? (S + N/2) / N : (S - N/2) / N. It does not
rescale: the converter gives input and output one scale and zero point (Prepare only
DCHECKs it, so a release build never checks). MEAN instead subtracts the zero point and
requantizes with gemmlowp's double rounding, whose ties and signs fall differently.

The MeanUnit computes the pool all the same: with input zero point 0 it sums the raw values,
so S keeps the sign TFLite rounds on, and its Requantizer (output zero point 0) returns
MultiplyByQuantizedMultiplier(S, m, s) clamped to int8. No closed form for (m, s) is proven
to round like TFLite's division for every N, so the host searches pairs near
2^(31 - s) / N and keeps the first one that equals TFLite's rounding on EVERY sum the map
can produce, S in [-128 N, 127 N]; an N without one is refused, never approximated.
"""
from __future__ import annotations

import functools

import numpy as np

from . import fixedpoint as fx

INT8_MIN, INT8_MAX = -128, 127
# The largest map whose pair is searched: checking every one of its 256 N sums takes about a
# second. A 256x256 pool is far past any MobileNet head (7x7 at 224x224 inputs) and past the
# MeanUnit of the default config (4,096 pixels); a crafted model's 2^26-pixel map would take
# hours to verify.
MAX_PIXELS = 1 << 16
# Sums verified per numpy call: bounds the memory of the exhaustive check of a large map.
_CHUNK = 1 << 20


def tflite_average(total, count: int) -> np.ndarray:
    """TFLite's rounded average of integer sums over `count` pixels, C division truncating
    toward zero (numpy's // floors, so the negative branch divides the magnitude)."""
    total = np.asarray(total, np.int64)
    half = count // 2
    up = (total + half) // count
    down = -((half - total) // count)
    return np.where(total > 0, up, down)


def global_average_pool(x: np.ndarray, act_min: int = INT8_MIN, act_max: int = INT8_MAX
                        ) -> np.ndarray:
    """AVERAGE_POOL_2D whose window is the whole (N, H, W, C) map: raw sums over H and W,
    TFLite's rounding, the fused activation's clamp; (N, C) int8."""
    total = x.astype(np.int64).sum(axis=(1, 2))
    out = tflite_average(total, x.shape[1] * x.shape[2])
    return np.clip(out, act_min, act_max).astype(np.int8)


def mean_unit_output(total, multiplier: int, shift: int) -> np.ndarray:
    """What the MeanUnit stores for raw sums `total` with input and output zero point 0:
    its Requantizer's MultiplyByQuantizedMultiplier, clamped to int8 (the executor's and
    the RTL's arithmetic, `fixedpoint`)."""
    scaled = fx.multiply_by_quantized_multiplier(fx.wrap_int32(total), multiplier, shift)
    return np.clip(scaled, INT8_MIN, INT8_MAX)


def sum_range(count: int) -> tuple[int, int]:
    """The sums `count` int8 values can have: every S the pool's requantizer may see."""
    return INT8_MIN * count, INT8_MAX * count


def _candidates(count: int):
    """(multiplier, shift) pairs with multiplier * 2^(shift - 31) next to 1 / count, the
    largest multipliers (finest steps) first; the multiplier is a positive int32."""
    for shift in range(-31, 32):
        nearest = -(-(1 << (31 - shift)) // count)      # ceil(2^(31 - shift) / count)
        for m in (nearest - 1, nearest, nearest + 1):
            if 0 < m <= fx.INT32_MAX:
                yield m, shift


def _probe_sums(count: int) -> np.ndarray:
    """The sums on either side of each of TFLite's rounding steps (q * count -/+ count / 2)
    and the range's ends: where a wrong pair fails first, so most are rejected without the
    whole range."""
    lo, hi = sum_range(count)
    steps = np.arange(INT8_MIN, INT8_MAX + 1, dtype=np.int64) * count
    half = count // 2
    near = np.concatenate([steps + d for d in (-half - 1, -half, -half + 1,
                                               half - 1, half, half + 1)] + [[lo, hi]])
    return np.unique(np.clip(near, lo, hi))


def _agrees(total: np.ndarray, count: int, multiplier: int, shift: int) -> bool:
    return np.array_equal(mean_unit_output(total, multiplier, shift),
                          tflite_average(total, count))


def is_exact(count: int, multiplier: int, shift: int) -> bool:
    """Whether the MeanUnit with this pair equals TFLite's average on every possible sum
    over `count` pixels (checked exhaustively, in chunks)."""
    if not _agrees(_probe_sums(count), count, multiplier, shift):
        return False
    lo, hi = sum_range(count)
    for start in range(lo, hi + 1, _CHUNK):
        total = np.arange(start, min(start + _CHUNK, hi + 1), dtype=np.int64)
        if not _agrees(total, count, multiplier, shift):
            return False
    return True


@functools.lru_cache(maxsize=None)
def average_pool_multiplier(count: int) -> tuple[int, int] | None:
    """The MeanUnit's (multiplier, shift) that divides raw sums over `count` pixels exactly
    as TFLite's AVERAGE_POOL_2D does, or None when no candidate is exact (the pool must
    then be refused)."""
    if not 1 <= count <= MAX_PIXELS:
        raise ValueError(f"an average over {count} pixels (1..{MAX_PIXELS} are searched)")
    return next(((m, s) for m, s in _candidates(count) if is_exact(count, m, s)), None)
