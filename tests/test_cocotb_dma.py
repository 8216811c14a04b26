"""Cycle-accurate Verilator + cocotb tests of the AXI DMA and of the fast DDR model that the
full-accelerator simulations use (cocotb modules in sim/cocotb_tests/).

Verilator builds are cached in ~/.cache/mobilenet-accel/verilator/ (`sim.verilator_runner`)
by a hash of the RTL, so only the first run after an RTL change pays for them: about 30 s for
the very first build (Verilator's runtime, then cached too) and 3-10 s for each further
design on two busy cores.
"""
from dataclasses import asdict

import pytest
from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from rtl_gen.axi import AXI4Signature
from rtl_gen.config import AccelConfig
from rtl_gen.dma import AxiDMA, dma_command_layout
from sim.axi_mem_model import with_memory
from sim.verilator_runner import build, run, verilator_available

_unavailable = verilator_available()
pytestmark = pytest.mark.skipif(_unavailable is not None, reason=_unavailable or "")

CFG = AccelConfig()
MEM_BYTES = 4 << 20


class DmaCopy(wiring.Component):
    """`AxiDMA` with its read stream looped into its write stream: a DDR-to-DDR copier
    whose data never leaves the RTL."""

    def __init__(self, cfg: AccelConfig):
        self.cfg = cfg
        cmd = In(stream.Signature(dma_command_layout(cfg)))
        super().__init__({
            "rd_cmd": cmd, "wr_cmd": cmd,
            "m_axi": Out(AXI4Signature.from_config(cfg)),
            "rd_busy": Out(1), "rd_done": Out(1), "rd_error": Out(1),
            "wr_busy": Out(1), "wr_done": Out(1), "wr_error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.dma = dma = AxiDMA(self.cfg)
        wiring.connect(m, dma.rd_data, dma.wr_data)
        wiring.connect(m, wiring.flipped(self.m_axi), dma.m_axi)
        for name in ("rd_cmd", "wr_cmd"):
            wiring.connect(m, wiring.flipped(getattr(self, name)), getattr(dma, name))
        for name in ("rd_busy", "rd_done", "rd_error", "wr_busy", "wr_done", "wr_error"):
            m.d.comb += getattr(self, name).eq(getattr(dma, name))
        return m


class AxiPassThrough(wiring.Component):
    """Hands its ``s_axi`` port straight to ``m_axi``, so that `with_memory` exposes the
    memory model's AXI port to the testbench."""

    def __init__(self, cfg: AccelConfig):
        self.cfg = cfg
        sig = AXI4Signature.from_config(cfg)
        super().__init__({"s_axi": In(sig), "m_axi": Out(sig)})

    def elaborate(self, platform):
        m = Module()
        wiring.connect(m, wiring.flipped(self.s_axi), wiring.flipped(self.m_axi))
        return m


def test_fast_memory_model_timing_and_traffic():
    params = {"cfg": asdict(CFG), "seed": 3, "size": 60 << 10, "rounds": 15,
              "read_latency": 10, "beat_interval": 3}
    top = with_memory(AxiPassThrough(CFG), size=params["size"],
                      read_latency=params["read_latency"], beat_interval=params["beat_interval"])
    r = run(build(top, name="axi_mem_model"), "sim.cocotb_tests.mem_model", params=params)
    assert r.tests == 2


def test_dma_against_cocotbext_axiram():
    b = build(AxiDMA(CFG), name="axi_dma")
    r = run(b, "sim.cocotb_tests.dma_axiram",
            params={"cfg": asdict(CFG), "seed": 1, "stall": 0.3, "transfers": 12})
    assert r.tests == 3


def test_dma_copy_with_fast_memory_model():
    top = with_memory(DmaCopy(CFG), size=MEM_BYTES, read_latency=20)
    b = build(top, name="dma_copy_ddr")
    r = run(b, "sim.cocotb_tests.dma_fastmem",
            params={"cfg": asdict(CFG), "seed": 2, "size": MEM_BYTES, "copies": 20,
                    "long_bytes": 1 << 20})
    m = r.metrics
    print(f"1 MiB DDR-to-DDR copy: {m['copy_cycles']} cycles in {m['copy_wall_s']:.2f} s wall "
          f"= {m['cycles_per_s']:,.0f} simulated cycles/s ({m['cycles_per_cpu_s']:,.0f} per CPU "
          f"second); backdoor load {m['backdoor_load_s']:.3f} s, read-back "
          f"{m['backdoor_read_s']:.3f} s")
    assert r.tests == 3
