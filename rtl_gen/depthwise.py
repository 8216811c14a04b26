"""Depthwise engine: 3x3 depthwise convolution (depth multiplier 1), stride 1 or 2, 0 or 1
padding row above and below and 0 or 1 padding column left and right, `dw_lanes` channels in
parallel, producing int32 accumulators. That covers TFLite SAME and VALID padding and the
explicit symmetric padding of PyTorch-style graphs (PAD, then a VALID convolution).

Protocol, one channel group at a time:

1. one `tile` beat: the feature map's height, width, stride, padding on each side, input
   zero point, and the group's 3x3 weights and biases (accepted only once the previous group
   has drained);
2. height*width `pixels` beats, one pixel's dw_lanes channels each, in raster order;
3. the engine emits the out_h*out_w output pixels on `acc` in raster order, each the
   dw_lanes accumulators bias + sum((x - zp) * w) over the in-image taps.

Rows are padded explicitly so that a feature map too large for the activation buffers can
run as bands of rows (`firmware.compiler`): a band inside the map carries its neighbours'
halo rows and takes no padding. SAME padding is pad_top = 1 at stride 1 or an odd height
(0 at stride 2 and an even height), pad_bottom = 1, and likewise across a row; VALID is 0 on
every side; PyTorch's padding=1 is 1 on every side (at stride 2 and an even size its last
padding row or column is never reached by a window).

How: each input pixel is read once. A line-buffer memory keeps, per column, the two
previous rows, so with the incoming pixel it yields a full 3-pixel column per cycle, which is
shifted into a 3x3 window. The engine walks the grid of input positions extended by one
padding row below and one padding column to the right (never more is needed at the
bottom/right); the padding positions consume no input. The window ending at grid position
(r, c) covers rows r-2..r and columns c-2..c, and belongs to an output exactly when its top
left corner is (oy*s - p_top, ox*s - p_left) and its last row (column) is at most
height - 1 + pad_bottom (width - 1 + pad_right). Taps outside the image are replaced by the
zero point rather than stored as padding, so stale line-buffer contents from a previous group
never matter.

The products are table lookups, not multipliers: x * w with x + 128 = 16 * hi + lo (two
nibbles) is (w * hi) * 16 + w * lo - 128 * w, and every tap keeps w * n for the 16 values of
a nibble in two 16-entry tables of distributed RAM (ECP5 LUT RAM: a few slices a tap, where a
LUT multiplier was ~200 LUT4s and a DSP block belongs to the MAC array). The tables are
filled after a group loads, one entry a cycle; the data-independent -(zp + 128) * sum(w) is
folded into the bias meanwhile. A tap outside the image looks up the zero point (the value
TFLite pads with), so its share cancels in that correction.

Cycles per group, with the streams never stalling: one to load it, max(0, 10 - W) of the
tables' fill before the walk may start (the rest overlaps the walk's first rows, which only
prime the line buffer), (H+1)*(W+1) grid positions, and 7 to drain the pipeline before the
next group's weights may be loaded (`tile_cycles`).
"""
from __future__ import annotations

from itertools import product

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for

from .config import AccelConfig
from .lut_mul import nibble_sum, sum_tree
from .pointwise import ACC_SHAPE, StallPipe

TAPS = 9
# A tap's product table: w * n for every 4-bit n (|w * n| <= 128 * 15 < 2**11), one
# distributed-RAM block deep (ECP5 TRELLIS_DPR16X4), filled in FILL_CYCLES per group.
TABLE_DEPTH = 16
TABLE_SHAPE = signed(12)
# The walk may start this many cycles minus the width into the fill: no window before grid
# position width + 2 (row 1, column 1) is an output, and a position's tables are read three
# cycles after it is consumed, so starting at fill cycle 10 - width (the load's cycle being
# -1) puts the first possible read after entry 15's write.
WALK_LEAD = 10

# What travels down the pipeline with a grid position: whether the window ending there is an
# output, and which of its tap rows (r-2, r-1, r) and columns (c-2, c-1, c) lie in the image.
_FLAGS = data.StructLayout({"valid": 1, "emit": 1, "rows": 3, "cols": 3})


def pixel_layout(cfg: AccelConfig) -> data.ArrayLayout:
    return data.ArrayLayout(signed(8), cfg.dw_lanes)


