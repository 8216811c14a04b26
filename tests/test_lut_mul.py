"""LUT-built multipliers: exact products for every sign combination, and no `*` left for
Yosys to map onto a DSP block."""
import itertools

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.sim import Simulator

from rtl_gen.dsp import LATENCY as DSP_LATENCY
from rtl_gen.lut_mul import (lut_product, offset_rows, partial_products, registered_lut_product,
                             sum_tree, weighted_sum)


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


@pytest.mark.parametrize("a_width,b_width", [(9, 8), (5, 4), (4, 3)])
def test_offset_rows_exhaustive(a_width, b_width):
    """The depthwise taps' narrow products: the unsigned offset rows, summed by
    `weighted_sum` in two halves and then together (as the DepthwiseEngine's stages 4 and 5
    do), plus the sign-dependent offset equal a * b for every pair of signed operands,
    a = 0 (a masked tap) included; every row is exactly a_width bits wide."""
    m = Module()
    a, b = Signal(signed(a_width)), Signal(signed(b_width))
    rows, sign_shift, constant = offset_rows(a, b)
    assert [len(r) for r in rows] == [a_width] * b_width
    terms = [(r, i, (1 << a_width) - 1) for i, r in enumerate(rows)]
    halves = [weighted_sum(terms[:b_width // 2]), weighted_sum(terms[b_width // 2:])]
    value, shift, top = weighted_sum(halves)
    assert shift == 0 and top < 1 << len(value)
    total = Signal(len(value))
    m.d.comb += total.eq(value)
    text = rtlil.convert(m, ports=[a, b, total])
    assert "$mul" not in text
    failures = []

    async def bench(ctx):
        for x in range(-(1 << (a_width - 1)), 1 << (a_width - 1)):
            for y in range(-(1 << (b_width - 1)), 1 << (b_width - 1)):
                ctx.set(a, x)
                ctx.set(b, y)
                got = ctx.get(total) + ((y < 0) << sign_shift) + constant
                if got != x * y:
                    failures.append((x, y, got))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert not failures, failures[:5]
