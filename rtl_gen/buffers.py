"""On-chip buffer access: address walks that read a memory into a stream or write a stream
into a memory, plus the sub-word helpers the layer datapaths use to pick their lanes.

Every buffer is a `bram.SlicedMemory` of `word_bytes`-byte words. The accelerator
only ever moves aligned chunks whose size is a power of two no larger than a word (a pixel's
pw_in channels, a dw_lanes group, a requantized beat, a bus word, one byte), so a chunk never
straddles two words: a reader delivers the whole word plus the chunk's byte address, and the
consumer selects its chunk with `chunk_at`; a writer drives the word with the chunk repeated
and a byte-enable mask.

Addresses follow a two-level walk, which covers every access pattern of the layer program:
``addr = base + i * outer_stride + j * inner_step`` for i < outer, j < inner (j fastest).
E.g. a 1x1 convolution reads pixel p's K channel groups as (outer=P, outer_stride=C,
inner=K, inner_step=pw_in) and writes tile t's results as (base=t*pw_out, outer=P,
outer_stride=C_out, inner=pw_out/lanes, inner_step=lanes).
"""
from __future__ import annotations

import functools
import operator

from amaranth.hdl import Cat, Module, Mux, Shape, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from .bram import READ_LATENCY, SlicedMemory


def walk_layout(max_bytes: int) -> data.StructLayout:
    """A two-level address walk over a buffer of up to `max_bytes` bytes (counts >= 1)."""
    n = range(max_bytes + 1)
    return data.StructLayout({"base": n, "outer": n, "outer_stride": n,
                              "inner": n, "inner_step": n})


def ring_next(pointer, n: int):
    """The ring position after `pointer` in a ring of `n` entries."""
    return Mux(pointer == n - 1, 0, pointer + 1)


def chunk_at(word, addr, nbytes: int):
    """The `nbytes`-byte chunk of `word` holding byte address `addr` (aligned to nbytes)."""
    word_bytes = len(word) // 8
    if nbytes == word_bytes:
        return word
    return word.word_select(addr[exact_log2(nbytes):exact_log2(word_bytes)], 8 * nbytes)


class _Walk:
    """The counters of one walk: `load` starts it, `step` moves to the next address;
    `last_inner` / `last` flag the final inner step and the final address.

    The flags are registers updated with the counters, so a walk's handshakes never wait on
    a comparator, except in the cycles between a load and the first step (`fresh`), where they
    compare the command register: a load takes its command from the sequencer's state decode,
    and comparing it on its way in was the slowest path into the readers."""

    def __init__(self, m: Module, layout: data.StructLayout, name: str):
        self._m = m
        self.cmd = Signal(layout, name=f"{name}_cmd")
        width = Shape.cast(layout.members["base"]).width
        self.addr = Signal(width + 1, name=f"{name}_addr")
        self.row = Signal(width + 1, name=f"{name}_row")    # base + i * outer_stride
        self.i = Signal(width, name=f"{name}_i")
        self.j = Signal(width, name=f"{name}_j")
        self.fresh = Signal(name=f"{name}_fresh")           # loaded, not yet stepped
        inner_one = Signal(name=f"{name}_inner_one")
        outer_one = Signal(name=f"{name}_outer_one")
        m.d.comb += [inner_one.eq(self.cmd.inner == 1), outer_one.eq(self.cmd.outer == 1)]
        self._last_inner = Signal(name=f"{name}_last_inner_r")
        self._last_outer = Signal(name=f"{name}_last_outer_r")
        self.last_inner = Mux(self.fresh, inner_one, self._last_inner)   # j == inner - 1
        self.last_outer = Mux(self.fresh, outer_one, self._last_outer)   # i == outer - 1
        self.last = self.last_inner & self.last_outer

    def load(self, cmd):
        self._m.d.sync += [self.cmd.eq(cmd), self.addr.eq(cmd.base), self.row.eq(cmd.base),
                           self.i.eq(0), self.j.eq(0), self.fresh.eq(1)]

    def step(self):
        c = self.cmd
        self._m.d.sync += self.fresh.eq(0)
        with self._m.If(self.last_inner):
            self._m.d.sync += [self.j.eq(0), self.i.eq(self.i + 1),
                               self._last_inner.eq(c.inner == 1),
                               self._last_outer.eq(self.i + 2 == c.outer),
                               self.row.eq(self.row + c.outer_stride),
                               self.addr.eq(self.row + c.outer_stride)]
        with self._m.Else():
            self._m.d.sync += [self.j.eq(self.j + 1), self._last_inner.eq(self.j + 2 == c.inner),
                               self._last_outer.eq(self.last_outer),
                               self.addr.eq(self.addr + c.inner_step)]


