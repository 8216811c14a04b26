"""int8 softmax, bit-exact with `quantize.reference.softmax` (TFLite reference kernel, gemmlowp
fixed point), as a small sequential datapath around one shared 32x32 multiplier."""
from __future__ import annotations

from amaranth.hdl import Array, Const, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .fsm_encoding import one_hot
from .requant import (BORROW_STAGES, INT32_MAX, INT32_MIN, multiplier_signature,
                      rounding_divide_by_pot, rounding_half, srdhm_pipeline, wrap32)

# gemmlowp exp_on_interval_between_negative_one_quarter_and_0_excl, Q0.31.
EXP_CONSTANT_TERM = 1895147668     # exp(-1/8)
EXP_ONE_THIRD = 715827883          # 1/3
# gemmlowp exp_on_negative_values barrel shifter: exp(-2^k) for k = -2 .. 4, Q0.31.
EXP_BARREL = (1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242)
# gemmlowp one_over_one_plus_x_for_x_in_0_1, Q2.29.
RECIP_48_OVER_17 = 1515870810
RECIP_NEG_32_OVER_17 = -1010580540
RECIP_ONE = 1 << 29

SCALED_DIFF_FRAC_BITS = 26         # Q5.26 input of exp_on_negative_values
QUARTER_BITS = SCALED_DIFF_FRAC_BITS - 2   # 1/4 in Q5.26
ACCUMULATION_INTEGER_BITS = 12     # Q12.19 sum of exponentials
# A multiply: issue (which operands), operand load, the SRDHM pipeline, write-back;
# exp_on_negative_values takes 6 plus one per barrel multiplier, the reciprocal a first guess
# and three Newton-Raphson steps of two.
# The multiplier's stages as the FSM sees them: the borrowed (or own) multiply, then its high
# word registered on arrival, so that the write-back's logic never waits on a word that
# crossed the die from the lending lane (the 45F's slowest path did).
PIPELINE_STAGES = BORROW_STAGES + 1
MULTIPLY_STATES = 1 + 1 + PIPELINE_STAGES + 1
EXP_MULTIPLIES = 6 + len(EXP_BARREL)
RECIP_MULTIPLIES = 1 + 3 * 2
# Write-back states beyond one per multiply, where a result is more than one adder deep:
# exp_on_negative_values' x^4/4 + x^3 (one more) and its (x^4/4 + x^3) / 3 + x^2 step (two
# more); each Newton-Raphson step's saturating shift before its add (one more).
EXP_EXTRA_WRITEBACKS = 1 + 2
RECIP_EXTRA_WRITEBACKS = 3
# Reading a logit: the block RAM's word, its second register, the difference from the
# maximum, then the range test against diff_min.
READ_STATES = 4
# The most logits a SoftmaxUnit holds (an ImageNet head has 1000; see `__init__`).
MAX_LENGTH = 1024


def saturating_left_shift(x, exponent: int):
    """gemmlowp SaturatingRoundingMultiplyByPOT for a positive constant exponent."""
    threshold = (1 << (31 - exponent)) - 1
    return Mux(x > threshold, INT32_MAX, Mux(x < -threshold, INT32_MIN, wrap32(x << exponent)))


def count_leading_zeros(x):
    """Leading zeros of a 32-bit pattern, 32 for zero (a priority encoder)."""
    n = Const(32, 6)
    for bit in range(32):   # later (higher) bits take precedence
        n = Mux(x[bit], 31 - bit, n)
    return n


