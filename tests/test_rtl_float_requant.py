# amaranth: UnusedElaboratable=no
"""FloatRequantizer RTL against quantize.fixedpoint.round_scaled_double (+ zero point, clamp)."""
from fractions import Fraction

import numpy as np
import pytest
from amaranth.back import verilog

from quantize.fixedpoint import INT32_MAX, INT32_MIN, double_parts, round_scaled_double
from rtl_gen.float_requant import FloatRequantizer
from stream_sim import run_stream

EDGE_ACC = [0, 1, -1, 2, -2, 3, -3, 127, -128, (1 << 30), -(1 << 30), INT32_MAX, INT32_MIN,
            INT32_MIN + 1]


def expected(case, zp, lo, hi):
    acc, mantissa, exponent = case
    return min(max(round_scaled_double(acc, mantissa, exponent) + zp, lo), hi)


def run(cases, zp=0, lo=-128, hi=127, digit_width=1, seed=0, valid_prob=1.0, ready_prob=1.0):
    """Stream `cases` (acc, mantissa, exponent) through a FloatRequantizer with random input
    gaps and output back-pressure; checks every output against the reference and the stream
    rules (a valid output stays put until taken). Returns the cycle of each output transfer."""
    beats = [{"acc": int(acc), "mantissa": int(mantissa), "exponent": int(exponent)}
             for acc, mantissa, exponent in cases]
    outputs, cycles = run_stream(FloatRequantizer(digit_width), beats, len(cases),
                                 {"output_zp": zp, "act_min": lo, "act_max": hi}, seed=seed,
                                 valid_prob=valid_prob, ready_prob=ready_prob)
    want = [expected(c, zp, lo, hi) for c in cases]
    bad = [(c, g, x) for c, g, x in zip(cases, outputs, want) if g != x]
    assert not bad, f"{len(bad)} mismatches, first (acc, mantissa, exponent), got, want: {bad[:5]}"
    return cycles


def random_acc(rng, n):
    """Full-range int32 plus log-uniform magnitudes of both signs."""
    wide = rng.integers(INT32_MIN, INT32_MAX, n, endpoint=True)
    small = rng.choice([-1, 1], n) * (rng.integers(0, 1 << 31, n) >> rng.integers(0, 31, n))
    return [int(a) for a in np.where(rng.random(n) < 0.5, wide, small)]


def realistic_cases(rng, n):
    """Scales 1e-6..10 (log-uniform) with accs over the full int32 range for a third of them;
    for the rest acc is picked so that |acc * scale| lands in 0..200, where the roundings and
    the clamp are visible."""
    cases = []
    for acc in random_acc(rng, n):
        scale = float(10 ** rng.uniform(-6, 1))
        if rng.random() < 2 / 3:
            acc = int(np.clip(rng.uniform(-200, 200) / scale, INT32_MIN, INT32_MAX))
        cases.append((acc, *double_parts(scale)))
    return cases


def exact_round(acc, mantissa, exponent):
    """Single rounding, half away from zero, of the exact product (not what the FPU does)."""
    x = Fraction(acc * mantissa) * Fraction(2) ** exponent
    mag = int(abs(x) + Fraction(1, 2))
    return mag if x >= 0 else -mag


