# amaranth: UnusedElaboratable=no
"""Cycles of keras.applications MobileNets on the board configs, from the cycle model (exact
per layer against Verilator: `tests/test_mobilenet_v2.py`, `tests/test_imagenet_mobilenet.py`).

For MobileNet v1 and v2 (untrained, BatchNorm statistics calibrated on random images, full
int8 as the TF docs export them): MACs, predicted cycles, their ratio to MACs / MAC units,
frames/s at the config's clock, the share of cycles per op, and for v2 the efficiency of its
1x1 layers (expansions with 6x channel growth, linear projections) against the MAC array.

    python -m bench.zoo [--clock-mhz 100] [--out build/bench-zoo]

Builds and converts each network first (about a minute each at 224x224); writes
`zoo.md` and `zoo.json` to `--out`.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from boards.targets import default_config  # noqa: E402
from firmware.compiler import compile_graph, needs_add_unit  # noqa: E402
from firmware.program import Flags, Opcode  # noqa: E402
from quantize.convert import keras_application_int8  # noqa: E402
from quantize.tflite_graph import load_graph  # noqa: E402
from sim.perf_model import DdrTiming, predict  # noqa: E402

NETWORKS = {   # name: (keras.applications class, input side, alpha, classes)
    "MobileNet v1 224 alpha 1": ("MobileNet", 224, 1.0, 1000),
    "MobileNetV2 224 alpha 1": ("MobileNetV2", 224, 1.0, 1000),
    "MobileNetV2 96 alpha 0.35": ("MobileNetV2", 96, 0.35, 10),
}
BOARDS = ("ulx3s-85f", "ulx3s-45f")


def measure(graph, board: str, clock_mhz: float, ddr: DdrTiming) -> dict:
    # v1 has no ADD layer: its board config leaves the AddUnit out (more depthwise lanes).
    cfg = default_config(board, needs_add=needs_add_unit(graph))
    fw = compile_graph(graph, cfg)
    p = predict(fw, ddr=ddr)
    units = cfg.macs_per_cycle
    by_op: dict[str, int] = {}
    for layer in p.layers:
        key = layer.op.split(" ")[0]
        by_op[key] = by_op.get(key, 0) + layer.cycles
    # 1x1 convolutions inside the network (not the host-patched stem, not the dense head).
    pointwise = [(layer, d) for layer, d in zip(p.layers, fw.descriptors)
                 if d.opcode == Opcode.CONV and d.in_h * d.in_w > 1
                 and not d.flags & Flags.IM2COL]
    pw_macs = sum(layer.macs for layer, _ in pointwise)
    pw_cycles = sum(layer.cycles for layer, _ in pointwise)
    return {"board": board, "config": f"{cfg.pw_out}x{cfg.pw_in} MACs, {cfg.dw_lanes} dw lanes"
                                      + ("" if cfg.with_add else ", no AddUnit"),
            "descriptors": len(fw.descriptors) - 1, "macs": p.macs, "cycles": p.total,
            "ratio": p.total / (p.macs / units),
            "fps": clock_mhz * 1e6 / p.total,
            "share": {op: c / p.total for op, c in by_op.items()},
            "pointwise_efficiency": (pw_macs / units) / pw_cycles if pw_cycles else None}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clock-mhz", type=float, default=100.0,
                        help="clock for the frames/s column (the RTL's target; see the "
                             "README's board table for routed figures)")
    parser.add_argument("--read-latency", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("build/bench-zoo"))
    args = parser.parse_args(argv)
    ddr = DdrTiming(args.read_latency, 1)
    rows = []
    for name, spec in NETWORKS.items():
        print(f"{name}: building and converting ...", flush=True)
        graph = load_graph(keras_application_int8(*spec))
        for board in BOARDS:
            try:
                r = measure(graph, board, args.clock_mhz, ddr)
            except ValueError as e:
                print(f"  {board}: does not fit: {e}")
                rows.append({"network": name, "board": board, "error": str(e)})
                continue
            r["network"] = name
            rows.append(r)
            share = ", ".join(f"{op} {100 * v:.0f}%" for op, v in r["share"].items())
            eff = r["pointwise_efficiency"]
            print(f"  {board} ({r['config']}): {r['macs']:,} MACs, {r['cycles']:,} cycles = "
                  f"{r['ratio']:.3f} x MACs / MAC units, {r['fps']:.1f} frames/s at "
                  f"{args.clock_mhz:g} MHz; 1x1 layers at {100 * eff:.1f}% of the MAC array; "
                  f"cycles: {share}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "zoo.json").write_text(json.dumps(rows, indent=1))
    lines = [f"| network | board (config) | MACs | cycles | x MACs / MAC units | 1x1 layers' "
             f"MAC-array use | frames/s at {args.clock_mhz:g} MHz |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['network']} | {r['board']} | | does not fit | | | |")
        else:
            lines.append(f"| {r['network']} | {r['board']} ({r['config']}) | {r['macs']:,} | "
                         f"{r['cycles']:,} | {r['ratio']:.3f} | "
                         f"{100 * r['pointwise_efficiency']:.1f}% | {r['fps']:.1f} |")
    (args.out / "zoo.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / 'zoo.md'}")


if __name__ == "__main__":
    main()
