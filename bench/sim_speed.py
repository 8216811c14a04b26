# amaranth: UnusedElaboratable=no
"""Simulation speed of the whole accelerator: Verilator against Amaranth's Python simulator.

    python -m bench.sim_speed [--amaranth-cycles N] [--no-alpha1] [--read-latency N]

(a) Verilator (`sim.accel_sim.simulate`, fast RTL DDR model): one full inference of the
    alpha-0.25 seed network on the default AccelConfig, simulated cycles per second (wall and
    CPU).
(b) Amaranth's simulator (`amaranth.sim`, Python `sim.amaranth_axi_ram.AxiRam`) running the
    same program for ``--amaranth-cycles`` cycles (default 20,000), its rate extrapolated to
    the whole inference.
(c) Verilator, alpha 1 on the default AccelConfig (its large feature maps tiled through DDR;
    same build as (a)): the wall time of one full inference (target: under 2 minutes on two
    cores).

Wall times depend on what else runs on the machine; the CPU times (of the simulator process
for Verilator, of this process for Amaranth) are the steadier measure. Builds are cached
(sim_build/); the table says whether this run paid for one. No asserts: it only reports.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from firmware.compiler import compile_graph  # noqa: E402
from firmware.executor import host_input  # noqa: E402
from quantize.model import ModelSpec  # noqa: E402
from quantize.pipeline import build_int8_model, sample_inputs  # noqa: E402
from quantize.tflite_graph import load_graph  # noqa: E402
from rtl_gen.config import AccelConfig  # noqa: E402
from firmware.contract import check_fits  # noqa: E402

TARGET_ALPHA1_S = 120.0


def seed(alpha: float, cfg: AccelConfig, n: int = 1):
    """The compiled seed network and ``n`` quantized CIFAR-10 test images."""
    graph = load_graph(build_int8_model(ModelSpec(alpha)).tflite)
    fw = compile_graph(graph, cfg)
    check_fits(fw)
    return fw, sample_inputs(graph, n)[0]


def verilator(fw, xs, read_latency: int) -> dict:
    from sim.accel_sim import simulate
    t0 = time.perf_counter()
    (r,) = simulate(fw, xs[:1], read_latency=read_latency)
    total = time.perf_counter() - t0
    if not r.ok:
        print(f"  warning: the run ended with status {r.status:#x}, error code "
              f"{r.error_code}, timed out: {r.timed_out}")
    return {"cycles": r.sim_cycles, "busy_cycles": r.cycles, "wall_s": r.run_wall_s,
            "cpu_s": r.run_cpu_s, "build_s": r.build_s, "cached": r.build_cached,
            "session_s": r.session_s, "total_s": total}


def amaranth(fw, x, cycles: int, read_latency: int) -> dict:
    """Run the program in Amaranth's simulator for ``cycles`` cycles after START."""
    from amaranth.sim import Simulator
    from rtl_gen.accelerator import Accelerator
    from rtl_gen.regs import register_map
    from sim.amaranth_axi_lite import LiteMaster
    from sim.amaranth_axi_ram import AxiRam
    reg = {r.name: r.offset for r in register_map()}
    t0 = time.perf_counter()
    dut = Accelerator(fw.cfg)
    ram = AxiRam(len(fw.image) + 4096, bus_bytes=fw.cfg.bus_bytes, base=fw.base,
                 read_latency=read_latency)
    ram.load(fw.base, bytes(fw.image))
    ram.load(fw.regions["input"][0], host_input(fw, x))
    out = {}

    lite = LiteMaster(dut.s_axi)

    async def host(ctx):
        await lite.write(ctx, reg["PROG_ADDR_LO"], fw.program_addr)
        await lite.write(ctx, reg["CTRL"], 0b011)
        t, cpu = time.perf_counter(), time.process_time()
        await ctx.tick().repeat(cycles)
        out.update(wall_s=time.perf_counter() - t, cpu_s=time.process_time() - cpu,
                   irq=ctx.get(dut.irq))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(ram.testbench(dut.m_axi), background=True)
    sim.add_testbench(host)
    t_setup = time.perf_counter() - t0
    t1 = time.perf_counter()
    sim.run()
    out.update(cycles=cycles, setup_s=t_setup + (time.perf_counter() - t1 - out["wall_s"]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--amaranth-cycles", type=int, default=20_000)
    ap.add_argument("--read-latency", type=int, default=16,
                    help="DDR read latency in cycles, both simulators (default 16)")
    ap.add_argument("--no-alpha1", action="store_true", help="skip (c)")
    args = ap.parse_args(argv)

    print("building the alpha-0.25 seed network ...", flush=True)
    fw, xs = seed(0.25, AccelConfig())
    print("(a) Verilator, alpha 0.25, default config: one inference", flush=True)
    v = verilator(fw, xs, args.read_latency)
    print(f"(b) Amaranth simulator, same program: {args.amaranth_cycles:,} cycles", flush=True)
    a = amaranth(fw, xs[0:1], args.amaranth_cycles, args.read_latency)
    big = None
    if not args.no_alpha1:
        print("building the alpha-1 seed network ...", flush=True)
        fw1, xs1 = seed(1.0, AccelConfig())
        print("(c) Verilator, alpha 1, default config (tiled): one inference", flush=True)
        big = verilator(fw1, xs1, args.read_latency)

    def build_note(r):
        return "cached" if r["cached"] else f"built, {r['build_s']:.0f} s"

    rows = [
        ("(a) Verilator a0.25", f"{v['cycles']:,}", f"{v['wall_s']:.1f}", f"{v['cpu_s']:.1f}",
         f"{v['cycles'] / v['wall_s']:,.0f}", f"{v['cycles'] / v['cpu_s']:,.0f}",
         f"{v['wall_s']:.1f} s", build_note(v)),
        ("(b) Amaranth a0.25", f"{a['cycles']:,}", f"{a['wall_s']:.1f}", f"{a['cpu_s']:.1f}",
         f"{a['cycles'] / a['wall_s']:,.0f}", f"{a['cycles'] / a['cpu_s']:,.0f}",
         f"~{v['cycles'] * a['wall_s'] / a['cycles']:,.0f} s (extrap.)",
         f"setup {a['setup_s']:.0f} s"),
    ]
    if big:
        rows.append(("(c) Verilator a1", f"{big['cycles']:,}", f"{big['wall_s']:.1f}",
                     f"{big['cpu_s']:.1f}", f"{big['cycles'] / big['wall_s']:,.0f}",
                     f"{big['cycles'] / big['cpu_s']:,.0f}", f"{big['wall_s']:.1f} s",
                     build_note(big)))
    head = ("simulator / network", "cycles run", "wall s", "CPU s", "cycles/s wall",
            "cycles/s CPU", "full inference", "build")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    print()
    for r in [head, tuple("-" * w for w in widths)] + rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(r, widths))))
    print()
    speedup = (v["cycles"] / v["wall_s"]) / (a["cycles"] / a["wall_s"])
    print(f"Verilator / Amaranth speed (wall): {speedup:,.0f}x; CPU: "
          f"{(v['cycles'] / v['cpu_s']) / (a['cycles'] / a['cpu_s']):,.0f}x")
    print(f"alpha 0.25: {v['busy_cycles']:,} busy cycles per inference "
          f"({v['busy_cycles'] / (fw.cfg.clock_mhz * 1e3):.2f} ms at {fw.cfg.clock_mhz:g} MHz)")
    if big:
        verdict = "meets" if big["wall_s"] < TARGET_ALPHA1_S else "misses"
        print(f"alpha 1: one simulated inference in {big['wall_s']:.1f} s wall "
              f"({big['cpu_s']:.1f} s CPU), {verdict} the {TARGET_ALPHA1_S:.0f} s target; "
              f"{big['busy_cycles']:,} busy cycles")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