def double_rounding_cases(rng, n):
    """Products one ulp-ish below / above a tie of the final rounding, where rounding to 53 bits
    first moves them onto the tie: the FPU result differs from the exact rounding."""
    cases = []
    while len(cases) < n:
        acc = int(rng.integers(3, 1 << 31)) * int(rng.choice([1, -1]))
        m = int(rng.integers(1 << 52, 1 << 53))
        p = abs(acc) * m
        drop = max(p.bit_length() - 53, 0)
        s = drop + int(rng.integers(46, 53))           # result ~ 2^(53 - 46..53)
        tie = ((p >> s) << s) + (1 << (s - 1))
        for mm in (tie // abs(acc), tie // abs(acc) + 1):
            if (1 << 52) <= mm < (1 << 53):
                case = (acc, mm, -s)
                if round_scaled_double(*case) != exact_round(*case):
                    cases.append(case)
    return cases[:n]


def carry_cases(rng, n):
    """Products whose 53-bit round-half-even carries into a new bit: p lies in
    [2^(53+d) - 2^(d-1), 2^(53+d)) with drop d, so q rounds up from 2^53 - 1 to 2^53."""
    cases = []
    while len(cases) < n:
        acc = int(rng.integers(3, 1 << 31))
        for d in (acc.bit_length() - 1, acc.bit_length()):
            m = ((1 << (53 + d)) - 1) // acc
            p = acc * m
            if (1 << 52) <= m < (1 << 53) and p >= (1 << (53 + d)) - (1 << (d - 1)):
                assert max(p.bit_length() - 53, 0) == d
                sign = int(rng.choice([1, -1]))
                cases.append((sign * acc, m, -d - 46 - int(rng.integers(0, 3))))
                break
    return cases


def small_odd_divisor(n):
    """Product of n's odd prime factors below 2^12, with multiplicity (1 if none)."""
    a, f = 1, 3
    while f < 1 << 12:
        if n % f == 0:
            n //= f
            a *= f
        else:
            f += 2
    return a


def exact_tie_cases(rng, n):
    """p = |acc| * mantissa exactly halfway between two 53-bit values, p = 2^(drop-1) (2Q + 1),
    with Q next to a tie T of the final rounding: Q = T - 1 (odd: rounds up onto the tie, then
    away from zero), T (even: stays, then away), T + 1 (odd: up) or T - 2 (even: stays, below).
    acc = a 2^j and mantissa = b 2^k with a b = 2Q + 1 and j + k = drop - 1."""
    cases = []
    while len(cases) < n:
        u = int(rng.integers(46, 53))                  # final result ~ odd / 2 < 2^(53 - u)
        odd = int(rng.integers(1 << (53 - u), 1 << (54 - u))) | 1
        tie = odd << (u - 1)                           # in (2^52, 2^53)
        big_q = tie + int(rng.choice([-1, 0, 1, -2]))
        a = small_odd_divisor(2 * big_q + 1)
        b = (2 * big_q + 1) // a
        k = 53 - b.bit_length()
        if a == 1 or k < 0 or a.bit_length() > 31:
            continue
        j = int(rng.integers(0, 32 - a.bit_length()))   # a 2^j <= 2^31 - 1
        acc, m = a << j, b << k
        drop = j + k + 1
        assert max((acc * m).bit_length() - 53, 0) == drop
        cases.append((acc * int(rng.choice([1, -1])), m, -drop - u))
    return cases


# ------------------------------------------------------------------ tests


def test_random_sweep_realistic_scales():
    rng = np.random.default_rng(1)
    cases = realistic_cases(rng, 3000)
    visible = [round_scaled_double(*c) for c in cases]
    assert np.mean([-128 < v < 127 and v != 0 for v in visible]) > 0.4   # not all clamped / 0
    run(cases, zp=-3, seed=2, valid_prob=0.8, ready_prob=0.7)


def test_edge_accumulators_and_ties():
    scales = [0.5, 1.5, 2.5, 1.0, 2.0 ** -31, 1e-6, 10.0, 0.3, 1 / 3, np.nextafter(1.0, 0.0)]
    cases = [(a, *double_parts(float(s))) for a in EDGE_ACC for s in scales]
    # Exact ties of the final rounding: (odd * 2^(k-1)) * 2^-k = odd / 2, of both signs.
    rng = np.random.default_rng(3)
    for _ in range(60):
        k = int(rng.integers(1, 24))       # odd << 23 < 2^31
        odd = (2 * int(rng.integers(0, 120)) + 1) << (k - 1)
        cases.append((odd * int(rng.choice([1, -1])), *double_parts(2.0 ** -k)))
    run(cases, seed=4)


def test_double_rounding_carry_and_exact_ties():
    rng = np.random.default_rng(5)
    cases = double_rounding_cases(rng, 100) + carry_cases(rng, 50) + exact_tie_cases(rng, 200)
    assert any(round_scaled_double(*c) != exact_round(*c) for c in cases)
    run(cases, seed=6, ready_prob=0.6)


@pytest.mark.parametrize("zp", [-128, 127])
def test_extreme_exponents_and_zero_mantissa(zp):
    """Every combination of edge accs, mantissas and exponents, with the zero point at either
    end so that magnitudes 128..255 are visible through the clamp."""
    rng = np.random.default_rng(7)
    exponents = [-2048, -2047, -1126, -200, -117, -116, -86, -85, -84, -60, -54, -53, -52, -1, 0,
                 1, 6, 7, 8, 9, 31, 100, 971, 2047]
    mantissas = [0, 1, 2, 3, (1 << 52), (1 << 52) + 1, (1 << 53) - 1,
                 int(rng.integers(1 << 52, 1 << 53))]
    accs = [0, 1, -1, 5, -5, INT32_MAX, INT32_MIN]
    cases = [(a, mm, e) for a in accs for mm in mantissas for e in exponents]
    # Around the exponents where the result goes from 0 to +-1 to saturation.
    for _ in range(300):
        a, mm = random_acc(rng, 1)[0], int(rng.integers(0, 1 << 53) >> int(rng.integers(0, 53)))
        p = abs(a) * mm
        cases.append((a, mm, -p.bit_length() + int(rng.integers(-2, 10))))
    run(cases, zp=zp, seed=8, ready_prob=0.8)


def test_clamp_and_zero_points():
    rng = np.random.default_rng(9)
    settings = [(-128, -128, -20), (127, -128, 127), (0, 0, 6), (-128, -128, 127),
                (int(rng.integers(-128, 128)), -100, 100), (int(rng.integers(-128, 128)), 127, 127)]
    for zp, lo, hi in settings:
        cases = realistic_cases(rng, 60)
        cases += [(a, *double_parts(s)) for a in (INT32_MAX, INT32_MIN, 300, -300)
                  for s in (1.0, 10.0)]
        run(cases, zp=zp, lo=lo, hi=hi, seed=int(rng.integers(1 << 30)), valid_prob=0.7,
            ready_prob=0.5)


@pytest.mark.parametrize("digit_width", [16, 8, 32])
def test_other_digit_widths(digit_width):
    rng = np.random.default_rng(10 + digit_width)
    cases = realistic_cases(rng, 40) + double_rounding_cases(rng, 10) + carry_cases(rng, 5)
    cases += [(a, (1 << 53) - 1, -53) for a in (INT32_MIN, INT32_MAX, -1)]
    run(cases, zp=-7, digit_width=digit_width, seed=11, ready_prob=0.7)


@pytest.mark.parametrize("digit_width", [1, 8])
def test_cycles_per_value(digit_width):
    """With the output always taken, one value leaves every CYCLES = 32 / digit_width + 8."""
    rng = np.random.default_rng(12)
    cases = realistic_cases(rng, 12)
    cycles = run(cases, digit_width=digit_width, seed=13)
    period = FloatRequantizer(digit_width).CYCLES
    assert period == 32 // digit_width + 8
    assert cycles == [period * (k + 1) for k in range(len(cases))]


def test_rejects_bad_digit_width():
    with pytest.raises(ValueError):
        FloatRequantizer(12)


@pytest.mark.parametrize("digit_width", [16, 1])
def test_converts_to_verilog(digit_width):
    assert "module" in verilog.convert(FloatRequantizer(digit_width), name="float_requantizer")
