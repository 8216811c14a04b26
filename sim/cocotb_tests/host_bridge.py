"""cocotb side of `sim.bridge_transport.VerilatorTransport`: the Verilated accelerator (inside
`sim.axi_mem_model.with_memory`) serves a host driver's bus operations, one request at a
time, over a Unix socket, the way a UART/Etherbone bridge serves them on a board.

The requests travel as `sim.cocotb_tests.host_requests` describes (a ``write_mem`` followed
by its ``n`` raw bytes, a ``read_mem`` answer by its bytes). Operations: ``read32``/``write32`` (AXI4-Lite,
cocotbext-axi ``AxiLiteMaster``), ``read_mem``/``write_mem`` (the DDR model's backdoor),
``wait_irq`` (sleep until ``irq`` or ``cycles`` pass; no Python on clock edges meanwhile),
``idle`` (let ``cycles`` pass) and ``close``.
"""
from __future__ import annotations

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge
from cocotbext.axi import AxiLiteBus, AxiLiteMaster

from sim.axi_mem_model import AxiMemBackdoor
from sim.cocotb_tests.accel_network import wait_for_irq
from sim.cocotb_tests.host_requests import idle_handler, serve_requests
from sim.verilator_runner import load_params


@cocotb.test()
async def serve(dut):
    p = load_params()
    clock_ns = p["clock_ns"]
    Clock(dut.clk, clock_ns, unit="ns").start()
    dut.rst.value = 1
    dut.ddr__load.value = 0
    dut.ddr__dump.value = 0
    dut.ddr__stall.value = p.get("stall", 0)
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    ddr = AxiMemBackdoor(dut, bus_bytes=p["bus_bytes"])
    lite = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axi", bus_separator="__"),
                         dut.clk, dut.rst)

    async def read32(req, read):
        return {"value": int(await lite.read_dword(req["addr"]))}, b""

    async def write32(req, read):
        await lite.write_dword(req["addr"], req["value"])
        return {}, b""

    async def write_mem(req, read):
        await ddr.write(req["addr"], read(req["n"]))
        return {}, b""

    async def read_mem(req, read):
        data = await ddr.read(req["addr"], req["n"])
        return {"n": len(data)}, data

    async def wait_irq(req, read):
        waited, timed_out = await wait_for_irq(dut, clock_ns, p["chunk_cycles"], req["cycles"])
        return {"irq": not timed_out, "cycles": waited}, b""

    await serve_requests(p["socket"], {
        "read32": read32, "write32": write32, "write_mem": write_mem, "read_mem": read_mem,
        "wait_irq": wait_irq, "idle": idle_handler(clock_ns)})
