"""int32 -> int8 requantization in double precision, bit-exact with TFLite's BUILTIN_REF
FULLY_CONNECTED kernel: clamp(std::round(double(acc) * scale) + output_zp, act_min, act_max).

The hardware runs `quantize.fixedpoint.round_scaled_double` with integers only. The scale
arrives as `double_parts(scale)`: a 53-bit integer mantissa and an exponent, scale =
mantissa * 2^exponent exactly. With p = |acc| * mantissa (exact; |acc| <= 2^31 and
mantissa < 2^53, so p < 2^84):

1. drop = max(bitlen(p) - 53, 0), so q = p >> drop holds 53 significant bits; drop is 0..31
   and only p[53:84] needs a priority encoder;
2. q is rounded half to even on the dropped bits (the FPU rounding of the double product);
   a carry may make q = 2^53, which the next step takes as it is;
3. with t = drop + exponent, |result| = q * 2^t rounded half away from zero (std::round).

Only |result| < 256 is ever visible through `+ output_zp` and the int8 clamp, so step 3 works
on y = floor(2q * 2^t), |result| = (y + 1) >> 1, and saturates the magnitude to 256 when
y >= 512 or t > 7 (q >= 1 for any nonzero p): 256 + zp > 127 and -256 + zp < -128 for every
int8 zero point, so the clamp picks the same bound as it would for the exact value. For t > 7
no shift is needed; for t < -55, y = 0 (q <= 2^53); in between y = (q << 8) >> (7 - t), a right
shift by 0..63. Any exponent in signed(12), any 53-bit mantissa (zero included) is exact.

Step 2 is kept exactly as the FPU does it, although through the int8 clamp only part of it can
show: with drop > 0, q >= 2^52, so a visible result needs t <= -45, whose rounding ties sit at
even q; moving q by one changes the result only when an odd q rounds up onto such a tie.
"""
from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .lut_mul import lut_product
from .requant import clamp

FLOAT_LANE_LAYOUT = data.StructLayout({
    "acc": signed(32),          # int32 accumulator (bias included)
    "mantissa": unsigned(53),   # double_parts(scale)[0]: scale = mantissa * 2^exponent
    "exponent": signed(12),     # double_parts(scale)[1]
})


