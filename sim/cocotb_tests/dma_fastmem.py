"""`rtl_gen.dma.AxiDMA` copying DDR to DDR inside `sim.axi_mem_model.with_memory`.

The design (``DmaCopy`` in ``tests/test_cocotb_dma.py``) feeds the DMA's read stream straight
into its write stream, so a copy runs entirely in RTL: Python issues two commands, sleeps
until ``wr_done`` rises and never runs on a clock edge in between. That makes the long copy a
measure of the Verilator build's raw speed (simulated cycles per wall-clock second). Memory
contents go in and come out through the model's backdoor and are compared with a host-side
copy of the same operations.
"""
from __future__ import annotations

import random
import time

import cocotb
from cocotb.triggers import RisingEdge
from cocotb.utils import get_sim_time

from sim.axi_mem_model import AxiMemBackdoor
from sim.cocotb_tests import dma_bench as bench
from sim.verilator_runner import load_params, report_metrics


async def copy(dut, cfg, src: int, dst: int, length: int) -> int:
    """Copy ``length`` bytes from ``src`` to ``dst`` with the DMA; returns the cycles taken."""
    start = get_sim_time("ns")
    await bench.command(dut, "rd_cmd", cfg, src, length)
    done = RisingEdge(dut.wr_done)
    await bench.command(dut, "wr_cmd", cfg, dst, length)
    await done
    return round((get_sim_time("ns") - start) / bench.CLOCK_NS)


@cocotb.test(timeout_time=100, timeout_unit="ms")
async def random_copies(dut):
    """Random copies (some across 4 KiB boundaries) match the same copies done on the host."""
    cfg, p = bench.config(), load_params()
    rng = random.Random(p["seed"])
    ddr = AxiMemBackdoor(dut, bus_bytes=cfg.bus_bytes)
    await bench.start(dut)
    size, bb = p["size"], cfg.bus_bytes
    host = bytearray(rng.randbytes(size))
    await ddr.write(0, bytes(host))
    for _ in range(p["copies"]):
        length = rng.randint(1, 600) * bb
        src = rng.randrange(0, size // 2 - length, bb)
        dst = rng.randrange(size // 2, size - length, bb)
        await copy(dut, cfg, src, dst, length)
        host[dst:dst + length] = host[src:src + length]
    assert await ddr.read(0, size) == host
    assert not dut.rd_error.value and not dut.wr_error.value


@cocotb.test(timeout_time=100, timeout_unit="ms")
async def long_copy_speed(dut):
    """A long copy at full bus rate; reports simulated cycles per second."""
    cfg, p = bench.config(), load_params()
    ddr = AxiMemBackdoor(dut, bus_bytes=cfg.bus_bytes)
    await bench.start(dut)
    length, dst = p["long_bytes"], p["size"] // 2
    payload = random.Random(p["seed"]).randbytes(length)
    t0 = time.perf_counter()
    await ddr.write(0, payload)
    t_load = time.perf_counter() - t0

    t0, cpu0 = time.perf_counter(), time.process_time()
    cycles = await copy(dut, cfg, 0, dst, length)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0

    t0 = time.perf_counter()
    assert await ddr.read(dst, length) == payload
    t_dump = time.perf_counter() - t0
    beats = length // cfg.bus_bytes
    dut._log.info("copied %d KiB in %d cycles (%.2f beats/cycle): %.2f s wall, %.2f s CPU, "
                  "%.0f simulated cycles/s (%.0f per CPU second); backdoor load %.3f s, "
                  "read-back %.3f s", length >> 10, cycles, beats / cycles, wall, cpu,
                  cycles / wall, cycles / cpu, t_load, t_dump)
    report_metrics(copy_bytes=length, copy_cycles=cycles, copy_wall_s=wall, copy_cpu_s=cpu,
                   cycles_per_s=cycles / wall, cycles_per_cpu_s=cycles / cpu,
                   backdoor_load_s=t_load, backdoor_read_s=t_dump)
    assert cycles < 1.1 * beats, "the DMA and the model should sustain about a beat per cycle"


@cocotb.test(timeout_time=10, timeout_unit="ms")
async def decerr_beyond_memory(dut):
    """Reading past the end of the model answers DECERR: the copy completes, error set."""
    cfg, p = bench.config(), load_params()
    ddr = AxiMemBackdoor(dut, bus_bytes=cfg.bus_bytes)
    await bench.start(dut)
    await ddr.write(p["size"] - 64, b"\xaa" * 64)
    await ddr.write(0, b"\xff" * 256)
    await copy(dut, cfg, p["size"] - 64, 0, 256)
    assert dut.rd_error.value == 1 and dut.wr_error.value == 0
    assert await ddr.read(0, 256) == b"\xaa" * 64 + bytes(192)
