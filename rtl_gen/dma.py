"""AXI4 DMA engines that move whole buffers between DDR and the accelerator's streams.

A command is a byte address and a byte length. The address must be aligned to the bus width
and the length must be a multiple of it: the low ``log2(bus_bytes)`` bits of both are ignored
(the accelerator only ever moves whole bus words, so byte lanes would cost logic for nothing).
A command of length 0 completes at once.

Each command is cut into INCR bursts of at most ``cfg.max_burst`` beats that never cross a
4 KiB boundary (`BurstSplitter`). Every response is taken in full even after an error: a
SLVERR/DECERR sets the sticky ``error`` output, but the read side still delivers exactly
``length / bus_bytes`` beats on its data stream (their content is undefined) and the write
side still consumes exactly that many beats from its data stream. The engines behind the
DMA count beats, so this fixed contract is what keeps them from hanging; the AXI subordinate
must answer every request, so the DMA cannot hang either.

A side takes a new command only once the previous one has completed (``busy`` low), and
``done`` pulses for one cycle when it completes.

Timing (what `sim.perf_model` counts): the first AR (AW) is valid 3 cycles after the cycle its
command is accepted (two splitter stages and the address register), then one a cycle while
credits last; a burst waiting for a credit goes out 2 cycles after the burst that frees it
ends (its last R beat, its B). The splitter computes each burst from registers only, so the
issue logic drives nothing but register enables.

All bursts use AXI ID 0, so the subordinate returns read data in order and no reorder
buffer is needed; ``rid``/``bid`` are ignored.

Every AXI and stream output is driven from registers: ``*valid`` never depends on
``*ready`` and the payload holds while valid is high and ready low. Only ``rready`` and the
write data stream's ``ready`` follow the downstream ``ready`` combinationally, which the
protocols allow.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal, Mux
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .axi import AXI4Signature, AXI_BOUNDARY_BYTES, BURST_INCR, forward
from .config import AccelConfig


def _log2(n: int) -> int:
    return n.bit_length() - 1


def dma_command_layout(cfg: AccelConfig) -> data.StructLayout:
    """Payload of a DMA command stream: byte address and byte length."""
    return data.StructLayout({"addr": cfg.addr_width, "length": cfg.addr_width})


class BurstSplitter(wiring.Component):
    """Cuts a transfer, counted in bus beats, into legal AXI INCR bursts.

    Each burst has the smallest of the beats left, ``max_burst`` and the beats left before
    the next 4 KiB boundary. While ``valid``, ``addr``/``beats`` hold the next burst and
    ``next`` consumes it. The same splitter drives the AR channel, the AW channel and, as a
    second instance fed the same command, the W channel's ``wlast`` positions: both write
    instances cut the command identically, so no burst-length queue between AW and W is needed.

    Timing: two register stages, so that ``next`` only moves registers forward. Behind the
    burst in ``addr``/``beats`` sit `rest_addr`/`rest`, the rest of the transfer, from which
    the burst after it is computed every cycle (registers in, registers out); ``next`` moves
    that burst up in the same cycle, so a burst can be taken every cycle. ``load`` fills the
    rest stage, so the first burst is ``valid`` two cycles after ``load``.

    Ports (all addresses and counts in beats, i.e. bytes >> log2(bus_bytes)):
    ``load``, ``load_addr``, ``load_beats`` (in): start a new transfer.
    ``next`` (in): the burst in ``addr``/``beats`` was issued.
    ``valid`` (out): ``addr``/``beats`` hold a burst (``beats`` >= 1).
    ``empty`` (out): no beats left, neither in ``addr``/``beats`` nor behind them.
    """

    def __init__(self, cfg: AccelConfig):
        self.cfg = cfg
        beat_bits = cfg.addr_width - _log2(cfg.bus_bytes)
        super().__init__({
            "load": In(1), "load_addr": In(beat_bits), "load_beats": In(beat_bits),
            "next": In(1),
            "addr": Out(beat_bits), "beats": Out(range(cfg.max_burst + 1)),
            "valid": Out(1), "empty": Out(1),
        })
        # Not ports; the formal invariants read them (`rtl_gen.formal.axi_rules`). The rest
        # stage: `rest` beats from `rest_addr` on, meaningful (as `cap`) only while `more`.
        self.rest_addr = Signal(beat_bits)
        self.rest = Signal(beat_bits)
        self.more = Signal()
        # The cap on the rest stage's first burst: max_burst, or the beats to the page's end.
        self.cap = Signal(range(cfg.max_burst + 1))
        # Beats not yet issued (one bit wider than a count: the formal harness's induction
        # must not see a wrapped sum), and the address of the first (while there are any).
        self.remaining = Signal(beat_bits + 1)
        self.position = Signal(beat_bits)

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        burst_bits = _log2(cfg.max_burst)
        chunk_bits = _log2(AXI_BOUNDARY_BYTES // cfg.bus_bytes) - burst_bits
        rest_addr, rest, more, cap = self.rest_addr, self.rest, self.more, self.cap

        def cap_at(in_last_chunk, offset):
            """Beats before a burst's cut at `offset` beats into its max_burst chunk: max_burst
            divides the page, so only an unaligned start in a page's last chunk stops short."""
            return Mux(in_last_chunk & (offset != 0), cfg.max_burst - offset, cfg.max_burst)

        # The rest stage's first burst is min(rest, cap); the next one starts at the first
        # max_burst boundary above `rest_addr` (one increment, whether or not it is cut), and
        # its cap follows from `rest_addr` without that increment: it lies in the last chunk
        # of its page if `rest_addr` lies in the chunk before.
        offset = rest_addr[:burst_bits]
        chunk = rest_addr[burst_bits:burst_bits + chunk_bits]
        cut = ~cap[burst_bits]                          # cap < max_burst
        next_offset = Mux(cut, 0, offset)
        last = Signal()                                 # the rest is one burst
        m.d.comb += last.eq(rest <= cap)
        with m.If(self.load):
            m.d.sync += [
                rest_addr.eq(self.load_addr), rest.eq(self.load_beats),
                more.eq(self.load_beats != 0), self.valid.eq(0),
                cap.eq(cap_at(self.load_addr[burst_bits:burst_bits + chunk_bits].all(),
                              self.load_addr[:burst_bits])),
            ]
        with m.Elif(more & (~self.valid | self.next)):
            m.d.sync += [
                self.addr.eq(rest_addr),
                self.beats.eq(Mux(last, rest, cap)),
                self.valid.eq(1),
                rest_addr.eq(Cat(next_offset, rest_addr[burst_bits:] + 1)),
                rest.eq(rest - cap),                    # meaningless once `more` drops
                more.eq(~last),
                cap.eq(cap_at(chunk == (1 << chunk_bits) - 2 if chunk_bits else 1, next_offset)),
            ]
        with m.Elif(self.next):
            m.d.sync += self.valid.eq(0)

        m.d.comb += [
            self.empty.eq(~self.valid & ~more),
            self.remaining.eq(Mux(self.valid, self.beats, 0) + Mux(more, rest, 0)),
            self.position.eq(Mux(self.valid, self.addr, rest_addr)),
        ]
        return m


