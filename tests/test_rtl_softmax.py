"""SoftmaxUnit RTL against quantize.reference.softmax."""
import math

import numpy as np
from amaranth.back import verilog
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import wiring

from quantize import fixedpoint as fx
from quantize.reference import SCALED_DIFF_INTEGER_BITS, softmax, softmax_params
from rtl_gen.requant import Requantizer
from rtl_gen.sequencer import Limits
from rtl_gen.softmax_unit import (EXP_BARREL, EXP_CONSTANT_TERM, EXP_ONE_THIRD,
                                  RECIP_48_OVER_17, RECIP_NEG_32_OVER_17, SoftmaxUnit)
from stream_sim import IDLE_LIMIT, collect, run_sim


def run_softmax(dut, vectors, seed=0, valid_prob=1.0, ready_prob=1.0):
    """Run (logits, SoftmaxParams) vectors one after the other through one unit; returns per
    vector the outputs, the Q0.31 exponentials left in the unit's memory, and the cycles from
    its first input to its last output."""
    rng = np.random.default_rng(seed)
    results, exps, cycles = [], [], []

    async def bench(ctx):
        for logits, p in vectors:
            ctx.set(dut.length, len(logits))
            ctx.set(dut.input_multiplier, p.input_multiplier)
            ctx.set(dut.input_left_shift, p.input_left_shift)
            ctx.set(dut.diff_min, p.diff_min)
            await ctx.tick()          # the unit registers length - 1 (its contract)
            ticks = 0
            for value in logits:
                while rng.random() >= valid_prob:
                    await ctx.tick()
                    ticks += bool(ticks)
                ctx.set(dut.i_stream.payload, int(value))
                ctx.set(dut.i_stream.valid, 1)
                *_, ready = await ctx.tick().sample(dut.i_stream.ready)
                ticks += 1
                while not ready:
                    *_, ready = await ctx.tick().sample(dut.i_stream.ready)
                    ticks += 1
                ctx.set(dut.i_stream.valid, 0)
            outs, _, out_ticks = await collect(
                ctx, dut.o_stream, len(logits), rng, ready_prob,
                idle_limit=IDLE_LIMIT + SoftmaxUnit.vector_cycles(len(logits)))
            ticks += out_ticks
            ctx.set(dut.o_stream.ready, 0)
            results.append(np.array(outs, np.int64))
            exps.append(np.array([ctx.get(dut.exps.data[i]) for i in range(len(logits))]))
            cycles.append(ticks)

    run_sim(dut, bench)
    return results, exps, cycles


def reference_exps(logits, p):
    """The exp_on_negative_values results inside reference.softmax, for every logit."""
    diff = logits.astype(np.int64) - logits.max()
    rescaled = fx.saturating_rounding_doubling_high_mul(
        fx.wrap_int32(diff << p.input_left_shift), p.input_multiplier)
    return fx.exp_on_negative_values(rescaled, SCALED_DIFF_INTEGER_BITS)


def check(dut, vectors, **kw):
    """Every output equals reference.softmax; the full-precision exponentials match too."""
    results, exps, cycles = run_softmax(dut, vectors, **kw)
    for (logits, p), got, got_exps in zip(vectors, results, exps):
        logits = np.asarray(logits, np.int8)
        msg = f"logits {list(logits)}, {p}"
        np.testing.assert_array_equal(got_exps, reference_exps(logits, p), err_msg=msg)
        np.testing.assert_array_equal(got, softmax(logits[None], p)[0], err_msg=msg)
    return cycles


def random_vectors(rng, count, max_length):
    """Random lengths and logits at input scales from 0.005 to 2 (log-uniform); the large
    scales put many logits below diff_min."""
    vectors = []
    for _ in range(count):
        n = int(rng.integers(1, max_length + 1))
        spread = int(rng.integers(1, 256))
        low = int(rng.integers(-128, 128 - spread + 1))
        logits = rng.integers(low, low + spread, n, endpoint=True)
        scale = float(np.exp(rng.uniform(np.log(0.005), np.log(2.0))))
        vectors.append((logits, softmax_params(scale)))
    return vectors


def test_softmax_random_sweep():
    rng = np.random.default_rng(30)
    check(SoftmaxUnit(16), random_vectors(rng, 300, 16), seed=31, valid_prob=0.7, ready_prob=0.6)


