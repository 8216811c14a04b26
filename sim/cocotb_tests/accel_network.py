"""cocotb side of `sim.accel_sim.simulate`: runs a compiled layer program on the accelerator
inside `sim.axi_mem_model.with_memory`, once per input image, in one simulator session.

Inputs (in the run folder, named by the params): ``image.bin`` (the firmware's DDR image,
placed at ``base``) and ``inputs.bin`` (the host-laid-out input region of every image, back to
back). Outputs: ``dump_<i>.bin`` (DDR bytes ``[dump_lo, dump_hi)`` after image i),
``progress.jsonl`` (one JSON record per image as soon as it is finished, followed by the host
process to print progress) and ``results.json`` (all records).

While the accelerator runs, the only Python wake-ups are the ``irq`` rising edge and a timer
every ``chunk_cycles`` cycles (to stop at ``max_cycles``): the clock is cocotb's GPI clock
and the idle cocotbext-axi AXI4-Lite channels sleep on their ``valid`` edges.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import First, RisingEdge, Timer
from cocotb.utils import get_sim_time
from cocotbext.axi import AxiLiteBus, AxiLiteMaster

from rtl_gen.regs import LAYER_COUNTERS, LAYER_CYCLES_BASE, LAYER_CYCLES_STRIDE, register_map
from sim.axi_mem_model import AxiMemBackdoor
from sim.verilator_runner import load_params, report_metrics

REG = {r.name: r.offset for r in register_map()}
CTRL_START, CTRL_IRQ_EN, CTRL_SOFT_RESET = 1, 2, 4
STATUS_BUSY, STATUS_DONE, STATUS_ERROR = 1, 2, 4
# After a soft reset the core drains the AXI bursts it issued (BUSY stays high, START is
# ignored): wait for it, a bounded number of register polls.
DRAIN_POLLS = 10_000


async def read_registers(lite: AxiLiteMaster) -> dict:
    regs = {name: await lite.read_dword(REG[name])
            for name in ("STATUS", "ERROR_CODE", "LAYER_COUNT")}
    lo = await lite.read_dword(REG["CYCLES_LO"])          # latches CYCLES_HI
    regs["CYCLES"] = lo | await lite.read_dword(REG["CYCLES_HI"]) << 32
    n = min(regs["LAYER_COUNT"], LAYER_COUNTERS)
    regs["LAYER_CYCLES"] = [await lite.read_dword(LAYER_CYCLES_BASE + LAYER_CYCLES_STRIDE * i)
                            for i in range(n)]
    return regs


async def wait_for_irq(dut, clock_ns: int, chunk: int, limit: int) -> tuple[int, bool]:
    """Sleep until ``irq`` is high or ``limit`` cycles have passed since now; returns the
    cycles waited and whether the limit was hit."""
    start = get_sim_time("ns")
    irq = RisingEdge(dut.irq)
    while not dut.irq.value:
        waited = round((get_sim_time("ns") - start) / clock_ns)
        if waited >= limit:
            return waited, True
        await First(irq, Timer(min(chunk, limit - waited) * clock_ns, unit="ns"))
    return round((get_sim_time("ns") - start) / clock_ns), False


@cocotb.test()
async def run_images(dut):
    p = load_params()
    clock_ns, bb = p["clock_ns"], p["bus_bytes"]
    image = Path("image.bin").read_bytes()
    inputs = Path("inputs.bin").read_bytes()
    n_in = p["input_bytes"]
    assert len(image) == p["image_bytes"] and len(inputs) == n_in * p["images"]
    progress = Path("progress.jsonl")

    Clock(dut.clk, clock_ns, unit="ns").start()
    dut.rst.value = 1
    dut.ddr__load.value = 0
    dut.ddr__stall.value = p["stall"]          # random AXI back-pressure, in 256ths
    dut.ddr__dump.value = 0
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    ddr = AxiMemBackdoor(dut, bus_bytes=bb)
    lite = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axi", bus_separator="__"),
                         dut.clk, dut.rst)

    records = []
    reload_all = True
    for i in range(p["images"]):
        t_image = time.perf_counter()
        if reload_all:
            await ddr.write(p["base"], image)
        await ddr.write(p["input_addr"], inputs[i * n_in:(i + 1) * n_in])
        load_s = time.perf_counter() - t_image

        await lite.write_dword(REG["STATUS"], STATUS_DONE | STATUS_ERROR)
        await lite.write_dword(REG["PROG_ADDR_LO"], p["program_addr"] & 0xFFFF_FFFF)
        await lite.write_dword(REG["PROG_ADDR_HI"], p["program_addr"] >> 32)
        assert not dut.irq.value, "the interrupt stayed up after clearing STATUS"
        t_run, cpu_run = time.perf_counter(), time.process_time()
        await lite.write_dword(REG["CTRL"], CTRL_IRQ_EN | CTRL_START)
        sim_cycles, timed_out = await wait_for_irq(dut, clock_ns, p["chunk_cycles"],
                                                   p["max_cycles"])
        run_wall, run_cpu = time.perf_counter() - t_run, time.process_time() - cpu_run
        await RisingEdge(dut.clk)
        regs = await read_registers(lite)
        if timed_out:
            dut._log.warning("image %d: no interrupt within %d cycles; soft reset", i, sim_cycles)
            await lite.write_dword(REG["CTRL"], CTRL_SOFT_RESET)
            for _ in range(DRAIN_POLLS):
                if not await lite.read_dword(REG["STATUS"]) & STATUS_BUSY:
                    break
        # A failed run may have left anything anywhere: start the next one from the image.
        reload_all = timed_out or bool(regs["STATUS"] & STATUS_ERROR)

        t_dump = time.perf_counter()
        dump = await ddr.read(p["dump_lo"], p["dump_hi"] - p["dump_lo"])
        Path(f"dump_{i}.bin").write_bytes(dump)
        dump_s = time.perf_counter() - t_dump
        rec = {"index": i, "status": regs["STATUS"], "error_code": regs["ERROR_CODE"],
               "layer_count": regs["LAYER_COUNT"], "cycles": regs["CYCLES"],
               "layer_cycles": regs["LAYER_CYCLES"], "sim_cycles": sim_cycles,
               "timed_out": timed_out, "run_wall_s": run_wall, "run_cpu_s": run_cpu,
               "load_s": load_s, "dump_s": dump_s, "wall_s": time.perf_counter() - t_image}
        records.append(rec)
        with progress.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        dut._log.info("image %d: status %#x, error code %d, %d cycles (%d to the interrupt) "
                      "in %.2f s = %.0f cycles/s (%.2f s CPU); load %.3f s, dump %.3f s", i,
                      regs["STATUS"], regs["ERROR_CODE"], regs["CYCLES"], sim_cycles, run_wall,
                      sim_cycles / max(run_wall, 1e-9), run_cpu, load_s, dump_s)

    Path("results.json").write_text(json.dumps(records))
    walls = np.array([r["run_wall_s"] for r in records])
    report_metrics(images=len(records), run_wall_s=float(walls.sum()),
                   sim_cycles=int(sum(r["sim_cycles"] for r in records)))
