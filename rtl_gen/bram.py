"""A block-RAM bank read through an output register: a word `READ_LATENCY` cycles after its
address, from a flip-flop.

An ECP5 DP16KD drives its read data 5.8 ns after the clock (nextpnr's timing data, speed
grade 6) and the accelerator's buffers are spread over the die, so a path from a block RAM
across the die into logic did not fit a 10 ns cycle. `Bank` registers each read port's word
right behind its block RAM (a flip-flop the placer puts next to it), and the `BufferReader`
lands that word in a register of its own before any logic: the route across the die gets
a cycle of its own.

The DP16KD's own output register (REGMODE OUTREG), which Yosys' memory mapping never sets,
was tried as that first register (DP16KD instantiated directly, wired as Yosys' own map wires
a 36-bit memory; commit 4421950). On the 45F it placed and routed worse: nextpnr's
post-placement estimate 57 MHz against 71 for this inferred memory with a fabric register,
routed 80.17 MHz with the block RAMs' byte enables the slowest path. So the bank is plain
Amaranth, and the register is a fabric flip-flop.
"""
from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib.memory import Memory

READ_LATENCY = 2        # address in cycle t, word in t + 2 (read port, output register)
BLOCK_WORDS = 512       # a DP16KD at its widest: 512 x 36 bits


class Bank:
    """`depth` (<= BLOCK_WORDS) words of `word_bytes` bytes, one byte-granular write port,
    any number of registered read ports.

    `w_addr`, `w_data` and `w_en` (one bit per byte) drive the write port; `read_port`
    adds a read port and returns its word, a register (see the module docstring).
    """

    def __init__(self, m: Module, name: str, *, word_bytes: int, depth: int):
        if depth > BLOCK_WORDS:
            raise ValueError(f"{name}: a bank holds at most {BLOCK_WORDS} words, not {depth}")
        self._m, self._name = m, name
        self.word_bytes, self.depth = word_bytes, depth
        self.w_addr = Signal(range(depth), name=f"{name}_w_addr")
        self.w_data = Signal(8 * word_bytes, name=f"{name}_w_data")
        self.w_en = Signal(word_bytes, name=f"{name}_w_en")
        self._ports = 0
        self._mem = m.submodules[name] = Memory(shape=8 * word_bytes, depth=depth, init=[])
        port = self._mem.write_port(granularity=8)
        m.d.comb += [port.addr.eq(self.w_addr), port.data.eq(self.w_data),
                     port.en.eq(self.w_en)]

    def read_port(self, addr, en, hit=1) -> Signal:
        """A read port at `addr` (read while `en`): the word, `READ_LATENCY` cycles later,
        or zero if `hit` was low with the address (the read was for another bank).

        Zero words let a reader pick the addressed bank's word with an OR of all banks'
        words: a 4-input OR is one LUT4 per bit, so groups of neighbouring banks merge into
        one word before it crosses the die (see `BufferReader`). The zero is the output
        register's synchronous reset, a flip-flop's own input."""
        m, k = self._m, self._ports
        self._ports += 1
        word = Signal(8 * self.word_bytes, name=f"{self._name}_r{k}")
        hit_read = Signal(name=f"{self._name}_r{k}_hit")
        port = self._mem.read_port()
        m.d.comb += [port.addr.eq(addr), port.en.eq(en)]
        m.d.sync += [hit_read.eq(hit), word.eq(Mux(hit_read, port.data, 0))]
        return word
