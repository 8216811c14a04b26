"""Multipliers built from LUTs and carry chains instead of hard DSP blocks.

Yosys maps every `*` of two non-constant operands onto MULT18X18D blocks. The ECP5 has few of
those (156 on an 85F) and the accelerator wants them all in the pointwise MAC array, so the
products that are not MACs of the array (depthwise taps, the sequencer's size products, the
dense layer's requantizer digits) are written here as sums of shifted partial products: Yosys
sees only adders and muxes.

`partial_products` gives the rows of a product so that a pipeline can register the partial
sums between adder levels; `lut_product` sums them in one combinational tree.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Const, Mux, Value


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

