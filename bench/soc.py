# amaranth: UnusedElaboratable=no
"""The whole system against the accelerator alone: the seed network on a board's config inside
the simulated LiteX SoC (`sim.soc_sim`: LiteDRAM controller with refresh, SDR SDRAM model,
UARTBone bridge), driven by the host driver, bit-exact against TFLite on real CIFAR-10 test
images; next to it the cycle model's figure for the same program on the ideal memory of the
accelerator-only simulation (exact against Verilator there), so the difference is what the
SDRAM costs: its 16-bit bus, row misses, refresh, the controller's latency.

    python -m bench.soc [--board ulx3s-85f] [--alpha 0.25] [--images 2] [--out build/bench-soc]

Also reports what the host's bridge costs: the bytes the DDR image and one input take over
UARTBone and how long they take at the board's 115,200 baud (the simulation moves one byte
per clock). Writes ``soc.md``, ``soc.json`` and ``soc.png`` (cycles per layer) to ``--out``. The first run builds the SoC in
Verilator (a few minutes for a board-sized accelerator).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from boards.soc import SDRAM_RATE  # noqa: E402

UART_BAUD = 115_200
UART_BITS_PER_BYTE = 10                 # start, 8 data, stop


def bridge_bytes(payload: int) -> int:
    """UARTBone bytes for writing ``payload`` bytes with LiteX's CommUART (bursts of 8 words,
    a 6-byte header each)."""
    words = -(-payload // 4)
    return 4 * words + 6 * -(-words // 8)


def measure(board: str, alpha: float, images: int, rate: str) -> dict:
    import numpy as np
    from PIL import Image

    from boards.targets import default_config
    from firmware.deploy import Deployment
    from firmware.driver import AccelDriver, Runner
    from quantize import assets
    from quantize.convert import golden_interpreter, golden_run
    from flow import cli
    from sim.accel_sim import DDR_TIMING, cycle_limit
    from sim.perf_model import predict
    from sim.soc_sim import SoCSim

    cfg = default_config(board, needs_add=False)        # the seed network has no ADD
    with tempfile.TemporaryDirectory(prefix="bench-soc-") as tmp:
        config = Path(tmp) / "config.json"
        config.write_text(cfg.to_json())
        build = Path(tmp) / "build"
        if cli.main(["--alpha", str(alpha), "--config", str(config), "--check-images", "1",
                     "--out", str(build), "-q"], isolate=False):
            raise SystemExit("gen-accel failed")
        dep = Deployment.load(build)
        interp = golden_interpreter((build / "model.tflite").read_bytes())
        out_index = interp.get_output_details()[0]["index"]
        ideal = predict(dep.fw, ddr=DDR_TIMING)
        ims, _ = assets.sample_test_images()
        xs = []
        for i in range(images):             # as a user's files: PNGs through accel-run's path
            path = Path(tmp) / f"test{i}.png"
            Image.fromarray(ims[i]).save(path)
            xs.append(dep.quantize_image(path))
        t0 = time.monotonic()
        runs = []
        with SoCSim(dep.fw.cfg, sdram_rate=rate) as soc:
            build_s = time.monotonic() - t0
            drv = AccelDriver(soc.transport)
            drv.identify()
            runner = Runner(drv, dep, timeout_s=4 * cycle_limit(dep.fw) * soc.clock_ns * 1e-9)
            for x in xs:
                before, dram_before = soc.bridge_cycles, soc.dram_stats()
                t = time.monotonic()
                r = runner.classify(x)
                dram = {k: v - dram_before[k] for k, v in soc.dram_stats().items()}
                want = golden_run(interp, x)[out_index]
                runs.append({"ok": r.status.ok, "cycles": r.status.cycles,
                             "layer_cycles": r.status.layer_cycles,
                             "bit_exact": (r.scores is not None
                                           and r.scores.tobytes() == want.tobytes()),
                             "label": r.label, "bridge_cycles": soc.bridge_cycles - before,
                             "dram": dram,
                             "wall_s": time.monotonic() - t})
            clock_mhz = 1e3 / soc.clock_ns
    soc_cycles = int(np.median([r["cycles"] for r in runs]))
    per_layer = [{"op": layer.op, "ideal": layer.cycles,
                  "soc": int(np.median([r["layer_cycles"][i] for r in runs]))}
                 for i, layer in enumerate(ideal.layers)]
    # The DRAM's share, from the controller's commands during the second image (the first
    # also carries the image load): refreshes and row activations at their minimum cost.
    from litedram import modules as litedram_modules

    from boards.soc import SDRAM_MODULE
    t = getattr(litedram_modules, SDRAM_MODULE)(clock_mhz * 1e6, rate).timing_settings
    dram = runs[-1]["dram"]
    costs = {"refresh": dram["refreshes"] * (t.tRP + t.tRFC),
             "row_open": dram["activates"] * (t.tRP + t.tRCD),
             "data_commands": dram["reads"] + dram["writes"],
             # a command moves one 16-bit beat per phase (the half-rate PHY: two)
             "data_bytes": 2 * {"1:1": 1, "1:2": 2}[rate] * (dram["reads"] + dram["writes"])}
    image_bytes = sum(len(data) for _, data in dep.segments)    # what Runner writes once
    input_bytes = dep.fw.regions["input"][1]
    return {
        "board": board, "alpha": alpha, "clock_mhz": clock_mhz, "sdram_rate": rate,
        "config": f"{cfg.pw_out}x{cfg.pw_in} MACs, {cfg.dw_lanes} depthwise lanes, "
                  f"{8 * cfg.bus_bytes}-bit bus",
        "bus_bits": 8 * cfg.bus_bytes, "beats_per_cycle": {"1:1": 1, "1:2": 2}[rate],
        "images": len(runs), "all_bit_exact": all(r["ok"] and r["bit_exact"] for r in runs),
        "cycles_ideal_memory": ideal.total, "cycles_soc": soc_cycles,
        "sdram_overhead": soc_cycles / ideal.total - 1,
        "fps_soc": clock_mhz * 1e6 / soc_cycles,
        "image_bytes": image_bytes, "input_bytes": input_bytes,
        "uart_s_image": bridge_bytes(image_bytes) * UART_BITS_PER_BYTE / UART_BAUD,
        "uart_s_input": bridge_bytes(input_bytes) * UART_BITS_PER_BYTE / UART_BAUD,
        "sim_build_s": build_s, "runs": runs, "layers": per_layer,
        "dram_commands": dram, "dram_timing_cycles": {"tRP": t.tRP, "tRCD": t.tRCD,
                                                      "tRFC": t.tRFC, "tREFI": t.tREFI},
        "dram_costs": costs,
    }


def markdown(m: dict) -> str:
    lines = [f"ULX3S SoC ({m['board']}, {m['config']}, {m['clock_mhz']:g} MHz, SDR SDRAM at "
             f"{m['sdram_rate']} via LiteDRAM), seed network alpha {m['alpha']:g}, {m['images']} real CIFAR-10 "
             f"test images, bit-exact vs TFLite: {'yes' if m['all_bit_exact'] else 'NO'}", "",
             "| | cycles | frames/s |", "|---|---:|---:|",
             f"| accelerator alone (ideal memory, cycle model) | {m['cycles_ideal_memory']:,} "
             f"| {m['clock_mhz'] * 1e6 / m['cycles_ideal_memory']:,.1f} |",
             f"| whole SoC (LiteDRAM + SDRAM model, measured) | {m['cycles_soc']:,} "
             f"| {m['fps_soc']:,.1f} |", "",
             f"SDRAM cost: +{100 * m['sdram_overhead']:.0f}% cycles. In one run the controller "
             f"issued {m['dram_commands']['refreshes']:,} refreshes (at least "
             f"{m['dram_costs']['refresh']:,} cycles, "
             f"{100 * m['dram_costs']['refresh'] / m['cycles_soc']:.1f}%), opened "
             f"{m['dram_commands']['activates']:,} rows (at least {m['dram_costs']['row_open']:,} "
             f"cycles, {100 * m['dram_costs']['row_open'] / m['cycles_soc']:.1f}%) and moved "
             f"{m['dram_costs']['data_bytes']:,} bytes in "
             f"{m['dram_costs']['data_commands']:,} reads and writes of "
             f"{16 * m['beats_per_cycle']} bits, one per SoC cycle at most: the SDRAM's data bus "
             f"was busy {100 * m['dram_costs']['data_commands'] / m['cycles_soc']:.0f}% of the run "
             f"(the accelerator's bus is {m['bus_bits']} bits). Bridge at "
             f"{UART_BAUD:,} baud: the DDR image's {m['image_bytes']:,} bytes of parameters "
             f"and program take {m['uart_s_image']:.1f} s once, each {m['input_bytes']:,}-byte "
             "input "
             f"{m['uart_s_input']:.2f} s.", "",
             "| layer | ideal memory | SoC | ratio |", "|---|---:|---:|---:|"]
    for layer in m["layers"]:
        ratio = layer["soc"] / layer["ideal"] if layer["ideal"] else 0
        lines.append(f"| {layer['op']} | {layer['ideal']:,} | {layer['soc']:,} | {ratio:.2f} |")
    return "\n".join(lines) + "\n"


def plot(m: dict, path: Path) -> None:
    """Cycles per layer, the accelerator alone against the whole SoC."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    layers = m["layers"]
    x = np.arange(len(layers))
    fig, ax = plt.subplots(figsize=(11, 4))
    ax.bar(x - 0.2, [layer["ideal"] for layer in layers], 0.4,
           label="accelerator alone (ideal memory)")
    ax.bar(x + 0.2, [layer["soc"] for layer in layers], 0.4, label="whole SoC (LiteDRAM, SDR SDRAM)")
    ax.set_xticks(x, [f"{i} {layer['op'].split()[0]}" for i, layer in enumerate(layers)],
                  rotation=70, fontsize=7)
    ax.set_ylabel("cycles")
    ax.set_title(f"{m['board']} SoC at {m['clock_mhz']:g} MHz, seed network alpha "
                 f"{m['alpha']:g}: {m['cycles_ideal_memory']:,} -> {m['cycles_soc']:,} cycles")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.soc", description=__doc__.split("\n\n")[0])
    ap.add_argument("--board", default="ulx3s-85f")
    ap.add_argument("--alpha", type=float, default=0.25)
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--sdram-rate", choices=("1:1", "1:2"), default=SDRAM_RATE,
                    help="SDRAM clock : SoC clock (default %(default)s)")
    ap.add_argument("--out", type=Path, default=Path("build/bench-soc"))
    args = ap.parse_args(argv)
    m = measure(args.board, args.alpha, args.images, args.sdram_rate)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soc.json").write_text(json.dumps(m, indent=1) + "\n")
    text = markdown(m)
    (args.out / "soc.md").write_text(text)
    plot(m, args.out / "soc.png")
    print(text)
    return 0 if m["all_bit_exact"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
