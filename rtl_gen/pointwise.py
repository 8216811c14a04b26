"""Pointwise engine: a `pw_out` x `pw_in` int8 MAC array producing int32 accumulators.

One engine serves every matrix-shaped layer of MobileNet:

* 1x1 convolutions: each output pixel is a dot product over the input channels;
* the dense layer: a 1x1 convolution on a 1x1 image;
* the first 3x3 stride-2 convolution: the host im2col's the input image
  (`firmware.layout.im2col`, out-of-image taps holding the zero point), so each output
  pixel's 3x3xC patch becomes the "input channels" of a 1x1 convolution whose weights are
  the conv filters flattened as `w.reshape(Cout, -1)` (TFLite's (Cout, KH, KW, Cin) order).

Schedule (driven by the sequencer; the engine itself only sees steps): the input channels
are padded to a multiple of `pw_in` and the output channels to a multiple of `pw_out`.
For each tile of `pw_out` output channels, keep that tile's weights stationary in the
weight buffer and, for each pixel, stream its K/pw_in steps: step k carries input channels
[k*pw_in, (k+1)*pw_in) of the pixel on `act` and the matching pw_out x pw_in weights on
`weight`. The step with `first` set starts from the tile's biases (`bias`, held for the
tile); the step with `last` set completes the pixel, whose pw_out accumulators then come
out of `acc`. A layer therefore takes H*W*ceil(Cout/pw_out)*ceil(Cin/pw_in) cycles plus
`latency` when its consumer keeps up (see `PointwiseEngine` for the credits).

Padded input lanes must contribute nothing: either their weights are zero (the natural
layout of a padded weight buffer; the activations may then hold anything) or their
activations equal the input zero point.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from .config import AccelConfig
from .dsp import LATENCY as DSP_LATENCY, registered_product

ACC_SHAPE = signed(32)

# Framing that travels down the pipeline next to the data.
_FLAGS = data.StructLayout({"valid": 1, "first": 1, "last": 1})


def act_layout(cfg: AccelConfig) -> data.StructLayout:
    """One step of activations plus the framing of the pixel it belongs to."""
    return data.StructLayout({
        "data": data.ArrayLayout(signed(8), cfg.pw_in),
        "first": 1,     # first step of a pixel: start from the biases
        "last": 1,      # last step of a pixel: emit the accumulators
    })


def weight_layout(cfg: AccelConfig) -> data.ArrayLayout:
    """`weight[o][i]` multiplies activation lane i into output lane o."""
    return data.ArrayLayout(data.ArrayLayout(signed(8), cfg.pw_in), cfg.pw_out)


def acc_layout(cfg: AccelConfig) -> data.ArrayLayout:
    return data.ArrayLayout(ACC_SHAPE, cfg.pw_out)


class StallPipe:
    """Registers of a pipeline that advances as a whole on one shared enable (and freezes as a
    whole, which is how both engines honour back-pressure): `stage(value)` returns a
    register that takes `value` on every enabled cycle."""

    def __init__(self, m: Module, en: Signal):
        self._m, self._en = m, en

    def stage(self, value, *, name: str, shape=None):
        reg = Signal(shape if shape is not None else value.shape(), name=name)
        with self._m.If(self._en):
            self._m.d.sync += reg.eq(value)
        return reg


class PointwiseEngine(wiring.Component):
    """`pw_out` x `pw_in` multiply-accumulate array, one step per cycle, never stalling.

    Ports:
      input_zp: activation zero point, sampled with every accepted `act` beat (hold it
                constant for a layer).
      act, weight: one beat each per step, consumed together.
      bias: the tile's pw_out biases, added when a pixel's `first` step reaches the
            accumulators. Hold it from a tile's first step until its last result is out
            (the sequencer switches channel records only between drained tiles).
      acc: the pw_out int32 accumulators of a pixel, bias + sum((x - zp) * w), wrapping
           modulo 2**32 like an int32 register. A credit stream: `acc.valid` is high for one
           cycle per result and the consumer must take it then, into a queue of `credits`
           entries; it pulses `release` once for every entry it frees.

    Pipeline: register (x - zp) and w; the DSP block's input and output registers around
    each product; one register per adder-tree level; then the accumulators, which drive
    `acc.payload` during the `acc.valid` cycle. `acc.valid` rises `latency` =
    log2(pw_in) + 4 cycles after the `last` step is accepted.

    Why credits: the registers of the array take a new value every cycle and have no clock
    enable, so no back-pressure net fans out over thousands of flip-flops (that enable was
    the slowest path of the design). Back-pressure reaches the engine only at its input: a
    pixel's `last` step is accepted only while a free queue entry is left for its result
    (`credit`, a register), so results in flight never exceed the consumer's queue.
    """

    def __init__(self, cfg: AccelConfig, credits: int = 2):
        if credits < 1:
            raise ValueError(f"credits must be >= 1, got {credits}")
        self.cfg, self.credits = cfg, credits
        self.latency = self.pipeline_latency(cfg)
        super().__init__({
            "input_zp": In(signed(8)),
            "act": In(stream.Signature(act_layout(cfg))),
            "weight": In(stream.Signature(weight_layout(cfg))),
            "bias": In(acc_layout(cfg)),
            "acc": Out(stream.Signature(acc_layout(cfg), always_ready=True)),
            "release": In(1),
        })

    @staticmethod
    def pipeline_latency(cfg: AccelConfig) -> int:
        """Cycles from a pixel's last step to its `acc.valid`: the operand registers, the
        DSP blocks' two, one per adder-tree level, the accumulators."""
        return 1 + DSP_LATENCY + exact_log2(cfg.pw_in) + 1

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg

        # Free entries of the consumer's queue, less the results in flight. `credit` is
        # its registered non-zero flag, so the input handshake never waits on a counter.
        free = Signal(range(self.credits + 1), init=self.credits)
        credit = Signal(init=1)
        accept = Signal()
        both = self.act.valid & self.weight.valid
        room = ~self.act.payload.last | credit
        m.d.comb += [
            accept.eq(both & room),
            self.act.ready.eq(self.weight.valid & room),
            self.weight.ready.eq(self.act.valid & room),
        ]
        taken = accept & self.act.payload.last
        m.d.sync += free.eq(free - taken + self.release)
        # free_next != 0 from compares of the register `free`, selected by the late `taken`
        # in the last LUT rather than fed through the adder.
        m.d.sync += credit.eq(Mux(taken, Mux(self.release, free != 0, free > 1),
                                  Mux(self.release, 1, free != 0)))

        def stage(value, *, name, shape=None):
            reg = Signal(shape if shape is not None else value.shape(), name=name)
            m.d.sync += reg.eq(value)
            return reg

        # Stage 0: zero-point subtraction (9 bits signed) next to the weights.
        flags = stage(Cat(accept, self.act.payload.first, self.act.payload.last),
                      shape=_FLAGS, name="s0_flags")
        diff = [stage(self.act.payload.data[i] - self.input_zp, name=f"s0_x{i}")
                for i in range(cfg.pw_in)]
        weight = [[stage(self.weight.payload[o][i], name=f"s0_w{o}_{i}")
                   for i in range(cfg.pw_in)] for o in range(cfg.pw_out)]

        # Stages 1-2: products, 9 x 8 -> 17 bits signed, in the DSP blocks' own input and
        # output registers (`dsp.registered_product`).
        terms = [[registered_product(m, diff[i], weight[o][i], name=f"s1_p{o}_{i}",
                                     platform=platform)
                  for i in range(cfg.pw_in)] for o in range(cfg.pw_out)]
        for _ in range(DSP_LATENCY):
            flags = stage(flags, name="s1_flags")

        # Adder tree, one registered level per halving.
        level = 1 + DSP_LATENCY
        while len(terms[0]) > 1:
            terms = [[stage(row[k] + row[k + 1], name=f"s{level}_t{o}_{k // 2}")
                      for k in range(0, len(row), 2)] for o, row in enumerate(terms)]
            flags = stage(flags, name=f"s{level}_flags")
            level += 1

        # Accumulators, which double as the output register for the result's cycle.
        acc = [Signal(ACC_SHAPE, name=f"acc{o}") for o in range(cfg.pw_out)]
        m.d.sync += self.acc.valid.eq(flags.valid & flags.last)
        m.d.comb += [self.acc.payload[o].eq(acc[o]) for o in range(cfg.pw_out)]
        with m.If(flags.valid):
            m.d.sync += [acc[o].eq(Mux(flags.first, self.bias[o], acc[o]) + terms[o][0])
                         for o in range(cfg.pw_out)]
        return m
