"""Requantizer RTL and the shared gemmlowp expression builders against quantize.fixedpoint."""
import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Module, Signal, signed
from amaranth.sim import Simulator

from quantize import fixedpoint as fx
from quantize.reference import Requant
from rtl_gen.requant import (INT32_MAX, INT32_MIN, SRDHM_STAGES, Requantizer,
                             rounding_divide_by_pot, srdhm_of_product, srdhm_pipeline)
from stream_sim import run_stream

EDGE_INT32 = [INT32_MIN, INT32_MIN + 1, -(1 << 30), -5, -3, -1, 0, 1, 3, 5, 1 << 30, INT32_MAX]


# ------------------------------------------------------------------ expression builders


def _run_comb(build, cases):
    """Evaluate a combinational circuit `build(m) -> (inputs, output)` on every case tuple."""
    m = Module()
    inputs, output = build(m)
    results = []

    async def bench(ctx):
        for case in cases:
            for sig, v in zip(inputs, case):
                ctx.set(sig, int(v))
            results.append(ctx.get(output))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    return np.array(results, np.int64)


def _int32_samples(rng, n):
    """Full-range int32 values plus log-uniform magnitudes, so small values are common too."""
    wide = rng.integers(INT32_MIN, INT32_MAX, n, endpoint=True)
    small = rng.choice([-1, 1], n) * (rng.integers(0, 1 << 31, n) >> rng.integers(0, 31, n))
    return np.where(rng.random(n) < 0.5, wide, small)


def test_srdhm_matches_fixedpoint():
    rng = np.random.default_rng(1)
    a = np.concatenate([_int32_samples(rng, 3000), np.repeat(EDGE_INT32, len(EDGE_INT32))])
    b = np.concatenate([_int32_samples(rng, 3000), np.tile(EDGE_INT32, len(EDGE_INT32))])
    # Exact ties: odd a times +-2^30 is (2k + 1) / 2 in the high word, for both signs.
    odd = 2 * rng.integers(-(1 << 29), 1 << 29, 100) + 1
    a = np.concatenate([a, odd, odd])
    b = np.concatenate([b, np.full(100, 1 << 30), np.full(100, -(1 << 30))])

    def build(m):
        sa, sb, out = Signal(signed(32)), Signal(signed(32)), Signal(signed(32))
        m.d.comb += out.eq(srdhm_of_product(sa * sb, (sa == INT32_MIN) & (sb == INT32_MIN)))
        return (sa, sb), out

    got = _run_comb(build, zip(a, b))
    np.testing.assert_array_equal(got, fx.saturating_rounding_doubling_high_mul(a, b))


def _srdhm_cases(seed, n):
    rng = np.random.default_rng(seed)
    a = np.concatenate([_int32_samples(rng, n), np.repeat(EDGE_INT32, len(EDGE_INT32))])
    b = np.concatenate([_int32_samples(rng, n), np.tile(EDGE_INT32, len(EDGE_INT32))])
    return a, b


def test_srdhm_pipeline_matches_fixedpoint():
    """The three-DSP (Karatsuba) product of the Requantizer and the SoftmaxUnit: one operand
    pair per clock in, its SRDHM exactly SRDHM_STAGES clocks later."""
    a, b = _srdhm_cases(5, 1500)
    stages = SRDHM_STAGES
    m = Module()
    sa, sb = Signal(signed(32)), Signal(signed(32))
    high = srdhm_pipeline(m, sa, sb, 1, "karatsuba")
    got = []

    async def bench(ctx):
        for k in range(len(a) + stages):
            if k < len(a):
                ctx.set(sa, int(a[k]))
                ctx.set(sb, int(b[k]))
            await ctx.tick()
            if k + 1 >= stages:
                got.append(ctx.get(high))

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    np.testing.assert_array_equal(np.array(got[:len(a)], np.int64),
                                  fx.saturating_rounding_doubling_high_mul(a, b))


def test_rounding_divide_by_pot_matches_fixedpoint():
    rng = np.random.default_rng(2)
    x = np.concatenate([_int32_samples(rng, 3000), np.repeat(EDGE_INT32, 33)])
    e = np.concatenate([rng.integers(0, 33, 3000), np.tile(np.arange(33), len(EDGE_INT32))])
    # Exact ties (x = odd * 2^(e-1)) of both signs, where rounding direction matters.
    ties_e = rng.integers(1, 31, 200)
    ties_x = (2 * rng.integers(-(1 << 20), 1 << 20, 200) + 1) << (ties_e - 1)
    ties_x = fx.wrap_int32(ties_x)
    x, e = np.concatenate([x, ties_x]), np.concatenate([e, ties_e])

    def build(m):
        sx, se, out = Signal(signed(32)), Signal(range(33)), Signal(signed(32))
        m.d.comb += out.eq(rounding_divide_by_pot(sx, se))
        return (sx, se), out

    got = _run_comb(build, zip(x, e))
    np.testing.assert_array_equal(got, fx.rounding_divide_by_pot(x, e))