class FloatRequantizer(wiring.Component):
    """Multi-cycle double-precision requantizer, one value in flight.

    `i_stream` payload: `FLOAT_LANE_LAYOUT`; `o_stream` payload: signed(8) =
    clamp(round_scaled_double(acc, mantissa, exponent) + output_zp, act_min, act_max).
    output_zp/act_min/act_max are per-layer settings, held stable while values are in flight.

    The 53 x 32 product is built most significant digit first with one 53 x `digit_width`
    multiplier made of LUTs (`lut_mul`; the DSP blocks belong to the MAC array; the default
    digit_width 1 is shift-and-add: one 84-bit adder), then one cycle each for the
    leading-one search, the round-half-even shift and its increment, the final shift amount,
    the shift, the rounding with saturation, the signed zero-point offset, and the clamp into
    the output register: no state deeper than one shifter or one adder, for 100+ MHz.

    States: IDLE (accepts a value: i_stream.ready = 1) -> MUL x (32 / digit_width) -> LZC ->
    RNE -> ROUND -> SHIFT -> SATURATE -> OFFSET -> FINAL. A value accepted in cycle c is valid
    on the output from cycle c + CYCLES, and the next value is accepted in that same cycle:
    one value every CYCLES = 32 / digit_width + 8 cycles (40 with the default 1-bit digits; a
    dense layer has few outputs). The output is a
    register of its own: o_stream.valid never depends on o_stream.ready, and a value waiting
    on back-pressure only stalls the unit once the next result is ready to take its place.
    """

    def __init__(self, digit_width: int = 1):
        if digit_width not in (1, 2, 4, 8, 16, 32):
            raise ValueError(f"digit_width must divide 32 (1, 2, 4, 8, 16, 32), got {digit_width}")
        self.digit_width = digit_width
        self.digits = 32 // digit_width
        self.CYCLES = self.digits + 8
        super().__init__({
            "i_stream": In(stream.Signature(FLOAT_LANE_LAYOUT)),
            "o_stream": Out(stream.Signature(signed(8))),
            "output_zp": In(signed(8)),
            "act_min": In(signed(8)),
            "act_max": In(signed(8)),
            # High in the cycle the unit returns to IDLE (i_stream.ready rises in the next
            # one): a producer placed far away can keep a copy of ready as its own register.
            "finishing": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        w = self.digit_width
        i, o = self.i_stream, self.o_stream

        sign = Signal()                         # acc < 0
        mag = Signal(32)                        # |acc|, shifted left one digit per MUL cycle
        mantissa = Signal(53)
        exponent = Signal(signed(12))
        p = Signal(84)                          # |acc| * mantissa, exact (< 2^84)
        count = Signal(range(max(self.digits, 2)))
        drop = Signal(range(32))                # max(bitlen(p) - 53, 0)
        q = Signal(54)                          # p rounded to 53 significant bits (<= 2^53)
        t = Signal(signed(14))                  # q * 2^t is the double product
        mag9 = Signal(9)                        # |result|, saturated to 256
        kept = Signal(53)                       # p >> drop, before rounding
        round_bit = Signal()                    # p's highest dropped bit (2^(drop-1))
        sticky = Signal()                       # any dropped bit below it
        r = Signal(6)                           # right shift of q << 8
        too_big = Signal()                      # t > 7 (then q != 0 saturates)
        y = Signal(62)                          # floor(2q * 2^t)
        value = Signal(signed(10))              # output_zp -+ mag9, before the clamp

        # i_stream.ready: a register equal to "in IDLE" (set by FINAL, cleared on accept), so
        # the ready that a producer's queue enables wait on is not a state decode.
        idle = Signal(init=1)
        m.d.comb += i.ready.eq(idle)

        # Output register: dropped when taken, refilled by FINAL.
        with m.If(o.ready):
            m.d.sync += o.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(i.valid):
                    m.d.sync += idle.eq(0)
                    acc = i.payload.acc
                    m.d.sync += [
                        sign.eq(acc < 0),
                        mag.eq(Mux(acc < 0, -acc, acc)[:32]),   # |INT32_MIN| = 2^31 fits
                        mantissa.eq(i.payload.mantissa),
                        exponent.eq(i.payload.exponent),
                        p.eq(0),
                        count.eq(0),
                    ]
                    m.next = "MUL"

            with m.State("MUL"):
                # Horner, most significant digit first: p = p * 2^w + mantissa * digit. Every
                # partial p is mantissa * (a prefix of |acc|'s digits) <= the final p < 2^84.
                m.d.sync += [
                    p.eq((p << w)[:84] + lut_product(mantissa, mag[32 - w:])),
                    mag.eq(mag << w),
                    count.eq(count + 1),
                ]
                with m.If(count == self.digits - 1):
                    m.next = "LZC"

            with m.State("LZC"):
                # drop = i + 1 for the highest set bit p[53 + i], 0 when p < 2^53.
                d = Const(0, range(32))
                for k in range(31):
                    d = Mux(p[53 + k], k + 1, d)
                m.d.sync += drop.eq(d)
                m.next = "RNE"

            with m.State("RNE"):
                # Round half to even at bit `drop`: up = round bit & (lsb | sticky). The shift
                # and the two flags here; the lsb is kept[0], so `up` and the increment wait
                # for ROUND (with p[drop] here, synthesis shared the barrel shifter's last
                # stage with it and put the whole shifter in front of `up`).
                half = Const(1 << 30, 31) >> (31 - drop).as_unsigned()   # 2^(drop-1); 0 if 0
                low = p[:31]
                m.d.sync += [
                    kept.eq((p >> drop)[:53]),
                    round_bit.eq((low & half).any()),
                    sticky.eq((low & (half - 1)[:31]).any()),
                    t.eq(drop + exponent),
                ]
                m.next = "ROUND"

            with m.State("ROUND"):
                m.d.sync += [
                    q.eq(kept + (round_bit & (kept[0] | sticky))),
                    # y = floor(2q * 2^t) for -56 <= t <= 7, with 2q * 2^7 = q << 8 (62 bits).
                    r.eq(Mux(t > 7, 0, Mux(t < -56, 63, 7 - t)).as_unsigned()[:6]),
                    too_big.eq(t > 7),
                ]
                m.next = "SHIFT"

            with m.State("SHIFT"):
                m.d.sync += [y.eq(((q << 8) >> r)[:62]),
                             too_big.eq(too_big & (q != 0))]
                m.next = "SATURATE"

            with m.State("SATURATE"):
                saturate = too_big | y[9:].any()     # |result| >= 256
                m.d.sync += mag9.eq(Mux(saturate, 256, (y[:9] + 1) >> 1))   # y < 512: <= 256
                m.next = "OFFSET"

            with m.State("OFFSET"):
                # One adder (or subtractor) here, the clamp's compares in FINAL: both in one
                # state were the 45F's critical path (10.6 ns).
                m.d.sync += value.eq(Mux(sign, self.output_zp - mag9, self.output_zp + mag9))
                m.next = "FINAL"

            with m.State("FINAL"):
                with m.If(~o.valid | o.ready):
                    m.d.sync += [
                        o.payload.eq(clamp(value, self.act_min, self.act_max)),
                        o.valid.eq(1),
                        idle.eq(1),
                    ]
                    m.d.comb += self.finishing.eq(1)
                    m.next = "IDLE"
        return m
