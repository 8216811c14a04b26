"""The ECP5 build of the buffers' block RAMs (`rtl_gen.bram`: DP16KD instances with output
registers, which only synthesis sees otherwise) against the Amaranth memories every other
simulation uses, in Verilator with a behavioural DP16KD model (`sim/dp16kd_model.v`)."""
from pathlib import Path

import pytest
from amaranth.hdl import Array, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from rtl_gen.bram import READ_LATENCY
from rtl_gen.buffers import BankedMemory
from sim.verilator_runner import build, run, verilator_available

_unavailable = verilator_available()
pytestmark = pytest.mark.skipif(_unavailable is not None, reason=_unavailable or "")

MODEL = Path(__file__).resolve().parents[1] / "sim" / "dp16kd_model.v"


class ECP5:
    """Just enough of an ECP5 platform for `dsp.targets_ecp5`."""
    family = "ecp5"


class BankPair(wiring.Component):
    """One write port into two `BankedMemory`s, ECP5 and generic; one read address, both
    selected words out."""

    def __init__(self, word_bytes: int, depth: int):
        self.word_bytes, self.depth = word_bytes, depth
        super().__init__({
            "w_addr": In(range(depth)), "w_data": In(8 * word_bytes), "w_en": In(word_bytes),
            "r_addr": In(range(depth)),
            "ecp5_word": Out(8 * word_bytes), "generic_word": Out(8 * word_bytes),
        })

    def elaborate(self, platform):
        m = Module()
        for name, target in (("ecp5", ECP5()), ("generic", None)):
            mem = BankedMemory(m, name, word_bytes=self.word_bytes, depth=self.depth,
                               platform=target)
            m.d.comb += [mem.w_addr.eq(self.w_addr), mem.w_data.eq(self.w_data),
                         mem.w_en.eq(self.w_en)]
            words, bank = mem.read_port(m, self.r_addr, 1)
            m.d.comb += getattr(self, f"{name}_word").eq(Array(words)[bank])
        return m


@pytest.mark.parametrize("word_bytes,depth", [(6, 1536), (8, 256)])
def test_dp16kd_banks_match_amaranth_memories(word_bytes, depth):
    """6-byte words: a block with two unused byte lanes; 1536 words: three banks."""
    b = build(BankPair(word_bytes, depth), name=f"bank_pair_{word_bytes}x{depth}",
              extra_verilog={"dp16kd_model.v": MODEL.read_text()})
    r = run(b, "sim.cocotb_tests.bram_bank",
            params={"word_bytes": word_bytes, "depth": depth, "latency": READ_LATENCY,
                    "seed": word_bytes, "cycles": 3000})
    assert r.tests == 1
