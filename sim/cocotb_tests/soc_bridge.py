"""cocotb side of `sim.soc_sim.SoCSim`: the Verilated SoC (`boards.soc.SimSoC`) and
the bytes of its UART bridge.

The host speaks LiteX's UARTBone protocol itself (LiteX's own ``CommUART``); this bench only
moves bytes between the host's socket and the SoC's serial byte streams (``serial_sink_*``:
host to SoC, ``serial_source_*``: SoC to host), one byte per clock each way at most, as
``RS232PHYModel`` gives them. Requests (`sim.cocotb_tests.host_requests`):

* ``xfer``: send the ``n`` payload bytes, then keep clocking until ``want`` bytes have come
  back (answered with them, and the cycles it took);
* ``idle``: let ``cycles`` pass (no Python on clock edges meanwhile);
* ``close``.

Bytes the SoC sends while nobody waits for them are an error: UARTBone only answers reads.
"""
from __future__ import annotations

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from sim.cocotb_tests.host_requests import idle_handler, serve_requests
from sim.verilator_runner import load_params


async def _xfer(dut, send: bytes, want: int, limit: int) -> tuple[bytes, int]:
    """Clock ``send`` into the SoC and collect ``want`` bytes from it; returns them and the
    cycles spent (``limit`` cycles without progress: a bridge that does not answer).

    Inputs change on the falling edge; the handshakes the next rising edge commits are read
    once the design has settled with them (``ReadOnly``)."""
    got, i, cycles, quiet = bytearray(), 0, 0, 0
    while i < len(send) or len(got) < want:
        await FallingEdge(dut.sys_clk)
        sending = i < len(send)
        dut.serial_sink_valid.value = int(sending)
        if sending:
            dut.serial_sink_data.value = send[i]
        await ReadOnly()
        progress = False
        if sending and dut.serial_sink_ready.value:
            i, progress = i + 1, True
        if dut.serial_source_valid.value:
            got.append(int(dut.serial_source_data.value))
            progress = True
        await RisingEdge(dut.sys_clk)
        cycles += 1
        quiet = 0 if progress else quiet + 1
        if quiet > limit:
            raise TimeoutError(f"the bridge did not answer: {len(got)} of {want} bytes after "
                               f"{limit} idle cycles")
    await FallingEdge(dut.sys_clk)
    dut.serial_sink_valid.value = 0
    if len(got) > want:
        raise AssertionError(f"the SoC sent {len(got) - want} bytes nobody asked for")
    return bytes(got), cycles


@cocotb.test()
async def serve(dut):
    p = load_params()
    clock_ns = p["clock_ns"]
    Clock(dut.sys_clk, clock_ns, unit="ns").start()
    dut.sys_rst.value = 1
    dut.serial_sink_valid.value = 0
    dut.serial_sink_data.value = 0
    dut.serial_source_ready.value = 1
    for _ in range(8):
        await RisingEdge(dut.sys_clk)
    dut.sys_rst.value = 0
    for _ in range(8):
        await RisingEdge(dut.sys_clk)

    async def xfer(req, read):
        data, cycles = await _xfer(dut, read(req["n"]), req["want"], p["idle_limit"])
        return {"n": len(data), "cycles": cycles}, data

    await serve_requests(p["socket"], {"xfer": xfer, "idle": idle_handler(clock_ns)})
