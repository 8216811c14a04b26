"""Per-channel int32 -> int8 requantization, bit-exact with TFLite's MultiplyByQuantizedMultiplier.

The module also holds the gemmlowp primitives as Amaranth expression builders
(`srdhm_of_product`, `rounding_divide_by_pot`, ...). `MeanUnit` and `SoftmaxUnit` build on the
same expressions, so one proof of equivalence with `quantize.fixedpoint` covers all three units.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .dsp import LATENCY as DSP_LATENCY, registered_product
from .lut_mul import registered_lut_product

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


def wrap32(v) -> Value:
    """C int32 overflow: keep the low 32 bits as two's complement (narrower values keep theirs)."""
    return Value.cast(v)[:32].as_signed()


def srdhm_of_product(product, overflow) -> Value:
    """gemmlowp SaturatingRoundingDoublingHighMul, given product = a * b (signed 64) and
    overflow = (a == b == INT32_MIN).

    gemmlowp adds 2^30 (or 1 - 2^30 when negative) and divides by 2^31 truncating toward zero.
    For a negative sum, truncation is floor((s + 2^31 - 1) / 2^31), and
    (ab + 1 - 2^30) + (2^31 - 1) = ab + 2^30, so both signs reduce to the single
    floor((ab + 2^30) / 2^31): one adder and a wire shift instead of two nudges and a divide.
    """
    high = wrap32((Value.cast(product) + (1 << 30)) >> 31)
    return Mux(overflow, Const(INT32_MAX, signed(32)), high)


def srdhm_pipeline(m: Module, a, b, enable, name: str, platform=None) -> Signal:
    """A registered SaturatingRoundingDoublingHighMul(a, b) of two signed 32-bit values,
    `SRDHM_STAGES` = 4 enabled cycles after a and b, on two DSP blocks (Karatsuba).

    With a = ah 2^16 + al and b = bh 2^16 + bl (al, bl the unsigned low halves), a * b =
    hh 2^32 + (ss - hh - ll) 2^16 + ll, where hh = ah bh, ll = al bl and ss = (ah + al)(bh + bl).
    The half sums lie in [-2^15, 3 2^15), 18-bit signed, so hh and ss each fit one MULT18X18D
    (`dsp.registered_product`, its input and output registers: 2 cycles; the half sums are
    one adder in front of the input registers). ll, unsigned 16x16, is built in LUTs with the
    same two registers (`lut_mul.registered_lut_product`, ~300 LUT4 slots): the ECP5's DSP
    blocks are wanted for the MAC array, and a lane's third block took the 85F's MAC share
    below 85%. Then the middle term (ss - hh - ll) and the low one plus the rounding
    constant 2^30; then the high word. No stage is more than two adders deep, short enough
    for 100+ MHz on an ECP5."""
    a, b = Value.cast(a), Value.cast(b)

    def reg(shape, suffix):
        return Signal(shape, name=f"{name}_{suffix}")

    def halves(x):
        return Cat(x[:16], Const(0, 1)).as_signed(), x[16:32].as_signed()

    def product(x, y, suffix):
        return registered_product(m, x, y, name=f"{name}_{suffix}", platform=platform,
                                  enable=enable)

    a_lo, a_hi = halves(a)
    b_lo, b_hi = halves(b)
    hh = product(a_hi, b_hi, "hh")
    ll = registered_lut_product(m, a[:16], b[:16], name=f"{name}_ll", enable=enable)
    ss = product((a_hi + a_lo)[:18].as_signed(), (b_hi + b_lo)[:18].as_signed(), "ss")
    top, mid, low = reg(signed(34), "top"), reg(signed(35), "mid"), reg(signed(35), "low")
    overflow = [reg(1, f"overflow{s}") for s in range(DSP_LATENCY + 1)]
    high = reg(signed(32), "high")
    with m.If(enable):
        m.d.sync += [
            overflow[0].eq((a == INT32_MIN) & (b == INT32_MIN)),
            *[overflow[s].eq(overflow[s - 1]) for s in range(1, len(overflow))],
            # ss - hh - ll = ah bl + al bh, within 35 bits.
            top.eq(hh), mid.eq((ss - hh - ll)[:35].as_signed()), low.eq(ll + (1 << 30)),
            # floor((a * b + 2^30) / 2^31), see `srdhm_of_product`.
            high.eq(Mux(overflow[-1], INT32_MAX,
                        wrap32(((top << 32) + (mid << 16) + low) >> 31))),
        ]
    return high


