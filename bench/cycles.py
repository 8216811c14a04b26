# amaranth: UnusedElaboratable=no
"""Cycle budget of the seed networks on the accelerator, from the cycle model of its
schedule (`sim.perf_model`, cycle-exact against simulation on the test networks).

For alpha 1 and alpha 0.25, on the default AccelConfig (alpha 1's large feature maps tiled
through DDR in bands of rows), on one whose activation buffers hold alpha 1's largest feature
map whole (14x14x1024 = 200,704 bytes), and on the ULX3S boards' configs: per layer (per
band) and in total the MACs, the ideal cycles MACs / MAC units, the predicted cycles and their
ratio; then whether alpha 1 meets the target: end-to-end cycles within 15% of MACs / MAC
units.

    python -m bench.cycles [--read-latency N] [--write-latency N]

Building the two networks takes about a minute (Keras model, calibration, int8 conversion).
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from boards.targets import default_config  # noqa: E402
from firmware.compiler import compile_graph  # noqa: E402
from firmware.program import Opcode  # noqa: E402
from quantize.model import ModelSpec  # noqa: E402
from quantize.pipeline import build_int8_model  # noqa: E402
from quantize.tflite_graph import load_graph  # noqa: E402
from rtl_gen.config import AccelConfig  # noqa: E402
from firmware.contract import ProgramError  # noqa: E402
from sim.perf_model import DdrTiming, predict  # noqa: E402

ALPHAS = (1.0, 0.25)
TARGET_ALPHA, TARGET_RATIO = 1.0, 1.15
# The boards' configs as gen-accel --synth builds them for the seed network: it has no ADD
# layer, so without the AddUnit.
CONFIGS = {
    "default": AccelConfig(),
    "alpha-1 buffers": AccelConfig(act_buffer_bytes=14 * 14 * 1024),
    "ulx3s-85f": default_config("ulx3s-85f", needs_add=False),
    "ulx3s-45f": default_config("ulx3s-45f", needs_add=False),
}


def describe(cfg: AccelConfig) -> str:
    return (f"pointwise {cfg.pw_out}x{cfg.pw_in} = {cfg.macs_per_cycle} MAC units, "
            f"depthwise {cfg.dw_lanes} lanes, bus {cfg.bus_bytes} B x {cfg.max_burst}-beat "
            f"bursts, activation buffers 2 x {cfg.act_buffer_bytes} B, weight buffer "
            f"{cfg.weight_buffer_bytes} B{'' if cfg.with_add else ', no AddUnit'}")


def ratio(cycles: int, ideal: float) -> str:
    return f"{cycles / ideal:6.2f}" if ideal else "     -"


def report(graph, cfg: AccelConfig, ddr: DdrTiming):
    """Print the per-layer and total budget; returns predicted / ideal, None if it does not
    fit the buffers."""
    try:
        fw = compile_graph(graph, cfg)
        prediction = predict(fw, ddr=ddr)
    except ProgramError as e:
        print(f"  does not fit: {e}")
        return None
    units = cfg.macs_per_cycle
    print(f"  {'layer':>5} {'op':11} {'in -> out':>27} {'MACs':>11} {'ideal':>9} "
          f"{'predicted':>9} {'ratio':>6} {'compute':>9} {'DMA':>8} {'DDR bytes':>9}")
    by_op, dw_by_stride = {}, {}
    for layer, d in zip(prediction.layers, fw.descriptors):
        ideal = layer.macs / units
        shapes = f"{d.in_h}x{d.in_w}x{d.in_c} -> {d.out_h}x{d.out_w}x{d.out_c}"
        print(f"  {layer.layer:>5} {layer.op:11} {shapes:>27} {layer.macs:>11,} {ideal:>9.0f} "
              f"{layer.cycles:>9,} {ratio(layer.cycles, ideal)} {layer.compute:>9,} "
              f"{layer.dma:>8,} {layer.bytes:>9,}")
        totals = by_op.setdefault(Opcode(d.opcode).name, [0, 0])
        totals[0] += layer.macs
        totals[1] += layer.cycles
        if d.opcode == Opcode.DWCONV and layer.macs:
            dw = dw_by_stride.setdefault(d.stride, [0, 0])
            dw[0] += layer.macs
            dw[1] += layer.compute
    ideal = prediction.macs / units
    print(f"  total: {prediction.macs:,} MACs on {units} MAC units: ideal {ideal:,.0f} cycles, "
          f"predicted {prediction.total:,} cycles, ratio {prediction.total / ideal:.3f} "
          f"({1e-3 * prediction.total / cfg.clock_mhz:.2f} ms at {cfg.clock_mhz:g} MHz)")
    print("  by op: " + "; ".join(
        f"{op} {100 * cycles / prediction.total:.1f}% of the cycles, {cycles:,} for an ideal "
        f"{macs / units:,.0f}" for op, (macs, cycles) in by_op.items()))
    # The DepthwiseEngine against its own peak: dw_lanes channels x 9 taps a cycle.
    engine = 9 * cfg.dw_lanes
    print("  depthwise engine (compute cycles / (MACs / (lanes x 9))): " + "; ".join(
        f"stride {s}: {cycles:,} for {macs / engine:,.0f}, {cycles * engine / macs:.2f}x"
        for s, (macs, cycles) in sorted(dw_by_stride.items())))
    return prediction.total / ideal


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--read-latency", type=int, default=DdrTiming.read_latency,
                        help="DDR cycles from a read request to its first beat")
    parser.add_argument("--write-latency", type=int, default=DdrTiming.write_latency,
                        help="DDR cycles from a burst's last write beat to its response")
    args = parser.parse_args(argv)
    ddr = DdrTiming(args.read_latency, args.write_latency)
    print(f"DDR: fixed latencies, read {ddr.read_latency}, write {ddr.write_latency} cycles")
    target = {}
    for alpha in ALPHAS:
        graph = load_graph(build_int8_model(ModelSpec(alpha)).tflite)
        for name, cfg in CONFIGS.items():
            print(f"\nalpha {alpha:g}, {name} config ({describe(cfg)})")
            r = report(graph, cfg, ddr)
            if alpha == TARGET_ALPHA and r is not None:
                target[name] = r
    print()
    for name, cfg in CONFIGS.items():
        r = target.get(name)
        verdict = ("does not fit" if r is None else
                   f"{'holds' if r <= TARGET_RATIO else 'missed'}: {r:.3f} x MACs / MAC units")
        print(f"target (alpha {TARGET_ALPHA:g} end to end within "
              f"{100 * (TARGET_RATIO - 1):.0f}% of MACs / MAC units), {name} config: {verdict}")


if __name__ == "__main__":
    main()
