"""BufferReader in Amaranth's simulator: the items of random two-level walks over a random
memory, under random back-pressure, and one item a clock when nothing stalls."""
import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module
from amaranth.lib.memory import Memory

from rtl_gen.bram import SlicedMemory, slice_bits
from rtl_gen.buffers import BufferReader
from stream_sim import IDLE_LIMIT, run_sim

WORD, DEPTH = 4, 32


class ReaderOnMemory(Elaboratable):
    """A BufferReader wired to the read port of a memory holding `init`, through a register
    (the block RAM's output register of `bram.SlicedMemory`)."""

    def __init__(self, init, chunk_bytes=0):
        self.reader = BufferReader(word_bytes=WORD, depth=DEPTH, chunk_bytes=chunk_bytes)
        self.init = init

    def elaborate(self, platform):
        m = Module()
        m.submodules.reader = r = self.reader
        m.submodules.mem = mem = Memory(shape=8 * WORD, depth=DEPTH, init=self.init)
        port = mem.read_port()
        m.d.comb += [port.addr.eq(r.mem_addr), port.en.eq(r.mem_en)]
        m.d.sync += r.mem_data[0].eq(port.data)
        return m


def random_walk(rng, depth=DEPTH):
    """A walk inside the buffer: (base, outer, outer_stride, inner, inner_step)."""
    while True:
        inner_step = int(rng.choice([1, 2, 4]))
        inner, outer = (int(v) for v in rng.integers(1, 6, 2))
        stride = int(rng.integers(0, 24))
        base = int(rng.integers(0, WORD * depth))
        last = base + (outer - 1) * stride + (inner - 1) * inner_step
        if last < WORD * depth:
            return base, outer, stride, inner, inner_step


def chunk_of(word, addr, nbytes):
    """The `nbytes`-byte chunk of `word` holding byte address `addr` (as `chunk_at`)."""
    offset = (addr % WORD) // nbytes * nbytes
    return (word >> (8 * offset)) & ((1 << (8 * nbytes)) - 1)


