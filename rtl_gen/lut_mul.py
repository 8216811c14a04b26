"""Multipliers built from LUTs and carry chains instead of hard DSP blocks.

Yosys maps every `*` of two non-constant operands onto MULT18X18D blocks. The ECP5 has few of
those (156 on an 85F) and the accelerator wants them all in the pointwise MAC array, so the
products that are not MACs of the array (depthwise taps, the sequencer's size products, the
dense layer's requantizer digits) are written here as sums of shifted partial products: Yosys
sees only adders and muxes.

`partial_products` gives the rows of a product so that a pipeline can register the partial
sums between adder levels; `lut_product` sums them in one combinational tree.
`offset_rows` and `weighted_sum` are the narrow form for many small signed products summed
together (the depthwise taps): unsigned rows only as wide as the multiplicand, and a
data-independent offset that the caller adds once, at the end, to the whole sum.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Const, Mux, Signal, Value
from amaranth.utils import bits_for


def partial_products(a, b) -> list[Value]:
    """Rows whose sum is a * b (both Values, signed or unsigned): one row per bit of b,
    a shifted by the bit's weight or zero; a signed b's top bit weighs -2^(n-1)."""
    a, b = Value.cast(a), Value.cast(b)
    n = len(b)
    width = len(a) + n + 1
    is_signed = a.shape().signed or b.shape().signed
    # In a signed product an unsigned a gets a zero sign bit first.
    wide = a if a.shape().signed or not is_signed else Cat(a, Const(0, 1)).as_signed()
    rows = []
    for i in range(n):
        row = Mux(b[i], wide << i, 0)
        if b.shape().signed and i == n - 1:
            row = -row
        rows.append(row[:width].as_signed() if is_signed else row[:width])
    return rows


def sum_tree(rows: list) -> Value:
    """Balanced adder tree over `rows` (a list of Values)."""
    rows = list(rows)
    while len(rows) > 1:
        rows = [rows[k] + rows[k + 1] if k + 1 < len(rows) else rows[k]
                for k in range(0, len(rows), 2)]
    return rows[0]


def lut_product(a, b, width: int | None = None) -> Value:
    """a * b without a DSP block, as a `width`-bit (default: exact) signed or unsigned value."""
    a, b = Value.cast(a), Value.cast(b)
    signed_result = a.shape().signed or b.shape().signed
    exact = len(a) + len(b)
    total = sum_tree(partial_products(a, b))
    bits = total[:width or exact]
    return bits.as_signed() if signed_result else bits.as_unsigned()


def registered_lut_product(m, a, b, *, name: str, enable=None, digit_bits: int = 4):
    """a * b of two unsigned Values in LUTs, registered like `dsp.registered_product`: the
    product two enabled cycles after a and b, no stage more than two adders deep.

    Stage 1 registers a * d for each `digit_bits`-bit digit d of b (a sum of digit_bits
    partial-product rows: two adder levels for 4-bit digits); stage 2 adds the shifted
    digit products (two more levels for four digits) into the product register. For a 16x16
    product that is about 150 CCU2C and 110 flip-flops: a DSP block's worth of work where
    the blocks are wanted for MACs."""
    a, b = Value.cast(a), Value.cast(b)
    if a.shape().signed or b.shape().signed:
        raise ValueError(f"{name}: registered_lut_product takes unsigned operands")
    enable = Const(1) if enable is None else Value.cast(enable)
    digits = []
    for k, lo in enumerate(range(0, len(b), digit_bits)):
        digit = b[lo:lo + digit_bits]
        reg = Signal(len(a) + len(digit), name=f"{name}_d{k}")
        with m.If(enable):
            m.d.sync += reg.eq(sum_tree(partial_products(a, digit)))
        digits.append(reg << lo)
    product = Signal(len(a) + len(b), name=name)
    with m.If(enable):
        m.d.sync += product.eq(sum_tree(digits))
    return product


def offset_rows(a, b) -> tuple[list[Value], int, int]:
    """(rows, sign_shift, constant) with a * b == sum(rows[i] << i) + offset for signed a
    and b, where offset = ((b < 0) << sign_shift) + constant.

    Sign extension is what makes `partial_products` wide: every row carries its sign to the
    product's full width, and a signed b's last row is negated by an adder of that width.
    Here each row is a's bits ANDed with a bit of b (the last row with a's complement,
    -a = ~a + 1), its sign bit inverted: row = r + 2^(len(a)-1) as an unsigned value of
    len(a) bits. The offset takes the inverted signs' 2^(len(a)-1) per row back out and adds
    the complement's +1; it depends only on b's sign bit, so with a masked to zero the rows
    and offset still sum to zero, and a caller summing many products adds their offsets once.
    """
    a, b = Value.cast(a), Value.cast(b)
    if not (a.shape().signed and b.shape().signed):
        raise ValueError("offset_rows takes signed operands")
    la, n = len(a), len(b)
    rows = []
    for i in range(n):
        src = ~a if i == n - 1 else a
        bit = b[i]
        rows.append(Cat(src[:la - 1] & bit.replicate(la - 1), ~(src[la - 1] & bit)))
    return rows, *rows_offset(la, n)


def rows_offset(a_width: int, b_width: int) -> tuple[int, int]:
    """(sign_shift, constant) of `offset_rows` for operands of these widths: the same for
    every product of that shape, so a sum of many needs it once."""
    return b_width - 1, -(((1 << b_width) - 1) << (a_width - 1))


def weighted_sum(terms: list[tuple[Value, int, int]]) -> tuple[Value, int, int]:
    """Sum of unsigned (value, shift, max) terms, value << shift each, as one (value, shift,
    max). Pairs are added with their lower term's extra low bits passed straight through and
    each sum cut to the bits its maximum needs, so every adder is only as wide as the bits
    that overlap: the carry chains of a tree of `offset_rows` are about half those of
    `partial_products`. Terms are in increasing shift order."""
    terms = list(terms)
    while len(terms) > 1:
        paired = []
        for k in range(0, len(terms), 2):
            if k + 1 == len(terms):
                paired.append(terms[k])
                continue
            (lo, s_lo, m_lo), (hi, s_hi, m_hi) = terms[k], terms[k + 1]
            d = s_hi - s_lo
            total = m_lo + (m_hi << d)
            if len(lo) <= d:
                value = Cat(lo, Const(0, d - len(lo)), hi)
            else:
                value = Cat(lo[:d], lo[d:] + hi)
            paired.append((value[:bits_for(total)], s_lo, total))
        terms = paired
    return terms[0]
