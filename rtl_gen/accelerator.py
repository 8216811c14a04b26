"""The programmable accelerator: one AXI4 master toward DDR, one AXI4-Lite register port,
an interrupt, and the engines of `rtl_gen` around three on-chip buffers, driven by the
`Sequencer` through a layer program in DDR (`firmware.program`).

Datapath (one layer at a time; the `Sequencer` overlaps parameter loads with compute and
each layer's store with the next layer):

    DDR --ReadDMA--> loader --> input activation buffer --act reader--> PointwiseEngine
                            \\-> weight buffer (2 tile slots) --weight reader--/ DepthwiseEngine
                             \\-> descriptor, channel-record slots 0/1        MeanUnit, SoftmaxUnit
    engines' int32 results --AccSerializer--> Requantizer (lanes) | FloatRequantizer (dense)
    requantized bytes, MEAN, SOFTMAX, -128 padding --writer--> output activation buffer
    previous layer's output buffer --store reader--> WriteDMA --> DDR

The two activation buffers (`cfg.act_buffer_bytes` each) swap roles every layer
(`Sequencer.src`): a layer's output buffer is the next layer's input buffer, so chained layers
never reload their input from DDR, and the store of that output reads it through a second
read port while the next layer computes from it. The weight buffer holds
`cfg.weight_buffer_bytes`; `sequencer.check_fits` tells on the host whether a program fits.
With `cfg.with_add` false the AddUnit and its muxes are left out (only MobileNetV2-style
networks have ADD layers): the sequencer then stops on an ADD descriptor with UNSUPPORTED.
Buffer words are sized so that every chunk moved is one aligned piece of a word
(`sequencer.Geometry`, `buffers`).
"""
from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, ResetInserter, ResetSignal, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from firmware.program import Flags, Opcode

from .add_unit import AddUnit
from .axi import AXI4LiteSignature, AXI4Signature
from .bram import SlicedMemory
from .buffers import BufferReader, BufferWriter, chunk_at, ring_next
from .config import AccelConfig
from .depthwise import DepthwiseEngine
from .dma import AxiDMA, dma_command_layout
from .float_requant import FLOAT_LANE_LAYOUT, FloatRequantizer
from .mean_unit import MeanUnit
from .pointwise import PointwiseEngine
from .regs import RegisterFile
from .requant import Requantizer, requant_layout
from .sequencer import (ErrorCode, Geometry, Limits, LoadDest, Sequencer, check_config,
                        descriptor_layout)
from .softmax_unit import SoftmaxUnit
from .stream_slice import CommandSlice

REGS_ADDR_WIDTH = 12

# One 16-byte channel record (`firmware.layout.channel_params`): the bias, then either the
# quantized multiplier and shift or, with FLOAT_REQUANT, the scale's mantissa and exponent.
RECORD_LAYOUT = data.StructLayout({"bias": signed(32), "word1": 32, "word2": 32, "word3": 32})



