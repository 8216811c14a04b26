"""Pointwise engine: a `pw_out` x `pw_in` int8 MAC array producing int32 accumulators.

One engine serves every matrix-shaped layer of MobileNet:

* 1x1 convolutions: each output pixel is a dot product over the input channels;
* the dense layer: a 1x1 convolution on a 1x1 image;
* the first 3x3 stride-2 convolution: the host im2col's the input image
  (`firmware.layout.im2col_3x3`, out-of-image taps holding the zero point), so each output
  pixel's 3x3xC patch becomes the "input channels" of a 1x1 convolution whose weights are
  the conv filters flattened as `w.reshape(Cout, -1)` (TFLite's (Cout, KH, KW, Cin) order).

Schedule (driven by the sequencer; the engine itself only sees steps): the input channels
are padded to a multiple of `pw_in` and the output channels to a multiple of `pw_out`.
For each tile of `pw_out` output channels, keep that tile's weights stationary in the
weight buffer and, for each pixel, stream its K/pw_in steps: step k carries input channels
[k*pw_in, (k+1)*pw_in) of the pixel on `act` and the matching pw_out x pw_in weights on
`weight`. The step with `first` set also takes one beat of the tile's biases from `bias`;
the step with `last` set completes the pixel, whose pw_out accumulators then come out of
`acc`. A layer therefore takes H*W*ceil(Cout/pw_out)*ceil(Cin/pw_in) cycles plus `latency`
when nothing stalls.

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
    """`pw_out` x `pw_in` multiply-accumulate array, one step per cycle.

    Ports:
      input_zp: activation zero point, sampled with every accepted `act` beat (hold it
                constant for a layer).
      act, weight: one beat each per step, consumed together.
      bias: one beat per pixel, consumed with that pixel's `first` step (when that step
            reaches the accumulators, so a missing bias beat stalls the pipeline).
      acc: the pw_out int32 accumulators of a pixel; bias + sum((x - zp) * w), wrapping
           modulo 2**32 like an int32 register.

    Pipeline: register (x - zp) and w, register the products, one register per adder-tree
    level, then the accumulators, which drive `acc.payload` directly. `acc.valid` rises
    `latency` = log2(pw_in) + 3 cycles after the `last` step is accepted. The whole
    pipeline advances together and freezes only while a finished pixel waits on
    `acc.ready`, so the accumulators can double as the output register: the next pixel's
    first step reaches them only once the previous result has been taken.
    """

    def __init__(self, cfg: AccelConfig):
        self.cfg = cfg
        self.latency = exact_log2(cfg.pw_in) + 3
        super().__init__({
            "input_zp": In(signed(8)),
            "act": In(stream.Signature(act_layout(cfg))),
            "weight": In(stream.Signature(weight_layout(cfg))),
            "bias": In(stream.Signature(acc_layout(cfg))),
            "acc": Out(stream.Signature(acc_layout(cfg))),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        en = Signal()
        pipe = StallPipe(m, en)

        accept = Signal()
        m.d.comb += [
            accept.eq(self.act.valid & self.weight.valid & en),
            self.act.ready.eq(self.weight.valid & en),
            self.weight.ready.eq(self.act.valid & en),
        ]

        # Stage 0: zero-point subtraction (9 bits signed) next to the weights.
        flags = pipe.stage(Cat(accept, self.act.payload.first, self.act.payload.last),
                           shape=_FLAGS, name="s0_flags")
        diff = [pipe.stage(self.act.payload.data[i] - self.input_zp, name=f"s0_x{i}")
                for i in range(cfg.pw_in)]
        weight = [[pipe.stage(self.weight.payload[o][i], name=f"s0_w{o}_{i}")
                   for i in range(cfg.pw_in)] for o in range(cfg.pw_out)]

        # Stage 1: products, 9 x 8 -> 17 bits signed.
        terms = [[pipe.stage(diff[i] * weight[o][i], name=f"s1_p{o}_{i}")
                  for i in range(cfg.pw_in)] for o in range(cfg.pw_out)]
        flags = pipe.stage(flags, name="s1_flags")

        # Adder tree, one registered level per halving.
        level = 2
        while len(terms[0]) > 1:
            terms = [[pipe.stage(row[k] + row[k + 1], name=f"s{level}_t{o}_{k // 2}")
                      for k in range(0, len(row), 2)] for o, row in enumerate(terms)]
            flags = pipe.stage(flags, name=f"s{level}_flags")
            level += 1

        # Accumulators, which double as the output register.
        out_valid = Signal()
        acc = [Signal(ACC_SHAPE, name=f"acc{o}") for o in range(cfg.pw_out)]
        need_bias = flags.valid & flags.first
        m.d.comb += [
            en.eq((~out_valid | self.acc.ready) & (~need_bias | self.bias.valid)),
            self.bias.ready.eq(en & need_bias),
            self.acc.valid.eq(out_valid),
        ]
        m.d.comb += [self.acc.payload[o].eq(acc[o]) for o in range(cfg.pw_out)]
        with m.If(self.acc.ready):
            m.d.sync += out_valid.eq(0)
        with m.If(en & flags.valid):
            m.d.sync += [acc[o].eq(Mux(flags.first, self.bias.payload[o], acc[o]) + terms[o][0])
                         for o in range(cfg.pw_out)]
            with m.If(flags.last):
                m.d.sync += out_valid.eq(1)
        return m