def _side_members(cfg: AccelConfig, data_flow, **axi) -> dict:
    """Ports of one DMA side: its data stream flows `data_flow` (`In` or `Out`) and ``m_axi``
    is `AXI4Signature.from_config(cfg, **axi)`."""
    return {
        "cmd": In(stream.Signature(dma_command_layout(cfg))),
        "data": data_flow(stream.Signature(cfg.bus_bytes * 8)),
        "m_axi": Out(AXI4Signature.from_config(cfg, **axi)),
        "busy": Out(1),
        "done": Out(1),
        "error": Out(1),
        "error_clear": In(1),
    }


def _start_command(m: Module, cmd, active: Signal, splitters, shift: int) -> None:
    """Accept a command when idle and load it into the given burst splitters."""
    m.d.comb += cmd.ready.eq(~active)
    for split in splitters:
        m.d.comb += [
            split.load.eq(cmd.valid & ~active),
            split.load_addr.eq(cmd.payload.addr[shift:]),
            split.load_beats.eq(cmd.payload.length[shift:]),
        ]
    with m.If(cmd.valid & ~active):
        m.d.sync += active.eq(1)


def _issue_addresses(m: Module, split: BurstSplitter, valid, ready, addr, length,
                     credit_ok, shift: int):
    """Drive one address channel (AR or AW) from a splitter; returns the `issue` strobe.

    The channel's valid/addr/len are registers, reloaded only when the channel is empty or
    its current request is being accepted, so a request stays stable until its handshake and
    back-to-back bursts need no idle cycle.
    """
    issue = Signal()
    m.d.comb += [
        issue.eq((~valid | ready) & split.valid & credit_ok),
        split.next.eq(issue),
    ]
    with m.If(issue):
        m.d.sync += [
            valid.eq(1),
            addr.eq(split.addr << shift),
            length.eq(split.beats - 1),
        ]
    with m.Elif(ready):
        m.d.sync += valid.eq(0)
    return issue