SRDHM_STAGES = DSP_LATENCY + 2
# A borrowed multiply (`Requantizer.borrower`) takes one cycle more: the borrower's operands
# are registered beside the lending lane before its select, so the borrower can sit anywhere
# on the die (the SoftmaxUnit's operand registers, placed across the 45F from lane 0, were
# its slowest path, straight into the LUT-built low product).
BORROW_STAGES = SRDHM_STAGES + 1


def rounding_divide_by_pot(x, exponent) -> Value:
    """gemmlowp RoundingDivideByPOT (round half away from zero) for exponent 0..32.

    Remainder > (mask >> 1) + (x < 0) is the same as adding 2^(e-1) - (x < 0) before an
    arithmetic shift, which needs no mask or comparator. `exponent` is an int or an unsigned
    Value; the half is derived by shifting 2^31 right, so no wide left shifter is built.
    """
    x = Value.cast(x)
    if isinstance(exponent, int):
        if exponent == 0:
            return x
        nudge = (1 << (exponent - 1)) - x[-1]
    else:
        nudge = rounding_nudge(x, exponent)
    return wrap32((x + nudge) >> exponent)


def rounding_half(exponent) -> Value:
    """Half of 2**exponent (0 for exponent 0), for an unsigned Value exponent: the part of
    `rounding_nudge` that does not depend on x."""
    return Const(1 << 31, 32) >> (32 - exponent).as_unsigned()


def rounding_nudge(x, exponent) -> Value:
    """What `rounding_divide_by_pot` adds before its shift, for an unsigned Value exponent:
    pipelines that give the add and the shift a cycle each use it directly."""
    return rounding_half(exponent) - ((Value.cast(x) < 0) & (exponent != 0))


def clamp(x, lo, hi) -> Value:
    return Mux(x < lo, lo, Mux(x > hi, hi, x))


LANE_LAYOUT = data.StructLayout({
    "acc": signed(32),          # int32 accumulator (bias included)
    "multiplier": signed(32),   # quantized multiplier of this channel, Q0.31
    "shift": signed(6),         # its exponent: > 0 shifts left before, < 0 rounds right after
})


def multiplier_signature() -> wiring.Signature:
    """A borrowed SaturatingRoundingDoublingHighMul, seen from the borrower: operands out,
    their SRDHM (`srdhm_pipeline`) back BORROW_STAGES cycles later."""
    return wiring.Signature({"a": Out(signed(32)), "b": Out(signed(32)),
                             "high": In(signed(32))})


def requant_layout(lanes: int):
    """A Requantizer's input payload: `LANE_LAYOUT`, or an array of `lanes` of them."""
    return LANE_LAYOUT if lanes == 1 else data.ArrayLayout(LANE_LAYOUT, lanes)


