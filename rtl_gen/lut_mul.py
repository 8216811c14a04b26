"""Multipliers built from LUTs and carry chains instead of hard DSP blocks.

Yosys maps every `*` of two non-constant operands onto MULT18X18D blocks. The ECP5 has few of
those (156 on an 85F) and the accelerator wants them all in the pointwise MAC array, so the
products that are not MACs of the array (depthwise taps, the sequencer's size products, the
dense layer's requantizer digits) are written here as sums of shifted partial products: Yosys
sees only adders and muxes.

`partial_products` gives the rows of a product so that a pipeline can register the partial
sums between adder levels; `lut_product` sums them in one combinational tree. The depthwise
taps are not multipliers at all but table lookups (`depthwise`); `nibble_sum` joins a tap's
two nibble products.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Const, Mux, Signal, Value


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


def nibble_sum(low, high) -> Value:
    """(high << 4) + low of two signed Values, exact: low's last four bits pass straight
    through, so the adder is only as wide as the bits that overlap. With low = w * (u & 15)
    and high = w * (u >> 4) (a table lookup each, `depthwise`) it is u * w."""
    low, high = Value.cast(low), Value.cast(high)
    return Cat(low[:4], low[4:].as_signed() + high).as_signed()
