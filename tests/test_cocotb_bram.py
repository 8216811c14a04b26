"""The ECP5 build of the buffers' block RAMs (`rtl_gen.bram.SlicedMemory` as DP16KD instances
with output registers, which only synthesis sees otherwise) against the Amaranth memories
every other simulation uses, in Verilator with a behavioural DP16KD model
(`sim/dp16kd_model.v`), one case per DP16KD mode the slices take."""
from pathlib import Path

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from rtl_gen.bram import READ_LATENCY, SlicedMemory
from sim.verilator_runner import build, run, verilator_available

_unavailable = verilator_available()
pytestmark = pytest.mark.skipif(_unavailable is not None, reason=_unavailable or "")

MODEL = Path(__file__).resolve().parents[1] / "sim" / "dp16kd_model.v"


class ECP5:
    """Just enough of an ECP5 platform for `dsp.targets_ecp5`."""
    family = "ecp5"


class SlicedPair(wiring.Component):
    """One write port into two `SlicedMemory`s, ECP5 and generic; one read address and
    select, both words out."""

    def __init__(self, word_bytes: int, depth: int):
        self.word_bytes, self.depth = word_bytes, depth
        super().__init__({
            "w_addr": In(range(depth)), "w_data": In(8 * word_bytes), "w_en": In(word_bytes),
            "r_addr": In(range(depth)), "r_selected": In(1),
            "ecp5_word": Out(8 * word_bytes), "generic_word": Out(8 * word_bytes),
        })

    def elaborate(self, platform):
        m = Module()
        for name, target in (("ecp5", ECP5()), ("generic", None)):
            mem = SlicedMemory(m, name, word_bytes=self.word_bytes, depth=self.depth,
                               platform=target)
            m.d.comb += [mem.w_addr.eq(self.w_addr), mem.w_data.eq(self.w_data),
                         mem.w_en.eq(self.w_en),
                         getattr(self, f"{name}_word").eq(
                             mem.read_port(self.r_addr, 1, self.r_selected))]
        return m


def test_ecp5_slices_are_instances():
    """The ECP5 build has no Amaranth memories: every slice is a DP16KD instance (two 32-bit
    slices here), the generic build's two slices are memories (one write port each)."""
    import re

    from amaranth.back import rtlil
    text = rtlil.convert(SlicedPair(8, 512), name="pair")
    assert len(re.findall(r"cell \\DP16KD ", text)) == 2
    assert len(re.findall(r"cell \$memwr_v2 ", text)) == 2


# (word bytes, depth) -> slice bits 2 (x2), 8 (x9 lanes), 16 (x18, byte enables on AD0-1),
# 32 (x36 pseudo dual port).
@pytest.mark.parametrize("word_bytes,depth", [(8, 8192), (4, 2048), (4, 1024), (8, 512)])
def test_dp16kd_slices_match_amaranth_memories(word_bytes, depth):
    b = build(SlicedPair(word_bytes, depth), name=f"sliced_pair_{word_bytes}x{depth}",
              extra_verilog={"dp16kd_model.v": MODEL.read_text()})
    r = run(b, "sim.cocotb_tests.bram_slices",
            params={"word_bytes": word_bytes, "depth": depth, "latency": READ_LATENCY,
                    "seed": word_bytes * depth, "cycles": 3000})
    assert r.tests == 1
