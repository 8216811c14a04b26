"""cocotb side of `sim.bridge_transport.VerilatorTransport`: the Verilated accelerator (inside
`sim.axi_mem_model.with_memory`) serves a host driver's bus operations, one request at a
time, over a Unix socket, the way a UART/Etherbone bridge serves them on a board.

The host holds the socket's listening end (path in the ``socket`` param). Each request is one
JSON line, a ``write_mem`` followed by its ``n`` raw bytes; each answer is one JSON line, a
``read_mem`` answer followed by its bytes. Operations: ``read32``/``write32`` (AXI4-Lite,
cocotbext-axi ``AxiLiteMaster``), ``read_mem``/``write_mem`` (the DDR model's backdoor),
``wait_irq`` (sleep until ``irq`` or ``cycles`` pass; no Python on clock edges meanwhile),
``idle`` (let ``cycles`` pass) and ``close``. While the host thinks, simulated time stands
still: the simulator only advances while this coroutine awaits.
"""
from __future__ import annotations

import json
import socket

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge, Timer
from cocotbext.axi import AxiLiteBus, AxiLiteMaster

from sim.axi_mem_model import AxiMemBackdoor
from sim.cocotb_tests.accel_network import wait_for_irq
from sim.verilator_runner import load_params


def _read_exact(f, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise ConnectionError(f"host sent {len(data)} of {n} bytes")
    return data


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

    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(p["socket"])
    f = conn.makefile("rwb")
    try:
        while True:
            line = f.readline()
            if not line:
                break                                   # the host went away
            req = json.loads(line)
            op, payload = req["op"], b""
            if op == "read32":
                answer = {"value": int(await lite.read_dword(req["addr"]))}
            elif op == "write32":
                await lite.write_dword(req["addr"], req["value"])
                answer = {}
            elif op == "write_mem":
                await ddr.write(req["addr"], _read_exact(f, req["n"]))
                answer = {}
            elif op == "read_mem":
                payload = await ddr.read(req["addr"], req["n"])
                answer = {"n": len(payload)}
            elif op == "wait_irq":
                waited, timed_out = await wait_for_irq(dut, clock_ns, p["chunk_cycles"],
                                                       req["cycles"])
                answer = {"irq": not timed_out, "cycles": waited}
            elif op == "idle":
                await Timer(max(1, req["cycles"]) * clock_ns, unit="ns")
                answer = {}
            elif op == "close":
                f.write(b"{}\n")
                f.flush()
                break
            else:
                answer = {"error": f"unknown operation {op!r}"}
            f.write(json.dumps(answer).encode() + b"\n" + payload)
            f.flush()
    finally:
        f.close()
        conn.close()
