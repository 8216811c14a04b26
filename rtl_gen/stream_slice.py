"""A register slice for low-rate command streams.

`CommandSlice` holds one item: it takes an item only while empty and offers it from
registers, so neither `o.valid`/`o.payload` nor `i.ready` depends combinationally on the
other side. That cuts every path through the slice, at the price of one item every two
cycles, which costs nothing on a stream of DMA commands (one per transfer). Latency: an
item taken in cycle t is valid at `o` from cycle t+1.
"""
from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out


class CommandSlice(wiring.Component):
    def __init__(self, payload_shape):
        super().__init__({"i": In(stream.Signature(payload_shape)),
                          "o": Out(stream.Signature(payload_shape))})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.i.ready.eq(~self.o.valid)
        with m.If(self.i.valid & ~self.o.valid):
            m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(self.i.payload)]
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        return m