def _finish_command(m: Module, dma, active: Signal, finished) -> None:
    """Go idle and pulse ``done`` once `finished`; ``busy`` while a command is active."""
    with m.If(finished):
        m.d.sync += active.eq(0)
    m.d.sync += dma.done.eq(finished)
    m.d.comb += dma.busy.eq(active)


def _sticky(m: Module, flag: Signal, set_: Signal, clear: Signal) -> None:
    """A flag set by `set_` and held until `clear`; setting wins over a simultaneous clear."""
    with m.If(clear):
        m.d.sync += flag.eq(0)
    with m.If(set_):
        m.d.sync += flag.eq(1)


class ReadDMA(wiring.Component):
    """Reads ``length`` bytes from ``addr`` over AXI4 and streams them out, one bus word a beat.

    Keeps up to ``cfg.max_outstanding`` read bursts in flight, counted from the moment a
    request is put on AR until its last R beat is taken, so a long DDR latency is hidden by
    the next bursts' requests.

    Ports: ``cmd`` (in stream of `dma_command_layout`), ``data`` (out stream, ``bus_bytes*8``
    bits, in address order), ``m_axi`` (read-only AXI4 manager), ``busy``, ``done`` (one-cycle
    pulse), ``error`` (sticky: some R beat had SLVERR/DECERR) and ``error_clear`` (in).
    """

    def __init__(self, cfg: AccelConfig):
        self.cfg = cfg
        super().__init__(_side_members(cfg, Out, write=False))
        # Not ports, but visible to the formal harness, whose k-induction invariants need
        # them (`rtl_gen.formal.axi_rules`): read bursts requested on AR whose last R beat
        # has not come, and the splitter holding the bursts not yet requested.
        self.in_flight = Signal(range(cfg.max_outstanding + 1))
        self.split = BurstSplitter(cfg)

    def elaborate(self, platform):
        m = Module()
        cfg, axi, out = self.cfg, self.m_axi, self.data
        shift = _log2(cfg.bus_bytes)
        m.submodules.split = split = self.split
        active = Signal()
        in_flight = self.in_flight

        _start_command(m, self.cmd, active, [split], shift)

        m.d.comb += [axi.arsize.eq(shift), axi.arburst.eq(BURST_INCR), axi.arid.eq(0)]
        issue = _issue_addresses(m, split, axi.arvalid, axi.arready, axi.araddr, axi.arlen,
                                 in_flight < cfg.max_outstanding, shift)

        # R -> output stream through one register stage (full throughput, registered valid).
        beat = Signal()
        m.d.comb += [
            axi.rready.eq(~out.valid | out.ready),
            beat.eq(axi.rvalid & axi.rready),
        ]
        with m.If(beat):
            m.d.sync += [out.payload.eq(axi.rdata), out.valid.eq(1)]
        with m.Elif(out.ready):
            m.d.sync += out.valid.eq(0)

        burst_done = beat & axi.rlast
        m.d.sync += in_flight.eq(in_flight + issue - burst_done)
        _sticky(m, self.error, beat & axi.rresp[1], self.error_clear)

        finished = active & split.empty & ~axi.arvalid & (in_flight == 0) & ~out.valid
        _finish_command(m, self, active, finished)
        return m


