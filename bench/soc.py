# amaranth: UnusedElaboratable=no
"""The whole system against the accelerator alone: the seed network on a board's config inside
the simulated LiteX SoC (`sim.soc_sim`: LiteDRAM controller with refresh, SDR SDRAM model,
UARTBone bridge), driven by the host driver, bit-exact against TFLite on real CIFAR-10 test
images; next to it the cycle model's figure for the same program on the ideal memory of the
accelerator-only simulation (exact against Verilator there), so the difference is what the
SDRAM costs: its 16-bit bus, row misses, refresh, the controller's latency.

    python -m bench.soc [--board ulx3s-85f] [--alpha 0.25] [--images 2]
                        [--sdram-rate 1:1 1:2] [--out build/bench-soc]

One gen-accel build, then the SoC at each SDRAM rate. Also reports what the host's bridge
costs: the bytes the DDR image and one input take over UARTBone and how long they take at
the board's 115,200 baud (the simulation moves one byte per clock). Writes ``soc.md`` (its
first table is the README's), ``soc.json`` and ``soc.png`` (cycles per layer) to ``--out``.
The first run builds each SoC in Verilator (a few minutes for a board-sized accelerator).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from boards.soc import SDRAM_RATE, SOC_CLOCK_MHZ  # noqa: E402

UART_BAUD = 115_200
UART_BITS_PER_BYTE = 10                 # start, 8 data, stop


def bridge_bytes(payload: int) -> int:
    """UARTBone bytes for writing ``payload`` bytes with LiteX's CommUART (bursts of 8 words,
    a 6-byte header each)."""
    words = -(-payload // 4)
    return 4 * words + 6 * -(-words // 8)


def build_seed_network(board: str, alpha: float, folder: Path):
    """gen-accel's build of the seed network on ``board``'s config (no AddUnit: it has no ADD)
    in ``folder``; returns (Deployment, TFLite interpreter)."""
    from boards.targets import default_config
    from firmware.deploy import Deployment
    from flow import cli
    from quantize.convert import golden_interpreter

    config = folder / "config.json"
    config.write_text(default_config(board, needs_add=False).to_json())
    build = folder / "build"
    if cli.main(["--alpha", str(alpha), "--config", str(config), "--check-images", "1",
                 "--out", str(build), "-q"], isolate=False):
        raise SystemExit("gen-accel failed")
    return Deployment.load(build), golden_interpreter((build / "model.tflite").read_bytes())


def run_soc(dep, interp, xs, rate: str) -> dict:
    """The images through the simulated SoC with its SDRAM at ``rate``: per image the
    registers, whether the scores equal TFLite's, the bridge's cycles and the controller's
    DFI commands; then the SDRAM's share from the last image's commands (the first also
    carries the image load): refreshes and row activations at their minimum cost."""
    import numpy as np
    from litedram import modules as litedram_modules

    from boards.soc import SDRAM_MODULE, sdram_phy_settings
    from firmware.driver import AccelDriver, Runner
    from quantize.convert import golden_run
    from sim.accel_sim import cycle_limit
    from sim.soc_sim import SoCSim

    out_index = interp.get_output_details()[0]["index"]
    runs = []
    t0 = time.monotonic()
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
                         "bit_exact": r.scores is not None and r.scores.tobytes() == want.tobytes(),
                         "label": r.label, "bridge_cycles": soc.bridge_cycles - before,
                         "dram": dram, "wall_s": time.monotonic() - t})
        clock_hz = 1e9 / soc.clock_ns
    t = getattr(litedram_modules, SDRAM_MODULE)(clock_hz, rate).timing_settings
    phases = sdram_phy_settings(rate, clock_hz).nphases
    dram = runs[-1]["dram"]
    commands = dram["reads"] + dram["writes"]
    cycles = int(np.median([r["cycles"] for r in runs]))
    return {
        "rate": rate, "cycles": cycles, "runs": runs, "sim_build_s": build_s,
        "bit_exact": all(r["ok"] and r["bit_exact"] for r in runs),
        "layer_cycles": [int(np.median(c)) for c in zip(*(r["layer_cycles"] for r in runs))],
        "dram_commands": dram,
        "dram_timing_cycles": {"tRP": t.tRP, "tRCD": t.tRCD, "tRFC": t.tRFC, "tREFI": t.tREFI},
        "refresh_cycles": dram["refreshes"] * (t.tRP + t.tRFC),
        "row_open_cycles": dram["activates"] * (t.tRP + t.tRCD),
        # a read or write command moves one 16-bit beat per DFI phase
        "data_bits_per_command": 16 * phases, "data_commands": commands,
        "data_bytes": 2 * phases * commands,
    }


def measure(board: str, alpha: float, images: int, rates: list[str]) -> dict:
    from PIL import Image

    from quantize import assets
    from sim.accel_sim import DDR_TIMING
    from sim.perf_model import predict

    with tempfile.TemporaryDirectory(prefix="bench-soc-") as tmp:
        dep, interp = build_seed_network(board, alpha, Path(tmp))
        ims, _ = assets.sample_test_images()
        xs = []
        for i in range(images):             # as a user's files: PNGs through accel-run's path
            path = Path(tmp) / f"test{i}.png"
            Image.fromarray(ims[i]).save(path)
            xs.append(dep.quantize_image(path))
        socs = [run_soc(dep, interp, xs, rate) for rate in rates]
    cfg, ideal = dep.fw.cfg, predict(dep.fw, ddr=DDR_TIMING)
    image_bytes = sum(len(data) for _, data in dep.segments)    # what Runner writes once
    input_bytes = dep.fw.regions["input"][1]
    return {
        "board": board, "alpha": alpha, "clock_mhz": SOC_CLOCK_MHZ, "images": images,
        "config": f"{cfg.pw_out}x{cfg.pw_in} MACs, {cfg.dw_lanes} depthwise lanes, "
                  f"{8 * cfg.bus_bytes}-bit bus",
        "bus_bits": 8 * cfg.bus_bytes, "cycles_ideal_memory": ideal.total,
        "layers": [{"op": layer.op, "ideal": layer.cycles} for layer in ideal.layers],
        "socs": socs, "all_bit_exact": all(soc["bit_exact"] for soc in socs),
        "image_bytes": image_bytes, "input_bytes": input_bytes,
        "uart_s_image": bridge_bytes(image_bytes) * UART_BITS_PER_BYTE / UART_BAUD,
        "uart_s_input": bridge_bytes(input_bytes) * UART_BITS_PER_BYTE / UART_BAUD,
    }


def markdown(m: dict) -> str:
    """The README's table and the SDRAM's share at each rate, then cycles per layer."""
    mhz = m["clock_mhz"]
    fps = lambda cycles: f"{mhz * 1e6 / cycles:,.1f}"      # noqa: E731
    lines = [f"| seed network alpha {m['alpha']:g}, {m['board']} config ({m['config']}), SoC at "
             f"{mhz:g} MHz, {m['images']} real CIFAR-10 test images, bit-exact vs TFLite on all: "
             f"{'yes' if m['all_bit_exact'] else 'NO'} | cycles | frames/s at {mhz:g} MHz |",
             "|---|---:|---:|",
             f"| accelerator alone, ideal memory (cycle model = Verilator) | "
             f"{m['cycles_ideal_memory']:,} | {fps(m['cycles_ideal_memory'])} |"]
    for soc in m["socs"]:
        default = ", the default" if soc["rate"] == SDRAM_RATE else ""
        lines.append(f"| whole SoC, SDRAM at {soc['rate']}{default} (measured, CYCLES register) | "
                     f"{soc['cycles']:,} | {fps(soc['cycles'])} |")
    lines.append("")
    for soc in m["socs"]:
        cycles, dram = soc["cycles"], soc["dram_commands"]
        lines.append(
            f"At {soc['rate']}: +{100 * (cycles / m['cycles_ideal_memory'] - 1):.0f}% cycles. "
            f"In one run the controller issued {dram['refreshes']:,} refreshes (at least "
            f"{soc['refresh_cycles']:,} cycles, {100 * soc['refresh_cycles'] / cycles:.1f}%), "
            f"opened {dram['activates']:,} rows (at least {soc['row_open_cycles']:,} cycles, "
            f"{100 * soc['row_open_cycles'] / cycles:.1f}%) and moved {soc['data_bytes']:,} "
            f"bytes in {soc['data_commands']:,} reads and writes of "
            f"{soc['data_bits_per_command']} bits, one per SoC cycle at most: the SDRAM's data "
            f"bus was busy {100 * soc['data_commands'] / cycles:.0f}% of the run (the "
            f"accelerator's bus is {m['bus_bits']} bits).")
        lines.append("")
    lines += [f"Bridge at {UART_BAUD:,} baud: the DDR image's {m['image_bytes']:,} bytes of "
              f"parameters and program take {m['uart_s_image']:.1f} s once, each "
              f"{m['input_bytes']:,}-byte input {m['uart_s_input']:.2f} s.", "",
              "| layer | ideal memory | " + " | ".join(f"SoC {soc['rate']} | ratio"
                                                       for soc in m["socs"]) + " |",
              "|---|---:|" + "---:|---:|" * len(m["socs"])]
    for i, layer in enumerate(m["layers"]):
        cells = [f"{soc['layer_cycles'][i]:,} | {soc['layer_cycles'][i] / layer['ideal']:.2f}"
                 for soc in m["socs"]]
        lines.append(f"| {layer['op']} | {layer['ideal']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(m: dict, path: Path) -> None:
    """Cycles per layer, the accelerator alone against the whole SoC at each rate."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    layers, socs = m["layers"], m["socs"]
    x, width = np.arange(len(layers)), 0.8 / (1 + len(socs))
    fig, ax = plt.subplots(figsize=(11, 4))
    ax.bar(x - 0.4 + width / 2, [layer["ideal"] for layer in layers], width,
           label=f"accelerator alone (ideal memory): {m['cycles_ideal_memory']:,}")
    for k, soc in enumerate(socs, 1):
        ax.bar(x - 0.4 + width * (k + 0.5), soc["layer_cycles"], width,
               label=f"whole SoC, SDRAM at {soc['rate']}: {soc['cycles']:,}")
    ax.set_xticks(x, [f"{i} {layer['op'].split()[0]}" for i, layer in enumerate(layers)],
                  rotation=70, fontsize=7)
    ax.set_ylabel("cycles")
    ax.set_title(f"{m['board']} SoC at {m['clock_mhz']:g} MHz, seed network alpha "
                 f"{m['alpha']:g}: cycles per layer")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.soc", description=__doc__.split("\n\n")[0])
    ap.add_argument("--board", default="ulx3s-85f")
    ap.add_argument("--alpha", type=float, default=0.25)
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--sdram-rate", nargs="+", choices=("1:1", "1:2"), default=["1:1", "1:2"],
                    help="SDRAM clock : SoC clock, one or more (default: both)")
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