class Requantizer(wiring.Component):
    """Pipelined requantizer: `lanes` channels per beat, one beat per clock.

    Per lane: clamp(MultiplyByQuantizedMultiplier(acc, multiplier, shift) + output_zp,
    act_min, act_max) as int8. With lanes == 1 the payloads are `LANE_LAYOUT` and `signed(8)`;
    otherwise arrays of them. output_zp/act_min/act_max are per-layer settings, held stable while
    beats are in flight.

    Stages (registered), each at most one adder or one shifter deep for 100+ MHz: 0 the input
    registered, with the shift split into its left and right amounts (the input is a mux of
    the AccSerializer and the MeanUnit: a shifter behind it was the 45F's next path); 1 left
    shift; 2-3 the 32x32 product as three registered products (`srdhm_pipeline`: Karatsuba,
    two in DSP blocks with their input and output registers, one in LUTs); 4 the middle term
    and the SRDHM rounding constant added to the low one; 5 SRDHM's high word; 6 the
    RoundingDivideByPOT nudge added; 7 its arithmetic shift; 8 zero point and clamp.
    A beat accepted in cycle t is valid on the output in cycle t + LATENCY. The pipeline stalls
    as a whole when the output is not taken.

    With `lend_multiplier`, lane 0's 32x32 product can be lent to a unit that multiplies
    only while the Requantizer is idle (the SoftmaxUnit, alone in its layer): while `lend`
    is high the product takes `borrower.a` and `borrower.b` instead of the lane's operands
    and `borrower.high` returns their SRDHM BORROW_STAGES cycles later (the output must be
    taken every cycle meanwhile, as in the accelerator). The operands and `lend` are
    registered beside the lane, so `lend` must rise no later than the borrower's first
    operands and fall after its last result, with no beat in flight either time.
    That saves the borrower two DSP blocks and a LUT product for a 2:1 mux in front of them.
    """

    LATENCY = 5 + SRDHM_STAGES

    def __init__(self, lanes: int = 1, *, lend_multiplier: bool = False):
        if lanes < 1:
            raise ValueError(f"lanes must be >= 1, got {lanes}")
        self.lanes, self.lend_multiplier = lanes, lend_multiplier
        in_layout = requant_layout(lanes)
        out_layout = signed(8) if lanes == 1 else data.ArrayLayout(signed(8), lanes)
        ports = {
            "i_stream": In(stream.Signature(in_layout)),
            "o_stream": Out(stream.Signature(out_layout)),
            "output_zp": In(signed(8)),
            "act_min": In(signed(8)),
            "act_max": In(signed(8)),
        }
        if lend_multiplier:
            ports.update(lend=In(1), borrower=In(multiplier_signature()))
        super().__init__(ports)

    def lanes_of(self, payload) -> list:
        """Per-lane views of an input or output payload, for any `lanes`."""
        return [payload] if self.lanes == 1 else [payload[k] for k in range(self.lanes)]

    def elaborate(self, platform):
        m = Module()
        advance = ~self.o_stream.valid | self.o_stream.ready
        m.d.comb += self.i_stream.ready.eq(advance)

        valid = [Signal(name=f"valid{s}") for s in range(1, self.LATENCY)]
        with m.If(advance):
            m.d.sync += [valid[0].eq(self.i_stream.valid), self.o_stream.valid.eq(valid[-1])]
            m.d.sync += [valid[s].eq(valid[s - 1]) for s in range(1, len(valid))]

        for k, (lane, out) in enumerate(zip(self.lanes_of(self.i_stream.payload),
                                            self.lanes_of(self.o_stream.payload))):
            def reg(shape, name):
                return Signal(shape, name=f"{name}{k}")

            acc_in, mult_in = reg(signed(32), "acc_in"), reg(signed(32), "mult_in")
            left = reg(5, "left")
            right_in = reg(range(33), "right_in")
            a, mult = reg(signed(32), "a"), reg(signed(32), "mult")
            nudged = reg(signed(33), "nudged")
            shifted = reg(signed(32), "shifted")
            # A right shift of up to 32 travels with the data to the rounding stages.
            right = [reg(range(33), f"right{s}_") for s in range(SRDHM_STAGES + 2)]
            if k == 0 and self.lend_multiplier:
                # The operand select from a register beside the lane: `lend` comes from
                # the accelerator's layer decode, across the die (the 45F's critical path
                # ran from it through the select into the LUT-built low product).
                lend = Signal(name="lend_r")
                borrowed_a, borrowed_b = Signal(signed(32)), Signal(signed(32))
                m.d.sync += [lend.eq(self.lend), borrowed_a.eq(self.borrower.a),
                             borrowed_b.eq(self.borrower.b)]
                high = srdhm_pipeline(m, Mux(lend, borrowed_a, a), Mux(lend, borrowed_b, mult),
                                      advance, f"srdhm{k}", platform)
                m.d.comb += self.borrower.high.eq(high)
            else:
                high = srdhm_pipeline(m, a, mult, advance, f"srdhm{k}", platform)
            r_high, r_shift = right[SRDHM_STAGES], right[SRDHM_STAGES + 1]

            shift = lane.shift
            nudge = rounding_nudge(high, r_high)
            with m.If(advance):
                m.d.sync += [
                    # 0: the input, the exponent as a left and a right shift.
                    acc_in.eq(lane.acc),
                    mult_in.eq(lane.multiplier),
                    left.eq(Mux(shift > 0, shift, 0).as_unsigned()[:5]),
                    right_in.eq(Mux(shift < 0, -shift, 0)),
                    # 1: the positive exponent as a left shift.
                    a.eq(wrap32(acc_in << left)),
                    mult.eq(mult_in),
                    right[0].eq(right_in),
                    # 2-5: SaturatingRoundingDoublingHighMul (`srdhm_pipeline`).
                    *[right[s].eq(right[s - 1]) for s in range(1, len(right))],
                    # 6, 7: RoundingDivideByPOT as an add, then an arithmetic shift.
                    nudged.eq(high + nudge),
                    shifted.eq(wrap32(nudged >> r_shift)),
                    # 8: zero point and clamp.
                    out.eq(clamp(shifted + self.output_zp, self.act_min, self.act_max)),
                ]
        return m
