"""On-chip buffers as block RAMs cut by width: every block RAM holds a slice of the bits of
every word, so a read needs no select between block RAMs.

A 64 KiB buffer of 64-bit words is 8192 words deep, sixteen times a DP16KD at its widest
(512 x 36). Cascaded in depth (Yosys' own mapping, or banks of 512 words), a read selects
one of 16 block RAMs' words: 64 bits from every block RAM cross the die to a LUT tree, and on
the 85F nextpnr never finished routing that (250k arcs, a quarter of them still congested
after an hour). A DP16KD is as happy 8192 x 2 bits: 32 of them side by side hold the same
buffer, each word's 2-bit slice in each, and a read is those 32 slices concatenated, 64 wires
in all.

A read is registered twice: the block RAM's read (address in cycle t) and an output
register (the word in t + 2). A DP16KD drives its read data 5.8 ns after the clock
(nextpnr's speed grade 6 figure); behind a fabric flip-flop that nextpnr placed by the
reader rather than by the block RAM, that hop was the 45F's slowest path (10.97 ns, 4.8 of
routing). So on ECP5 (`dsp.targets_ecp5(platform)`, as `boards.synth` converts) the slices
are DP16KD instances with their own output register (REGMODE OUTREG), which Yosys' memory
mapping never sets, wired the way Yosys maps an inferred memory
(share/lattice/brams_map_16kd.v): port A writes, port B reads, the word address on the top
address lines, 9-bit lanes for 8- to 32-bit slices (32-bit: the 36-bit pseudo dual-port
mode, DI/DO halves on the A and B pins), byte enables on the low address lines in the 18-
and 36-bit modes. Elsewhere (Amaranth simulation, Verilator, other FPGAs) a slice is an
`amaranth.lib.memory.Memory` and a fabric register; `tests/test_cocotb_bram.py` runs both
builds side by side in Verilator (`sim/dp16kd_model.v` models the primitive's modes used
here). A read and a write of the same word in the same cycle are not defined (the block
RAM's ports collide); the accelerator never reads a word in the cycle it is written.

The write port is registered too (`WRITE_LATENCY`): the byte enables come from the layer's
result stream (a valid through the units' output select and the writer's mask) and fan out
to every slice across the die; unregistered, that was the slowest path once the reads were
(84.9 MHz on the 45F; an earlier round, commit 4421950, read 512 x 36 banks through OUTREG
and met the same path). A word written in cycle t is read correctly from cycle t + 2 on:
the accelerator reads a buffer's words at least three cycles after writing them (the
sequencer starts a walk only once the writer or the DMA reports idle or done, a register,
and the reader's address is registered again), which the bit-exact network tests exercise
at every layer boundary.
"""
from __future__ import annotations

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, Mux, Signal
from amaranth.lib.memory import Memory
from amaranth.utils import exact_log2

from .dsp import targets_ecp5

