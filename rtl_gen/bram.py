"""A block-RAM bank read through its output register: a word `READ_LATENCY` cycles after
its address, leaving the block RAM from a flip-flop.

An ECP5 DP16KD without its output register drives its read data 5.8 ns after the clock
(nextpnr's timing data, speed grade 6), and the accelerator's buffers are spread over the
die, so any path starting at a block RAM's output had ~4 ns of routing and a LUT left in a
10 ns cycle: that was the 45F's critical path at 96 MHz. With REGMODE OUTREG the word comes
out of the block's own output register instead, a flip-flop's clock-to-out. Yosys' ECP5
memory mapping never sets it (a register after a synchronous read port stays in the
fabric), so `Bank` instantiates the block RAMs itself on ECP5 platforms, the way
`rtl_gen.dsp` does for MULT18X18D.

`Bank` builds the same two read registers either way, so the latency is the same in every
simulator and on the board:

* for an ECP5 platform (`dsp.targets_ecp5`): DP16KD blocks in their 512 x 36 pseudo
  dual-port mode, port A writing, port B reading, both halves' output registers on. The
  wiring is the one Yosys' own map (share/lattice/brams_map_16kd.v, `$__PDPW16KD_`) gives
  an inferred 36-bit memory: write data DI[17:0] on DIA and DI[35:18] on DIB, read data
  DO[17:0] from DOA and DO[35:18] from DOB, the four 9-bit byte enables on ADA0..3 with WEA
  high, the word address on AD*5..13. A 9-bit lane holds one byte (its ninth bit unused), so
  a block holds 4 bytes of 512 words: `ceil(word_bytes / 4)` blocks side by side, and one
  such set per read port (a DP16KD's second port is the write);
* otherwise (Amaranth simulation, Verilator, other FPGAs): an `amaranth.lib.memory.Memory`
  with a byte-granular write port, and a register after each synchronous read port.

A read and a write of the same word in the same cycle are not defined (the block RAM's
ports collide); the accelerator never reads a word in the cycle it is written.
"""
from __future__ import annotations

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, Signal
from amaranth.lib.memory import Memory
from amaranth.utils import ceil_log2

from .dsp import targets_ecp5

READ_LATENCY = 2        # address in cycle t, word in t + 2 (read port, output register)
BLOCK_WORDS = 512       # a DP16KD at its widest: 512 x 36 bits
BLOCK_BYTES = 4         # 36 bits as four 9-bit byte lanes
_ADDR_LSB = 5           # a 36-bit word's address sits on AD*5..AD*13


class Bank:
    """`depth` (<= BLOCK_WORDS) words of `word_bytes` bytes, one byte-granular write port,
    any number of registered read ports.

    `w_addr`, `w_data` and `w_en` (one bit per byte) drive the write port; `read_port`
    adds a read port and returns its word, a register (see the module docstring).
    """

    def __init__(self, m: Module, name: str, *, word_bytes: int, depth: int, platform):
        if depth > BLOCK_WORDS:
            raise ValueError(f"{name}: a bank holds at most {BLOCK_WORDS} words, not {depth}")
        self._m, self._name = m, name
        self.word_bytes, self.depth = word_bytes, depth
        self.w_addr = Signal(range(depth), name=f"{name}_w_addr")
        self.w_data = Signal(8 * word_bytes, name=f"{name}_w_data")
        self.w_en = Signal(word_bytes, name=f"{name}_w_en")
        self._ecp5 = targets_ecp5(platform)
        self._ports = 0
        if not self._ecp5:
            self._mem = m.submodules[name] = Memory(shape=8 * word_bytes, depth=depth, init=[])
            port = self._mem.write_port(granularity=8)
            m.d.comb += [port.addr.eq(self.w_addr), port.data.eq(self.w_data),
                         port.en.eq(self.w_en)]

    def read_port(self, addr, en) -> Signal:
        """A read port at `addr` (read while `en`): the word, `READ_LATENCY` cycles later."""
        m, k = self._m, self._ports
        self._ports += 1
        word = Signal(8 * self.word_bytes, name=f"{self._name}_r{k}")
        if self._ecp5:
            blocks = -(-self.word_bytes // BLOCK_BYTES)
            m.d.comb += word.eq(Cat(self._dp16kd(f"{self._name}_r{k}_b{b}", b, addr, en)
                                    for b in range(blocks)))
        else:
            port = self._mem.read_port()
            m.d.comb += [port.addr.eq(addr), port.en.eq(en)]
            m.d.sync += word.eq(port.data)
        return word

    def _dp16kd(self, name: str, block: int, addr, en) -> Signal:
        """Block `block` (bytes 4*block .. 4*block+3) of one read port's copy: its bytes."""
        lanes = range(BLOCK_BYTES * block, min(BLOCK_BYTES * (block + 1), self.word_bytes))
        zero = Const(0, 1)
        di = Cat(Cat(self.w_data.word_select(i, 8), zero) for i in lanes)
        be = Cat(self.w_en[i] for i in lanes)
        do = Signal(36, name=f"{name}_DO")
        abits = ceil_log2(BLOCK_WORDS)
        w_addr = Signal(abits, name=f"{name}_ADW")
        r_addr = Signal(abits, name=f"{name}_ADR")
        di36 = Signal(36, name=f"{name}_DI")
        be4 = Signal(4, name=f"{name}_BE")
        self._m.d.comb += [w_addr.eq(self.w_addr), r_addr.eq(addr), di36.eq(di), be4.eq(be)]
        ports = {
            "i_CLKA": ClockSignal("sync"), "i_CLKB": ClockSignal("sync"),
            "i_WEA": Const(1), "i_CEA": Const(1), "i_OCEA": Const(1), "i_RSTA": Const(0),
            "i_WEB": Const(0), "i_CEB": en, "i_OCEB": Const(1), "i_RSTB": Const(0),
            **{f"i_CS{p}{i}": Const(0) for p in "AB" for i in range(3)},
            **{f"i_ADA{i}": be4[i] for i in range(4)},
            **{f"i_ADB{i}": Const(0) for i in range(4)},
            "i_ADA4": Const(0), "i_ADB4": Const(0),
            **{f"i_ADA{_ADDR_LSB + i}": w_addr[i] for i in range(abits)},
            **{f"i_ADB{_ADDR_LSB + i}": r_addr[i] for i in range(abits)},
            **{f"i_DIA{i}": di36[i] for i in range(18)},
            **{f"i_DIB{i}": di36[18 + i] for i in range(18)},
            **{f"o_DOA{i}": do[i] for i in range(18)},
            **{f"o_DOB{i}": do[18 + i] for i in range(18)},
        }
        self._m.submodules[name] = Instance(
            "DP16KD",
            p_DATA_WIDTH_A=36, p_DATA_WIDTH_B=36,
            p_REGMODE_A="OUTREG", p_REGMODE_B="OUTREG",
            p_RESETMODE="SYNC", p_ASYNC_RESET_RELEASE="SYNC",
            p_CSDECODE_A="0b000", p_CSDECODE_B="0b000",
            p_CLKAMUX="CLKA", p_CLKBMUX="CLKB",
            p_WRITEMODE_A="NORMAL", p_WRITEMODE_B="NORMAL",
            p_GSR="DISABLED",
            **ports)
        return Cat(do.word_select(i, 9)[:8] for i in range(len(lanes)))
