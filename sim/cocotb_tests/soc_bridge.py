"""cocotb side of `sim.soc_sim.SoCSimTransport`: the Verilated SoC (`boards.soc.SimSoC`) and
the bytes of its UART bridge.

The host speaks LiteX's UARTBone protocol itself (LiteX's own ``CommUART``); this bench only
moves bytes between the host's socket and the SoC's serial byte streams (``serial_sink_*``:
host to SoC, ``serial_source_*``: SoC to host), one byte per clock each way at most, as
``RS232PHYModel`` gives them. Requests (one JSON line each, see `sim.bridge_transport`):

* ``xfer``: send the ``n`` payload bytes, then keep clocking until ``want`` bytes have come
  back (answered with them, and the cycles it took);
* ``idle``: let ``cycles`` pass (no Python on clock edges meanwhile);
* ``close``.

Bytes the SoC sends while nobody waits for them are an error: UARTBone only answers reads.
"""
from __future__ import annotations

import json
import socket

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge, Timer

from sim.verilator_runner import load_params


def _read_exact(f, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise ConnectionError(f"host sent {len(data)} of {n} bytes")
    return data


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
            if op == "xfer":
                payload, cycles = await _xfer(dut, _read_exact(f, req["n"]), req["want"],
                                              p["idle_limit"])
                answer = {"n": len(payload), "cycles": cycles}
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