@pytest.mark.parametrize("exponent", [0, 1, 2, 12, 31])
def test_rounding_divide_by_constant_pot(exponent):
    rng = np.random.default_rng(3 + exponent)
    x = np.concatenate([_int32_samples(rng, 500), EDGE_INT32])

    def build(m):
        sx, out = Signal(signed(32)), Signal(signed(32))
        m.d.comb += out.eq(rounding_divide_by_pot(sx, exponent))
        return (sx,), out

    got = _run_comb(build, zip(x))
    np.testing.assert_array_equal(got, fx.rounding_divide_by_pot(x, exponent))

# ------------------------------------------------------------------ Requantizer


def _lane_cases(rng, n):
    """Random (acc, multiplier, shift) whose result mostly lands in int8 range, so rounding
    is visible through the clamp; plus a share of arbitrary ones that saturate."""
    acc = _int32_samples(rng, n)
    mult = rng.integers(1 << 30, 1 << 31, n) * rng.choice([1, 1, 1, -1], n)
    magnitude = np.floor(np.log2(np.abs(acc) + 1)).astype(np.int64)
    shift = np.clip(rng.integers(-2, 9, n) - magnitude, -32, 31)
    arbitrary = rng.random(n) < 0.2
    shift = np.where(arbitrary, rng.integers(-32, 32, n), shift)
    mult = np.where(arbitrary, _int32_samples(rng, n), mult)
    return acc, mult, shift


def _edge_cases():
    shifts = [-32, -31, -2, -1, 0, 1, 31]
    grid = np.array(np.meshgrid(EDGE_INT32, EDGE_INT32, shifts, indexing="ij")).reshape(3, -1)
    return grid[0], grid[1], grid[2]


def _check(lanes, acc, mult, shift, zp, lo, hi, seed, valid_prob, ready_prob):
    dut = Requantizer(lanes)
    beats = [{"acc": int(a), "multiplier": int(m), "shift": int(s)}
             for a, m, s in zip(acc, mult, shift)]
    if lanes > 1:
        beats = [beats[i:i + lanes] for i in range(0, len(beats), lanes)]
    outs, _ = run_stream(dut, beats, len(beats),
                         {"output_zp": zp, "act_min": lo, "act_max": hi},
                         seed=seed, valid_prob=valid_prob, ready_prob=ready_prob)
    got = np.array([[o] if lanes == 1 else list(o) for o in outs], np.int64).ravel()
    want = Requant(mult, shift, zp, lo, hi).apply(acc)
    np.testing.assert_array_equal(got, want)


def test_requantizer_random_sweep():
    rng = np.random.default_rng(10)
    acc, mult, shift = _lane_cases(rng, 3000)
    inside = Requant(mult, shift, -3, -128, 127).apply(acc)
    assert np.mean((inside > -128) & (inside < 127)) > 0.7   # rounding visible, not clamped
    _check(1, acc, mult, shift, zp=-3, lo=-128, hi=127, seed=11, valid_prob=0.8, ready_prob=0.7)


def test_requantizer_edge_values():
    """INT32_MIN * INT32_MIN saturation, left shifts that wrap, right shifts up to 32."""
    acc, mult, shift = _edge_cases()
    _check(1, acc, mult, shift, zp=0, lo=-128, hi=127, seed=12, valid_prob=1.0, ready_prob=1.0)


def test_requantizer_zero_point_and_relu_clamp():
    rng = np.random.default_rng(13)
    acc, mult, shift = _lane_cases(rng, 500)
    _check(1, acc, mult, shift, zp=-128, lo=-128, hi=-20, seed=14, valid_prob=1.0,
           ready_prob=0.5)


def test_requantizer_lanes():
    rng = np.random.default_rng(15)
    acc, mult, shift = _lane_cases(rng, 4 * 300)
    _check(4, acc, mult, shift, zp=17, lo=-100, hi=120, seed=16, valid_prob=0.7, ready_prob=0.8)


def test_requantizer_latency_and_throughput():
    """Without stalls, the k-th beat accepted in cycle k leaves in cycle k + LATENCY."""
    rng = np.random.default_rng(17)
    acc, mult, shift = _lane_cases(rng, 20)
    dut = Requantizer()
    beats = [{"acc": int(a), "multiplier": int(m), "shift": int(s)}
             for a, m, s in zip(acc, mult, shift)]
    outs, cycles = run_stream(dut, beats, len(beats),
                              {"output_zp": 0, "act_min": -128, "act_max": 127})
    assert cycles == [k + Requantizer.LATENCY for k in range(len(beats))]
    np.testing.assert_array_equal(outs, Requant(mult, shift, 0, -128, 127).apply(acc))


@pytest.mark.parametrize("lanes", [1, 2])
def test_requantizer_converts_to_verilog(lanes):
    assert "module" in verilog.convert(Requantizer(lanes), name="requantizer")
