"""The layer sequencer: fetches the layer program from DDR one descriptor at a time, checks
it, and runs each layer through the datapath of `rtl_gen.accelerator` by issuing DMA commands
and buffer walks, in this order:

    FETCH descriptor -> DECODE, DECODED (check word, layer index) -> PIXELS, BYTES (the size
       products, serially) -> COMPARE, CHECK (the rules, registered) -> VALIDATE
    -> when the layer's input is exactly the previous layer's output (same DDR address, no
       more bytes), swap the two activation buffers: the data is already there and nothing
       is loaded; otherwise load the input from DDR into the buffer the previous layer read
       (free now), beside the previous output's store unless that may be writing the bytes
       to load (a registered range compare), and start once the store has finished (the
       layer writes the buffer it reads)
    -> CONV:    per tile of pw_out outputs: load its weights and channel records into the free
                slot, wait for the previous tile to drain, switch slots, start the tile
       DWCONV:  load all 9 x C weights; per group of dw_lanes: load its records into the free
                slot and its taps into the tap register, wait for the previous group to
                drain, switch slots, hand the group to the engine, start it
                (all taps at once because a group's 9 x dw_lanes bytes need not start on a bus
                word; a group's taps are then 9 aligned dw_lanes-byte reads of the buffer)
       MEAN / SOFTMAX: run (SOFTMAX then pads its output to out_c with -128); a MEAN band
                flagged MEAN_PARTIAL only accumulates: it ends once its input is read,
                stores nothing, and the next layer never takes its input on chip
    -> wait for the previous layer's store, start this layer's store -> next descriptor

What overlaps: a tile's (group's) compute with the next tile's (group's) parameter loads, a
layer's output store with everything the next layer does when that layer chains, and with its
input load when it does not. Starting a tile's walks only once
the previous tile has drained keeps one set of channel records in use at a time, and starts
every walk on idle units. A program must not read an earlier layer's output region as
descriptors or parameters (the compiler never does): those reads do not wait for stores.

LAYER_CYCLES[i] counts from layer i's descriptor fetch to the start of its store, so the
layers partition the run up to the END descriptor; the store itself runs in the next layer's
time (a MEAN_PARTIAL band: to its end). LAYER_COUNT counts the descriptors whose output has
reached DDR, and the MEAN_PARTIAL bands that have ended.

A run always ends, with DONE, and with ERROR plus an `ErrorCode` when something is wrong:
the DMA answers every command even after an AXI error (see `rtl_gen.dma`), every descriptor
is validated before any count derived from it drives a loop, and the run only ends once the
store and the walks already started have finished, so the next START finds idle units. A
failed store is reported where the sequencer next waits for a store to finish: before the
next layer's store, or at the end of the program. The same rules run on the host
(`check_fits`), written once in `firmware.contract.layer_checks` for both integers and
Amaranth values.
"""
from __future__ import annotations

from enum import IntEnum

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

# The contract's rules are re-exported: callers of the sequencer's checks find them here too.
from firmware.contract import (ErrorCode, Geometry, Limits, ProgramError,  # noqa: F401
                               check_config, check_fits, depthwise_sizes, descriptor_error,
                               layer_checks, times9)
from firmware.layout import ADD_RECORD_BYTES, PARAM_BYTES
from firmware.program import CHECK_MAGIC, DESCRIPTOR_BYTES, FIELDS, Flags, Opcode

from .buffers import walk_layout, write_command_layout
from .config import AccelConfig
from .dma import dma_command_layout
from .fsm_encoding import one_hot, reset_only_by
from .regs import LAYER_COUNTERS, layer_cycles_signature


class LoadDest(IntEnum):
    """Where the loader puts the words of the current DMA read."""
    DESCRIPTOR = 0
    ACTIVATIONS = 1
    WEIGHTS = 2
    RECORDS = 3


