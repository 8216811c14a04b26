"""Drivers shared by the DMA cocotb tests: clock/reset and the DMA's command and data streams.

Signals are sampled right after ``RisingEdge``, i.e. before the edge updates the design, so
``valid & ready`` read there is exactly the handshake the edge performs; writes made there
take effect after the edge (cocotb's inertial writes, enabled by the runner for Verilator).
"""
from __future__ import annotations

import random

from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from rtl_gen.config import AccelConfig
from sim.verilator_runner import load_params

CLOCK_NS = 10


def config() -> AccelConfig:
    return AccelConfig.from_dict(load_params()["cfg"])


async def start(dut) -> None:
    """Start the clock and apply a 3-cycle synchronous reset."""
    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await RisingEdge(dut.clk)


async def command(dut, port: str, cfg: AccelConfig, addr: int, length: int) -> None:
    """Offer one DMA command on stream ``port`` (``rd_cmd``/``wr_cmd``) until accepted."""
    valid, ready = getattr(dut, f"{port}__valid"), getattr(dut, f"{port}__ready")
    getattr(dut, f"{port}__payload").value = addr | length << cfg.addr_width
    valid.value = 1
    await RisingEdge(dut.clk)
    while not ready.value:
        await RisingEdge(dut.clk)
    valid.value = 0


async def receive(dut, beats: int, rng: random.Random, stall: float) -> list[int]:
    """Take ``beats`` words from ``rd_data``, dropping ``ready`` with probability ``stall``."""
    words = []
    while len(words) < beats:
        ready = int(rng.random() >= stall)
        dut.rd_data__ready.value = ready
        await RisingEdge(dut.clk)
        if ready and dut.rd_data__valid.value:
            words.append(int(dut.rd_data__payload.value))
    dut.rd_data__ready.value = 0
    return words


async def send(dut, words: list[int], rng: random.Random, gap: float) -> None:
    """Offer ``words`` on ``wr_data``, idling with probability ``gap`` between beats (a beat
    once offered stays valid until taken, as streams require)."""
    i, offering = 0, False
    while i < len(words):
        offering = offering or rng.random() >= gap
        dut.wr_data__valid.value = int(offering)
        dut.wr_data__payload.value = words[i]
        await RisingEdge(dut.clk)
        if offering and dut.wr_data__ready.value:
            i, offering = i + 1, False
    dut.wr_data__valid.value = 0


async def wait_idle(dut, side: str) -> None:
    """Wait until ``{side}_busy`` is low (``side`` is ``rd`` or ``wr``)."""
    busy = getattr(dut, f"{side}_busy")
    await RisingEdge(dut.clk)
    while busy.value:
        await RisingEdge(dut.clk)


def to_words(payload: bytes, bus_bytes: int) -> list[int]:
    return [int.from_bytes(payload[i:i + bus_bytes], "little")
            for i in range(0, len(payload), bus_bytes)]


def from_words(words: list[int], bus_bytes: int) -> bytes:
    return b"".join(w.to_bytes(bus_bytes, "little") for w in words)