READ_LATENCY = 2        # address in cycle t, word in t + 2 (read port, output register)
WRITE_LATENCY = 1       # a write offered in cycle t is in the memory from cycle t + 2 on
BLOCK_BITS = 16384      # a DP16KD's data bits (x1 .. x18 true dual port, x36 simple)
# DP16KD data width per slice width: 8- to 32-bit slices use 9-bit lanes, one byte each.
_DATA_WIDTH = {1: 1, 2: 2, 4: 4, 8: 9, 16: 18, 32: 36}


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
    bit per byte) drive the write port; `read_port` adds a read port. `platform`: DP16KD
    instances with output registers on ECP5 (see the module docstring), else memories.
    """

    def __init__(self, m: Module, name: str, *, word_bytes: int, depth: int, platform=None):
        self._m, self._name = m, name
        self.word_bytes, self.depth = word_bytes, depth
        word_bits = 8 * word_bytes
        self.slice_bits = slice_bits(word_bits, depth)
        self.w_addr = Signal(range(depth), name=f"{name}_w_addr")
        self.w_data = Signal(word_bits, name=f"{name}_w_data")
        self.w_en = Signal(word_bytes, name=f"{name}_w_en")
        # The write port's register (see the module docstring); data and address need no
        # reset, the enables do.
        self._w_addr = Signal(range(depth), name=f"{name}_w_addr_r", reset_less=True)
        self._w_data = Signal(word_bits, name=f"{name}_w_data_r", reset_less=True)
        self._w_en = Signal(word_bytes, name=f"{name}_w_en_r")
        m.d.sync += [self._w_addr.eq(self.w_addr), self._w_data.eq(self.w_data),
                     self._w_en.eq(self.w_en)]
        self._ports = 0
        self._slices = []
        sb = self.slice_bits
        # Instances only where one block RAM holds a slice (a memory deeper than 16,384
        # words is left to Yosys' cascading).
        self._ecp5 = targets_ecp5(platform) and sb * depth <= BLOCK_BITS
        if self._ecp5:
            return
        for k in range(word_bits // sb):
            mem = m.submodules[f"{name}_s{k}"] = Memory(shape=sb, depth=depth, init=[])
            lo = k * sb
            if sb <= 8:
                port = mem.write_port()
                en = self._w_en[lo // 8]
            else:
                port = mem.write_port(granularity=8)
                en = self._w_en[lo // 8:(lo + sb) // 8]
            m.d.comb += [port.addr.eq(self._w_addr), port.data.eq(self._w_data[lo:lo + sb]),
                         port.en.eq(en)]
            self._slices.append(mem)

    def read_port(self, addr, en, selected=1) -> Signal:
        """A read port at `addr` (read while `en`): the word, `READ_LATENCY` cycles later,
        from the slices' output registers; zero unless `selected` was high with the address.

        A zero word lets a reader of several buffers pick one with an OR (`BufferReader`),
        which absorbs the zeroing AND into the same LUT. (Zeroing by the output registers'
        synchronous reset would save that input, but whether a DP16KD's RST in its OUTREG
        mode also clears the read latch of the next word is not documented anywhere we
        could check, so the block RAMs are never reset.)"""
        m, k = self._m, self._ports
        self._ports += 1
        selected_read = Signal(name=f"{self._name}_r{k}_selected")
        selected_out = Signal(name=f"{self._name}_r{k}_selected_out")
        m.d.sync += [selected_read.eq(selected), selected_out.eq(selected_read)]
        parts = []
        for i in range(8 * self.word_bytes // self.slice_bits):
            name = f"{self._name}_s{i}_r{k}"
            if self._ecp5:
                parts.append(self._dp16kd(name, i * self.slice_bits, addr, en))
                continue
            part = Signal(self.slice_bits, name=name)
            port = self._slices[i].read_port()
            m.d.comb += [port.addr.eq(addr), port.en.eq(en)]
            m.d.sync += part.eq(port.data)
            parts.append(part)
        return Mux(selected_out, Cat(*parts), 0)

    def _dp16kd(self, name: str, lo: int, r_addr, en) -> Signal:
        """The slice of bits [lo, lo + slice_bits) for one read port: a DP16KD written on
        port A, read on port B through its output register."""
        m, sb = self._m, self.slice_bits
        width = _DATA_WIDTH[sb]
        lsb = exact_log2(sb)        # the word address starts at AD[lsb]: 16384 / depth
        nbytes = max(1, sb // 8)
        data = self._w_data[lo:lo + sb]
        if width >= 9:      # one byte per 9-bit lane, its ninth bit unused
            data = Cat(Cat(data.word_select(b, 8), Const(0, 1)) for b in range(nbytes))
        di = Signal(36, name=f"{name}_DI")
        do = Signal(36, name=f"{name}_DO")
        w_addr = Signal(14 - lsb, name=f"{name}_ADW")
        addr = Signal(14 - lsb, name=f"{name}_ADR")
        m.d.comb += [di.eq(data), w_addr.eq(self._w_addr), addr.eq(r_addr)]
        byte_en = self._w_en[lo // 8:lo // 8 + nbytes]
        # Below the word address: byte enables in the 18- and 36-bit modes, else zero.
        low_a = ([byte_en[b] for b in range(nbytes)] if width >= 18 else []) + [Const(0)] * lsb
        ports = {
            "i_CLKA": ClockSignal("sync"), "i_CLKB": ClockSignal("sync"),
            "i_WEA": Const(1) if width >= 18 else byte_en[0], "i_CEA": Const(1),
            "i_OCEA": Const(1), "i_RSTA": Const(0),
            "i_WEB": Const(0), "i_CEB": en, "i_OCEB": Const(1), "i_RSTB": Const(0),
            **{f"i_CS{p}{i}": Const(0) for p in "AB" for i in range(3)},
            **{f"i_ADA{i}": low_a[i] for i in range(lsb)},
            **{f"i_ADB{i}": Const(0) for i in range(lsb)},
            **{f"i_ADA{lsb + i}": w_addr[i] for i in range(14 - lsb)},
            **{f"i_ADB{lsb + i}": addr[i] for i in range(14 - lsb)},
            **{f"i_DIA{i}": di[i] for i in range(18)},
            **{f"i_DIB{i}": di[18 + i] if width == 36 else Const(0) for i in range(18)},
            **{f"o_DOA{i}": do[i] if width == 36 else Signal(name=f"{name}_DOA{i}")
               for i in range(18)},
            **{f"o_DOB{i}": do[18 + i] if width == 36 else do[i] for i in range(18)},
        }
        m.submodules[name] = Instance(
            "DP16KD",
            p_DATA_WIDTH_A=width, p_DATA_WIDTH_B=width,
            p_REGMODE_A="NOREG", p_REGMODE_B="OUTREG",
            p_RESETMODE="SYNC", p_ASYNC_RESET_RELEASE="SYNC",
            p_CSDECODE_A="0b000", p_CSDECODE_B="0b000",
            p_CLKAMUX="CLKA", p_CLKBMUX="CLKB",
            p_WRITEMODE_A="NORMAL", p_WRITEMODE_B="NORMAL",
            p_GSR="DISABLED",
            **ports)
        if width >= 9:
            return Cat(do.word_select(b, 9)[:8] for b in range(nbytes))
        return do[:sb]