def acc_layout(cfg: AccelConfig) -> data.ArrayLayout:
    return data.ArrayLayout(ACC_SHAPE, cfg.dw_lanes)


def tile_layout(cfg: AccelConfig, max_width: int) -> data.StructLayout:
    """Everything one channel group needs. `weights[kh*3 + kw][lane]` matches a row of
    TFLite's (1, 3, 3, C) depthwise filter, so a group's taps are contiguous channels."""
    dim = unsigned(bits_for(max_width))
    return data.StructLayout({
        "height": dim,      # >= 1
        "width": dim,       # 1..max_width
        "stride2": 1,       # 0: stride 1, 1: stride 2
        "pad_top": 1,       # padding rows above (stride 2: 1 shifts windows to odd rows)
        "pad_bottom": 1,    # padding rows below
        "pad_left": 1,      # padding columns before (stride 2: 1 shifts windows to odd columns)
        "pad_right": 1,     # padding columns after
        "input_zp": signed(8),
        "weights": data.ArrayLayout(pixel_layout(cfg), TAPS),
        "bias": acc_layout(cfg),
    })


def _window_ends_output(pos, pad_before, stride2):
    """Whether a window whose last row (column) is grid index `pos` starts at o*s - pad_before
    for some output index o >= 0."""
    return Mux(stride2, Mux(pad_before, pos[0], ~pos[0] & (pos >= 2)),
               Mux(pad_before, pos >= 1, pos >= 2))


