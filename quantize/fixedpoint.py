"""TFLite / gemmlowp integer arithmetic, vectorized over numpy int64 arrays.

Every function returns values in int32 range held in int64 arrays, and mirrors the C++ it is
named after bit for bit (truncating division, arithmetic shifts, saturation). These are the
primitives the hardware requantizer, MEAN and SOFTMAX units implement.
"""
from __future__ import annotations

import math

import numpy as np

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


def _i64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.int64)


def wrap_int32(x) -> np.ndarray:
    """Two's-complement wrap of an int64 array into int32 range (C's int32 overflow)."""
    x = _i64(x)
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite QuantizeMultiplier: real = q_fixed * 2^(shift - 31), q_fixed in [2^30, 2^31)."""
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = int(math.floor(abs(q) * (1 << 31) + 0.5)) * (1 if q >= 0 else -1)  # std::round
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        shift, q_fixed = 0, 0
    return q_fixed, shift


def saturating_rounding_doubling_high_mul(a, b) -> np.ndarray:
    a, b = _i64(a), _i64(b)
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    s = ab + nudge
    # C++ int64 division truncates toward zero; numpy's >> floors, so shift the magnitude.
    high = np.where(s >= 0, s >> 31, -((-s) >> 31))
    return np.where(overflow, INT32_MAX, high)


def rounding_divide_by_pot(x, exponent) -> np.ndarray:
    x, exponent = _i64(x), _i64(exponent)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(x, multiplier, shift) -> np.ndarray:
    """TFLite MultiplyByQuantizedMultiplier (double rounding: SRDHM then RDBP)."""
    shift = _i64(shift)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    return rounding_divide_by_pot(
        saturating_rounding_doubling_high_mul(wrap_int32(_i64(x) << left), multiplier), right)


def saturating_left_shift(x, exponent: int) -> np.ndarray:
    """gemmlowp SaturatingRoundingMultiplyByPOT for a positive exponent."""
    x = _i64(x)
    threshold = (1 << (31 - exponent)) - 1
    return np.where(x > threshold, INT32_MAX,
                    np.where(x < -threshold, INT32_MIN, wrap_int32(x << exponent)))


def rescale(x, src_int_bits: int, dst_int_bits: int) -> np.ndarray:
    """gemmlowp Rescale<dst>(FixedPoint<int32, src>)."""
    e = src_int_bits - dst_int_bits
    if e > 0:
        return saturating_left_shift(x, e)
    if e < 0:
        return rounding_divide_by_pot(x, -e)
    return _i64(x)


def fx_mul(a, b) -> np.ndarray:
    """FixedPoint * FixedPoint: integer bits add, raw is the SRDHM."""
    return saturating_rounding_doubling_high_mul(a, b)


def rounding_half_sum(a, b) -> np.ndarray:
    s = _i64(a) + _i64(b)
    t = s + np.where(s >= 0, 1, -1)
    return np.where(t >= 0, t // 2, -((-t) // 2))


def exp_on_interval_between_negative_one_quarter_and_0_excl(a) -> np.ndarray:
    """gemmlowp, Q0.31 in and out."""
    constant_term = 1895147668
    constant_1_over_3 = 715827883
    x = wrap_int32(_i64(a) + (1 << 28))  # change of variable x = a + 1/8
    x2 = fx_mul(x, x)
    x3 = fx_mul(x2, x)
    x4 = fx_mul(x2, x2)
    x4_over_4 = rounding_divide_by_pot(x4, 2)
    poly = rounding_divide_by_pot(wrap_int32(fx_mul(wrap_int32(x4_over_4 + x3), constant_1_over_3) + x2), 1)
    return wrap_int32(constant_term + fx_mul(constant_term, wrap_int32(x + poly)))


_EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
               (2, 39332535), (3, 720401), (4, 242))


def exp_on_negative_values(a, integer_bits: int) -> np.ndarray:
    """gemmlowp exp_on_negative_values: FixedPoint<int32, integer_bits> (a <= 0) -> Q0.31."""
    a = _i64(a)
    frac_bits = 31 - integer_bits
    one_quarter = 1 << (frac_bits - 2)
    mask = one_quarter - 1
    a_mod_quarter_minus_one_quarter = (a & mask) - one_quarter
    result = exp_on_interval_between_negative_one_quarter_and_0_excl(
        rescale(a_mod_quarter_minus_one_quarter, integer_bits, 0))
    remainder = wrap_int32(a_mod_quarter_minus_one_quarter - a)
    for exponent, multiplier in _EXP_BARREL:
        if integer_bits > exponent:
            bit = (remainder >> (frac_bits + exponent)) & 1
            result = np.where(bit != 0, fx_mul(result, multiplier), result)
    if integer_bits > 5:
        raise NotImplementedError("exp_on_negative_values clamp for > 5 integer bits")
    return np.where(a == 0, INT32_MAX, result)


def one_over_one_plus_x_for_x_in_0_1(a) -> np.ndarray:
    """gemmlowp Newton-Raphson reciprocal, Q0.31 in and out."""
    half_denominator = rounding_half_sum(a, INT32_MAX)
    x = wrap_int32(1515870810 + fx_mul(half_denominator, -1010580540))  # Q2.29: 48/17 - 32/17 d
    one_q2 = 1 << 29
    for _ in range(3):
        half_denominator_times_x = fx_mul(half_denominator, x)
        one_minus = wrap_int32(one_q2 - half_denominator_times_x)
        x = wrap_int32(x + rescale(fx_mul(x, one_minus), 4, 2))
    return rescale(x, 1, 0)  # ExactMulByPot<-1> keeps the raw value, Q2 -> Q1


def count_leading_zeros_u32(x) -> np.ndarray:
    x = _i64(x) & 0xFFFFFFFF
    out = np.full(x.shape, 32, np.int64)
    nz = x != 0
    out[nz] = 31 - np.floor(np.log2(x[nz].astype(np.float64))).astype(np.int64)
    # log2 of values just below a power of two can round up in float; fix exactly.
    top = np.where(nz, np.int64(1) << (31 - out).clip(0, 31), 1)
    out = np.where(nz & (top > x), out + 1, out)
    return out


def get_reciprocal(x, x_integer_digits: int) -> tuple[np.ndarray, np.ndarray]:
    """TFLite GetReciprocal: returns (Q0.31 reciprocal of the fixed-point x, num_bits_over_unit)."""
    x = _i64(x)
    headroom_plus_one = count_leading_zeros_u32(x)
    num_bits_over_unit = x_integer_digits - headroom_plus_one
    shifted_sum_minus_one = wrap_int32(((x & 0xFFFFFFFF) << headroom_plus_one) - (1 << 31))
    return one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one), num_bits_over_unit


def double_parts(real: float) -> tuple[int, int]:
    """real = mantissa * 2^exponent exactly, with a 53-bit integer mantissa (0 for 0.0)."""
    if real == 0.0:
        return 0, 0
    f, e = math.frexp(real)
    return int(f * (1 << 53)), e - 53


def round_scaled_double(acc, mantissa: int, exponent: int) -> int:
    """std::round(double(acc) * double(scale)) with integers only: the exact product is rounded
    to 53 significant bits (round-half-even, as the FPU does), then to an integer (half away
    from zero). This is the algorithm the FULLY_CONNECTED requantizer implements in RTL."""
    acc = int(acc)
    p = abs(acc) * mantissa
    if p == 0:
        return 0
    drop = max(p.bit_length() - 53, 0)
    q = p >> drop
    if drop:
        rem, half = p & ((1 << drop) - 1), 1 << (drop - 1)
        if rem > half or (rem == half and q & 1):
            q += 1
    t = drop + exponent
    mag = q << t if t >= 0 else (q + (1 << (-t - 1))) >> (-t)
    return -mag if acc < 0 else mag