def expected_items(walk, words, chunk_bytes=0):
    base, outer, stride, inner, step = walk
    items = []
    for i in range(outer):
        for j in range(inner):
            addr = base + i * stride + j * step
            word = words[addr // WORD]
            items.append((word, addr, int(j == 0), int(j == inner - 1))
                         + ((chunk_of(word, addr, chunk_bytes),) if chunk_bytes else ()))
    return items


def simulate(seed, ready_prob, walks=12, chunk_bytes=0):
    rng = np.random.default_rng(seed)
    words = [int(w) for w in rng.integers(0, 2**32, DEPTH, dtype=np.uint64)]
    dut = ReaderOnMemory(words, chunk_bytes)
    r = dut.reader
    plan = [random_walk(rng) for _ in range(walks)]
    expected = [item for walk in plan for item in expected_items(walk, words, chunk_bytes)]
    got, first_at, cmd_at = [], [], []

    async def commands(ctx):
        for walk in plan:
            for field, value in zip(("base", "outer", "outer_stride", "inner", "inner_step"),
                                    walk):
                ctx.set(getattr(r.cmd.payload, field), value)
            ctx.set(r.cmd.valid, 1)
            *_, ready = await ctx.tick().sample(r.cmd.ready)
            while not ready:
                *_, ready = await ctx.tick().sample(r.cmd.ready)
            ctx.set(r.cmd.valid, 0)

    async def take(ctx):
        cycle, idle = 0, 0
        ready_rng = np.random.default_rng([seed, 1])
        while len(got) < len(expected):
            ready = int(ready_rng.random() < ready_prob)
            ctx.set(r.data.ready, ready)
            extra = (r.data.payload.chunk,) if chunk_bytes else ()
            _, _, valid, *item = await ctx.tick().sample(
                r.data.valid, r.data.payload.word, r.data.payload.addr, r.data.payload.first,
                r.data.payload.last, *extra)
            if valid and ready:
                got.append(tuple(int(v) for v in item))
                idle = 0
            cycle, idle = cycle + 1, idle + 1
            assert idle < IDLE_LIMIT
        return cycle

    cycles = []

    async def take_all(ctx):
        cycles.append(await take(ctx))

    run_sim(dut, take_all, background=[commands])
    return got, expected, cycles[0], sum(w[1] * w[3] for w in plan)


@pytest.mark.parametrize("seed", range(6))
def test_random_walks_with_backpressure(seed):
    got, expected, _, _ = simulate(seed, ready_prob=0.5)
    assert got == expected


@pytest.mark.parametrize("chunk_bytes", [1, 2])
def test_preselected_chunks(chunk_bytes):
    """With `chunk_bytes`, every item also carries its chunk of the word, as `chunk_at`."""
    got, expected, _, _ = simulate(11 + chunk_bytes, ready_prob=0.5, chunk_bytes=chunk_bytes)
    assert got == expected


def test_one_item_a_clock():
    """Always ready: one walk's items come one a clock. The walk is taken in cycle 0, its
    first address read in cycle 1 and that item is on `data` `LATENCY` cycles later (its
    word lands in a register of its own before the queue)."""
    got, expected, cycles, items = simulate(7, ready_prob=1.0, walks=1)
    assert got == expected
    assert cycles == 1 + BufferReader.LATENCY + items


class ReaderOnTwoBuffers(Elaboratable):
    """A BufferReader on a read port of each of two `SlicedMemory` buffers of `depth` words,
    as the accelerator wires its activation reader, reading buffer `select`; the testbench
    fills both through their write ports first."""

    def __init__(self, depth, select):
        self.reader = BufferReader(word_bytes=WORD, depth=depth, ports=2)
        self.depth, self.select = depth, select
        self.buffers = []

    def elaborate(self, platform):
        m = Module()
        m.submodules.reader = r = self.reader
        self.buffers = [SlicedMemory(m, f"buf{i}", word_bytes=WORD, depth=self.depth)
                        for i in range(2)]
        for i, buf in enumerate(self.buffers):
            m.d.comb += r.mem_data[i].eq(buf.read_port(r.mem_addr, r.mem_en,
                                                       selected=int(i == self.select)))
        return m


def test_slices_fill_a_block_ram():
    """A slice is the widest power of two whose entries fit 16 Kbit: 64-bit words 8192 deep
    in 2-bit slices (32 block RAMs side by side), 512 deep in 32-bit ones."""
    assert [slice_bits(64, d) for d in (8192, 4096, 2048, 1024, 512, 64)] == [2, 4, 8, 16, 32,
                                                                              64]
    assert slice_bits(64, 25088) == 1 and slice_bits(8, 512) == 8


@pytest.mark.parametrize("depth, select", [(32, 0), (32, 1), (2048, 1), (8192, 0)])
def test_two_buffers_read_the_selected_one(depth, select):
    """The unselected buffer reads as zero and the reader ORs the two: the items are the
    selected buffer's words, as written with byte enables, in slices of 32, 8 and 2 bits."""
    rng = np.random.default_rng([depth, select])
    contents = [[int(w) for w in rng.integers(0, 2**32, depth, dtype=np.uint64)]
                for _ in range(2)]
    dut = ReaderOnTwoBuffers(depth, select)
    r = dut.reader
    plan = [random_walk(rng, depth) for _ in range(8)]
    held = [w ^ 0xFF for w in contents[select]]           # byte 0 left inverted
    expected = [item for walk in plan for item in expected_items(walk, held)]
    got = []

    async def fill_then_read(ctx):
        # Written whole, then bytes 0 and 2 inverted, then byte 2 restored: each slice obeys
        # its own byte's enable.
        for mask, flip in ((0b1111, 0), (0b0101, 0xFFFFFFFF), (0b0100, 0)):
            for addr in range(depth):
                for buf, words in zip(dut.buffers, contents):
                    ctx.set(buf.w_addr, addr)
                    ctx.set(buf.w_data, words[addr] ^ flip)
                    ctx.set(buf.w_en, mask)
                await ctx.tick()
        for buf in dut.buffers:
            ctx.set(buf.w_en, 0)
        ctx.set(r.data.ready, 1)
        for walk in plan:
            for field, value in zip(("base", "outer", "outer_stride", "inner", "inner_step"),
                                    walk):
                ctx.set(getattr(r.cmd.payload, field), value)
            ctx.set(r.cmd.valid, 1)
            while True:
                _, _, ready, valid, *item = await ctx.tick().sample(
                    r.cmd.ready, r.data.valid, r.data.payload.word, r.data.payload.addr,
                    r.data.payload.first, r.data.payload.last)
                if valid:
                    got.append(tuple(int(v) for v in item))
                if ready:
                    break
            ctx.set(r.cmd.valid, 0)
        idle = 0
        while len(got) < len(expected):
            _, _, valid, *item = await ctx.tick().sample(
                r.data.valid, r.data.payload.word, r.data.payload.addr, r.data.payload.first,
                r.data.payload.last)
            if valid:
                got.append(tuple(int(v) for v in item))
            idle += 1
            assert idle < IDLE_LIMIT + len(expected)

    run_sim(dut, fill_then_read)
    assert got == expected
