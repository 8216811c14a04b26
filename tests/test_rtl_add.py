"""AddUnit RTL, followed by the Requantizer as in the accelerator, against TFLite's int8 ADD
as `quantize.reference.add` computes it (itself equal to BUILTIN_REF on every input pair:
tests/test_add_reference.py)."""
import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module

from quantize.reference import (ADD_LEFT_SHIFT, AddParams, add, add_real_multipliers,
                                quantize_multiplier_smaller_than_one)
from rtl_gen.add_unit import LEFT_SHIFT, PARAM_STAGES, AddUnit
from rtl_gen.requant import Requantizer
from stream_sim import collect, int8, pack, producer, run_sim, unpack


def add_params(s1, zp1, s2, zp2, s_out, zp_out, act=(-128, 127)) -> AddParams:
    """The AddParams TFLite derives for these scales and zero points (add.cc Prepare)."""
    q = [quantize_multiplier_smaller_than_one(r) for r in add_real_multipliers(s1, s2, s_out)]
    return AddParams(ADD_LEFT_SHIFT, -zp1, *q[0], -zp2, *q[1], *q[2], zp_out, *act)


def set_params(ctx, dut, p: AddParams):
    """The AddUnit's input scalings and output stage, and the Requantizer's zero point and
    clamp, from `p`."""
    for port, (offset, mult, shift) in (
            (dut.add.a_scale, (p.input1_offset, p.input1_multiplier, p.input1_shift)),
            (dut.add.b_scale, (p.input2_offset, p.input2_multiplier, p.input2_shift))):
        ctx.set(port.offset, offset)
        ctx.set(port.multiplier, mult)
        ctx.set(port.right_shift, -shift)
    ctx.set(dut.add.out_multiplier, p.output_multiplier)
    ctx.set(dut.add.out_shift, p.output_shift)
    ctx.set(dut.rq.output_zp, p.output_offset)
    ctx.set(dut.rq.act_min, p.act_min)
    ctx.set(dut.rq.act_max, p.act_max)


class AddThenRequant(Elaboratable):
    def __init__(self, lanes):
        self.add, self.rq = AddUnit(lanes), Requantizer(lanes)

    def elaborate(self, platform):
        m = Module()
        m.submodules.add, m.submodules.rq = self.add, self.rq
        m.d.comb += [self.rq.i_stream.valid.eq(self.add.to_requant.valid),
                     self.rq.i_stream.payload.eq(self.add.to_requant.payload),
                     self.add.to_requant.ready.eq(self.rq.i_stream.ready)]
        return m


def run_add(lanes, a, b, p: AddParams, seed=0, valid_prob=1.0, ready_prob=1.0):
    dut = AddThenRequant(lanes)
    rng = np.random.default_rng(seed)
    beats = len(a) // lanes
    got = []

    async def drive(ctx):
        set_params(ctx, dut, p)

    async def take(ctx):
        raw = lanes > 1           # one lane: the payload is the int8 itself
        payloads, _, _ = await collect(ctx, dut.rq.o_stream, beats, rng, ready_prob, raw=raw)
        got.extend([v for word in payloads for v in unpack(word, 8, lanes)] if raw else payloads)

    def stream_of(x):
        return [pack(x[i * lanes:(i + 1) * lanes], 8) for i in range(beats)]

    def after_params(send):
        async def testbench(ctx):      # the unit registers its parameters first
            await ctx.tick().repeat(PARAM_STAGES)
            await send(ctx)
        return testbench

    run_sim(dut, take, background=[drive] + [after_params(producer(
        port, stream_of(x), np.random.default_rng(seed + k), valid_prob))
        for k, (port, x) in enumerate(((dut.add.a, a), (dut.add.b, b)), 1)])
    return np.array(got, np.int8)


SCALES = [  # (s1, zp1, s2, zp2, s_out, zp_out): equal, very different, output coarser/finer
    (0.05, 3, 0.05, -7, 0.08, -2),
    (0.001, -128, 0.5, 127, 0.4, 10),
    (0.5, 127, 0.001, -128, 0.02, -128),
    (0.02, 0, 0.03, 5, 0.011, 127),
]


@pytest.mark.parametrize("scales", SCALES)
def test_add_matches_tflite(scales):
    rng = np.random.default_rng(1)
    lanes = 4
    a = np.concatenate([int8(rng, 400, "random"), int8(rng, 8, "min"), int8(rng, 8, "max"),
                        int8(rng, 8, "min")])
    b = np.concatenate([int8(rng, 400, "random"), int8(rng, 8, "max"), int8(rng, 8, "min"),
                        int8(rng, 8, "min")])
    p = add_params(*scales)
    got = run_add(lanes, a, b, p, seed=2, valid_prob=0.7, ready_prob=0.8)
    np.testing.assert_array_equal(got, add(a, b, p))


def test_add_fused_relu6_range_and_one_lane():
    rng = np.random.default_rng(3)
    a, b = int8(rng, 200, "random"), int8(rng, 200, "random")
    p = add_params(0.04, -20, 0.07, 11, 0.05, -128, act=(-128, -8))  # a ReLU6-style clamp
    np.testing.assert_array_equal(run_add(1, a, b, p, seed=4), add(a, b, p))


def test_add_streams_one_beat_per_clock():
    """With both inputs always valid and the output always ready, a beat leaves every cycle,
    the first AddUnit.LATENCY + Requantizer.LATENCY cycles after the first input."""
    rng = np.random.default_rng(5)
    lanes, n = 2, 64
    a, b = int8(rng, n, "random"), int8(rng, n, "random")
    p = add_params(0.05, 3, 0.02, -7, 0.06, 1)
    dut = AddThenRequant(lanes)
    times = []

    async def bench(ctx):
        set_params(ctx, dut, p)
        ctx.set(dut.rq.o_stream.ready, 1)
        await ctx.tick().repeat(PARAM_STAGES)
        ctx.set(dut.add.a.valid, 1)
        ctx.set(dut.add.b.valid, 1)
        for cycle in range(n // lanes + AddUnit.LATENCY + Requantizer.LATENCY + 2):
            k = min(cycle, n // lanes - 1)
            ctx.set(dut.add.a.payload.as_value(), pack(a[k * lanes:(k + 1) * lanes], 8))
            ctx.set(dut.add.b.payload.as_value(), pack(b[k * lanes:(k + 1) * lanes], 8))
            if cycle == n // lanes:
                ctx.set(dut.add.a.valid, 0)
                ctx.set(dut.add.b.valid, 0)
            *_, valid = await ctx.tick().sample(dut.rq.o_stream.valid)
            if valid:
                times.append(cycle)

    run_sim(dut, bench)
    first = AddUnit.LATENCY + Requantizer.LATENCY
    assert times == list(range(first, first + n // lanes))


def test_left_shift_is_tflites():
    """The unit's SRDHM constants follow LEFT_SHIFT; it must be TFLite's (add.cc)."""
    assert LEFT_SHIFT == ADD_LEFT_SHIFT == 20