class WriteDMA(wiring.Component):
    """Writes ``length`` bytes taken from the ``data`` stream to ``addr`` over AXI4.

    AW requests run ahead of the write data by up to ``cfg.max_outstanding`` bursts awaiting
    their B response; W beats flow as soon as the data stream offers them (AXI4 lets W
    precede its AW). The command completes when every B response has come back.

    Ports: ``cmd`` (in stream of `dma_command_layout`), ``data`` (in stream, ``bus_bytes*8``
    bits; exactly ``length / bus_bytes`` beats are taken per command), ``m_axi`` (write-only
    AXI4 manager), ``busy``, ``done`` (one-cycle pulse), ``error`` (sticky: some B had
    SLVERR/DECERR) and ``error_clear`` (in).
    """

    def __init__(self, cfg: AccelConfig):
        self.cfg = cfg
        super().__init__(_side_members(cfg, In, read=False))
        # Not ports, but visible to the formal harness's k-induction invariants: bursts
        # requested on AW without their B, and beats of the current W burst still to come
        # after the one in the W register.
        self.awaiting_b = Signal(range(cfg.max_outstanding + 1))
        self.w_left = Signal(range(cfg.max_burst))
        # The splitters cutting the command for AW and for W's bursts.
        self.aw_split, self.w_split = BurstSplitter(cfg), BurstSplitter(cfg)

    def elaborate(self, platform):
        m = Module()
        cfg, axi, src = self.cfg, self.m_axi, self.data
        shift = _log2(cfg.bus_bytes)
        m.submodules.aw_split = aw_split = self.aw_split
        m.submodules.w_split = w_split = self.w_split
        active = Signal()
        awaiting_b = self.awaiting_b

        _start_command(m, self.cmd, active, [aw_split, w_split], shift)

        m.d.comb += [axi.awsize.eq(shift), axi.awburst.eq(BURST_INCR), axi.awid.eq(0)]
        issue = _issue_addresses(m, aw_split, axi.awvalid, axi.awready, axi.awaddr, axi.awlen,
                                 awaiting_b < cfg.max_outstanding, shift)

        # Data stream -> W through one register stage. `w_left` counts the beats of the current
        # burst still to come after the one in the W register.
        w_left = self.w_left
        take = Signal()
        m.d.comb += [
            axi.wstrb.eq((1 << cfg.bus_bytes) - 1),
            src.ready.eq((~axi.wvalid | axi.wready) & ((w_left != 0) | w_split.valid)),
            take.eq(src.valid & src.ready),
        ]
        with m.If(take):
            m.d.sync += [axi.wdata.eq(src.payload), axi.wvalid.eq(1)]
            with m.If(w_left == 0):
                m.d.comb += w_split.next.eq(1)
                m.d.sync += [axi.wlast.eq(w_split.beats == 1), w_left.eq(w_split.beats - 1)]
            with m.Else():
                m.d.sync += [axi.wlast.eq(w_left == 1), w_left.eq(w_left - 1)]
        with m.Elif(axi.wready):
            m.d.sync += axi.wvalid.eq(0)

        response = Signal()
        m.d.comb += [axi.bready.eq(1), response.eq(axi.bvalid)]
        m.d.sync += awaiting_b.eq(awaiting_b + issue - response)
        _sticky(m, self.error, response & axi.bresp[1], self.error_clear)

        finished = (active & aw_split.empty & ~axi.awvalid & w_split.empty & (w_left == 0) &
                    ~axi.wvalid & (awaiting_b == 0))
        _finish_command(m, self, active, finished)
        return m


class AxiDMA(wiring.Component):
    """A `ReadDMA` and a `WriteDMA` sharing one full AXI4 manager port ``m_axi``.

    The two halves are independent (AXI4's read and write channels are), so no arbitration is
    needed. Ports are those of the halves with ``rd_``/``wr_`` prefixes: ``rd_cmd``,
    ``rd_data``, ``rd_busy``, ``rd_done``, ``rd_error``, ``wr_cmd``, ``wr_data``, ``wr_busy``,
    ``wr_done``, ``wr_error``, and one ``error_clear`` for both sticky error flags.
    """

    def __init__(self, cfg: AccelConfig):
        self.cfg = cfg
        word = cfg.bus_bytes * 8
        super().__init__({
            "rd_cmd": In(stream.Signature(dma_command_layout(cfg))),
            "rd_data": Out(stream.Signature(word)),
            "wr_cmd": In(stream.Signature(dma_command_layout(cfg))),
            "wr_data": In(stream.Signature(word)),
            "m_axi": Out(AXI4Signature.from_config(cfg)),
            "rd_busy": Out(1), "rd_done": Out(1), "rd_error": Out(1),
            "wr_busy": Out(1), "wr_done": Out(1), "wr_error": Out(1),
            "error_clear": In(1),
        })
        # Built here, not in elaborate, so that the formal harness can name their registers.
        self.reader, self.writer = ReadDMA(cfg), WriteDMA(cfg)

    def elaborate(self, platform):
        m = Module()
        m.submodules.reader = reader = self.reader
        m.submodules.writer = writer = self.writer
        forward(m, self.m_axi, reader.m_axi)
        forward(m, self.m_axi, writer.m_axi)
        wiring.connect(m, wiring.flipped(self.rd_cmd), reader.cmd)
        wiring.connect(m, reader.data, wiring.flipped(self.rd_data))
        wiring.connect(m, wiring.flipped(self.wr_cmd), writer.cmd)
        wiring.connect(m, wiring.flipped(self.wr_data), writer.data)
        m.d.comb += [
            self.rd_busy.eq(reader.busy), self.rd_done.eq(reader.done),
            self.rd_error.eq(reader.error),
            self.wr_busy.eq(writer.busy), self.wr_done.eq(writer.done),
            self.wr_error.eq(writer.error),
            reader.error_clear.eq(self.error_clear), writer.error_clear.eq(self.error_clear),
        ]
        return m
