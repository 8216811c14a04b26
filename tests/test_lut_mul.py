"""LUT-built multipliers: exact products for every sign combination, and no `*` left for
Yosys to map onto a DSP block."""
import itertools

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.sim import Simulator

from rtl_gen.dsp import LATENCY as DSP_LATENCY
from rtl_gen.lut_mul import (lut_product, nibble_sum, partial_products, registered_lut_product,
                             sum_tree)


def _products(a_shape, b_shape, pairs):
    m = Module()
    a, b = Signal(a_shape), Signal(b_shape)
    p, q = Signal(64 if not (a_shape.signed or b_shape.signed) else signed(64)), \
        Signal(signed(64) if (a_shape.signed or b_shape.signed) else 64)
    m.d.comb += [p.eq(lut_product(a, b)), q.eq(sum_tree(partial_products(a, b)))]
    got = []

    async def bench(ctx):
        for x, y in pairs:
            ctx.set(a, int(x))
            ctx.set(b, int(y))
            got.append((ctx.get(p), ctx.get(q)))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    return got


def _range(shape):
    lo = -(1 << (shape.width - 1)) if shape.signed else 0
    return lo, lo + (1 << shape.width) - 1


@pytest.mark.parametrize("a_shape,b_shape", [
    (signed(9), signed(8)), (unsigned(9), unsigned(8)), (signed(9), unsigned(5)),
    (unsigned(7), signed(6)), (unsigned(32), unsigned(16)), (unsigned(53), unsigned(4))])
def test_lut_product_exact(a_shape, b_shape):
    rng = np.random.default_rng(a_shape.width * 100 + b_shape.width)
    (alo, ahi), (blo, bhi) = _range(a_shape), _range(b_shape)
    corners = list(itertools.product((alo, alo + 1, -1 if alo < 0 else 1, 0, ahi),
                                     (blo, blo + 1, -1 if blo < 0 else 1, 0, bhi)))
    rand = [(int(rng.integers(alo, ahi, endpoint=True, dtype=np.int64)) if a_shape.width < 63
             else int(rng.integers(0, 1 << 62)),
             int(rng.integers(blo, bhi, endpoint=True))) for _ in range(300)]
    pairs = [(x, y) for x, y in corners + rand if alo <= x <= ahi and blo <= y <= bhi]
    for (x, y), (p, q) in zip(pairs, _products(a_shape, b_shape, pairs)):
        assert p == x * y, (x, y, p)
        assert (q - x * y) % (1 << 64) == 0, (x, y, q)


def test_no_multiplier_cell():
    """Yosys gets adders and muxes only: no $mul cell to map onto MULT18X18D."""
    m = Module()
    a, b, p = Signal(signed(9)), Signal(signed(8)), Signal(signed(17))
    m.d.comb += p.eq(lut_product(a, b))
    text = rtlil.convert(m, ports=[a, b, p])
    assert "$mul" not in text and "$add" in text


@pytest.mark.parametrize("widths", [(16, 16), (16, 5), (9, 13)])
def test_registered_lut_product(widths):
    """The Requantizer's LUT-built low product: exact, DSP_LATENCY enabled cycles after its
    operands, frozen while the enable is low, and no $mul for Yosys to map onto a DSP block."""
    wa, wb = widths
    rng = np.random.default_rng(wa * 100 + wb)
    ops = [((1 << wa) - 1, (1 << wb) - 1), (0, (1 << wb) - 1), ((1 << wa) - 1, 0), (1, 1)]
    ops += [(int(rng.integers(0, 1 << wa)), int(rng.integers(0, 1 << wb))) for _ in range(300)]
    enables = [int(rng.random() < 0.7) for _ in range(len(ops) + 8)]
    m = Module()
    a, b, en = Signal(wa), Signal(wb), Signal()
    p = registered_lut_product(m, a, b, name="p", enable=en)
    assert len(p) == wa + wb
    text = rtlil.convert(m, ports=[a, b, en, p])
    assert "$mul" not in text
    got, expected = [], []

    async def bench(ctx):
        # Model: a pipeline of DSP_LATENCY registers that advance on enable only.
        pipe, k = [None] * DSP_LATENCY, 0
        for en_now in enables:
            x, y = ops[min(k, len(ops) - 1)]
            ctx.set(a, x)
            ctx.set(b, y)
            ctx.set(en, en_now)
            await ctx.tick()
            if en_now:
                pipe = [x * y] + pipe[:-1]
                k += 1
                if pipe[-1] is not None:
                    expected.append(pipe[-1])
                    got.append(ctx.get(p))

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert len(got) > 100
    assert got == expected


def test_nibble_sum_exhaustive():
    """The depthwise taps' products: for every int8 x and w, the two nibble tables' entries
    w * (u & 15) and w * (u >> 4) of u = x + 128, joined by `nibble_sum`, are (x + 128) * w
    (the engine takes 128 * w back out with the bias), with no multiplier in the netlist."""
    m = Module()
    low, high = Signal(signed(12)), Signal(signed(12))
    total = Signal(signed(17))
    m.d.comb += total.eq(nibble_sum(low, high))
    assert "$mul" not in rtlil.convert(m, ports=[low, high, total])
    failures = []

    async def bench(ctx):
        for x in range(-128, 128):
            u = x + 128
            for w in range(-128, 128):
                ctx.set(low, w * (u & 15))
                ctx.set(high, w * (u >> 4))
                if ctx.get(total) - 128 * w != x * w:
                    failures.append((x, w, ctx.get(total)))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert not failures, failures[:5]
