"""LUT-built multipliers: exact products for every sign combination, and no `*` left for
Yosys to map onto a DSP block."""
import itertools

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.sim import Simulator

from rtl_gen.lut_mul import lut_product, partial_products, sum_tree


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
