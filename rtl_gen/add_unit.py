"""Elementwise int8 ADD (MobileNetV2's residual), bit-exact with `quantize.reference.add`
(TFLite's reference_integer_ops::AddElementwise).

Per channel, TFLite computes

    scaled_k = RoundingDivideByPOT(SRDHM((x_k + offset_k) << 20, multiplier_k), shift_k)
    out      = clamp(MultiplyByQuantizedMultiplier(scaled_1 + scaled_2, out_multiplier,
                                                   out_shift) + output_zp)

The unit computes the two input scalings and their sum, and hands the sum to the
accelerator's Requantizer as an accumulator with the layer's output multiplier and shift:
the Requantizer's SRDHM, rounding shift, zero point and clamp are exactly the output stage
(ADD's output shift is never positive). So an ADD costs no DSP block: an input scaling
multiplies a 9-bit value (x + offset is within [-255, 255]) by a 31-bit multiplier, nine
partial-product rows in LUTs.

The input shift by 20 needs no shifter: (v 2^20) M + 2^30 = 2^20 (v M + 2^10), so
SRDHM(v << 20, M) = floor((v M + 2^10) / 2^11), and |v 2^20| < 2^28 never meets SRDHM's
saturating case.

Protocol: `a` and `b` carry `lanes` int8 channels per beat, taken together (both valid, the
output side not stalled); `to_requant` carries the lanes' sums with the output multiplier
and shift `LATENCY` cycles later. The parameters are registered inside (`PARAM_STAGES`):
set them at least that many cycles before the first beat and hold them until the last
beat has left.

Stages, each at most two adders deep: 0 v = x + offset; 1 the nine rows of v * M summed
in three groups of three; 2 the three group sums; 3 + 2^10 and the shift by 11 (SRDHM);
4 RoundingDivideByPOT's nudge added; 5 its shift; 6 the two inputs' sum.
"""
from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .requant import requant_layout, wrap32

# TFLite's int8 ADD pre-shifts both inputs by this much (add.cc: left_shift = 20;
# `quantize.reference.ADD_LEFT_SHIFT`).
LEFT_SHIFT = 20


def input_layout() -> data.StructLayout:
    """One input's scaling: offset = -zero point, multiplier (Q0.31, positive) and right
    shift (-TFLite's shift, 0..31)."""
    return data.StructLayout({"offset": signed(9), "multiplier": signed(32),
                              "right_shift": range(32)})


def registered_scale(m: Module, p, name: str):
    """The per-layer parameters of one input's scaling in registers, with RoundingDivideByPOT's
    two possible nudges precomputed, `PARAM_STAGES` cycles after `p`: the records they come
    from sit behind the sequencer's slot select, too far for the datapath's adders."""
    def reg(shape, suffix):
        return Signal(shape, name=f"{name}_{suffix}")

    offset, mult, shift = reg(signed(9), "offset"), reg(signed(32), "mult"), reg(range(32), "shift")
    half, half_less_one = reg(signed(32), "half"), reg(signed(32), "half_less_one")
    # 2^(shift - 1) for shift > 0, else 0: what a non-negative value gets; a negative one
    # gets one less (`rounding_nudge`). Bit by bit, compares with constants: no adder or
    # shifter behind the shift register.
    m.d.sync += [offset.eq(p.offset), mult.eq(p.multiplier), shift.eq(p.right_shift),
                 half.eq(Cat(*[shift == i + 1 for i in range(32)])),
                 half_less_one.eq(Cat(*[shift > i + 1 for i in range(32)]))]
    return SimpleNamespace(offset=offset, multiplier=mult, right_shift=shift, half=half,
                           half_less_one=half_less_one)


PARAM_STAGES = 2


def scaled_input(m: Module, x, p, advance, name: str) -> Signal:
    """RoundingDivideByPOT(SRDHM((x + offset) << 20, multiplier), right_shift) of an int8 `x`,
    registered `SCALE_STAGES` advancing cycles later; `p` from `registered_scale`."""
    def reg(shape, suffix):
        return Signal(shape, name=f"{name}_{suffix}")

    v = reg(signed(10), "v")
    groups = [reg(signed(44), f"group{k}") for k in range(3)]
    product, high = reg(signed(44), "product"), reg(signed(32), "high")
    nudged, scaled = reg(signed(33), "nudged"), reg(signed(32), "scaled")
    mult, shift = p.multiplier, p.right_shift
    # Row i of v * M: M << i where bit i of v is set; bit 9 (the sign) weighs -2^9.
    rows = [(mult << i) & Cat(*[v[i]] * (32 + i)).as_signed() for i in range(10)]
    rows[9] = -rows[9]
    with m.If(advance):
        m.d.sync += [
            v.eq(x + p.offset),
            groups[0].eq(rows[0] + rows[1] + rows[2] + rows[3]),
            groups[1].eq(rows[4] + rows[5] + rows[6]),
            groups[2].eq(rows[7] + rows[8] + rows[9]),
            product.eq(groups[0] + groups[1] + groups[2]),
            # SRDHM(v << LEFT_SHIFT, M) = floor((v M + 2^(30 - LEFT_SHIFT)) / 2^(31 - LEFT_SHIFT)).
            high.eq(wrap32((product + (1 << (30 - LEFT_SHIFT))) >> (31 - LEFT_SHIFT))),
            nudged.eq(high + Mux(high < 0, p.half_less_one, p.half)),
            scaled.eq(wrap32(nudged >> shift)),
        ]
    return scaled


SCALE_STAGES = 6


class AddUnit(wiring.Component):
    """`lanes` channels of int8 ADD per beat, one beat per clock; see the module docstring."""

    LATENCY = SCALE_STAGES + 1

    def __init__(self, lanes: int):
        self.lanes = lanes
        beat = data.ArrayLayout(signed(8), lanes)
        super().__init__({
            "a": In(stream.Signature(beat)),
            "b": In(stream.Signature(beat)),
            "to_requant": Out(stream.Signature(requant_layout(lanes))),
            "a_scale": In(input_layout()),
            "b_scale": In(input_layout()),
            "out_multiplier": In(signed(32)),
            "out_shift": In(signed(6)),
        })

    def elaborate(self, platform):
        m = Module()
        out = self.to_requant
        advance = ~out.valid | out.ready
        both = self.a.valid & self.b.valid
        m.d.comb += [self.a.ready.eq(advance & self.b.valid),
                     self.b.ready.eq(advance & self.a.valid)]
        valid = [Signal(name=f"valid{s}") for s in range(self.LATENCY - 1)]
        with m.If(advance):
            m.d.sync += [valid[0].eq(both), out.valid.eq(valid[-1]),
                         *[valid[s].eq(valid[s - 1]) for s in range(1, len(valid))]]
        lanes_out = [out.payload] if self.lanes == 1 else [out.payload[k]
                                                           for k in range(self.lanes)]
        a_scale = registered_scale(m, self.a_scale, "a_scale")
        b_scale = registered_scale(m, self.b_scale, "b_scale")
        out_multiplier, out_shift = Signal(signed(32)), Signal(signed(6))
        m.d.sync += [out_multiplier.eq(self.out_multiplier), out_shift.eq(self.out_shift)]
        for k, lane in enumerate(lanes_out):
            sa = scaled_input(m, self.a.payload[k], a_scale, advance, f"a{k}")
            sb = scaled_input(m, self.b.payload[k], b_scale, advance, f"b{k}")
            with m.If(advance):
                m.d.sync += [lane.acc.eq(wrap32(sa + sb)),
                             lane.multiplier.eq(out_multiplier), lane.shift.eq(out_shift)]
        return m