def descriptor_layout() -> data.FlexibleLayout:
    """The 64-byte descriptor as a bit layout, built from `firmware.program.FIELDS`."""
    fields = {name: data.Field(signed(width) if is_signed else unsigned(width), 32 * word + lo)
              for name, word, lo, width, is_signed in FIELDS}
    fields["check"] = data.Field(unsigned(32), 32 * 15)
    return data.FlexibleLayout(8 * DESCRIPTOR_BYTES, fields)


# The sequencer's size products are built serially, one bit of the 16-bit descriptor field
# per cycle (two rounds: pixel counts, then bytes), in LUTs: the DSP blocks belong to the
# MAC array. DECODE (the checksum registered), DECODED, the two rounds, COMPARE, CHECK
# and VALIDATE take this many cycles (`sim.perf_model`).
PRODUCT_BITS = 16
DECODE_CYCLES = 5 + 2 * PRODUCT_BITS


class _Derived:
    """The descriptor view plus the sequencer's registered products, for `layer_checks`."""

    def __init__(self, desc, **derived):
        self._desc, self._derived = desc, derived

    def __getattr__(self, name):
        return self._derived[name] if name in self._derived else getattr(self._desc, name)


class Sequencer(wiring.Component):
    """Control FSM of the accelerator; the datapath it drives lives in `Accelerator`.

    Ports:
      start, prog_addr (in): from the register file; START is ignored while busy.
      busy, done, error (out): done pulses at the end of every run, error with it on failure;
        error_code holds the `ErrorCode` of the last run; layer_count the layers whose output
        reached DDR.
      layer_cycles (out): cycles of layer i, from its descriptor fetch to the start of its store.
      rd_cmd/rd_done/rd_error, wr_cmd/wr_done/wr_error, dma_error_clear: the AxiDMA.
      load_dest (out): `LoadDest` of the words of the current read.
      weight_load_word (out): buffer word where a weight load starts (the free tile slot).
      slot (out): the channel-record (and pointwise weight) slot the engines use; records
        load into the other one.
      desc (in): the descriptor register filled by the loader.
      src (out): the activation buffer the layer reads (and an input load fills); the layer
        writes the other one. It flips only for a layer that takes its input on chip.
      store_src, store_bytes (out): the buffer the running store reads and its layer's output
        size (bytes past it are stored as zeros).
      act_walk, weight_walk, out_walk, store_walk (out): buffer reader/writer commands.
      act_idle, weight_idle, out_idle (in): the activation and weight readers and the output
        writer have finished.
      tile_valid/tile_ready: hand the loaded depthwise group to the DepthwiseEngine.
      pad_phase (out): the output writer takes SOFTMAX's -128 padding.
      in_pixels (out): pixels of the current layer's input, for the MEAN unit.
      fsm_reset (in): back to IDLE. The state register has no other reset (neither the
        domain's nor a `ResetInserter`'s: `fsm_encoding.reset_only_by`), so this must be high
        while the domain resets and with any soft reset of the unit.
    """

    def __init__(self, cfg: AccelConfig, limits: Limits = Limits()):
        check_config(cfg)
        self.cfg, self.limits = cfg, limits
        g = self.geometry = Geometry(cfg)
        command = stream.Signature(dma_command_layout(cfg))
        super().__init__({
            "start": In(1), "prog_addr": In(cfg.addr_width),
            "busy": Out(1), "done": Out(1), "error": Out(1),
            "error_code": Out(8), "layer_count": Out(16),
            "layer_cycles": Out(layer_cycles_signature(limits.max_layers)),
            "rd_cmd": Out(command), "rd_done": In(1), "rd_error": In(1),
            "wr_cmd": Out(command), "wr_done": In(1), "wr_error": In(1),
            "dma_error_clear": Out(1),
            "load_dest": Out(LoadDest),
            "weight_load_word": Out(range(g.weight_depth)),
            "slot": Out(1),
            "desc": In(descriptor_layout()),
            "src": Out(1), "store_src": Out(1), "store_bytes": Out(48),
            "act_walk": Out(stream.Signature(walk_layout(g.act_capacity))),
            "weight_walk": Out(stream.Signature(walk_layout(g.weight_capacity))),
            "out_walk": Out(stream.Signature(write_command_layout(g.act_capacity))),
            "store_walk": Out(stream.Signature(walk_layout(g.act_capacity))),
            "act_idle": In(1), "weight_idle": In(1), "out_idle": In(1),
            "tile_valid": Out(1), "tile_ready": In(1),
            "pad_phase": Out(1),
            "in_pixels": Out(32),
            "fsm_reset": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, g = self.cfg, self.geometry
        bus = cfg.bus_bytes
        d = self.desc
        op = d.opcode
        is_float = (d.flags & Flags.FLOAT_REQUANT) != 0

        layer = Signal(16)
        completed = Signal(16)
        desc_addr = Signal(cfg.addr_width)
        cycles = Signal(32)
        code = Signal(8)
        in_pixels, out_pixels = self.in_pixels, Signal(32)
        in_bytes, out_bytes = Signal(48), Signal(48)
        weight_product = Signal(32)
        # The serial multiplier's operand registers (descriptor fields, shifted out MSB first).
        multiplier_bits = [Signal(PRODUCT_BITS, name=f"multiplier_bits{i}") for i in range(3)]
        bit = Signal(range(PRODUCT_BITS))
        # Loop state of the tiles (CONV) or channel groups (DWCONV) of a layer.
        index = Signal(16)
        weight_addr = Signal(cfg.addr_width)
        param_addr = Signal(cfg.addr_width)
        out_base = Signal(range(g.act_capacity + 1))
        tap_base = Signal(range(g.weight_capacity + 1))
        slot = self.slot
        # The previous layer's output, still in the buffer `src` will point to (its size is
        # `store_bytes`), and its store.
        have_prev = Signal()
        prev_out_addr = Signal(cfg.addr_width)
        storing = Signal()

        # High in SOFTMAX_PAD and SOFTMAX_PAD_WAIT, as a register set and cleared on the
        # transitions: it selects the output writer's source, far from the sequencer, and a
        # state decode there was the 45F's slowest path (98.58 MHz).
        pad_phase = Signal()
        m.d.comb += self.pad_phase.eq(pad_phase)
        # A descriptor ends without a store (a MEAN_PARTIAL band) in the cycle this is high.
        ended_unstored = Signal()
        m.d.comb += [self.error_code.eq(code), self.layer_count.eq(completed)]
        m.d.sync += [cycles.eq(cycles + 1),
                     completed.eq(completed + (self.wr_done & ~self.wr_error) + ended_unstored)]
        with m.If(self.wr_done):
            m.d.sync += storing.eq(0)

        words = [d.as_value()[32 * i:32 * (i + 1)] for i in range(16)]
        expected_check = CHECK_MAGIC
        for w in words[:15]:
            expected_check = expected_check ^ w
        # The depthwise sizes are adders in series: registered every cycle, long before CHECK.
        # 20 bits hold 9 x a 16-bit channel count, the widest of them.
        dw_sizes = {}
        for name, value in depthwise_sizes(d).items():
            dw_sizes[name] = Signal(range(1 << 20), name=name)
            m.d.sync += dw_sizes[name].eq(value)
        # Each term of a check (a few compares of one kind of layer) is registered every
        # cycle: its inputs are final from COMPARE on, so the terms are in CHECK, which ORs
        # them into the checks (a carry chain and an OR tree in one cycle was the 45F's
        # slowest path, 95.75 MHz).
        terms = []

        def stage(term):
            reg = Signal(name=f"check_term{len(terms)}")
            m.d.sync += reg.eq(term)
            terms.append(reg)
            return reg
        checks = layer_checks(_Derived(d, in_pixels=in_pixels, out_pixels=out_pixels,
                                       in_bytes=in_bytes, out_bytes=out_bytes,
                                       weight_product=weight_product, **dw_sizes),
                              cfg, self.limits, stage=stage)
        # The checks and the chaining test are registered in CHECK and combined in VALIDATE:
        # each is a tree of wide comparisons, too deep to share a cycle with the priority.
        failed_regs = [Signal(name=f"failed_{c.name.lower()}") for c, _ in checks]
        chained = Signal()
        # Its compares, registered every cycle like the check terms: the previous layer's
        # output (`store_bytes`, `prev_out_addr`) is fixed from its store's start on.
        same_input = Signal()
        m.d.sync += same_input.eq((d.input_addr == prev_out_addr) &
                                  (in_bytes <= self.store_bytes))
        # Whether an ADD's second input lies clear of the store still running (the only
        # region a load may race), registered in CHECK like `chained`; the two regions' ends
        # are sums registered every cycle before it, so CHECK only compares.
        second_clear = Signal()
        second_end, prev_end = Signal(cfg.addr_width + 1), Signal(cfg.addr_width + 1)
        m.d.sync += prev_end.eq(prev_out_addr + self.store_bytes)
        if cfg.with_add:
            m.d.sync += second_end.eq(d.weight_addr + d.weight_bytes)
        # Likewise whether a loaded input lies clear of the store still running, so that it
        # loads while the store runs (the bands of a tiled layer): `input_end` is a register
        # of a sum of `in_bytes`, final in CHECK, so the compare waits for VALIDATE.
        input_clear = Signal()
        input_end = Signal(len(in_bytes) + 1)
        m.d.sync += input_end.eq(d.input_addr + in_bytes)

        def clear_of_store(start, end):
            """Whether the DDR bytes [start, end) lie clear of the previous layer's output."""
            return ~have_prev | (start >= prev_end) | (end <= prev_out_addr)
        # The last tile's (group's) index, registered from the descriptor every cycle, so
        # that the run states' loop test is an equality of registers: with the subtract in
        # front of it, the descriptor's channel count crossed the die into the FSM's next
        # state (the 45F's slowest path, 96.09 MHz).
        last_tile, last_group = Signal(16), Signal(16)
        m.d.sync += [last_tile.eq((d.out_c >> exact_log2(cfg.pw_out)) - 1),
                     last_group.eq((d.in_c >> exact_log2(cfg.dw_lanes)) - 1)]

        bad_descriptor = Signal()
        failure = ErrorCode.NONE
        for (c, _), failed in reversed(list(zip(checks, failed_regs))):
            failure = Mux(failed, c, failure)
        slot_words = g.weight_slot // g.weight_word
        m.d.comb += self.weight_load_word.eq(Mux((op == Opcode.CONV) & ~slot, slot_words, 0))

        def fail(c):
            m.d.sync += code.eq(c)
            m.next = "ERROR"

        def fetch_next():
            m.d.sync += cycles.eq(0)
            m.next = "FETCH"

        def round_up(x, n):
            return ((x + (n - 1)) >> exact_log2(n)) << exact_log2(n)

        def load(name, addr, length, dest, then, when=1):
            """DMA read `length` bytes at `addr` into `dest` once `when` holds; on completion
            call `then`."""
            with m.State(name):
                m.d.comb += [self.rd_cmd.valid.eq(when), self.rd_cmd.payload.addr.eq(addr),
                             self.rd_cmd.payload.length.eq(length), self.load_dest.eq(dest)]
                with m.If(self.rd_cmd.ready & when):
                    m.next = f"{name}_WAIT"
            with m.State(f"{name}_WAIT"):
                m.d.comb += self.load_dest.eq(dest)
                with m.If(self.rd_done):
                    with m.If(self.rd_error):
                        fail(ErrorCode.AXI_READ_ERROR)
                    with m.Else():
                        then()

        def start_when_drained(name, run):
            """State `name`: once the previous tile's (group's) outputs are all written, swap
            the weight/record slots (the next ones were loaded into the free one), go to
            `run`."""
            with m.State(name):
                with m.If(self.out_idle):
                    m.d.sync += slot.eq(~slot)
                    m.next = run

        def walk(port, narrow=None, base=0, outer=1, outer_stride=0, inner=1, inner_step=1):
            """Offer a walk on `port` (with `narrow` for the output writer); returns ready.
            Walks are only offered to idle units, so walks offered together start together."""
            p = port.payload
            if narrow is not None:
                m.d.comb += p.narrow.eq(narrow)
                p = p.walk
            m.d.comb += [port.valid.eq(1), p.base.eq(base), p.outer.eq(outer),
                         p.outer_stride.eq(outer_stride), p.inner.eq(inner),
                         p.inner_step.eq(inner_step)]
            return port.ready

        def goto(state):
            def then():
                m.next = state
            return then

        def after_store(then):
            """Once the previous store has finished: fail if it failed, else `then`."""
            with m.If(~storing):
                with m.If(self.wr_error):
                    fail(ErrorCode.AXI_WRITE_ERROR)
                with m.Else():
                    then()

        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.comb += self.dma_error_clear.eq(1)
                    m.d.sync += [layer.eq(0), completed.eq(0), have_prev.eq(0),
                                 desc_addr.eq(self.prog_addr), code.eq(0)]
                    with m.If(self.prog_addr[:exact_log2(bus)] != 0):
                        fail(ErrorCode.BAD_ALIGNMENT)
                    with m.Else():
                        fetch_next()

            load("FETCH", desc_addr, DESCRIPTOR_BYTES, LoadDest.DESCRIPTOR, goto("DECODE"))

            # The checksum is a 15-word XOR tree and a 32-bit compare: registered in DECODE,
            # acted on in DECODED, so it never shares a cycle with the FSM's next state.
            with m.State("DECODE"):
                m.d.sync += bad_descriptor.eq((d.check != expected_check) | (d.layer != layer))
                m.next = "DECODED"

            with m.State("DECODED"):
                with m.If(bad_descriptor):
                    fail(ErrorCode.BAD_DESCRIPTOR)
                with m.Elif(op == Opcode.END):
                    m.next = "FINISH"
                with m.Else():
                    m.d.sync += [in_pixels.eq(0), out_pixels.eq(0), weight_product.eq(0),
                                 in_bytes.eq(0), out_bytes.eq(0), bit.eq(0),
                                 multiplier_bits[0].eq(d.in_w), multiplier_bits[1].eq(d.out_w),
                                 multiplier_bits[2].eq(d.in_c)]
                    m.next = "PIXELS"

            def serial_products(pairs):
                """One shift-and-add step of each (product, multiplicand, multiplier bits):
                the multiplier's bits are taken most significant first."""
                for product, a, b in pairs:
                    m.d.sync += [product.eq((product << 1)[:len(product)] +
                                            Mux(b[-1], a, 0)),
                                 b.eq(b << 1)]
                m.d.sync += bit.eq(bit + 1)

            with m.State("PIXELS"):
                serial_products([(in_pixels, d.in_h, multiplier_bits[0]),
                                 (out_pixels, d.out_h, multiplier_bits[1]),
                                 (weight_product, d.out_c, multiplier_bits[2])])
                with m.If(bit == PRODUCT_BITS - 1):
                    m.d.sync += [multiplier_bits[0].eq(d.in_c), multiplier_bits[1].eq(d.out_c)]
                    m.next = "BYTES"

            with m.State("BYTES"):
                serial_products([(in_bytes, in_pixels, multiplier_bits[0]),
                                 (out_bytes, out_pixels, multiplier_bits[1])])
                with m.If(bit == PRODUCT_BITS - 1):
                    m.next = "COMPARE"

            with m.State("COMPARE"):
                m.next = "CHECK"

            with m.State("CHECK"):
                m.d.sync += [reg.eq(failed) for reg, (_, failed) in zip(failed_regs, checks)]
                m.d.sync += chained.eq(have_prev & same_input)
                if cfg.with_add:
                    m.d.sync += second_clear.eq(clear_of_store(d.weight_addr, second_end))
                m.next = "VALIDATE"

            def dispatch():
                with m.Switch(op):
                    with m.Case(Opcode.CONV):
                        m.next = "CONV_WEIGHTS"
                    with m.Case(Opcode.DWCONV):
                        m.next = "DW_WEIGHTS"
                    with m.Case(Opcode.MEAN):
                        m.next = "MEAN_RUN"
                    # Without the AddUnit, VALIDATE stops an ADD (UNSUPPORTED) before this.
                    if cfg.with_add:
                        with m.Case(Opcode.ADD):
                            m.next = "ADD_INPUT2"
                    with m.Default():
                        m.next = "SOFTMAX_RUN"

            with m.State("VALIDATE"):
                m.d.sync += [index.eq(0), weight_addr.eq(d.weight_addr),
                             param_addr.eq(d.param_addr), out_base.eq(0), tap_base.eq(0)]
                with m.If(failure != ErrorCode.NONE):
                    fail(failure)
                with m.Else():
                    m.d.sync += input_clear.eq(clear_of_store(d.input_addr, input_end))
                    with m.If(chained):
                        # The input is the previous layer's output, in the other buffer.
                        m.d.sync += self.src.eq(~self.src)
                        dispatch()
                    with m.Else():
                        m.next = "LOAD_INPUT"

            # A loaded input goes to the buffer the previous layer read its input from, free
            # now, while the previous layer's output may still be stored from the other one:
            # the load runs beside the store unless the store may be writing the very bytes
            # to load, and the layer starts (writing its output over the stored one) once the
            # store is done.
            def input_loaded():
                with m.If(storing):
                    m.next = "INPUT_STORE_WAIT"
                with m.Else():
                    dispatch()

            load("LOAD_INPUT", d.input_addr, round_up(in_bytes, g.act_word),
                 LoadDest.ACTIVATIONS, input_loaded, when=~storing | input_clear)
            with m.State("INPUT_STORE_WAIT"):
                after_store(dispatch)

            # ---- CONV: per tile of pw_out output channels -----------------------------------
            steps = d.in_c >> exact_log2(cfg.pw_in)
            tile_bytes = d.in_c * cfg.pw_out

            def conv_loaded():
                m.d.sync += [weight_addr.eq(weight_addr + tile_bytes),
                             param_addr.eq(param_addr + PARAM_BYTES * cfg.pw_out)]
                m.next = "CONV_WAIT"

            load("CONV_WEIGHTS", weight_addr, tile_bytes, LoadDest.WEIGHTS,
                 goto("CONV_RECORDS"))
            load("CONV_RECORDS", param_addr, PARAM_BYTES * cfg.pw_out, LoadDest.RECORDS,
                 conv_loaded)
            start_when_drained("CONV_WAIT", "CONV_RUN")
            with m.State("CONV_RUN"):
                ready = [
                    walk(self.act_walk, outer=in_pixels, outer_stride=d.in_c, inner=steps,
                         inner_step=cfg.pw_in),
                    walk(self.weight_walk, base=Mux(slot, g.weight_slot, 0), outer=in_pixels,
                         inner=steps, inner_step=g.block),
                    walk(self.out_walk, is_float, base=out_base, outer=in_pixels,
                         outer_stride=d.out_c,
                         inner=Mux(is_float, cfg.pw_out, cfg.pw_out // g.lanes),
                         inner_step=Mux(is_float, 1, g.lanes)),
                ]
                with m.If(ready[0] & ready[1] & ready[2]):
                    m.d.sync += [index.eq(index + 1), out_base.eq(out_base + cfg.pw_out)]
                    with m.If(index == last_tile):
                        m.next = "OUT_WAIT"
                    with m.Else():
                        m.next = "CONV_WEIGHTS"

            # ---- DWCONV: all taps at once, then per group of dw_lanes channels --------------
            lanes = cfg.dw_lanes

            def dw_loaded():
                m.d.sync += param_addr.eq(param_addr + PARAM_BYTES * lanes)
                m.next = "DW_TAPS"

            load("DW_WEIGHTS", d.weight_addr, round_up(times9(d.in_c), bus), LoadDest.WEIGHTS,
                 goto("DW_RECORDS"))
            load("DW_RECORDS", param_addr, PARAM_BYTES * lanes, LoadDest.RECORDS, dw_loaded)
            with m.State("DW_TAPS"):
                with m.If(walk(self.weight_walk, base=tap_base, inner=9, inner_step=lanes)):
                    m.d.sync += tap_base.eq(tap_base + 9 * lanes)
                    m.next = "DW_TAPS_WAIT"
            with m.State("DW_TAPS_WAIT"):
                with m.If(self.weight_idle):
                    m.next = "DW_WAIT"
            start_when_drained("DW_WAIT", "DW_TILE")
            with m.State("DW_TILE"):
                m.d.comb += self.tile_valid.eq(1)
                with m.If(self.tile_ready):
                    m.next = "DW_RUN"
            with m.State("DW_RUN"):
                ready = [
                    walk(self.act_walk, base=out_base, outer=in_pixels, outer_stride=d.in_c,
                         inner_step=lanes),
                    walk(self.out_walk, 0, base=out_base, outer=out_pixels, outer_stride=d.out_c,
                         inner=lanes // g.lanes, inner_step=g.lanes),
                ]
                with m.If(ready[0] & ready[1]):
                    m.d.sync += [index.eq(index + 1), out_base.eq(out_base + lanes)]
                    with m.If(index == last_group):
                        m.next = "OUT_WAIT"
                    with m.Else():
                        m.next = "DW_RECORDS"

            # A pixel's channels as requantizer beats (ADD, MEAN).
            beats = d.in_c >> exact_log2(g.lanes)

            # ---- ADD: the second input into the weight buffer, its records, then one walk ------
            if cfg.with_add:
                # The store still running (the previous layer's output) may be writing the
                # second input's bytes: then the load waits for it.
                load("ADD_INPUT2", d.weight_addr, round_up(d.weight_bytes, bus),
                     LoadDest.WEIGHTS, goto("ADD_RECORDS"), when=~storing | second_clear)
                load("ADD_RECORDS", param_addr, max(ADD_RECORD_BYTES, bus), LoadDest.RECORDS,
                     goto("ADD_WAIT"))
                start_when_drained("ADD_WAIT", "ADD_RUN")
                with m.State("ADD_RUN"):
                    ready = [
                        walk(self.act_walk, outer=in_pixels, outer_stride=d.in_c, inner=beats,
                             inner_step=g.lanes),
                        walk(self.weight_walk, outer=in_pixels, outer_stride=d.in_c,
                             inner=beats, inner_step=g.lanes),
                        walk(self.out_walk, 0, outer=in_pixels, outer_stride=d.in_c,
                             inner=beats, inner_step=g.lanes),
                    ]
                    with m.If(ready[0] & ready[1] & ready[2]):
                        m.next = "OUT_WAIT"

            # ---- MEAN, SOFTMAX ----------------------------------------------------------------
            partial = (d.flags & Flags.MEAN_PARTIAL) != 0
            with m.State("MEAN_RUN"):
                with m.If(partial):
                    with m.If(walk(self.act_walk, outer=in_pixels, outer_stride=d.in_c,
                                   inner=beats, inner_step=g.lanes)):
                        m.next = "MEAN_PARTIAL_WAIT"
                with m.Else():
                    ready = [
                        walk(self.act_walk, outer=in_pixels, outer_stride=d.in_c, inner=beats,
                             inner_step=g.lanes),
                        walk(self.out_walk, 0, inner=beats, inner_step=g.lanes),
                    ]
                    with m.If(ready[0] & ready[1]):
                        m.next = "OUT_WAIT"
            with m.State("MEAN_PARTIAL_WAIT"):
                # The MeanUnit takes a beat every cycle: once the reader is idle, the band's
                # sums are (a cycle later) complete, long before the next band's first beat.
                with m.If(self.act_idle):
                    m.d.comb += [ended_unstored.eq(1),
                                 self.layer_cycles.index.eq(layer),
                                 self.layer_cycles.value.eq(cycles + 1),
                                 self.layer_cycles.strobe.eq(layer < self.limits.max_layers)]
                    m.d.sync += [have_prev.eq(0), layer.eq(layer + 1),
                                 desc_addr.eq(desc_addr + DESCRIPTOR_BYTES)]
                    fetch_next()
            with m.State("SOFTMAX_RUN"):
                ready = [walk(self.act_walk, inner=d.real_c),
                         walk(self.out_walk, 1, inner=d.real_c)]
                with m.If(ready[0] & ready[1]):
                    m.next = "SOFTMAX_WAIT"
            with m.State("SOFTMAX_WAIT"):
                with m.If(self.out_idle):
                    with m.If(d.out_c == d.real_c):
                        m.next = "STORE"
                    with m.Else():
                        m.d.sync += pad_phase.eq(1)
                        m.next = "SOFTMAX_PAD"
            with m.State("SOFTMAX_PAD"):
                with m.If(walk(self.out_walk, 1, base=d.real_c, inner=d.out_c - d.real_c)):
                    m.next = "SOFTMAX_PAD_WAIT"
            with m.State("SOFTMAX_PAD_WAIT"):
                with m.If(self.out_idle):
                    m.d.sync += pad_phase.eq(0)
                    m.next = "STORE"
            with m.State("OUT_WAIT"):
                with m.If(self.out_idle):
                    m.next = "STORE"

            # ---- output feature map to DDR, behind the next layer -----------------------------
            def start_store():
                store_beats = (out_bytes + (bus - 1)) >> exact_log2(bus)
                m.d.comb += [self.wr_cmd.valid.eq(1), self.wr_cmd.payload.addr.eq(d.output_addr),
                             self.wr_cmd.payload.length.eq(store_beats << exact_log2(bus))]
                with m.If(self.wr_cmd.ready &
                          walk(self.store_walk, inner=store_beats, inner_step=bus)):
                    m.d.comb += [self.layer_cycles.index.eq(layer),
                                 self.layer_cycles.value.eq(cycles + 1),
                                 self.layer_cycles.strobe.eq(layer < self.limits.max_layers)]
                    m.d.sync += [storing.eq(1), self.store_src.eq(~self.src),
                                 self.store_bytes.eq(out_bytes), have_prev.eq(1),
                                 prev_out_addr.eq(d.output_addr),
                                 layer.eq(layer + 1), desc_addr.eq(desc_addr + DESCRIPTOR_BYTES)]
                    fetch_next()

            with m.State("STORE"):
                after_store(start_store)

            def finish():
                m.d.comb += self.done.eq(1)
                m.next = "IDLE"

            with m.State("FINISH"):
                after_store(finish)
            with m.State("ERROR"):
                # Let the store and any walks already started run out.
                with m.If(~storing & self.out_idle & self.weight_idle):
                    m.d.comb += self.error.eq(1)
                    finish()
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        # One flip-flop per state, so no handshake or write waits on a state decode.
        one_hot(fsm)
        reset_only_by(m, fsm, "IDLE", self.fsm_reset)
        with m.If(self.fsm_reset):          # after the FSM: wins over its transitions
            m.d.sync += pad_phase.eq(0)
        return m