def result_queue_depth(cfg: AccelConfig) -> int:
    """Entries of the AccSerializer's result queue: enough that the PointwiseEngine's credits
    never hold back a result the serializer could take. A freed entry returns as a credit
    2 cycles after the pop that frees it, and a result accepted then reaches the queue's head
    `latency` + `drain` cycles later (`drain` = pw_out / lanes requantizer beats per
    result), while the serializer empties one entry every `drain` cycles."""
    drain = cfg.pw_out // Geometry(cfg).lanes
    latency = PointwiseEngine.pipeline_latency(cfg)
    return max(2, -(-(latency + drain + 2) // drain))


class AccSerializer(wiring.Component):
    """Feeds engine results (up to `Geometry.records` int32 lanes each) to the requantizers:
    `Geometry.lanes` lanes per beat to the fixed-point Requantizer, or one lane per beat to
    the FloatRequantizer, each lane with its channel's record.

    Ports: ``acc`` (in stream, the results), ``release`` (out, one pulse per result whose
    last beat has left: a credit back to the PointwiseEngine), ``records`` (in, the channel
    records of the tile or group), ``count`` (in, lanes used: pw_out or dw_lanes),
    ``float_mode`` (in), ``fixed`` and ``float`` (out streams).

    The results wait in a queue of `result_queue_depth` entries, so an engine hands over a
    result as soon as it is complete and goes on computing while the previous ones are
    serialized: a pointwise pixel whose pw_out / lanes beats take no longer than its
    in_c / pw_in steps never stalls the MAC array. ``acc`` has no ready: every result
    offered is taken. The PointwiseEngine never offers more results than there are free
    entries (its credits); a depthwise result is one beat, and with the fixed-point
    Requantizer always ready (the accelerator's output side never back-pressures) it
    leaves the cycle after it arrives, so the DepthwiseEngine never finds the queue full.
    A result taken in cycle t is at the head of the queue in cycle t + 1, and its first
    beat is offered from a register of its own (lanes and records selected a cycle ahead)
    from cycle t + 2.
    """

    def __init__(self, cfg: AccelConfig):
        g = Geometry(cfg)
        self.n, self.lanes = g.records, g.lanes
        self.depth = result_queue_depth(cfg)
        super().__init__({
            "acc": In(stream.Signature(data.ArrayLayout(signed(32), self.n), always_ready=True)),
            "release": Out(1),
            "records": In(data.ArrayLayout(RECORD_LAYOUT, self.n)),
            "count": In(range(self.n + 1)),
            "float_mode": In(1),
            "fixed": Out(stream.Signature(requant_layout(self.lanes))),
            "float": Out(stream.Signature(FLOAT_LANE_LAYOUT)),
        })

    def elaborate(self, platform):
        m = Module()
        n, lanes, depth = self.n, self.lanes, self.depth
        result = data.ArrayLayout(signed(32), n)
        # A ring of entries, written at `tail`, read at `head`: a pop only moves `head` (as a
        # shift queue, each pop enabled every entry's ~1000 bits behind the requantizers'
        # ready: the 45F's critical path), and a push writes one entry at `tail`. The ring is
        # distributed RAM (ECP5 LUT RAM: written on the clock, read without one), as in
        # `BufferReader`: no per-bit select tree over `depth` entries of pw_out int32s.
        queue = m.submodules.queue = Memory(shape=result, depth=depth, init=[])
        write, read = queue.write_port(), queue.read_port(domain="comb")
        head_at, tail_at = Signal(range(depth)), Signal(range(depth))
        head = Signal(result)
        m.d.comb += [head.eq(read.data), read.addr.eq(head_at),
                     write.addr.eq(tail_at), write.data.eq(self.acc.payload),
                     write.en.eq(self.acc.valid)]
        held = Signal(range(depth + 1))
        beat = Signal(range(n))
        # A result's beats less one, from the layer's settings (stable while it runs).
        next_last_beat = (Mux(self.float_mode, self.count, self.count >> exact_log2(lanes)) - 1)
        # `beat == last beat` and `held != 0` kept as registers computed from the next values
        # (equal to the compares in every cycle), so the handshakes wait on no comparator.
        last, valid = Signal(), Signal()

        # The output register: one beat, with its lanes' records, for either requantizer.
        fixed_out = Signal(requant_layout(lanes))
        float_out = Signal(FLOAT_LANE_LAYOUT)
        out_valid = Signal()
        out_ready = Mux(self.float_mode, self.float.ready, self.fixed.ready)
        take = ~out_valid | out_ready
        m.d.comb += [
            self.fixed.valid.eq(out_valid & ~self.float_mode),
            self.float.valid.eq(out_valid & self.float_mode),
            self.fixed.payload.eq(fixed_out),
            self.float.payload.eq(float_out),
        ]
        with m.If(take):
            m.d.sync += out_valid.eq(valid)

        push = self.acc.valid
        pop = valid & take & last
        m.d.sync += self.release.eq(pop)
        next_beat = Mux(valid & take, Mux(last, 0, beat + 1), beat)
        # held + push - pop as a select among held + 1, held - 1 and held (adders on the
        # register alone), `valid` likewise from `held != 1` kept as a register: push (an
        # engine's valid) and pop (the requantizers' ready) meet only the selects (an adder
        # and a compare behind them were the 45F's path at 89.3 MHz).
        held_not_one = Signal(init=1)
        next_held = Mux(push, Mux(pop, held, held + 1), Mux(pop, held - 1, held))
        m.d.sync += [beat.eq(next_beat), held.eq(next_held),
                     last.eq(next_beat == next_last_beat[:len(beat)]),
                     valid.eq(Mux(push, ~pop | valid, Mux(pop, held_not_one, valid))),
                     held_not_one.eq(next_held != 1)]
        with m.If(push):
            m.d.sync += tail_at.eq(ring_next(tail_at, depth))
        with m.If(pop):
            m.d.sync += head_at.eq(ring_next(head_at, depth))

        acc_groups = data.View(data.ArrayLayout(data.ArrayLayout(signed(32), lanes), n // lanes),
                               head.as_value())
        rec_groups = data.View(data.ArrayLayout(data.ArrayLayout(RECORD_LAYOUT, lanes), n // lanes),
                               self.records.as_value())
        rec = self.records[beat]
        with m.If(take):
            for k in range(lanes):
                lane = fixed_out if lanes == 1 else fixed_out[k]
                lane_rec = rec_groups[beat][k]
                m.d.sync += [lane.acc.eq(acc_groups[beat][k]), lane.multiplier.eq(lane_rec.word1),
                             lane.shift.eq(lane_rec.word2[:6])]
            m.d.sync += [float_out.acc.eq(head[beat]),
                         float_out.mantissa.eq(Cat(rec.word1, rec.word2[:21])),
                         float_out.exponent.eq(rec.word3[:12])]
        return m


class Accelerator(wiring.Component):
    """The accelerator top level; see the module docstring for the datapath.

    Ports: ``m_axi`` (AXI4 manager, Verilog ``m_axi__*``), ``s_axi`` (AXI4-Lite subordinate,
    ``s_axi__*``, the `rtl_gen.regs` register map), ``irq`` (level: STATUS.DONE & IRQ_EN).
    A run ends with DONE (and the interrupt) whether it succeeded or not; STATUS.ERROR and
    ERROR_CODE (`sequencer.ErrorCode`) tell which.

    Abort (CTRL.SOFT_RESET, or the watchdog): the sequencer's DMA commands are gated off so
    nothing new is issued, the DMA finishes the commands it already took (read data is
    discarded into the buffers, the store still running keeps feeding its write bursts, so
    every AXI burst completes its handshakes), then the sequencer, buffer readers/writer,
    engines and requantizers get a one-cycle synchronous reset (`ResetInserter`) and the core
    is idle; BUSY stays high while it drains and START is ignored. The register file and the
    DMA are never reset this way.

    Watchdog: a run (sequencer busy) that sees no progress (no AXI handshake on any channel,
    no DMA command or completion, no buffer walk or datapath stream handshake, no softmax
    exponential stored) for `Limits.watchdog_cycles` cycles ends at once with DONE, ERROR and
    ERROR_CODE `ErrorCode.WATCHDOG` (LAYER_COUNT frozen at that moment), and aborts as above.
    It only observes, so it never changes the timing of a run. If the bus never answers an
    outstanding request, the drain cannot finish: BUSY stays high and only the system reset
    recovers the core (an AXI master may not abandon issued bursts).
    """

    def __init__(self, cfg: AccelConfig = AccelConfig(), limits: Limits = Limits()):
        check_config(cfg)
        self.cfg, self.limits = cfg, limits
        self.geometry = Geometry(cfg)
        super().__init__({
            "m_axi": Out(AXI4Signature.from_config(cfg)),
            "s_axi": In(AXI4LiteSignature(addr_width=REGS_ADDR_WIDTH)),
            "irq": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, g, limits = self.cfg, self.geometry, self.limits
        bus = cfg.bus_bytes

        m.submodules.regs = regs = RegisterFile(n_layers=limits.max_layers,
                                                addr_width=REGS_ADDR_WIDTH)
        m.submodules.dma = dma = AxiDMA(cfg)
        seq = Sequencer(cfg, limits)
        # The local resets, one-cycle pulses once an abort has drained the DMA: the
        # sequencer's (with its DMA command slices) first, then the datapath's a cycle later.
        # Two registers, not one: the datapath's reaches ~10,000 flip-flops, and synthesis
        # folds a reset into next-state logic where a flip-flop's own reset cannot take it,
        # so one shared net put that fanout in front of the sequencer's state.
        seq_rst, local_rst = Signal(), Signal()

        def resettable(unit, reset=local_rst):
            return ResetInserter(reset)(unit)

        m.submodules.seq = resettable(seq, seq_rst)
        wiring.connect(m, wiring.flipped(self.s_axi), regs.s_axi)
        wiring.connect(m, dma.m_axi, wiring.flipped(self.m_axi))
        wiring.connect(m, seq.layer_cycles, regs.layer_cycles)

        # ---- abort (soft reset, watchdog) -----------------------------------------------------
        draining = Signal()      # stop issuing, wait for the DMA to finish its commands
        watchdog = Signal()      # the last run ended by the watchdog (ERROR_CODE WATCHDOG)
        held_count = Signal(16)  # LAYER_COUNT when the watchdog fired
        wd_count = Signal(range(max(limits.watchdog_cycles, 2)))
        progress = Signal()
        fire = Signal()
        # DMA commands pass a register slice: the sequencer's state decode then drives a
        # register, not the burst splitters' loads (the 45F's critical path before it).
        for name, cmd, dcmd in (("rd", seq.rd_cmd, dma.rd_cmd), ("wr", seq.wr_cmd, dma.wr_cmd)):
            cslice = m.submodules[f"{name}_cmd_slice"] = resettable(
                CommandSlice(dma_command_layout(cfg)), seq_rst)
            # Only the DMA side is gated while draining: the sequencer may still hand a
            # command to the slice (it and the slice are reset once the DMA is idle), so its
            # next state never waits on `draining` (the 45F's critical path at 85 MHz).
            m.d.comb += [cslice.i.valid.eq(cmd.valid),
                         cslice.i.payload.eq(cmd.payload),
                         cmd.ready.eq(cslice.i.ready),
                         dcmd.valid.eq(cslice.o.valid & ~draining),
                         dcmd.payload.eq(cslice.o.payload),
                         cslice.o.ready.eq(dcmd.ready)]
        m.d.comb += [
            fire.eq(seq.busy & ~draining & ~progress &
                    (wd_count == limits.watchdog_cycles - 1)),
        ]
        # The local resets are registers: as a LUT output, the reset put the DMA's busy flags
        # in front of the sequencer's next state (the CI config's critical path). While the
        # datapath's reset lags by a cycle the sequencer is idle and issues nothing, and
        # `draining` (hence BUSY, and START's gate) ends only after both.
        # The sequencer's state has a reset register of its own, high with `seq_rst` and
        # through the domain's reset (`Sequencer.fsm_reset`): the shared one reaches ~800
        # flip-flops, too slow a net at the head of the FSM's next-state logic.
        seq_rst_next = draining & ~dma.rd_busy & ~dma.wr_busy & ~seq_rst & ~local_rst
        fsm_reset = Signal(init=1, reset_less=True)
        m.d.sync += [seq_rst.eq(seq_rst_next), local_rst.eq(seq_rst),
                     fsm_reset.eq(seq_rst_next | ResetSignal())]
        m.d.comb += seq.fsm_reset.eq(fsm_reset)
        with m.If(progress | ~seq.busy | draining):
            m.d.sync += wd_count.eq(0)
        with m.Else():
            m.d.sync += wd_count.eq(wd_count + 1)
        with m.If(local_rst):
            m.d.sync += draining.eq(0)
        with m.If(regs.soft_reset | fire):
            m.d.sync += draining.eq(1)
        with m.If(regs.soft_reset | (regs.start & ~regs.busy)):
            m.d.sync += watchdog.eq(0)
        with m.If(fire):
            m.d.sync += [watchdog.eq(1), held_count.eq(seq.layer_count)]

        m.d.comb += [
            self.irq.eq(regs.irq),
            seq.start.eq(regs.start & ~draining),
            seq.prog_addr.eq(regs.prog_addr),
            regs.busy.eq(seq.busy | draining),
            regs.done.eq((seq.done & ~draining & ~regs.soft_reset) | fire),
            regs.error.eq((seq.error & ~draining & ~regs.soft_reset) | fire),
            regs.error_code.eq(Mux(watchdog, ErrorCode.WATCHDOG, seq.error_code)),
            regs.layer_count.eq(Mux(watchdog, held_count, seq.layer_count)),
            seq.rd_done.eq(dma.rd_done), seq.rd_error.eq(dma.rd_error),
            seq.wr_done.eq(dma.wr_done), seq.wr_error.eq(dma.wr_error),
            dma.error_clear.eq(seq.dma_error_clear),
        ]

        desc = Signal(descriptor_layout())
        m.d.comb += seq.desc.eq(desc)
        # Channel records: the engines use slot `seq.slot` while the next tile's load fills
        # the other.
        record_layout = data.ArrayLayout(RECORD_LAYOUT, g.record_slots)
        record_slots = [Signal(record_layout, name=f"records{i}") for i in range(2)]
        records = Signal(record_layout)
        m.d.comb += records.eq(Mux(seq.slot, record_slots[1], record_slots[0]))
        op = desc.opcode
        # The layer's kind, decoded into registers: they steer every stream mux of the
        # datapath, and the descriptor only changes while the sequencer fetches (a cycle's lag
        # is never seen by a running layer).
        is_conv, is_dw, is_mean, is_softmax, is_add, is_float = (
            Signal(name=n) for n in ("is_conv", "is_dw", "is_mean", "is_softmax", "is_add",
                                     "is_float"))
        # Without the AddUnit (`cfg.with_add`) the sequencer stops on an ADD before running
        # it: is_add and ctl_add are never set, and the ADD inputs of the muxes below are
        # left out with the unit.
        with_add = cfg.with_add
        m.d.sync += [is_conv.eq(op == Opcode.CONV), is_dw.eq(op == Opcode.DWCONV),
                     is_mean.eq(op == Opcode.MEAN), is_softmax.eq(op == Opcode.SOFTMAX),
                     *([is_add.eq(op == Opcode.ADD)] if with_add else []),
                     is_float.eq((desc.flags & Flags.FLOAT_REQUANT) != 0)]
        # Copies, a cycle later, for the readers' handshakes alone: the first set fans out to
        # every payload mux, too slow a net to sit in front of a block RAM's clock enable
        # (a copy of the same input would be merged back by synthesis).
        ctl_conv, ctl_dw, ctl_mean, ctl_softmax, ctl_add = (
            Signal(name=f"ctl_{n}") for n in ("conv", "dw", "mean", "softmax", "add"))
        m.d.sync += [ctl_conv.eq(is_conv), ctl_dw.eq(is_dw), ctl_mean.eq(is_mean),
                     ctl_softmax.eq(is_softmax), *([ctl_add.eq(is_add)] if with_add else [])]

        # ---- buffers ----------------------------------------------------------------------
        acts = [SlicedMemory(m, f"act{i}", word_bytes=g.act_word, depth=g.act_depth,
                             platform=platform)
                for i in range(2)]
        weights = SlicedMemory(m, "weights", word_bytes=g.weight_word, depth=g.weight_depth,
                               platform=platform)

        def reader(name, mems, select, word, depth, walk, sliced=False, chunk_bytes=0):
            """A BufferReader on its own read port of each of `mems`, reading
            `mems[select]`; `sliced`: its walks pass a `CommandSlice`."""
            r = BufferReader(word_bytes=word, depth=depth, ports=len(mems),
                             chunk_bytes=chunk_bytes if chunk_bytes < word else 0)
            m.submodules[name] = resettable(r)
            # The memories but `mems[select]` read as zero (`select` only changes between
            # layers, with the readers idle).
            for i, mem in enumerate(mems):
                m.d.comb += r.mem_data[i].eq(mem.read_port(
                    r.mem_addr, r.mem_en, selected=(select == i) if len(mems) > 1 else 1))
            if sliced:
                wslice = m.submodules[f"{name}_walk_slice"] = resettable(
                    CommandSlice(r.cmd.payload.shape()))
                wiring.connect(m, walk, wslice.i)
                walk = wslice.o
            wiring.connect(m, walk, r.cmd)
            return r

        act_rd = reader("act_reader", acts, seq.src, g.act_word, g.act_depth, seq.act_walk)
        # The depthwise taps are dw_lanes-byte chunks of a weight word, preselected in the
        # reader's queue (a head select and a byte select were too deep for one cycle).
        weight_rd = reader("weight_reader", [weights], 0, g.weight_word, g.weight_depth,
                           seq.weight_walk, chunk_bytes=cfg.dw_lanes)
        # The store's walk is sliced like its DMA command, so that its first W beat comes
        # the cycle after its AW (a subordinate may hold W until it has the AW).
        store_rd = reader("store_reader", acts, seq.store_src, g.act_word, g.act_depth,
                          seq.store_walk, sliced=True)
        writer = BufferWriter(word_bytes=g.act_word, depth=g.act_depth, lanes=g.lanes)
        m.submodules.writer = resettable(writer)
        wiring.connect(m, seq.out_walk, writer.cmd)
        m.d.comb += [seq.act_idle.eq(act_rd.idle), seq.weight_idle.eq(weight_rd.idle),
                     seq.out_idle.eq(writer.idle)]

        # ---- loader: DMA read words into a buffer or a register ----------------------------
        beat = Signal(range(max(g.act_capacity, g.weight_capacity) // bus + 1))
        word = dma.rd_data.payload
        arrived = dma.rd_data.valid
        m.d.comb += dma.rd_data.ready.eq(1)
        with m.If(seq.rd_cmd.valid & seq.rd_cmd.ready):
            m.d.sync += beat.eq(0)
        with m.Elif(arrived):
            m.d.sync += beat.eq(beat + 1)

        def chunk_enable(word_bytes):
            """One enable bit per bus-wide chunk of a buffer word: the chunk of this beat."""
            per_word = word_bytes // bus
            return Cat(beat[:exact_log2(per_word)] == k for k in range(per_word))

        # Where the beats go, registered: the sequencer holds load_dest from the read command
        # to rd_done, and the command's register slice and the DMA put cycles between it and
        # the first beat, so the lag is never seen, while the FSM's state decode stays away
        # from the enables of the buffers and of the descriptor and record registers.
        to_act, to_weights, to_desc, to_records = (
            Signal(name=f"load_to_{n}") for n in ("act", "weights", "desc", "records"))
        m.d.sync += [to_act.eq(seq.load_dest == LoadDest.ACTIVATIONS),
                     to_weights.eq(seq.load_dest == LoadDest.WEIGHTS),
                     to_desc.eq(seq.load_dest == LoadDest.DESCRIPTOR),
                     to_records.eq(seq.load_dest == LoadDest.RECORDS)]
        act_per_word = g.act_word // bus
        load_act = arrived & to_act
        load_bytes = Cat(bit.replicate(bus) for bit in chunk_enable(g.act_word))
        # The input buffer takes loaded words, the other one the writer's.
        for i, buf in enumerate(acts):
            with m.If(seq.src == i):
                m.d.comb += [buf.w_addr.eq(beat >> exact_log2(act_per_word)),
                             buf.w_data.eq(Cat([word] * act_per_word)),
                             buf.w_en.eq(Mux(load_act, load_bytes, 0))]
            with m.Else():
                m.d.comb += [buf.w_addr.eq(writer.mem_addr), buf.w_data.eq(writer.mem_data),
                             buf.w_en.eq(writer.mem_en)]
        weight_per_word = g.weight_word // bus
        m.d.comb += [
            weights.w_addr.eq(seq.weight_load_word + (beat >> exact_log2(weight_per_word))),
            weights.w_data.eq(Cat([word] * weight_per_word)),
        ]
        with m.If(arrived & to_weights):
            m.d.comb += weights.w_en.eq(Cat(bit.replicate(bus)
                                            for bit in chunk_enable(g.weight_word)))
        # The descriptor and the records take a loaded word a cycle after it arrives, from a
        # register, each bus word of them enabled by a register of its own: the beat decode
        # into their enables crossed the die twice on the 45F (84.8 MHz). The sequencer
        # leaves a load's wait state `_READ_DONE` cycles after its last beat and reads
        # neither before, so the cycle is never seen.
        held_word = Signal.like(word)
        m.d.sync += held_word.eq(word)

        def load_words(target, enable, name):
            words = len(target.as_value()) // (8 * bus)
            we = Signal(words, name=name)
            m.d.sync += we.eq(Mux(enable, Cat(beat == k for k in range(words)), 0))
            for k in range(words):
                with m.If(we[k]):
                    m.d.sync += target.as_value().word_select(k, 8 * bus).eq(held_word)

        load_words(desc, arrived & to_desc, "desc_we")
        for i, reg in enumerate(record_slots):
            load_words(reg, arrived & to_records & (seq.slot != i), f"records{i}_we")

        # ---- engines ------------------------------------------------------------------------
        pw = PointwiseEngine(cfg, credits=result_queue_depth(cfg))
        dw = DepthwiseEngine(cfg, max_width=limits.max_width)
        # The MeanUnit's rows go through the shared Requantizer (idle during a MEAN layer).
        mean = MeanUnit(lanes=g.lanes, max_channels=limits.max_channels,
                        max_pixels=g.mean_pixels, own_requantizer=False)
        # The SoftmaxUnit borrows the Requantizer's first product (idle during a SOFTMAX).
        softmax = SoftmaxUnit(max_length=limits.max_classes, own_multiplier=False)
        m.submodules.pointwise, m.submodules.depthwise = resettable(pw), resettable(dw)
        # The SoftmaxUnit, placed beside the lane it borrows a multiplier from, has a reset
        # register of its own (its input differs from `local_rst`'s, so synthesis keeps both;
        # the domain's reset resets the unit anyway): the shared net, from across the die,
        # was the 45F's slowest path into its FSM's loop registers (89.20 MHz).
        softmax_rst = Signal(reset_less=True)
        m.d.sync += softmax_rst.eq(seq_rst | ResetSignal())
        m.submodules.mean = resettable(mean)
        m.submodules.softmax = resettable(softmax, softmax_rst)
        add = AddUnit(g.lanes) if with_add else None
        if with_add:
            m.submodules.add = resettable(add)

        # Activation reader -> the unit of the current layer, each taking its chunk.
        item = act_rd.data.payload
        act_sinks = ((ctl_conv, pw.act, None), (ctl_dw, dw.pixels, cfg.dw_lanes),
                     (ctl_mean, mean.i_stream, g.lanes), (ctl_softmax, softmax.i_stream, 1))
        if with_add:
            act_sinks += ((ctl_add, add.a, g.lanes),)
        for active, sink, nbytes in act_sinks:
            m.d.comb += sink.valid.eq(act_rd.data.valid & active)
            with m.If(active):
                m.d.comb += act_rd.data.ready.eq(sink.ready)
            if nbytes is not None:
                m.d.comb += sink.payload.eq(chunk_at(item.word, item.addr, nbytes))
        m.d.comb += [pw.act.payload.data.eq(chunk_at(item.word, item.addr, cfg.pw_in)),
                     pw.act.payload.first.eq(item.first), pw.act.payload.last.eq(item.last),
                     pw.input_zp.eq(desc.input_zp)]

        # Weight reader -> the pointwise weight stream, an ADD's second input, or the
        # depthwise taps (9 beats, shifted in so that tap 0 ends at the bottom).
        taps = Signal(data.ArrayLayout(data.ArrayLayout(signed(8), cfg.dw_lanes), 9))
        w_item = weight_rd.data.payload
        tap = w_item.chunk if weight_rd.chunk_bytes else w_item.word
        m.d.comb += [pw.weight.valid.eq(weight_rd.data.valid & ctl_conv),
                     pw.weight.payload.eq(chunk_at(w_item.word, w_item.addr, g.block))]
        if with_add:
            m.d.comb += [add.b.valid.eq(weight_rd.data.valid & ctl_add), add.b.payload.eq(tap),
                         weight_rd.data.ready.eq(Mux(ctl_conv, pw.weight.ready,
                                                     Mux(ctl_add, add.b.ready, 1)))]
        else:
            m.d.comb += weight_rd.data.ready.eq(Mux(ctl_conv, pw.weight.ready, 1))
        # Each tap lands in a register before it is shifted in, so the reader's head select
        # does not also drive the shift register's enables. The sequencer waits for the
        # reader to go idle and then at least two states before DW_TILE takes the taps, so
        # the extra cycle never shows.
        tap_reg, tap_valid = Signal.like(tap), Signal()
        is_tap = weight_rd.data.valid & ~ctl_conv
        if with_add:
            is_tap = is_tap & ~ctl_add
        m.d.sync += [tap_reg.eq(tap), tap_valid.eq(is_tap)]
        with m.If(tap_valid):
            m.d.sync += taps.eq(Cat(taps.as_value()[8 * cfg.dw_lanes:], tap_reg))

        # Per-tile / per-group parameters.
        m.d.comb += [pw.bias[o].eq(records[o].bias) for o in range(cfg.pw_out)]
        tile = dw.tile.payload
        m.d.comb += [dw.tile.valid.eq(seq.tile_valid), seq.tile_ready.eq(dw.tile.ready),
                     tile.height.eq(desc.in_h), tile.width.eq(desc.in_w),
                     tile.stride2.eq(desc.stride == 2), tile.input_zp.eq(desc.input_zp),
                     tile.pad_top.eq(desc.pad_top[0]), tile.pad_bottom.eq(desc.pad_bottom[0]),
                     tile.pad_left.eq(desc.pad_left[0]), tile.pad_right.eq(desc.pad_right[0]),
                     tile.weights.eq(taps)]
        m.d.comb += [tile.bias[k].eq(records[k].bias) for k in range(cfg.dw_lanes)]
        m.d.comb += [mean.channels.eq(desc.in_c), mean.pixels.eq(seq.in_pixels),
                     mean.input_zp.eq(desc.input_zp), mean.output_zp.eq(desc.output_zp),
                     mean.multiplier.eq(desc.multiplier), mean.shift.eq(desc.shift),
                     mean.accumulate.eq((desc.flags & Flags.MEAN_CONTINUE) != 0),
                     mean.emit.eq((desc.flags & Flags.MEAN_PARTIAL) == 0),
                     softmax.length.eq(desc.real_c), softmax.input_multiplier.eq(desc.multiplier),
                     softmax.input_left_shift.eq(desc.shift), softmax.diff_min.eq(desc.aux)]
        # An ADD's input scalings are its two records (`firmware.layout.add_records`).
        if with_add:
            for scale, record in ((add.a_scale, records[0]), (add.b_scale, records[1])):
                m.d.comb += [scale.offset.eq(record.bias[:9].as_signed()),
                             scale.multiplier.eq(record.word1.as_signed()),
                             scale.right_shift.eq((-record.word2.as_signed())[:5])]
            m.d.comb += [add.out_multiplier.eq(desc.multiplier),
                         add.out_shift.eq(desc.shift[:6].as_signed())]

        # ---- requantization ----------------------------------------------------------------
        ser, frq = AccSerializer(cfg), FloatRequantizer()
        rq = Requantizer(g.lanes, lend_multiplier=True)
        m.submodules.serializer, m.submodules.requant = resettable(ser), resettable(rq)
        m.submodules.float_requant = resettable(frq)
        for engine, active, n in ((pw, is_conv, cfg.pw_out), (dw, is_dw, cfg.dw_lanes)):
            with m.If(active):
                m.d.comb += [ser.acc.valid.eq(engine.acc.valid), ser.count.eq(n)]
                m.d.comb += [ser.acc.payload[k].eq(engine.acc.payload[k]) for k in range(n)]
        # The pointwise engine runs on credits (it never offers more results than the queue
        # has room for); the depthwise engine's results leave as fast as they come.
        m.d.comb += [pw.release.eq(ser.release & is_conv), dw.acc.ready.eq(1)]
        m.d.comb += [ser.records.eq(records.as_value()), ser.float_mode.eq(is_float)]
        # The Requantizer is always ready (nothing behind it back-pressures), and its ready
        # goes to both sources unmuxed: the serializer is empty during a MEAN, and a layer
        # kind in its ready would sit in front of the serializer's pop.
        with m.If(is_mean):
            m.d.comb += [rq.i_stream.valid.eq(mean.to_requant.valid),
                         rq.i_stream.payload.eq(mean.to_requant.payload)]
        if with_add:
            with m.Elif(is_add):
                m.d.comb += [rq.i_stream.valid.eq(add.to_requant.valid),
                             rq.i_stream.payload.eq(add.to_requant.payload)]
        with m.Else():
            m.d.comb += [rq.i_stream.valid.eq(ser.fixed.valid),
                         rq.i_stream.payload.eq(ser.fixed.payload)]
        m.d.comb += [mean.to_requant.ready.eq(rq.i_stream.ready),
                     *([add.to_requant.ready.eq(rq.i_stream.ready)] if with_add else []),
                     ser.fixed.ready.eq(rq.i_stream.ready)]
        # The FloatRequantizer's ready as a register of the serializer's side, set when the
        # unit finishes a value and cleared when it takes one, exactly as its own `idle`:
        # its ready crossed the die into the serializer's pop (the 45F's path at 89.3 MHz).
        float_ready = Signal(init=1)
        with m.If(ser.float.valid & float_ready):
            m.d.sync += float_ready.eq(0)
        with m.If(frq.finishing | local_rst):        # the unit's reset makes it idle too
            m.d.sync += float_ready.eq(1)
        m.d.comb += [frq.i_stream.valid.eq(ser.float.valid),
                     frq.i_stream.payload.eq(ser.float.payload),
                     ser.float.ready.eq(float_ready)]
        wiring.connect(m, softmax.multiplier, rq.borrower)
        m.d.comb += rq.lend.eq(is_softmax)
        # A MEAN clamps to the int8 range (TFLite's MEAN has no fused activation). The clamp
        # bounds are registers decoded from the descriptor like `is_mean`: selected by
        # `is_mean` they were a LUT and a cross-die hop in front of the units' clamp compares
        # (the 45F's slowest path, 92.06 MHz).
        act_min, act_max = Signal(signed(8)), Signal(signed(8))
        m.d.sync += [act_min.eq(Mux(op == Opcode.MEAN, -128, desc.act_min)),
                     act_max.eq(Mux(op == Opcode.MEAN, 127, desc.act_max))]
        for unit in (rq, frq):
            m.d.comb += [unit.output_zp.eq(desc.output_zp),
                         unit.act_min.eq(act_min), unit.act_max.eq(act_max)]

        # ---- output writer source -------------------------------------------------------------
        # The writer takes an item in every cycle of a running walk, and the sequencer starts
        # each walk with the reads it writes the results of, before any result exists: the
        # units behind the writer never see back-pressure, so their readies are constants
        # (not a function of the layer kind or the sequencer's state: that made the
        # Requantizer's ready, and through it the AccSerializer's queue enables, wait on the
        # FSM's state decode), their pipeline enables fold away and no enable net fans out.
        for src in (softmax.o_stream, frq.o_stream, rq.o_stream):
            m.d.comb += src.ready.eq(1)

        def feed(src, values):
            m.d.comb += writer.data.valid.eq(src.valid)
            m.d.comb += [writer.data.payload[k].eq(v) for k, v in enumerate(values)]

        with m.If(seq.pad_phase):
            m.d.comb += [writer.data.valid.eq(1), writer.data.payload[0].eq(-128)]
        with m.Elif(is_softmax):
            feed(softmax.o_stream, [softmax.o_stream.payload])
        with m.Elif(is_float):
            feed(frq.o_stream, [frq.o_stream.payload])
        with m.Else():
            feed(rq.o_stream, rq.lanes_of(rq.o_stream.payload))

        # ---- store: a layer's output buffer -> WriteDMA, bytes past its output zeroed --------
        # The store walks bus words from address 0, so only its last word can reach past the
        # output: which of that word's bytes to keep is a register, set from `store_bytes`
        # (stable while the store runs, set several cycles before its first word arrives), so
        # the W data path is the reader's queue select and one mux, no adder or compare.
        s_item = store_rd.data.payload
        s_word = chunk_at(s_item.word, s_item.addr, bus)
        tail_bytes = seq.store_bytes[:exact_log2(bus)]
        tail_keep = Signal(bus)
        m.d.sync += tail_keep.eq(Cat((tail_bytes == 0) | (tail_bytes > k) for k in range(bus)))
        m.d.comb += [
            dma.wr_data.valid.eq(store_rd.data.valid),
            store_rd.data.ready.eq(dma.wr_data.ready),
            dma.wr_data.payload.eq(Cat(Mux(s_item.last & ~tail_keep[k], 0,
                                           s_word[8 * k:8 * k + 8]) for k in range(bus))),
        ]

        # ---- watchdog progress: any handshake on the AXI bus, the DMA or the datapath -----
        axi = self.m_axi
        events = [axi.arvalid & axi.arready, axi.rvalid & axi.rready,
                  axi.awvalid & axi.awready, axi.wvalid & axi.wready, axi.bvalid & axi.bready,
                  dma.rd_done, dma.wr_done, dw.tile.valid & dw.tile.ready, softmax.progress]
        for port in (seq.rd_cmd, seq.wr_cmd, seq.act_walk, seq.weight_walk, seq.out_walk,
                     seq.store_walk, act_rd.data, weight_rd.data, store_rd.data, writer.data):
            events.append(port.valid & port.ready)
        # Registered twice, each event and then their OR: the OR of every handshake in the
        # design would otherwise sit in front of the watchdog's fire and the registers'
        # DONE/ERROR (the 45F's critical path once the DMA commands were sliced), and the
        # handshakes themselves behind the sequencer's state decode. A watchdog two cycles
        # late is the same watchdog.
        seen = Signal(len(events))
        m.d.sync += [seen.eq(Cat(events)), progress.eq(seen.any())]
        return m