def read_item_layout(word_bytes: int, max_bytes: int, chunk_bytes: int = 0) -> data.StructLayout:
    fields = {
        "word": 8 * word_bytes,     # the buffer word holding the item
        "addr": range(max_bytes),   # the item's byte address (its low bits pick the chunk)
        "first": 1,                 # first item of an inner loop
        "last": 1,                  # last item of an inner loop
    }
    if chunk_bytes:
        fields["chunk"] = 8 * chunk_bytes   # chunk_at(word, addr, chunk_bytes), preselected
    return data.StructLayout(fields)


class BufferReader(wiring.Component):
    """Streams a walk's items out of a memory through its synchronous read port.

    Ports: ``cmd`` (walk, taken only when the previous walk has been issued), ``data``
    (stream of `read_item_layout`), ``mem_addr``/``mem_en`` (to be wired to a read port of
    each of `ports` memories, e.g. the two activation buffers, see `bram.SlicedMemory`),
    ``mem_data`` (their words, one per memory, `bram.READ_LATENCY` cycles after the address
    and from registers: the memory's output registers; zero in every memory but the one
    read), ``idle`` (no walk running and no item waiting).

    The read ports are always enabled. The words leave the memories from their output
    registers, are merged by one OR (a LUT4 per bit for up to four memories) and land in a
    register of the reader before any other logic: the block RAMs lie spread over the die, so
    the word gets a whole cycle for its trip. The landed word enters a queue of `QUEUE`
    entries, whose head item is a register of its own.

    A read is issued only while the queue has room for it counting the reads in flight
    (`credit`, a register), so back-pressure on ``data`` never reaches the block RAM's clock
    enable or the queue's registers: the consumer's ready only advances the head pointer.
    The stream runs at one item per clock; an item is on ``data`` `LATENCY` cycles after its
    address.

    `chunk_bytes` (optional): each item also carries ``chunk``, its `chunk_bytes`-byte chunk
    of the word, selected as the word enters the queue, so a consumer of that chunk size
    sees the head select alone rather than the head select and a byte select of the
    whole word behind it.
    """

    # A read issued in cycle t leaves the memory's output register in t + 2, lands in
    # t + 3, is at the head in t + 4, taken then, and its entry is issued again in t + 5:
    # five entries keep one item a clock.
    LATENCY = READ_LATENCY + 2
    QUEUE = LATENCY + 1

    def __init__(self, *, word_bytes: int, depth: int, ports: int = 1, chunk_bytes: int = 0):
        if chunk_bytes and (word_bytes % chunk_bytes or chunk_bytes & (chunk_bytes - 1)):
            raise ValueError(f"{chunk_bytes}-byte chunks do not tile {word_bytes}-byte words")
        self.word_bytes, self.depth, self.ports = word_bytes, depth, ports
        self.chunk_bytes = chunk_bytes
        self.max_bytes = word_bytes * depth
        super().__init__({
            "cmd": In(stream.Signature(walk_layout(self.max_bytes))),
            "data": Out(stream.Signature(read_item_layout(word_bytes, self.max_bytes,
                                                          chunk_bytes))),
            "mem_addr": Out(range(depth)), "mem_en": Out(1),
            "mem_data": In(data.ArrayLayout(8 * word_bytes, ports)),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        walk = _Walk(m, self.cmd.payload.shape(), "walk")
        n = self.QUEUE
        layout = read_item_layout(self.word_bytes, self.max_bytes, self.chunk_bytes)
        running = Signal()
        out = self.data

        # Free entries less the reads in flight, and its registered non-zero flag. The flags
        # here are registers computed from the next state with `pop` (the consumer's ready,
        # which arrives late through its own logic) in the last LUT, not before an adder.
        free = Signal(range(n + 1), init=n)
        credit = Signal(init=1)
        issue = running & credit
        pop = out.valid & out.ready
        m.d.sync += [free.eq(free - issue + pop),
                     credit.eq(pop | Mux(issue, free != 1, free != 0))]

        # The item whose word the read ports are fetching, then as its word leaves the block
        # RAMs, then as it lands. Data registers have no reset (their valid flags do): fewer
        # loads on the local reset, and nothing but routing between a block RAM and its
        # landing register.
        read, out_reg, landed = (Signal(layout, reset_less=True) for _ in range(3))
        read_valid, out_valid, landed_valid = Signal(), Signal(), Signal()
        word = Signal(8 * self.word_bytes, name="landed_word", reset_less=True)
        m.d.sync += [read_valid.eq(issue), read.addr.eq(walk.addr),
                     read.first.eq(walk.j == 0), read.last.eq(walk.last_inner),
                     out_valid.eq(read_valid), out_reg.eq(read),
                     landed_valid.eq(out_valid), landed.eq(out_reg),
                     word.eq(functools.reduce(operator.or_, self.mem_data))]

        # The queue: a ring of `QUEUE` entries in distributed RAM (ECP5 LUT RAM, TRELLIS_DPR16X4:
        # written at `tail` on the clock, read at `after_head` without one) and the head item,
        # a register of its own. Kept as flip-flops, the ring was 5 x 512 bits for the weight
        # reader spread over the die and its head select (a pointer decoded into every bit's
        # mux) the slowest path of the 45F; as LUT RAM it is a few dozen PFUs read through
        # their own address lines, and a pop only moves pointers (a shift queue's pop would
        # enable every entry). Consumers see only the head register: the activation reader's
        # word fans out to the MAC array's multipliers and its `last` decides the MAC array's
        # ready.
        storage = m.submodules.storage = Memory(shape=layout, depth=n, init=[])
        write, ahead = storage.write_port(), storage.read_port(domain="comb")
        tail, after_head = Signal(range(n)), Signal(range(n), init=1)
        held = Signal(range(n + 1))
        nonempty = Signal()      # held != 0, as a register
        held_next = held + landed_valid - pop
        m.d.sync += [held.eq(held_next),
                     nonempty.eq(landed_valid | Mux(pop, held != 1, held != 0))]
        # The item entering the queue this cycle.
        entering = Signal(layout)
        m.d.comb += [entering.eq(landed), entering.word.eq(word)]
        if self.chunk_bytes:
            m.d.comb += entering.chunk.eq(chunk_at(word, landed.addr, self.chunk_bytes))
        m.d.comb += [write.addr.eq(tail), write.data.eq(entering), write.en.eq(landed_valid)]
        with m.If(landed_valid):
            m.d.sync += tail.eq(ring_next(tail, n))
        with m.If(pop):
            m.d.sync += after_head.eq(ring_next(after_head, n))
        m.d.comb += ahead.addr.eq(after_head)
        # The next head item: on a pop the entry after the head, or the entering item when
        # the head was the only one held; else the entering item into an empty queue. (While
        # items are held the head register equals the head entry, never overwritten until
        # popped.) `enter_on_pop` / `enter_on_stay` are registers computed a cycle ahead
        # (`out_valid` is next cycle's `landed_valid`). `enter_on_stay` means the queue is
        # empty, so no pop can come with it: the data select is those two flip-flops alone
        # and the late `pop` only reaches the head register's clock enables, not a LUT in
        # front of every bit (it did, beside the LUT RAM, on the 45F's slowest path).
        next_landed = out_valid
        enter_on_pop, enter_on_stay = Signal(), Signal()
        m.d.sync += [enter_on_pop.eq(next_landed & (held_next == 1)),
                     enter_on_stay.eq(next_landed & (held_next == 0))]
        head_item = Signal(layout, reset_less=True)
        with m.If(pop | enter_on_stay):
            m.d.sync += head_item.eq(Mux(enter_on_pop | enter_on_stay, entering, ahead.data))
        m.d.comb += [out.valid.eq(nonempty), out.payload.eq(head_item)]

        # `idle` is a register computed from the next cycle's state, so it reads exactly as
        # the state's own decode would, while the consumer's ready (through `pop`) and the
        # sequencer's next-state logic that waits on `idle` sit on either side of a flip-flop.
        # An issue keeps it low anyway, so it needs `running` only where no issue can end the
        # walk: the walk's last-step flags (a compare, just after a load) stay out of it.
        load = self.cmd.valid & ~running
        running_next = Mux(load, 1, Mux(issue & walk.last, 0, running))
        idle = Signal(init=1)
        empty_next = ~landed_valid & Mux(pop, held == 1, held == 0)
        m.d.sync += [running.eq(running_next),
                     idle.eq(~load & ~running & ~issue & ~read_valid & ~out_valid & empty_next)]
        m.d.comb += [
            self.cmd.ready.eq(~running),
            self.mem_en.eq(1),
            self.mem_addr.eq(walk.addr >> exact_log2(self.word_bytes)),
            self.idle.eq(idle),
        ]
        with m.If(issue):
            walk.step()
        with m.If(load):
            walk.load(self.cmd.payload)
        return m


def write_command_layout(max_bytes: int) -> data.StructLayout:
    return data.StructLayout({"walk": walk_layout(max_bytes), "narrow": 1})


class BufferWriter(wiring.Component):
    """Writes a stream of `lanes`-byte items into a memory along a walk.

    Ports: ``cmd`` (walk and ``narrow``: write only byte 0 of each item, for the one-value
    units; otherwise all `lanes` bytes), ``data`` (stream of lanes int8, always taken while a
    walk runs), ``mem_addr``/``mem_data``/``mem_en`` (to a write port of the buffer with byte
    granularity: ``mem_en`` has one bit per byte), ``idle``. The walk's inner_step must be the
    item size (1 when narrow, else `lanes`) so items land side by side.
    """

    def __init__(self, *, word_bytes: int, depth: int, lanes: int):
        if word_bytes % lanes:
            raise ValueError(f"{lanes}-byte items do not tile {word_bytes}-byte words")
        self.word_bytes, self.depth, self.lanes = word_bytes, depth, lanes
        self.max_bytes = word_bytes * depth
        super().__init__({
            "cmd": In(stream.Signature(write_command_layout(self.max_bytes))),
            "data": In(stream.Signature(data.ArrayLayout(8, lanes))),
            "mem_addr": Out(range(depth)), "mem_data": Out(8 * word_bytes),
            "mem_en": Out(word_bytes), "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        wb, lanes = self.word_bytes, self.lanes
        walk = _Walk(m, walk_layout(self.max_bytes), "walk")
        narrow = Signal()
        running = Signal()
        write = self.data.valid & running
        offset = walk.addr[:exact_log2(wb)]
        item = self.data.payload.as_value()

        m.d.comb += [
            self.cmd.ready.eq(~running),
            self.data.ready.eq(running),
            self.idle.eq(~running),
            self.mem_addr.eq(walk.addr >> exact_log2(wb)),
            self.mem_data.eq(Mux(narrow, Cat([item[:8]] * wb), Cat([item] * (wb // lanes)))),
            self.mem_en.eq(Mux(write, Mux(narrow, 1, (1 << lanes) - 1) << offset, 0)),
        ]
        with m.If(write):
            walk.step()
            with m.If(walk.last):
                m.d.sync += running.eq(0)
        with m.If(self.cmd.valid & ~running):
            walk.load(self.cmd.payload.walk)
            m.d.sync += [narrow.eq(self.cmd.payload.narrow), running.eq(1)]
        return m
