"""`sim.axi_mem_model.AxiMemModel` on its own, through `with_memory` and a pass-through DUT.

The top (``AxiPassThrough`` in ``tests/test_cocotb_dma.py``) exposes the model's AXI port as
``s_axi`` and its backdoor as ``ddr``. Checks: the documented read latency and beat pacing,
cycle for cycle; IDs echoed; partial-strobe writes; DECERR past the end; and random traffic
from cocotbext-axi's `AxiMaster` agreeing with the backdoor and a host-side copy.
"""
from __future__ import annotations

import logging
import random

import cocotb
from cocotb.triggers import RisingEdge, gather
from cocotbext.axi import AxiBus, AxiMaster, AxiResp

from sim.axi_mem_model import AxiMemBackdoor
from sim.cocotb_tests import dma_bench as bench
from sim.verilator_runner import load_params


async def handshake(dut, channel: str) -> None:
    """Hold ``s_axi__<channel>valid`` until the edge that takes it, then drop it."""
    valid, ready = (getattr(dut, f"s_axi__{channel}{s}") for s in ("valid", "ready"))
    valid.value = 1
    await RisingEdge(dut.clk)
    while not ready.value:
        await RisingEdge(dut.clk)
    valid.value = 0


@cocotb.test(timeout_time=1, timeout_unit="ms")
async def latency_pacing_and_ids(dut):
    """First R beat ``read_latency`` cycles after AR; beats ``beat_interval`` apart; IDs echoed;
    write strobes merge bytes; B answers the burst's ID."""
    cfg, p = bench.config(), load_params()
    bb = cfg.bus_bytes
    ddr = AxiMemBackdoor(dut, bus_bytes=bb)
    await bench.start(dut)
    image = bytes(range(256)) * 2
    await ddr.write(0x100, image)

    dut.s_axi__araddr.value, dut.s_axi__arlen.value, dut.s_axi__arid.value = 0x100, 7, 5
    dut.s_axi__arsize.value, dut.s_axi__arburst.value = bb.bit_length() - 1, 1
    dut.s_axi__rready.value = 1
    await handshake(dut, "ar")
    cycle, beats = 0, []                  # cycle 0 is the AR handshake's
    while len(beats) < 8:
        await RisingEdge(dut.clk)
        cycle += 1
        if dut.s_axi__rvalid.value:
            beats.append((cycle, int(dut.s_axi__rdata.value), int(dut.s_axi__rid.value),
                          int(dut.s_axi__rlast.value)))
    assert beats[0][0] == p["read_latency"], f"first beat at cycle {beats[0][0]}"
    assert [b[0] - beats[0][0] for b in beats] == [i * p["beat_interval"] for i in range(8)]
    assert bench.from_words([b[1] for b in beats], bb) == image[:8 * bb]
    assert [b[2] for b in beats] == [5] * 8 and [b[3] for b in beats] == [0] * 7 + [1]

    dut.s_axi__awaddr.value, dut.s_axi__awlen.value, dut.s_axi__awid.value = 0x108, 1, 9
    dut.s_axi__awsize.value, dut.s_axi__awburst.value = bb.bit_length() - 1, 1
    dut.s_axi__bready.value = 1
    await handshake(dut, "aw")
    for i, strb in enumerate((0b1, 1 << (bb - 1))):
        dut.s_axi__wdata.value = int.from_bytes(b"\xee" * bb, "little")
        dut.s_axi__wstrb.value, dut.s_axi__wlast.value = strb, i
        await handshake(dut, "w")
    while not dut.s_axi__bvalid.value:
        await RisingEdge(dut.clk)
    assert dut.s_axi__bid.value == 9 and dut.s_axi__bresp.value == AxiResp.OKAY
    expected = bytearray(image[8:8 + 2 * bb])
    expected[0], expected[2 * bb - 1] = 0xEE, 0xEE
    assert await ddr.read(0x108, 2 * bb) == expected


@cocotb.test(timeout_time=10, timeout_unit="ms")
async def random_traffic(dut):
    """cocotbext-axi AxiMaster traffic (any alignment, several IDs in flight) matches a host
    copy, seen both over AXI and through the backdoor; past the end answers DECERR."""
    cfg, p = bench.config(), load_params()
    rng = random.Random(p["seed"])
    size = p["size"]
    master = AxiMaster(AxiBus.from_prefix(dut, "s_axi", bus_separator="__"), dut.clk, dut.rst)
    for port in (master.read_if, master.write_if):
        logging.getLogger(port.log.name).setLevel(logging.ERROR)
    ddr = AxiMemBackdoor(dut, bus_bytes=cfg.bus_bytes)
    await bench.start(dut)
    host = bytearray(rng.randbytes(size))
    await ddr.write(0, bytes(host))

    async def one(addr: int, payload: bytes) -> None:
        await master.write(addr, payload)
        host[addr:addr + len(payload)] = payload
        assert (await master.read(addr, len(payload))).data == payload

    quarter = size // 4
    for _ in range(p["rounds"]):          # four concurrent transfers, one in each quarter
        spans = []
        for q in range(4):
            length = rng.randint(1, 700)
            spans.append((q * quarter + rng.randrange(0, quarter - length), rng.randbytes(length)))
        await gather(*(one(a, d) for a, d in spans))
    assert await ddr.read(0, size) == host

    resp = await master.read(size - 8, 32)
    assert resp.resp == AxiResp.DECERR
    resp = await master.write(size, bytes(16))
    assert resp.resp == AxiResp.DECERR
    assert await ddr.read(0, size) == host, "a DECERR write changed memory"