class SoftmaxUnit(wiring.Component):
    """Softmax of `length` (1..max_length) int8 logits into int8 probabilities (scale 1/256,
    zero point -128), following reference_ops::Softmax step by step.

    It runs once per inference on ~10 values, so area wins over speed: every gemmlowp
    SaturatingRoundingDoublingHighMul goes through one pipelined 32x32 multiplier
    (`requant.srdhm_pipeline`: two DSP blocks and a LUT product; with `own_multiplier=False`
    it borrows the Requantizer's, through the `multiplier` port), each multiply taking
    MULTIPLY_STATES = 9 states of a micro-sequenced FSM (issue: which operands, as one-hot
    source selects; operand load; six pipeline states, the first the lending lane's operand
    register, the last the high word registered back here; write-back from that register).
    The operands are a select of registers by registers, not by the FSM's 15 issue states
    (the seven barrel multiplies are one loop of states). No state is more than one adder
    (or one compare) deep, and the state register is one-hot (`fsm_encoding`), so a
    write-back's select is a flip-flop rather than a decode of its 157 states.

    Phases and cycles (n = length): load n + 1 cycles (one logit per clock into a register,
    the maximum tracked on the fly behind it), exponentials 126 per logit, reciprocal of the
    sum 68, output 16 per logit when the consumer is ready (each pass reads a logit into
    registers first). That is 143 n + 69 cycles (`vector_cycles`), e.g. 1499 for 10 logits
    (it runs once per inference: 0.06% of alpha 0.25's cycles on the 85F).

    input_multiplier, input_left_shift and diff_min come from `reference.softmax_params`
    (PreprocessSoftmaxScaling, CalculateInputRadius) and must hold during a vector; `length`
    must also be set one cycle before the vector's first logit (its last index is a register,
    so the descriptor's class count reaches no compare in the cycle it is read).
    """

    def __init__(self, max_length: int = 16, *, own_multiplier: bool = True):
        # The sum of exponentials is at least 2^19 (the maximum logit contributes exactly that)
        # and at most max_length * 2^19, so the final rounding shift, 35 - clz(sum), is 23..33
        # for up to 1024 logits; `rounding_divide_by_pot` is exact there for the positive
        # products it divides. (TFLite's reference asserts that shift <= 31 and aborts beyond
        # it: sums of 2^28 and more, i.e. 512 or more logits tied at the maximum.)
        if not 1 <= max_length <= MAX_LENGTH:
            raise ValueError(f"max_length must be 1..{MAX_LENGTH}, got {max_length}")
        self.max_length, self.own_multiplier = max_length, own_multiplier
        # The loaded logits and their exponentials (Q0.31), kept for the output pass.
        self.logits = Memory(shape=signed(8), depth=max_length, init=[])
        self.exps = Memory(shape=signed(32), depth=max_length, init=[])
        super().__init__({
            "i_stream": In(stream.Signature(signed(8))),
            "o_stream": Out(stream.Signature(signed(8))),
            "length": In(range(1, max_length + 1)),
            "input_multiplier": In(signed(32)),
            "input_left_shift": In(range(32)),
            "diff_min": In(signed(32)),
            # One cycle high per exponential stored (every ~100 cycles): the long compute
            # phases have no stream handshake for the accelerator's watchdog to see.
            "progress": Out(1),
            **({} if own_multiplier else {"multiplier": Out(multiplier_signature())}),
        })

    @staticmethod
    def vector_cycles(length: int) -> int:
        """Cycles from the first logit accepted to the last probability taken, when the
        streams never stall."""
        per_logit = (1                                            # LOAD
                     + READ_STATES + EXP_MULTIPLIES * MULTIPLY_STATES
                     + EXP_EXTRA_WRITEBACKS + 2                   # EXP_CONTRIB, EXP_STORE
                     + READ_STATES + MULTIPLY_STATES - 1 + 4)     # OUT .. ROUND, SHIFT, WB,
                                                                  # SEND
        return (per_logit * length + 1 + 2 + RECIP_MULTIPLIES * MULTIPLY_STATES
                + RECIP_EXTRA_WRITEBACKS)

    def elaborate(self, platform):
        m = Module()

        m.submodules.logits = logits = self.logits
        m.submodules.exps = exps = self.exps
        logit_wr, logit_rd = logits.write_port(), logits.read_port(domain="comb")
        exp_wr, exp_rd = exps.write_port(), exps.read_port(domain="comb")

        index = Signal(range(self.max_length))
        last_index = Signal(range(self.max_length))
        m.d.sync += last_index.eq(self.length - 1)
        last = index == last_index
        m.d.comb += [logit_wr.addr.eq(index), logit_rd.addr.eq(index),
                     exp_wr.addr.eq(index), exp_rd.addr.eq(index)]

        # The one multiplier: an issue state registers which operands (`choose`), the next
        # cycle loads them, then the pipelined SaturatingRoundingDoublingHighMul
        # (`PIPELINE_STAGES` states, running every cycle: an operand register, then
        # `srdhm_pipeline`, as the Requantizer lends it, then the high word registered here),
        # then the write-back state, which reads that register.
        mul_a, mul_b = Signal(signed(32)), Signal(signed(32))
        if self.own_multiplier:
            own_a, own_b = Signal(signed(32)), Signal(signed(32))
            m.d.sync += [own_a.eq(mul_a), own_b.eq(mul_b)]
            product_high = srdhm_pipeline(m, own_a, own_b, 1, "srdhm", platform)
        else:
            product_high = self.multiplier.high
            m.d.comb += [self.multiplier.a.eq(mul_a), self.multiplier.b.eq(mul_b)]
        high = Signal(signed(32))
        m.d.sync += high.eq(product_high)
        maximum = Signal(signed(8))
        held, held_valid, load_done = Signal(signed(8)), Signal(), Signal()
        taken = Signal(range(self.max_length))
        # A logit (and its exponential) read from their block RAMs into registers, then its
        # difference from the maximum and the range test in a state of their own.
        read_data, logit = Signal(signed(8)), Signal(signed(8))
        exp_read, exp_value = Signal(signed(32)), Signal(signed(32))
        diff, in_range = Signal(signed(9)), Signal()
        scaled_diff, recip_doubled = Signal(signed(32)), Signal(signed(32))

        def read_logit(state, then, *, exp=False):
            # Yosys folds the first register into a block RAM's read port, whose output is
            # slow (about 6 ns): a second register holds the logit (and the exponential:
            # read straight into the multiplier's operand select it was the 45F's slowest
            # path, 10.35 ns) before any logic.
            with m.State(state):
                m.d.sync += read_data.eq(logit_rd.data)
                if exp:
                    m.d.sync += exp_read.eq(exp_rd.data)
                m.next = state + "_HOLD"
            with m.State(state + "_HOLD"):
                m.d.sync += logit.eq(read_data)
                if exp:
                    m.d.sync += exp_value.eq(exp_read)
                m.next = state + "_DIFF"
            with m.State(state + "_DIFF"):
                m.d.sync += diff.eq(logit - maximum)
                m.next = state + "_RANGE"
            with m.State(state + "_RANGE"):
                # The multiplier operands that need a shifter, registered here so that the
                # issue states only select registers (the operand mux was the 45F's path).
                m.d.sync += [in_range.eq(diff >= self.diff_min),
                             scaled_diff.eq(wrap32(diff << self.input_left_shift)),
                             recip_doubled.eq(saturating_left_shift(recip, 1))]
                m.next = then

        # Working registers of exp_on_negative_values; the reciprocal reuses two of them.
        x, x2, x3, t, u = (Signal(signed(32), name=n) for n in ("x", "x2", "x3", "t", "u"))
        half_denominator, recip = x, x2
        barrel_bits = Signal(len(EXP_BARREL))
        input_is_zero = Signal()
        total = Signal(signed(32))
        out_exponent = Signal(range(34))
        headroom = Signal(range(33))
        nudged = Signal(signed(33))
        shifted = Signal(signed(32))
        # `rounding_nudge(high, out_exponent)` split: its exponent-only parts are registers
        # computed every cycle (out_exponent holds from RECIP_NORMALIZE to the end, many
        # cycles before OUT_ROUND), so OUT_ROUND is a 2:1 select into one adder.
        out_half, out_half_less = Signal(32), Signal(32)
        half = rounding_half(out_exponent)
        m.d.sync += [out_half.eq(half), out_half_less.eq(half - (out_exponent != 0))]

        # The barrel multiplies t * exp(-2^k), k = -2 .. 4, are one loop of the FSM's states,
        # run len(EXP_BARREL) times: the constant is a register read from a table by the
        # loop's index, and the write-back, t = high if the remainder's next bit is set, is
        # enabled by `barrel_wb` (a register set in the multiply's last pipeline state) and
        # the lowest bit of `barrel_bits` (shifted down after each), not decoded from the
        # state. Unrolled, the seven issue states' operand decodes and the state decode into
        # t's select were the 45F's slowest paths (99.03 and 92.28 MHz), across the die.
        barrel_wb = Signal()
        m.d.sync += barrel_wb.eq(0)
        barrel_index = Signal(range(len(EXP_BARREL)))
        barrel_constant = Signal(signed(32))
        m.d.sync += barrel_constant.eq(Array(Const(c, signed(32)) for c in EXP_BARREL)
                                       [barrel_index])

        def multiply(state, a, b, then, last_stage=()):
            """State `state` issues a * b (`choose`), then the operand load and the pipeline
            (`{state}_MUL0` ..), the last of which runs `last_stage` and goes to `then`."""
            stages = [f"{state}_MUL{k}" for k in range(1 + PIPELINE_STAGES)]
            with m.State(state):
                m.d.sync += choose(a, b)
                m.next = stages[0]
            for k, stage in enumerate(stages):
                with m.State(stage):
                    if k + 1 < len(stages):
                        m.next = stages[k + 1]
                    else:
                        m.d.sync += list(last_stage)
                        m.next = then

        def multiplies(name, ops, after):
            """Chain of (a, b, write-back statements) multiplies: issue, operand load,
            PIPELINE_STAGES multiply states and write-back."""
            names = [f"{name}_{n}" for n in range(len(ops))] + [after]
            for n, (a, b, writeback) in enumerate(ops):
                multiply(names[n], a, b, names[n] + "_WB0")
                # A write-back is a list of statements, or a tuple of such lists for
                # successive states (a result too many adders deep for one cycle).
                steps = writeback if isinstance(writeback, tuple) else (writeback,)
                wb_names = [f"{names[n]}_WB{k}" for k in range(len(steps))] + [names[n + 1]]
                for k, statements in enumerate(steps):
                    with m.State(wb_names[k]):
                        m.d.sync += statements
                        m.next = wb_names[k + 1]

        # exp_on_negative_values(a, 5) with a = SRDHM(diff << left_shift, input_multiplier).
        # a mod 1/4 - 1/4 lies in [-2^24, -1]: its rescale from Q5.26 to Q0.31 (<< 5) never
        # saturates; adding 1/8 (2^28) centres the polynomial. Bits 24..30 of the remainder
        # select the barrel multipliers exp(-2^k).
        a_mod_quarter_minus_quarter = high[:QUARTER_BITS] - (1 << QUARTER_BITS)
        exp_ops = [
            (scaled_diff, self.input_multiplier, [
                input_is_zero.eq(high == 0),
                barrel_bits.eq(wrap32(a_mod_quarter_minus_quarter - high)[QUARTER_BITS:31]),
                x.eq((a_mod_quarter_minus_quarter << (31 - SCALED_DIFF_FRAC_BITS)) + (1 << 28)),
            ]),
            (x, x, [x2.eq(high)]),
            (x2, x, [x3.eq(high)]),
            (x2, x2, ([u.eq(rounding_divide_by_pot(high, 2))], [t.eq(wrap32(u + x3))])),
            (t, EXP_ONE_THIRD, ([u.eq(wrap32(high + x2))],
                                [u.eq(rounding_divide_by_pot(u, 1))],
                                [t.eq(wrap32(x + u))])),
            (EXP_CONSTANT_TERM, t, [t.eq(wrap32(EXP_CONSTANT_TERM + high))]),
        ]

        # one_over_one_plus_x_for_x_in_0_1: a first guess and three Newton-Raphson steps.
        recip_ops = [(half_denominator, RECIP_NEG_32_OVER_17,
                      [recip.eq(wrap32(RECIP_48_OVER_17 + high))])]
        for _ in range(3):
            recip_ops += [(half_denominator, recip, [t.eq(wrap32(RECIP_ONE - high))]),
                          (recip, t, ([t.eq(saturating_left_shift(high, 2))],
                                      [recip.eq(wrap32(recip + t))]))]

        # Operand sources: each distinct register gets a one-hot select bit, constants go
        # through a register of their own; an issue state sets them, and every cycle the
        # operand registers take the AND-OR of the selected sources.
        pairs = ([(a, b) for a, b, _ in exp_ops + recip_ops] +
                 [(t, barrel_constant), (recip_doubled, exp_value)])
        operands = []
        for side, reg in ((0, mul_a), (1, mul_b)):
            sources = []
            for pair in pairs:
                if not isinstance(pair[side], int) and \
                        not any(pair[side] is src for src in sources):
                    sources.append(pair[side])
            select = Signal(len(sources), name=f"mul_{'ab'[side]}_select")
            constant = Signal(signed(32), name=f"mul_{'ab'[side]}_constant")
            value = constant
            for k, src in enumerate(sources):
                value = value | Mux(select[k], src, 0)
            m.d.sync += reg.eq(value)
            operands.append((sources, select, constant))

        def choose(*pair):
            """The issue of a multiply of pair = (a, b): their selects and constants."""
            statements = []
            for operand, (sources, select, constant) in zip(pair, operands):
                if isinstance(operand, int):
                    statements += [select.eq(0), constant.eq(operand)]
                else:
                    k = next(k for k, src in enumerate(sources) if src is operand)
                    statements += [select.eq(1 << k), constant.eq(0)]
            return statements

        with m.FSM() as fsm:
            with m.State("LOAD"):
                # A logit lands in `held` before it is compared or stored: the input comes
                # through the activation reader's ring and byte select, too far for a compare
                # and a clock enable in the same cycle. `ready` is a register of its own.
                take = self.i_stream.valid & ~load_done
                m.d.comb += self.i_stream.ready.eq(~load_done)
                m.d.sync += [total.eq(0), held.eq(self.i_stream.payload), held_valid.eq(take)]
                with m.If(take):
                    m.d.sync += [taken.eq(taken + 1), load_done.eq(taken == last_index)]
                m.d.comb += [logit_wr.data.eq(held), logit_wr.en.eq(held_valid)]
                with m.If(held_valid):
                    with m.If((index == 0) | (held > maximum)):
                        m.d.sync += maximum.eq(held)
                    m.d.sync += index.eq(Mux(last, 0, index + 1))
                    with m.If(last):
                        m.d.sync += [taken.eq(0), load_done.eq(0)]
                        m.next = "EXP_READ"

            read_logit("EXP_READ", "EXP_0")
            multiplies("EXP", exp_ops, after="EXP_BARREL")
            multiply("EXP_BARREL", t, barrel_constant, "EXP_BARREL_WB", [barrel_wb.eq(1)])
            with m.State("EXP_BARREL_WB"):
                with m.If(barrel_index == len(EXP_BARREL) - 1):
                    m.d.sync += barrel_index.eq(0)
                    m.next = "EXP_CONTRIB"
                with m.Else():
                    m.d.sync += barrel_index.eq(barrel_index + 1)
                    m.next = "EXP_BARREL"
            with m.State("EXP_CONTRIB"):
                # The exponential and its contribution to the sum, then the add.
                exp = Mux(input_is_zero, INT32_MAX, t)
                m.d.sync += [t.eq(exp),
                             u.eq(Mux(in_range,
                                      rounding_divide_by_pot(exp, ACCUMULATION_INTEGER_BITS), 0))]
                m.next = "EXP_STORE"
            with m.State("EXP_STORE"):
                m.d.comb += [exp_wr.data.eq(t), exp_wr.en.eq(1), self.progress.eq(1)]
                m.d.sync += [total.eq(wrap32(total + u)),
                             index.eq(Mux(last, 0, index + 1))]
                with m.If(last):
                    m.next = "RECIP_SETUP"
                with m.Else():
                    m.next = "EXP_READ"

            with m.State("RECIP_SETUP"):
                m.d.sync += headroom.eq(count_leading_zeros(total))
                m.next = "RECIP_NORMALIZE"
            with m.State("RECIP_NORMALIZE"):
                # GetReciprocal normalises the sum (>= 2^19) to 2^31 (1 + x), x in [0, 1), so
                # RoundingHalfSum(x, INT32_MAX) = (x + INT32_MAX + 1) / 2 is just the normalised
                # sum halved: (1 + x) / 2 in Q0.31.
                m.d.sync += [half_denominator.eq((total.as_unsigned() << headroom)[1:32]),
                             # (ACCUMULATION_INTEGER_BITS - headroom) + 31 - 8
                             out_exponent.eq(ACCUMULATION_INTEGER_BITS + 23 - headroom)]
                m.next = "RECIP_0"
            multiplies("RECIP", recip_ops, after="OUT_READ")
            read_logit("OUT_READ", "OUT", exp=True)

            multiply("OUT", recip_doubled, exp_value, "OUT_ROUND")
            with m.State("OUT_ROUND"):
                # RoundingDivideByPOT(high, out_exponent) as its add, then its shift in OUT_WB.
                m.d.sync += nudged.eq(high + Mux(high < 0, out_half_less, out_half))
                m.next = "OUT_SHIFT"
            with m.State("OUT_SHIFT"):
                m.d.sync += shifted.eq(wrap32(nudged >> out_exponent))
                m.next = "OUT_WB"
            with m.State("OUT_WB"):
                # clamp(shifted - 128, -128, 127) without an adder: shifted < 0 gives -128,
                # shifted > 255 gives 127, else its low byte with the top bit flipped.
                probability = Mux(shifted < 0, -128,
                                  Mux(shifted[8:].any(), 127,
                                      (shifted[:8] ^ 0x80).as_signed()))
                m.d.sync += [self.o_stream.payload.eq(Mux(in_range, probability, -128)),
                             self.o_stream.valid.eq(1)]
                m.next = "OUT_SEND"
            with m.State("OUT_SEND"):
                with m.If(self.o_stream.ready):
                    m.d.sync += [self.o_stream.valid.eq(0), index.eq(Mux(last, 0, index + 1))]
                    with m.If(last):
                        m.next = "LOAD"
                    with m.Else():
                        m.next = "OUT_READ"
        with m.If(barrel_wb):
            m.d.sync += barrel_bits.eq(barrel_bits >> 1)
            with m.If(barrel_bits[0]):
                m.d.sync += t.eq(high)
        one_hot(fsm)
        return m