def test_softmax_extremes():
    p_fine, p_mid, p_coarse = softmax_params(0.01), softmax_params(0.1), softmax_params(1.5)
    dominant = np.full(10, -128)
    dominant[3] = 127
    alternating = np.tile([-128, 127], 8)
    vectors = [
        (np.full(16, 127), p_mid),       # all equal: the largest sum of exponentials
        (np.full(16, -128), p_coarse),
        (np.zeros(10, np.int64), p_fine),
        (dominant, p_mid),
        (dominant, p_fine),
        (alternating, p_coarse),
        (alternating, p_fine),
        (np.array([5]), p_mid),          # length 1
        (np.array([127, 126, -128, -127, 0, 1]), softmax_params(0.005)),
        (np.arange(-128, 128, 16), softmax_params(2.0)),
    ]
    check(SoftmaxUnit(16), vectors, seed=32)


def test_softmax_max_length_param():
    rng = np.random.default_rng(33)
    check(SoftmaxUnit(4), random_vectors(rng, 6, 4), seed=34, ready_prob=0.5)


def test_softmax_imagenet_heads():
    """1000 classes (an ImageNet head) and the default ceiling, `Limits().max_classes`.
    (Not hundreds of logits tied at the maximum: TFLite's reference aborts on those.)"""
    n = Limits().max_classes
    rng = np.random.default_rng(37)
    ties = np.full(n, -20)
    ties[:300] = 127          # a sum of 300 * 2^19: the shift TFLite allows at its largest
    vectors = [(rng.integers(-128, 128, 1000), softmax_params(0.05)),
               (ties, softmax_params(0.1))]
    cycles = check(SoftmaxUnit(n), vectors, seed=38)
    assert cycles == [SoftmaxUnit.vector_cycles(len(logits)) for logits, _ in vectors]


def test_softmax_cycle_count():
    """Without stalls a vector of n logits takes the cycles `vector_cycles` (the cycle model's
    figure) says, input to last output."""
    rng = np.random.default_rng(35)
    vectors = random_vectors(rng, 8, 16)
    cycles = check(SoftmaxUnit(16), vectors, seed=36)
    assert cycles == [SoftmaxUnit.vector_cycles(len(logits)) for logits, _ in vectors]


class BorrowingSoftmax(Elaboratable):
    """A SoftmaxUnit on the multiplier a Requantizer lends it, wired as in the accelerator
    (the Requantizer idle, its output always taken); the softmax's ports are this one's."""

    def __init__(self, max_length):
        self.softmax = SoftmaxUnit(max_length, own_multiplier=False)
        self.requant = Requantizer(2, lend_multiplier=True)
        for name in ("i_stream", "o_stream", "length", "input_multiplier", "input_left_shift",
                     "diff_min", "exps"):
            setattr(self, name, getattr(self.softmax, name))

    def elaborate(self, platform):
        m = Module()
        m.submodules.softmax, m.submodules.requant = self.softmax, self.requant
        wiring.connect(m, self.softmax.multiplier, self.requant.borrower)
        m.d.comb += [self.requant.lend.eq(1), self.requant.o_stream.ready.eq(1)]
        return m


def test_softmax_on_the_requantizers_multiplier():
    """Bit-exact and as fast (`vector_cycles`) on a borrowed product as on its own."""
    rng = np.random.default_rng(39)
    vectors = random_vectors(rng, 40, 16)
    cycles = check(BorrowingSoftmax(16), vectors, seed=40)
    assert cycles == [SoftmaxUnit.vector_cycles(len(logits)) for logits, _ in vectors]


def test_softmax_constants_are_gemmlowps():
    """The fixed-point constants are round(value * 2^fraction bits); an LSB slip in some of
    them is too rare to surface through the int8 outputs, so check them at the source."""
    assert EXP_CONSTANT_TERM == round(math.exp(-1 / 8) * 2 ** 31)
    assert EXP_ONE_THIRD == round(2 ** 31 / 3)
    assert EXP_BARREL == tuple(round(math.exp(-2.0 ** k) * 2 ** 31) for k in range(-2, 5))
    assert RECIP_48_OVER_17 == round(48 / 17 * 2 ** 29)
    assert RECIP_NEG_32_OVER_17 == round(-32 / 17 * 2 ** 29)


def test_softmax_converts_to_verilog():
    assert "module" in verilog.convert(SoftmaxUnit(16), name="softmax_unit")
