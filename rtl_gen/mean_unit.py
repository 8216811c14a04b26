"""Global average pool (TFLite MEAN over H and W), bit-exact with `quantize.reference.mean_hw`."""
from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .requant import Requantizer, requant_layout, wrap32



class MeanUnit(wiring.Component):
    """Per-channel mean of an int8 NHWC feature map, `lanes` channels per beat.

    Input: pixel by pixel, each pixel as ceil(channels / lanes) beats in channel order (lanes past
    `channels` in a pixel's last beat are ignored). Each beat is taken in the cycle it is offered,
    one per clock. Per channel the unit keeps sum(x - input_zp), which equals TFLite's
    total - input_zp * count without a multiplier, in a memory of ceil(max_channels / lanes)
    rows read-modify-written in a three-stage pipeline (read, registered read data, write;
    the transparent read port and a forward of the previous write keep one group per pixel
    exact too).

    After the last beat it streams the rows through a `Requantizer` with the 1/count-folded
    multiplier and shift (`reference.mean_multiplier`, computed by the host) and clamps to
    [-128, 127]: ceil(channels / lanes) output beats, the first Requantizer.LATENCY + 4
    cycles after the last input beat when not back-pressured. With `own_requantizer` False
    the rows leave on `to_requant` instead (a registered output), for the accelerator's
    shared Requantizer (which the accelerator sets to output_zp and [-128, 127]), the first 4
    cycles after the last input beat. Then it is ready for the next map.
    channels, pixels and the quantization inputs must be set at least one cycle before the
    first beat (the last group and pixel indices are registered from them: their compares
    steer the FSM and the sums' write enable) and hold until the last output.

    A map too large for one pass arrives as several parts of `pixels` pixels each (the bands
    of a MEAN tiled through DDR): `accumulate` adds a part to the sums left by the previous
    one instead of starting from zero, and `emit` low ends a part without output, ready for
    the next. The parts together may hold at most `max_pixels` pixels (the sums' width).
    """

    def __init__(self, lanes: int = 8, max_channels: int = 1024, max_pixels: int = 256,
                 own_requantizer: bool = True):
        if lanes < 1 or lanes & (lanes - 1):
            raise ValueError(f"lanes must be a power of two, got {lanes}")
        self.lanes = lanes
        self.depth = -(-max_channels // lanes)
        self.max_pixels = max_pixels
        # |sum(x - zp)| <= 255 * pixels; wider than 32 bits it wraps like TFLite's int32 total.
        self.sum_shape = signed((255 * max_pixels).bit_length() + 1)
        beat = data.ArrayLayout(signed(8), lanes)
        self.own_requantizer = own_requantizer
        out = ({"o_stream": Out(stream.Signature(beat))} if own_requantizer else
               {"to_requant": Out(stream.Signature(requant_layout(lanes)))})
        super().__init__({
            "i_stream": In(stream.Signature(beat)),
            **out,
            "channels": In(range(1, max_channels + 1)),
            "pixels": In(range(1, max_pixels + 1)),
            "input_zp": In(signed(8)),
            "output_zp": In(signed(8)),
            "multiplier": In(signed(32)),
            "shift": In(signed(6)),
            "accumulate": In(1),
            "emit": In(1, init=1),
        })

    def elaborate(self, platform):
        m = Module()
        lanes = self.lanes

        if self.own_requantizer:
            m.submodules.requant = requant = Requantizer(lanes)
            m.d.comb += [
                requant.output_zp.eq(self.output_zp),
                requant.act_min.eq(-128),
                requant.act_max.eq(127),
                self.o_stream.valid.eq(requant.o_stream.valid),
                requant.o_stream.ready.eq(self.o_stream.ready),
            ]
            for k, lane in enumerate(requant.lanes_of(requant.o_stream.payload)):
                m.d.comb += self.o_stream.payload[k].eq(lane)
            to_requant = requant.i_stream
        else:
            to_requant = self.to_requant

        m.submodules.sums = sums = Memory(shape=data.ArrayLayout(self.sum_shape, lanes),
                                          depth=self.depth, init=[])
        wr = sums.write_port()
        rd = sums.read_port(transparent_for=(wr,))

        groups = (self.channels + lanes - 1) >> (lanes.bit_length() - 1)
        group = Signal(range(self.depth))
        pixel = Signal(range(self.max_pixels))
        last_group_index = Signal(range(self.depth))
        last_pixel_index = Signal(range(self.max_pixels))
        m.d.sync += [last_group_index.eq(groups - 1), last_pixel_index.eq(self.pixels - 1)]
        last_group = group == last_group_index

        # Read-modify-write in three stages: A the accepted beat (its row is read), B the
        # row's old sums registered (the block RAM's output is slow), C the sums written. A
        # row written in C is seen by a read in the same cycle (transparent port); the row
        # read one beat earlier is one write short, so C forwards its own previous sums.
        # Whether to forward is decided a stage ahead, as a register: the group compare
        # stays out of the add in front of the block RAM's write port.
        def stage(name):
            return SimpleNamespace(
                beat=Signal(data.ArrayLayout(signed(9), lanes), name=f"{name}_beat"),
                group=Signal(range(self.depth), name=f"{name}_group"),
                first=Signal(name=f"{name}_first"), valid=Signal(name=f"{name}_valid"))

        a, b = stage("a"), stage("b")
        b_sums = Signal(data.ArrayLayout(self.sum_shape, lanes))
        c_sums = Signal(data.ArrayLayout(self.sum_shape, lanes))
        m.d.sync += [a.valid.eq(0),
                     b.beat.eq(a.beat), b.group.eq(a.group), b.first.eq(a.first),
                     b.valid.eq(a.valid), b_sums.eq(rd.data)]
        forward = Signal()
        m.d.sync += forward.eq(b.valid & (b.group == a.group))
        m.d.comb += [wr.addr.eq(b.group), wr.en.eq(b.valid)]
        for k in range(lanes):
            old = Mux(b.first, 0, Mux(forward, c_sums[k], b_sums[k]))
            m.d.comb += wr.data[k].eq(old + b.beat[k])
        m.d.sync += c_sums.eq(wr.data)

        # The drain: rows read one ahead into a registered output.
        out_valid = Signal()
        out_sums = Signal(data.ArrayLayout(self.sum_shape, lanes))
        lanes_in = [to_requant.payload] if lanes == 1 else \
            [to_requant.payload[k] for k in range(lanes)]
        m.d.comb += to_requant.valid.eq(out_valid)
        for k, lane in enumerate(lanes_in):
            m.d.comb += [lane.acc.eq(wrap32(out_sums[k])),
                         lane.multiplier.eq(self.multiplier),
                         lane.shift.eq(self.shift)]
        with m.If(to_requant.ready):
            m.d.sync += out_valid.eq(0)

        m.d.comb += rd.addr.eq(group)
        with m.FSM():
            with m.State("ACCUMULATE"):
                m.d.comb += self.i_stream.ready.eq(1)
                with m.If(self.i_stream.valid):
                    m.d.sync += [a.valid.eq(1), a.group.eq(group),
                                 a.first.eq((pixel == 0) & ~self.accumulate),
                                 group.eq(Mux(last_group, 0, group + 1))]
                    m.d.sync += [a.beat[k].eq(self.i_stream.payload[k] - self.input_zp)
                                 for k in range(lanes)]
                    with m.If(last_group):
                        m.d.sync += pixel.eq(pixel + 1)
                        with m.If(pixel == last_pixel_index):
                            m.d.sync += pixel.eq(0)
                            with m.If(self.emit):
                                m.next = "FLUSH"
            with m.State("FLUSH"):
                # The last beat is in stage B; its write (stage C) is next cycle.
                m.next = "FETCH"
            with m.State("FETCH"):
                # Row 0 is read now (transparent to the last beat's write).
                m.next = "DRAIN"
            with m.State("DRAIN"):
                # Load the output register whenever it is free or being taken, and read the
                # next row behind it.
                with m.If(~out_valid | to_requant.ready):
                    m.d.sync += [out_sums.eq(rd.data), out_valid.eq(1)]
                    m.d.comb += rd.addr.eq(group + 1)
                    m.d.sync += group.eq(group + 1)
                    with m.If(last_group):
                        m.d.sync += group.eq(0)
                        m.next = "ACCUMULATE"
                with m.Else():
                    m.d.comb += rd.en.eq(0)
        return m
