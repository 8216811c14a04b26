"""Integer building blocks against their definitions."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from quantize import fixedpoint as fx


@settings(max_examples=3000, deadline=None, derandomize=True)
@given(acc=st.integers(-(1 << 31), (1 << 31) - 1),
       scale=st.floats(1e-12, 1e3, allow_nan=False, allow_infinity=False))
def test_round_scaled_double_equals_float64(acc, scale):
    """The integer-only FULLY_CONNECTED requantizer (what the RTL does) equals
    std::round(double(acc) * scale) as TFLite's reference kernel computes it."""
    raw = float(acc) * scale
    expect = int(np.sign(raw) * np.floor(abs(raw) + 0.5))
    assert fx.round_scaled_double(acc, *fx.double_parts(scale)) == expect


def test_round_scaled_double_ties_round_away():
    m, e = fx.double_parts(0.5)
    assert [fx.round_scaled_double(a, m, e) for a in (1, 3, -1, -3, 0)] == [1, 2, -1, -2, 0]


@settings(max_examples=2000, deadline=None, derandomize=True)
@given(x=st.integers(-(1 << 31), (1 << 31) - 1), real=st.floats(1e-9, 0.999))
def test_multiply_by_quantized_multiplier_is_close_to_real(x, real):
    """Sanity (not the bit-exactness proof, which is against TFLite): within 1 of x * real."""
    m, s = fx.quantize_multiplier(real)
    assert abs(int(fx.multiply_by_quantized_multiplier(x, m, s)) - x * real) <= 1.0 + abs(x) * 2.0**-30


def test_srdhm_saturates_only_at_int32_min_squared():
    assert fx.saturating_rounding_doubling_high_mul(fx.INT32_MIN, fx.INT32_MIN) == fx.INT32_MAX
    assert fx.saturating_rounding_doubling_high_mul(fx.INT32_MIN, fx.INT32_MAX) == -fx.INT32_MAX


def test_rounding_divide_by_pot_rounds_half_away():
    xs = np.array([5, -5, 6, -6, 7, -7])
    assert list(fx.rounding_divide_by_pot(xs, 1)) == [3, -3, 3, -3, 4, -4]


def test_count_leading_zeros_exact_at_powers_of_two():
    xs = np.array([1 << k for k in range(32)] + [(1 << k) - 1 for k in range(1, 32)] + [0])
    expect = [31 - k for k in range(32)] + [32 - k for k in range(1, 32)] + [32]
    assert list(fx.count_leading_zeros_u32(xs)) == expect
