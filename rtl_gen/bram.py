"""On-chip buffers as block RAMs cut by width: every block RAM holds a slice of the bits of
every word, so a read needs no select between block RAMs.

A 64 KiB buffer of 64-bit words is 8192 words deep, sixteen times a DP16KD at its widest
(512 x 36). Cascaded in depth (Yosys' own mapping, or banks of 512 words), a read selects
one of 16 block RAMs' words: 64 bits from every block RAM cross the die to a LUT tree, and on
the 85F nextpnr never finished routing that (250k arcs, a quarter of them still congested
after an hour). A DP16KD is as happy 8192 x 2 bits: 32 of them side by side hold the same
buffer, each word's 2-bit slice in each, and a read is those 32 slices concatenated, 64 wires
in all. Each slice's bits land in a fabric flip-flop beside its block RAM (the DP16KD drives
its read data 5.8 ns after the clock, nextpnr's speed grade 6 figure, too late to cross the
die in the same cycle), and the reader lands the word again before any logic.

The DP16KD's own output register (REGMODE OUTREG), which Yosys' memory mapping never sets,
was tried as that first register (commit 4421950); on the 45F it placed and routed worse (the
block RAMs' byte enables the slowest path), so the register is a fabric flip-flop.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib.memory import Memory

READ_LATENCY = 2        # address in cycle t, word in t + 2 (read port, output register)
BLOCK_BITS = 16384      # a DP16KD's data bits (x1 .. x18 true dual port, x36 simple)


def slice_bits(word_bits: int, depth: int) -> int:
    """The widest power-of-two slice of a word (at most the word) whose `depth` entries fit
    one block RAM; 1 for a memory deeper than a block RAM's 16,384 bits (synthesis then
    cascades those slices in depth)."""
    bits = 1
    while bits * 2 <= word_bits and bits * 2 * depth <= BLOCK_BITS:
        bits *= 2
    return bits


class SlicedMemory:
    """`depth` words of `word_bytes` bytes in slices of `slice_bits(...)` bits, one
    byte-granular write port, any number of registered read ports.

    Construction adds the slices to `m` (`{name}_s{k}`); `w_addr`, `w_data` and `w_en` (one
    bit per byte) drive the write port; `read_port` adds a read port.
    """

    def __init__(self, m: Module, name: str, *, word_bytes: int, depth: int):
        self._m, self._name = m, name
        self.word_bytes, self.depth = word_bytes, depth
        word_bits = 8 * word_bytes
        self.slice_bits = slice_bits(word_bits, depth)
        self.w_addr = Signal(range(depth), name=f"{name}_w_addr")
        self.w_data = Signal(word_bits, name=f"{name}_w_data")
        self.w_en = Signal(word_bytes, name=f"{name}_w_en")
        self._ports = 0
        self._slices = []
        sb = self.slice_bits
        for k in range(word_bits // sb):
            mem = m.submodules[f"{name}_s{k}"] = Memory(shape=sb, depth=depth, init=[])
            lo = k * sb
            if sb <= 8:
                port = mem.write_port()
                en = self.w_en[lo // 8]
            else:
                port = mem.write_port(granularity=8)
                en = self.w_en[lo // 8:(lo + sb) // 8]
            m.d.comb += [port.addr.eq(self.w_addr), port.data.eq(self.w_data[lo:lo + sb]),
                         port.en.eq(en)]
            self._slices.append(mem)

    def read_port(self, addr, en, selected=1) -> Signal:
        """A read port at `addr` (read while `en`): the word, `READ_LATENCY` cycles later,
        from the slices' output registers; zero unless `selected` was high with the address.

        A zero word lets a reader of several buffers pick one with an OR (`BufferReader`).
        The zero is the output registers' synchronous reset, a flip-flop's own input."""
        m, k = self._m, self._ports
        self._ports += 1
        selected_read = Signal(name=f"{self._name}_r{k}_selected")
        m.d.sync += selected_read.eq(selected)
        parts = []
        for i, mem in enumerate(self._slices):
            part = Signal(self.slice_bits, name=f"{self._name}_s{i}_r{k}")
            port = mem.read_port()
            m.d.comb += [port.addr.eq(addr), port.en.eq(en)]
            m.d.sync += part.eq(Mux(selected_read, port.data, 0))
            parts.append(part)
        return Cat(*parts)
