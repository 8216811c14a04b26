"""`rtl_gen.bram.SlicedMemory` built both ways, side by side: as ECP5 DP16KD instances
(simulated with `sim/dp16kd_model.v`) and as Amaranth memories. Top: ``SlicedPair`` in
``tests/test_cocotb_bram.py``.

Random byte-masked writes and reads, one of each per cycle, reads selected at random; every
read's word must come out of both builds exactly `bram.READ_LATENCY` cycles after its
address, equal to a Python copy (zero when not selected). A write offered in cycle t reaches
the block RAM in cycle t + 1 (`bram.WRITE_LATENCY`), so a read never addresses the words
written in its own cycle or the one before (the block RAM's ports collide there).
"""
from __future__ import annotations

import random

import cocotb
from cocotb.triggers import FallingEdge, RisingEdge

from sim.cocotb_tests import dma_bench as bench
from sim.verilator_runner import load_params


@cocotb.test(timeout_time=5, timeout_unit="ms")
async def random_writes_and_reads(dut):
    p = load_params()
    word_bytes, depth, latency = p["word_bytes"], p["depth"], p["latency"]
    rng = random.Random(p["seed"])
    copy = [0] * depth
    await bench.start(dut)
    pending = []       # (cycle the word is due, address, expected word)
    checked = 0
    previous_w_addr = None
    for cycle in range(p["cycles"]):
        r_addr = rng.randrange(depth)
        while r_addr == previous_w_addr:
            r_addr = rng.randrange(depth)
        w_addr = rng.randrange(depth)
        while w_addr == r_addr:
            w_addr = rng.randrange(depth)
        previous_w_addr = w_addr
        w_en = rng.getrandbits(word_bytes) if rng.random() < 0.7 else 0
        w_data = rng.getrandbits(8 * word_bytes)
        selected = rng.random() < 0.8
        dut.r_addr.value, dut.w_addr.value, dut.r_selected.value = r_addr, w_addr, selected
        dut.w_en.value, dut.w_data.value = w_en, w_data
        pending.append((cycle + latency, r_addr, copy[r_addr] if selected else 0))
        for byte in range(word_bytes):
            if w_en >> byte & 1:
                mask = 0xFF << 8 * byte
                copy[w_addr] = copy[w_addr] & ~mask | w_data & mask
        await RisingEdge(dut.clk)
        await FallingEdge(dut.clk)
        # After the edge ending `cycle`, the outputs show what is due in cycle + 1.
        while pending and pending[0][0] == cycle + 1:
            _, addr, want = pending.pop(0)
            for name in ("ecp5_word", "generic_word"):
                got = int(getattr(dut, name).value)
                assert got == want, f"{name}: word {addr} read {got:#x}, expected {want:#x}"
            checked += 1
    assert checked > p["cycles"] - latency - 1