class DepthwiseEngine(wiring.Component):
    """Streaming 3x3 depthwise convolution over one channel group at a time.

    Ports: `tile` (parameters and weights of a group), `pixels` (input feature map),
    `acc` (int32 accumulators, wrapping modulo 2**32). `acc.valid` rises `latency` = 7
    cycles after the grid position that completes the output's window is consumed.
    Pipeline: position counters and line-buffer read; 3x3 window shift and line-buffer
    write; the taps' table indices x + 128 (the zero point's outside the image); the two
    nibbles' table reads; products; row sums; corrected bias plus total into the output
    register. It advances as a whole and freezes only while an output waits on `acc.ready`.
    """

    latency = 7

    def __init__(self, cfg: AccelConfig, max_width: int = 224):
        self.cfg, self.max_width = cfg, max_width
        super().__init__({
            "tile": In(stream.Signature(tile_layout(cfg, max_width))),
            "pixels": In(stream.Signature(pixel_layout(cfg))),
            "acc": Out(stream.Signature(acc_layout(cfg))),
        })

    @staticmethod
    def walk_delay(width: int) -> int:
        """Cycles of the table fill before the walk starts (see `WALK_LEAD`)."""
        return max(0, WALK_LEAD - width)

    @classmethod
    def walk_start(cls, width: int) -> int:
        """Cycles from a group's load (the `tile` handshake) to the first cycle its walk may
        consume a pixel: the fill's first cycle, `walk_delay`, the walk's start."""
        return 2 + cls.walk_delay(width)

    @classmethod
    def tile_cycles(cls, height: int, width: int) -> int:
        """Cycles between the starts of consecutive groups when no stream stalls: up to the
        walk's start, the grid and the pipeline's drain (the fill always ends before it)."""
        return cls.walk_start(width) - 1 + (height + 1) * (width + 1) + cls.latency

    def elaborate(self, platform):
        m = Module()
        lanes = self.cfg.dw_lanes
        en = Signal()
        pipe = StallPipe(m, en)

        # Current group and the walk over its (H+1) x (W+1) grid.
        tile = Signal(self.tile.payload.shape())
        busy = Signal()
        height, width = tile.height, tile.width
        row = Signal(len(height) + 1)     # the grid goes one past the last row and column
        col = Signal(len(width) + 1)

        # row == height and col == width as registers of their own, so the walk's handshake
        # never waits on a comparator.
        last_row, last_col = Signal(), Signal()
        pad = last_row | last_col
        advance = Signal()
        m.d.comb += [
            advance.eq(busy & en & (pad | self.pixels.valid)),
            self.pixels.ready.eq(busy & en & ~pad),
        ]
        with m.If(advance):
            with m.If(last_col):
                m.d.sync += [col.eq(0), last_col.eq(0), row.eq(row + 1),
                             last_row.eq(row + 1 == height)]
            with m.Else():
                m.d.sync += [col.eq(col + 1), last_col.eq(col + 1 == width)]

        # Line buffer: entry c holds column c of the previous row ([0]) and the one before ([1]).
        lines = Memory(shape=data.ArrayLayout(pixel_layout(self.cfg), 2),
                       depth=self.max_width + 1, init=[])
        m.submodules.lines = lines
        rd, wr = lines.read_port(), lines.write_port()
        m.d.comb += [rd.addr.eq(col), rd.en.eq(en)]

        # Stage 1: the line-buffer column arrives; push the rows down one entry.
        s1 = pipe.stage(Cat(advance,
                            _window_ends_output(row, tile.pad_top, tile.stride2) &
                            (row < height + tile.pad_bottom) &
                            _window_ends_output(col, tile.pad_left, tile.stride2) &
                            (col < width + tile.pad_right),
                            Cat(row >= 2, row >= 1, row < height),
                            Cat(col >= 2, col >= 1, col < width)),
                        shape=_FLAGS, name="s1")
        x1 = pipe.stage(self.pixels.payload, name="s1_x")
        col1 = pipe.stage(col, name="s1_col")
        m.d.comb += [
            wr.addr.eq(col1),
            wr.data[0].eq(x1),
            wr.data[1].eq(rd.data[0]),
            wr.en.eq(en & s1.valid),
        ]

        # Stage 2: the 3x3 window, win[i][j] = pixel (r-2+i, c-2+j).
        win = [[Signal(pixel_layout(self.cfg), name=f"win{i}{j}") for j in range(3)]
               for i in range(3)]
        with m.If(en & s1.valid):
            for i, newest in enumerate((rd.data[1], rd.data[0], x1)):
                m.d.sync += [win[i][0].eq(win[i][1]), win[i][1].eq(win[i][2]),
                             win[i][2].eq(newest)]
        s2 = pipe.stage(s1, name="s2")

        # Stage 3: each tap's table index, x + 128 as an unsigned byte; a tap outside the
        # image reads the zero point's (the padding value), so its share cancels in `bias_adj`.
        s3_valid = pipe.stage(s2.valid & s2.emit, name="s3_valid")
        zp_index = tile.input_zp.as_unsigned() ^ 0x80
        index = [[[pipe.stage(Mux(s2.rows[i] & s2.cols[j],
                                  win[i][j][k].as_unsigned() ^ 0x80, zp_index),
                              shape=unsigned(8), name=f"s3_u{i}{j}_{k}")
                   for k in range(lanes)] for j in range(3)] for i in range(3)]

        # Stage 4: each tap's two table reads, w * (low nibble) and w * (high nibble) (the
        # DSP blocks belong to the MAC array: these products are LUT RAM). Stage 5: the
        # product (x + 128) * w = (high << 4) + low.
        fill_addr = Signal(range(TABLE_DEPTH))
        filling = Signal()
        fill_acc = [[Signal(TABLE_SHAPE, name=f"fill_{t}_{k}") for k in range(lanes)]
                    for t in range(TAPS)]
        s4_valid = pipe.stage(s3_valid, name="s4_valid")
        nibbles = [[[None] * lanes for _ in range(3)] for _ in range(3)]
        for i, j, k in product(range(3), range(3), range(lanes)):
            reads = []
            for half in range(2):
                table = Memory(shape=TABLE_SHAPE, depth=TABLE_DEPTH, init=[])
                m.submodules[f"table{i}{j}_{k}_{half}"] = table
                write, read = table.write_port(), table.read_port(domain="comb")
                m.d.comb += [write.addr.eq(fill_addr), write.data.eq(fill_acc[3 * i + j][k]),
                             write.en.eq(filling),
                             read.addr.eq(index[i][j][k][4 * half:4 * half + 4])]
                reads.append(pipe.stage(read.data, name=f"s4_t{i}{j}_{k}_{half}"))
            nibbles[i][j][k] = reads
        s5_valid = pipe.stage(s4_valid, name="s5_valid")
        prod = [[[pipe.stage(nibble_sum(*nibbles[i][j][k]), name=f"s5_p{i}{j}_{k}")
                  for k in range(lanes)] for j in range(3)] for i in range(3)]

        # Stage 6: row sums.
        s6_valid = pipe.stage(s5_valid, name="s6_valid")
        rows = [[pipe.stage(prod[i][0][k] + prod[i][1][k] + prod[i][2][k], name=f"s6_r{i}_{k}")
                 for k in range(lanes)] for i in range(3)]

        # Filling the tables: after a group loads, TABLE_DEPTH cycles write entry n = n * w of
        # every tap's two tables (an accumulator adding w per cycle). The walk starts
        # `walk_delay` cycles into the fill, so that the first window that can be an output
        # reads its tables after the last entry is written. Meanwhile the bias takes out what
        # the +128 offset added: bias - (zp + 128) * sum(w), shifted in serially, one bit of
        # zp + 128 a cycle, ready long before the first output.
        fill_last = Signal()
        walk_at = Signal(range(TABLE_DEPTH))
        start_walk = filling & (fill_addr == walk_at)
        with m.If(filling):
            m.d.sync += [fill_addr.eq(fill_addr + 1), fill_last.eq(fill_addr == TABLE_DEPTH - 2)]
            m.d.sync += [fill_acc[t][k].eq(fill_acc[t][k] + tile.weights[t][k])
                         for t in range(TAPS) for k in range(lanes)]
        weight_sum = [Signal(signed(12), name=f"weight_sum_{k}") for k in range(lanes)]
        offset = [Signal(signed(21), name=f"offset_{k}") for k in range(lanes)]
        bias_adj = [Signal(ACC_SHAPE, name=f"bias_adj_{k}") for k in range(lanes)]
        zp_bits = Signal(8)
        m.d.sync += [weight_sum[k].eq(sum_tree([tile.weights[t][k] for t in range(TAPS)]))
                     for k in range(lanes)]
        with m.If(filling):
            with m.If(fill_addr == 0):
                m.d.sync += [zp_bits.eq(zp_index)] + [o.eq(0) for o in offset]
            with m.Elif(fill_addr <= 8):
                m.d.sync += zp_bits.eq(zp_bits << 1)
                m.d.sync += [offset[k].eq((offset[k] << 1) + Mux(zp_bits[7], weight_sum[k], 0))
                             for k in range(lanes)]
            with m.Elif(fill_addr == 9):
                m.d.sync += [bias_adj[k].eq(tile.bias[k] - offset[k]) for k in range(lanes)]

        # Output register.
        out_valid = Signal()
        out = Signal(acc_layout(self.cfg))
        m.d.comb += [
            en.eq(~out_valid | self.acc.ready),
            self.acc.valid.eq(out_valid),
            self.acc.payload.eq(out),
        ]
        with m.If(self.acc.ready):
            m.d.sync += out_valid.eq(0)
        with m.If(en & s6_valid):
            m.d.sync += out_valid.eq(1)
            m.d.sync += [out[k].eq(bias_adj[k] + (rows[0][k] + rows[1][k] + rows[2][k]))
                         for k in range(lanes)]

        # A new group's weights may only be loaded once nothing of the previous one is in flight.
        # Every grid position is tracked to the end of the pipeline, emitting or not, so a group
        # always takes `tile_cycles` whatever its padding.
        # `drained` is a register, computed from the next cycle's flags, so that the load's
        # fan-out (every parameter and weight flip-flop, the walk's counters) starts at a
        # flip-flop rather than at the end of the pipeline's valid chain (on the 45F that
        # chain, the load and the counters' resets crossed the die twice).
        live = [s2.valid]
        for n in range(3, 7):
            live.append(pipe.stage(live[-1], name=f"s{n}_live"))
        drained = Signal(init=1)
        load = self.tile.valid & drained
        finishing = advance & last_col & last_row
        busy_next = Mux(start_walk, 1, busy & ~finishing)
        filling_next = Mux(load, 1, filling & ~fill_last)
        valid_next = [Mux(en, before, now)
                      for before, now in zip([advance, s1.valid] + live[:-1], [s1.valid] + live)]
        m.d.sync += [drained.eq(~busy_next & ~filling_next & ~Cat(*valid_next).any()),
                     busy.eq(busy_next), filling.eq(filling_next)]
        m.d.comb += self.tile.ready.eq(drained)
        with m.If(load):
            width = self.tile.payload.width
            m.d.sync += [tile.eq(self.tile.payload), fill_addr.eq(0), fill_last.eq(0),
                         walk_at.eq(Mux(width >= WALK_LEAD, 0, WALK_LEAD - width)),
                         row.eq(0), col.eq(0), last_row.eq(0), last_col.eq(0)]
            m.d.sync += [acc.eq(0) for taps in fill_acc for acc in taps]
        return m
