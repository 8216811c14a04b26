"""`rtl_gen.dma.AxiDMA` against cocotbext-axi's `AxiRam` with random back-pressure.

Every AXI channel of the RAM and both DMA data streams pause at random (seeded through
``params["seed"]``), which stands in for DDR latency and contention. Addresses and lengths
are random whole bus words, a share of them placed to straddle a 4 KiB boundary, and read
data and memory contents are compared byte for byte with the RAM. The error case makes the
RAM fail a range: a read and a write across it must complete with the right beat count and
raise the DMA's sticky error flags, which ``error_clear`` then clears.
"""
from __future__ import annotations

import logging
import random

import cocotb
from cocotb.triggers import RisingEdge
from cocotbext.axi import AxiBus, AxiRam

from sim.cocotb_tests import dma_bench as bench
from sim.verilator_runner import load_params

RAM_BYTES = 1 << 20


def make_ram(dut, rng: random.Random, stall: float) -> AxiRam:
    ram = AxiRam(AxiBus.from_prefix(dut, "m_axi", bus_separator="__"), dut.clk, dut.rst,
                 size=RAM_BYTES)
    for port in (ram.read_if, ram.write_if):
        logging.getLogger(port.log.name).setLevel(logging.WARNING)
    channels = [ram.read_if.ar_channel, ram.read_if.r_channel, ram.write_if.aw_channel,
                ram.write_if.w_channel, ram.write_if.b_channel]
    for i, channel in enumerate(channels):
        channel.set_pause_generator(_pauses(random.Random(rng.random() + i), stall))
    return ram


def _pauses(rng: random.Random, stall: float):
    while True:
        yield rng.random() < stall


def fail_range(ram: AxiRam, lo: int, hi: int) -> None:
    """Make accesses to byte range [lo, hi) answer SLVERR (cocotbext-axi turns an exception
    raised by the backing read/write into SLVERR)."""
    def guarded(method):
        async def call(address, *args):
            if lo <= address < hi:
                raise OSError(f"injected fault at {address:#x}")
            return await method(address, *args)
        return call
    ram.read_if._read = guarded(ram.read_if._read)
    ram.write_if._write = guarded(ram.write_if._write)


def random_span(rng: random.Random, bus_bytes: int) -> tuple[int, int]:
    """A bus-aligned (address, length), straddling a 4 KiB boundary about half the time."""
    length = rng.randint(1, 300) * bus_bytes
    if rng.random() < 0.5:
        boundary = rng.randrange(1, RAM_BYTES // 4096) * 4096
        addr = boundary - rng.randint(1, min(length, boundary) // bus_bytes) * bus_bytes
    else:
        addr = rng.randrange(0, RAM_BYTES - length, bus_bytes)
    return addr, length


async def dma_read(dut, cfg, addr: int, length: int, rng, stall: float) -> bytes:
    got = cocotb.start_soon(bench.receive(dut, length // cfg.bus_bytes, rng, stall))
    await bench.command(dut, "rd_cmd", cfg, addr, length)
    words = await got
    await bench.wait_idle(dut, "rd")
    return bench.from_words(words, cfg.bus_bytes)


async def dma_write(dut, cfg, addr: int, payload: bytes, rng, gap: float) -> None:
    fed = cocotb.start_soon(bench.send(dut, bench.to_words(payload, cfg.bus_bytes), rng, gap))
    await bench.command(dut, "wr_cmd", cfg, addr, len(payload))
    await fed
    await bench.wait_idle(dut, "wr")


@cocotb.test(timeout_time=20, timeout_unit="ms")
async def random_transfers(dut):
    """Random reads, writes and overlapped read+write pairs, compared byte for byte."""
    cfg, p = bench.config(), load_params()
    rng = random.Random(p["seed"])
    ram = make_ram(dut, rng, p["stall"])
    await bench.start(dut)
    ram.write(0, rng.randbytes(RAM_BYTES))
    for n in range(p["transfers"]):
        addr, length = random_span(rng, cfg.bus_bytes)
        got = await dma_read(dut, cfg, addr, length, rng, p["stall"])
        assert got == ram.read(addr, length), f"read #{n} {addr:#x}+{length} differs"

        addr, length = random_span(rng, cfg.bus_bytes)
        payload = rng.randbytes(length)
        await dma_write(dut, cfg, addr, payload, rng, p["stall"])
        assert ram.read(addr, length) == payload, f"write #{n} {addr:#x}+{length} differs"

        # Both halves at once, on disjoint halves of the RAM.
        src = rng.randrange(0, RAM_BYTES // 2 - 4096, cfg.bus_bytes)
        dst = rng.randrange(RAM_BYTES // 2, RAM_BYTES - 4096, cfg.bus_bytes)
        expected, payload = ram.read(src, 4096), rng.randbytes(4096)
        rd = cocotb.start_soon(dma_read(dut, cfg, src, 4096, rng, p["stall"]))
        await dma_write(dut, cfg, dst, payload, rng, p["stall"])
        assert await rd == expected, f"overlapped read #{n} differs"
        assert ram.read(dst, 4096) == payload, f"overlapped write #{n} differs"
    assert not dut.rd_error.value and not dut.wr_error.value


@cocotb.test(timeout_time=2, timeout_unit="ms")
async def zero_length(dut):
    """A zero-length command completes at once and moves nothing."""
    cfg = bench.config()
    ram = make_ram(dut, random.Random(0), 0.0)
    await bench.start(dut)
    for side, port in (("rd", "rd_cmd"), ("wr", "wr_cmd")):
        await bench.command(dut, port, cfg, 0x100, 0)
        await bench.wait_idle(dut, side)
    assert ram.read(0, 4096) == bytes(4096)


@cocotb.test(timeout_time=2, timeout_unit="ms")
async def slverr_sets_error(dut):
    """SLVERR beats: the commands still complete (no hang) with the error flags set."""
    cfg, p = bench.config(), load_params()
    rng = random.Random(p["seed"] + 1)
    ram = make_ram(dut, rng, p["stall"])
    fail_range(ram, 0x3000, 0x3040)
    await bench.start(dut)
    got = await dma_read(dut, cfg, 0x2F00, 0x200, rng, p["stall"])
    assert len(got) == 0x200
    assert dut.rd_error.value == 1 and dut.wr_error.value == 0

    await dma_write(dut, cfg, 0x2FC0, bytes(range(256)) * 2, rng, p["stall"])
    assert dut.wr_error.value == 1
    assert ram.read(0x2FC0, 0x40) == (bytes(range(256)) * 2)[:0x40], "good burst lost"

    dut.error_clear.value = 1
    await RisingEdge(dut.clk)
    dut.error_clear.value = 0
    await RisingEdge(dut.clk)
    assert dut.rd_error.value == 0 and dut.wr_error.value == 0
