"""gen-accel: from a width multiplier (or an int8 .tflite) to a verified accelerator build.

    gen-accel --alpha 0.25 --out build/

Writes into DIR: the accelerator's Verilog, the int8 model, its layer table, the hardware
config, the firmware (layer
program, DDR image, memory map, C header) and the bit-exactness verdict, against TFLite
(BUILTIN_REF) on real CIFAR-10 test images, of the numpy reference and of the compiled
program run on the functional model.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("gen-accel")
DEFAULT_ALPHA = 0.25
DEFAULT_INPUT_SIZE = 28


class UsageError(ValueError):
    """Bad arguments, reported as one line and exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse's errors on one line, like every other error of gen-accel."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")

    def format_help(self):
        # The board list costs an amaranth import: only when help is shown.
        from boards.targets import BOARDS
        for action in self._actions:
            if action.help and BOARD_LIST in action.help:
                action.help = action.help.replace(BOARD_LIST, ", ".join(BOARDS))
        return super().format_help()


BOARD_LIST = "<boards>"
SOC_BOARD_LIST = "ulx3s-25f, ulx3s-45f, ulx3s-85f"


def parse_args(argv):
    from quantize.model import MAX_ALPHA
    p = OneLineParser(prog="gen-accel", description=__doc__.split("\n\n")[0])
    p.add_argument("--alpha", type=float, help=f"width multiplier of the seed network, "
                   f"0 < alpha <= {MAX_ALPHA:g} (default {DEFAULT_ALPHA})")
    p.add_argument("--input-size", type=int, help=f"input resolution of the seed network, "
                   f"8..512 pixels square (default {DEFAULT_INPUT_SIZE})")
    p.add_argument("--model", type=Path, help="use this int8 .tflite instead of the seed network "
                   "(its own input shape; not with --alpha, --input-size or --weights)")
    p.add_argument("--weights", type=Path, help="Keras weights (.weights.h5) for the seed network")
    p.add_argument("--config", type=Path, help="hardware config JSON (AccelConfig fields)")
    from quantize.input_norm import CHOICES
    p.add_argument("--input-norm", choices=CHOICES, default="auto",
                   help="pixel preprocessing the model was trained with, for its check "
                        "images: cifar (the seed's per-channel standardization) or a pixel "
                        "range (0,1 / -1,1 / 0,255); auto: cifar for the seed network, the "
                        "range a --model's input quantization spans (default auto)")
    p.add_argument("--check-images", type=int, default=8,
                   help="real test images run through reference and TFLite (default 8)")
    p.add_argument("--verify", type=int, default=0, metavar="N",
                   help="also run N real test images through the cycle-accurate Verilator "
                        "simulation of the generated RTL, compare every layer with TFLite, "
                        "and put the measured cycles into the layer report")
    p.add_argument("--synth", metavar="BOARD",
                   help=f"also synthesize, place and route the accelerator for BOARD (one "
                        f"of {BOARD_LIST}) with Yosys + nextpnr; without --config the largest config "
                        "that fits the board is used (without the ADD unit when the network has "
                        "no ADD layer); missing the clock target fails")
    p.add_argument("--soc", metavar="BOARD",
                   help=f"also build a LiteX SoC for BOARD (one of {SOC_BOARD_LIST}) into "
                        "<out>/soc/: the accelerator on the board's SDRAM (LiteDRAM) behind a "
                        "UART bridge, its bitstream (Yosys + nextpnr + ecppack; missing the "
                        "SoC clock fails), flash.sh and the bus map accel-run --port reads; "
                        "without --config the largest config that fits the board is used (without "
                        "the ADD unit when the network has no ADD layer)")
    p.add_argument("--soc-clock", type=float, metavar="MHZ",
                   help="the SoC's clock, accelerator and SDRAM controller (default 50)")
    p.add_argument("--soc-baud", type=int, metavar="BAUD",
                   help="the SoC's UART bridge rate (default 115200; the ULX3S's FT231X "
                        "takes up to 3000000, accel-run --port uses the build's rate)")
    p.add_argument("--soc-sdram-rate", choices=("1:1", "1:2"),
                   help="SDRAM clock : SoC clock (default 1:1, 16 bits per SoC cycle; 1:2 runs "
                        "the chip at twice the SoC clock, 32 bits per SoC cycle)")
    p.add_argument("--no-bitstream", action="store_true",
                   help="with --soc: write the SoC's gateware and bus map, skip the tools")
    # A string, not a Path: Path("") would silently become the current folder.
    p.add_argument("--out", default="build", help="output folder: new, empty or a previous "
                   "gen-accel build, which is replaced (default build/)")
    p.add_argument("-q", "--quiet", action="store_true")
    return p.parse_args(argv)


def load_config(path: Path | None):
    """The AccelConfig of a --config file (default: the built-in one), or UsageError naming
    the file and the problem."""
    from rtl_gen.config import AccelConfig, ConfigError
    from firmware.contract import check_config
    if path is None:
        return AccelConfig()
    try:
        cfg = AccelConfig.from_dict(json.loads(path.read_text()))
        check_config(cfg)
        return cfg
    except FileNotFoundError:
        raise UsageError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: a directory, not a config file") from None
    except OSError as e:
        raise UsageError(f"{path}: cannot read the config file ({e.strerror})") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a valid config JSON (not text)") from None
    except (json.JSONDecodeError, TypeError) as e:
        raise UsageError(f"{path}: not a valid config JSON ({e})") from None
    except ConfigError as e:
        raise UsageError(f"{path}: {e}") from None


@dataclass
class Plan:
    """What a run will do, decided from the arguments alone (before any heavy import)."""
    cfg: object                     # AccelConfig
    board: object = None            # boards.targets.Board for --synth
    soc_board: object = None        # boards.targets.Board for --soc
    spec: object = None             # quantize.model.ModelSpec of the seed network ...
    model: Path | None = None       # ... or the --model file


def plan_run(args) -> Plan:
    """Check every argument and file named, cheaply: nothing here imports TensorFlow, so a
    bad argument is answered in a fraction of a second."""
    check_counts(args)
    plan = Plan(cfg=None)
    choose_network(args, plan)
    choose_config(args, plan)
    from .build_dir import output_folder
    output_folder(args.out)
    if plan.spec is not None:       # its shapes decide the fit: no need to build it first
        from .preflight import check_seed_network
        check_seed_network(plan.spec, plan.cfg)
    return plan


def check_counts(args) -> None:
    """Image counts the shipped test images can serve, and at least one check in all: a
    build "bit-exact on 0 images" would be a verdict on nothing."""
    from quantize.assets import TEST_SAMPLE_COUNT
    for flag, n in (("--check-images", args.check_images), ("--verify", args.verify)):
        if n < 0:
            raise UsageError(f"{flag} must be >= 0, got {n}")
        if n > TEST_SAMPLE_COUNT:
            raise UsageError(f"{flag} must be <= {TEST_SAMPLE_COUNT} (the test images shipped "
                             f"with the package), got {n}")
    if args.check_images == 0 and args.verify == 0:
        raise UsageError("--check-images 0 without --verify checks nothing; give "
                         "--check-images N >= 1 (or --verify N)")


def choose_network(args, plan: Plan) -> None:
    """--model (a readable file), or the seed network's ModelSpec and --weights file."""
    if args.model is not None:
        seed_options = [f"--{k.replace('_', '-')}" for k in ("alpha", "input_size", "weights")
                        if getattr(args, k) is not None]
        if seed_options:
            raise UsageError(f"--model fixes the network and its input shape; "
                             f"{', '.join(seed_options)} only apply to the seed network")
        plan.model = readable_file(args.model, "model")
        return
    from quantize.model import ModelSpec
    try:
        plan.spec = ModelSpec(DEFAULT_ALPHA if args.alpha is None else args.alpha,
                              DEFAULT_INPUT_SIZE if args.input_size is None else args.input_size)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.weights is not None:
        readable_file(args.weights, "weights")


def readable_file(path: Path, what: str) -> Path:
    if not path.exists():
        raise UsageError(f"{path}: no such {what} file")
    if not path.is_file():
        raise UsageError(f"{path}: not a {what} file (a directory or a device)")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{path}: cannot read the {what} file (permission denied)")
    return path


def choose_config(args, plan: Plan) -> None:
    """--config, else the --synth / --soc board's default config, else the built-in one. The
    board's default leaves the AddUnit out for the seed network (MobileNet v1 has no ADD); a
    --model is only read later, so it gets the config with the AddUnit until
    `config_for_model`."""
    check_soc_args(args)
    named = args.synth or args.soc
    if not named:
        plan.cfg = load_config(args.config)
        return
    from boards.targets import default_config, get_board
    if args.synth and args.soc and get_board(args.synth) != get_board(args.soc):
        raise UsageError(f"--synth {args.synth} and --soc {args.soc} name different boards")
    try:
        board = get_board(named)
        plan.cfg = (load_config(args.config) if args.config else
                    default_config(board, needs_add=plan.model is not None))
    except ValueError as e:
        raise UsageError(str(e)) from None
    check_clock_for(board, plan.cfg, args.config)
    plan.board = board if args.synth else None
    plan.soc_board = board if args.soc else None


def check_soc_args(args) -> None:
    if args.soc is None:
        if (args.soc_clock is not None or args.soc_baud is not None
                or args.soc_sdram_rate is not None or args.no_bitstream):
            raise UsageError("--soc-clock, --soc-baud, --soc-sdram-rate and --no-bitstream "
                             "need --soc BOARD")
        return
    from boards.soc import SOC_BOARDS
    if args.soc not in SOC_BOARDS:
        raise UsageError(f"--soc {args.soc}: no SoC target for it (have "
                         f"{', '.join(SOC_BOARDS)})")
    if args.soc_clock is not None and not 10 <= args.soc_clock <= 150:
        raise UsageError(f"--soc-clock {args.soc_clock:g}: the SoC's SDR SDRAM controller "
                         "runs at 10..150 MHz")
    if args.soc_baud is not None and not 9600 <= args.soc_baud <= 3_000_000:
        raise UsageError(f"--soc-baud {args.soc_baud}: the bridge runs at 9600..3000000 baud")


def config_for_model(args, plan: Plan, graph):
    """The config to build: the planned one, except that a --model without ADD layers gets
    the --synth / --soc board's default config without the AddUnit (its LUTs buy depthwise
    lanes)."""
    from firmware.compiler import needs_add_unit
    board = plan.board or plan.soc_board
    if board is None or args.config or plan.model is None or needs_add_unit(graph):
        return plan.cfg
    from boards.targets import default_config
    log.info("%s has no ADD layer: using the %s config without the AddUnit", args.model,
             board.name)
    return default_config(board, needs_add=False)


# The fastest clock each FPGA family can distribute at all (ECP5 data sheet FPGA-DS-02012:
# primary clock network 400 MHz); a target above it can only fail after a long synthesis.
FAMILY_MAX_CLOCK_MHZ = {"ecp5": 400.0}


def check_clock_for(board, cfg, config_path: Path | None) -> None:
    ceiling = FAMILY_MAX_CLOCK_MHZ.get(board.nextpnr)
    if ceiling is not None and cfg.clock_mhz > ceiling:
        where = f"{config_path}: " if config_path else ""
        raise UsageError(f"{where}clock_mhz {cfg.clock_mhz:g} is beyond what the "
                         f"{board.name}'s {board.nextpnr.upper()} can clock at all (its clock "
                         f"network tops out at {ceiling:g} MHz)")


def check_address_space(fw, cfg, config_path: Path | None) -> None:
    """The DDR image (every region of the memory map) must lie below 2**addr_width: the DMA
    drives only addr_width address bits, so anything above would alias lower addresses."""
    name, (addr, size) = max(fw.regions.items(), key=lambda r: r[1][0] + r[1][1])
    end = max(addr + size, fw.base + len(fw.image))
    if end > 1 << cfg.addr_width:
        where = f"{config_path}: " if config_path else ""
        raise UsageError(f"{where}the memory map needs addresses up to {end - 1:#x} (the "
                         f"{name} region ends there), beyond the {cfg.addr_width}-bit address "
                         f"space of addr_width={cfg.addr_width}; set addr_width to at least "
                         f"{(end - 1).bit_length()}")


def obtain_model(args, plan: Plan):
    """(tflite bytes, provenance dict) from --model or from the seed network."""
    if plan.model is not None:
        return plan.model.read_bytes(), {"source": str(plan.model)}
    spec = plan.spec
    from quantize.pipeline import WeightsError, build_int8_model
    log.info("building %s and converting to int8 ...", spec.name)
    try:
        m = build_int8_model(spec, str(args.weights) if args.weights else None)
    except WeightsError as e:
        raise UsageError(str(e)) from None
    if not m.trained:
        log.warning("no trained weights shipped for %s: using BN-calibrated random "
                    "weights (bit-exactness holds, accuracy is chance)", spec.name)
    return m.tflite, {"source": "seed", "alpha": spec.alpha, "input_size": spec.input_size,
                      "trained": m.trained}


def input_norm(args, graph) -> str:
    """--input-norm resolved for this model (`quantize.input_norm`)."""
    from quantize.input_norm import infer, input_range
    from quantize.pipeline import takes_images
    if args.input_norm != "auto":
        return args.input_norm
    if args.model is None:
        return "cifar"                  # how the seed networks are trained
    g = graph.input
    found = infer(float(g.scale[0]), g.zp)
    if found is None and takes_images(graph):
        lo, hi = input_range(float(g.scale[0]), g.zp)
        log.warning("%s: input range [%.3g, %.3g] is no pixel range (0,1 / -1,1 / 0,255): "
                    "check images are CIFAR-standardized; give --input-norm if the model "
                    "was trained otherwise (bit-exactness holds either way)",
                    args.model, lo, hi)
    return found or "cifar"


def check_against_tflite(graph, tflite: bytes, fw, n: int, norm: str = "cifar") -> dict:
    """Run n real test images through TFLite (BUILTIN_REF), the numpy reference and the
    compiled program on the functional model; compare every layer of both with TFLite."""
    import numpy as np
    from tqdm import tqdm

    from firmware.executor import Memory, execute, host_input, read_tensor
    from quantize import assets
    from quantize.convert import golden_interpreter, golden_run
    from quantize.pipeline import takes_images
    from quantize.reference import run_graph
    from quantize.verify import compare_layers
    n = min(n, len(assets.sample_test_images()[1]))
    xs, labels = sample_inputs(graph, n, norm)
    interp = golden_interpreter(tflite)
    bad = {"reference": {}, "firmware": {}}
    correct = 0
    for i, x in enumerate(tqdm(xs, desc="check vs TFLite", unit="img",
                               disable=not log.isEnabledFor(logging.INFO))):
        golden = golden_run(interp, x[None])
        ours = run_graph(graph, x[None])
        mem = Memory(bytearray(fw.image), fw.base)
        mem.write(fw.regions["input"][0], host_input(fw, x[None]))
        execute(mem, fw.program_addr, fw.cfg)
        from_ddr = {t: read_tensor(fw, mem, t) for t in fw.tensors if t != fw.input_tensor}
        for name, run in (("reference", ours), ("firmware", from_ddr)):
            for d in compare_layers(graph, run, golden, fw.folded if run is from_ddr else ()):
                if d.mismatches:
                    bad[name][d.op_index] = bad[name].get(d.op_index, 0) + d.mismatches
        if labels is not None:
            correct += int(np.argmax(ours[graph.output.index]) == labels[i])
    return {"images": n, "inputs": input_kind(graph, labels),
            "input_norm": norm if takes_images(graph) else None, "layers": len(graph.ops),
            "bit_exact": not bad["reference"] and not bad["firmware"],
            "mismatching_layers": bad,
            "top1_on_sample": None if labels is None else correct / max(n, 1)}


def input_kind(graph, labels) -> str:
    from quantize.pipeline import takes_images
    if not takes_images(graph):
        return "seeded random int8 tensors (the model input is not an RGB image)"
    if labels is None:
        return (f"real CIFAR-10 test images (no accuracy: the model has "
                f"{int(graph.output.shape[-1])} classes, CIFAR-10 10)")
    return "real CIFAR-10 test images"


def write_firmware(out, fw, graph, norm: str = "cifar") -> None:
    from firmware import header
    from firmware.program import Opcode
    out.write_bytes("firmware/program.bin", b"".join(d.pack() for d in fw.descriptors))
    out.write_bytes("firmware/ddr_image.bin", bytes(fw.image))
    out.write_json("firmware/memory_map.json", {
        "base": fw.base, "regions": {k: {"addr": a, "bytes": n} for k, (a, n) in fw.regions.items()},
        "tensors": [{"tensor": p.tensor, "name": graph.tensors[p.tensor].name, "addr": p.addr,
                     "shape": list(p.shape), "stored_channels": p.c_pad, "zero_point": p.zero_point}
                    for p in fw.tensors.values()],
        "im2col_input": fw.im2col is not None,
        # How an image becomes the input (`quantize.input_norm`; firmware.deploy reads it).
        "input_norm": norm,
        # LAYER_CYCLES[i] belongs to descriptor i: its network layer, for a layer tiled
        # through DDR which band of output rows it computes, and its part in a layer of
        # several passes ("subsample": a strided 1x1 convolution's depthwise pass).
        "descriptors": [{"index": d.layer, "opcode": Opcode(d.opcode).name,
                         "graph_op": op, "layer_name": graph.op(op).name,
                         "band": band, "bands": bands, "out_rows": d.out_h, "role": role}
                        for d, op, (band, bands), role
                        in zip(fw.descriptors, fw.layer_ops, fw.bands, fw.roles)]})
    g = graph.input
    out.write_text("firmware/mnet_accel.h", header.render(fw, {
        "input_scale": float(g.scale[0]), "input_zero_point": g.zp,
        "num_classes": int(graph.output.shape[-1])}))
    from firmware.header import c_driver_files
    for name, text in c_driver_files().items():       # the C driver, next to its header
        out.write_text(f"firmware/{name}", text)


def sample_inputs(graph, n: int, norm: str = "cifar"):
    """n real CIFAR-10 test images quantized for the model input, with their labels."""
    from quantize import pipeline
    try:
        return pipeline.sample_inputs(graph, n, norm)
    except ValueError as e:
        raise UsageError(str(e)) from None


def verify_rtl(graph, tflite: bytes, fw, n: int, norm: str = "cifar") -> tuple[dict, dict]:
    """Run n images through the Verilated accelerator; compare every layer with TFLite."""
    import numpy as np

    from quantize.convert import golden_interpreter, golden_run
    from quantize.verify import compare_layers
    from sim.accel_sim import simulate
    xs, labels = sample_inputs(graph, n, norm)
    log.info("cycle-accurate simulation of %d image(s) (Verilator; first build takes several minutes, cached afterwards) ...", n)
    results = simulate(fw, list(xs), fw.cfg, progress=log.isEnabledFor(logging.INFO))
    interp = golden_interpreter(tflite)
    failures, per_image = [], []
    for i, (x, r) in enumerate(zip(xs, results)):
        bad = {d.op_index: d.mismatches
               for d in compare_layers(graph, r.tensors, golden_run(interp, x[None]), fw.folded)
               if d.mismatches}
        if r.error_code or r.timed_out or bad:
            failures.append({"image": r.index, "error_code": r.error_code,
                             "timed_out": r.timed_out, "mismatching_layers": bad})
        per_image.append({"image": r.index, "cycles": r.cycles, "wall_s": round(r.wall_s, 2),
                          "top1_correct": None if labels is None else
                          bool(np.argmax(r.output) == labels[i])})
    verdict = {"images": n, "inputs": input_kind(graph, labels), "layers": len(graph.ops),
               "bit_exact": not failures,
               "failures": failures, "per_image": per_image,
               "cycles_per_second": round(sum(r.sim_cycles for r in results) /
                                          max(sum(r.run_wall_s for r in results), 1e-9))}
    first = results[0]
    return verdict, {"layers": first.layer_cycles, "total": first.cycles}


def write_layer_report(out, fw, measured: dict | None) -> dict:
    """Predicted (and, after --verify, measured) cycles per layer: md, csv, json, png."""
    from sim import perf_model, report
    from sim.accel_sim import DDR_TIMING
    pred = perf_model.predict(fw, fw.cfg, DDR_TIMING)
    rows = []
    for i, layer in enumerate(pred.layers):
        rows.append({"layer": layer.layer, "op": layer.op, "macs": layer.macs,
                     "bytes": layer.weight_bytes + layer.record_bytes + layer.input_bytes + layer.output_bytes,
                     "predicted_compute": layer.compute, "predicted_dma": layer.dma,
                     "predicted_total": layer.cycles,
                     "measured": measured["layers"][i] if measured else None})
    run = {"predicted": pred.total, "measured": measured["total"] if measured else None}
    total, names = report.write(rows, fw.cfg.macs_per_cycle, out.staging / "report",
                                title=f"Layer cycles ({fw.cfg.macs_per_cycle} MAC units, "
                                      f"{fw.cfg.clock_mhz:g} MHz)", run=run)
    out.files += [f"report/{n}" for n in names]
    return total


def run_synthesis(out, cfg, board) -> dict:
    """Out-of-context Yosys + nextpnr build of the accelerator for `board`; a missed clock
    target or a design that does not fit raises, and no build folder is committed: the
    tools' logs and reports are kept in `<out>.synth-failed/` for diagnosis instead."""
    from boards.synth import REPORT_JSON, synthesize

    from rtl_gen.accelerator import Accelerator
    log.info("synthesizing for %s at %g MHz (Yosys + nextpnr; this takes a while) ...",
             board.name, cfg.clock_mhz)
    synth_dir = out.staging / "synth"
    with tool_run(out, synth_dir, f"synthesis for {board.name}"):
        synthesize(Accelerator(cfg), board, cfg.clock_mhz, synth_dir, top_name="mnet_accel",
                   progress=log.isEnabledFor(logging.INFO))
    report = synth_dir / REPORT_JSON
    summary = json.loads(report.read_text())
    summary["build_dir"] = "synth"     # relative to the build folder, not its staging name
    report.write_text(json.dumps(summary, indent=1) + "\n")
    log.info("synthesis: %s", ", ".join(f"{k}={v}" for k, v in summary.items()
                                        if k in ("fmax_mhz", "target_mhz")))
    return summary


def run_soc(out, cfg, board, args) -> dict:
    """The LiteX SoC for `board` around the accelerator, in `<out>/soc/` (`boards.soc`); a
    failed or slow bitstream keeps its logs in `<out>.synth-failed/` like --synth."""
    from boards.soc import BRIDGE_BAUDRATE, SDRAM_RATE, SOC_CLOCK_MHZ, build_board_soc
    clock = args.soc_clock or SOC_CLOCK_MHZ
    log.info("building the SoC for %s at %g MHz%s ...", board.name, clock,
             "" if args.no_bitstream else " (Yosys + nextpnr + ecppack; this takes a while)")
    soc_dir = out.staging / "soc"
    with tool_run(out, soc_dir, f"SoC for {board.name}"):
        summary = build_board_soc(board.name, cfg, soc_dir, clock_mhz=clock,
                                  baudrate=args.soc_baud or BRIDGE_BAUDRATE,
                                  sdram_rate=args.soc_sdram_rate or SDRAM_RATE,
                                  bitstream=not args.no_bitstream,
                                  progress=log.isEnabledFor(logging.INFO))
    if summary["bitstream"]:
        log.info("SoC: Fmax %.2f MHz (target %g); flash it with %s", summary["fmax_mhz"],
                 clock, "soc/flash.sh (openFPGALoader)")
    return summary


@contextlib.contextmanager
def tool_run(out, folder: Path, what: str):
    """The FPGA tools writing into ``folder`` of the staged build: their files join the
    build; a `boards.synth.SynthError` (missed clock, no fit, a tool failing) instead keeps
    the folder in `<out>.synth-failed/` and becomes one line naming ``what``."""
    from boards.synth import SynthError
    try:
        yield
    except SynthError as e:
        kept = failed_synthesis_folder(out.target)
        if folder.is_dir():
            shutil.copytree(folder, kept)
            (kept / SYNTH_FAILED_MARKER).touch()
        message = str(e).replace(str(folder), str(kept))
        raise RuntimeError(f"{what}: {message} (logs and reports kept in {kept})") from None
    out.files += [str(p.relative_to(out.staging)) for p in folder.rglob("*") if p.is_file()]


SYNTH_FAILED_MARKER = ".gen-accel-synth-failed"


def failed_synthesis_folder(target: Path) -> Path:
    """`<target>.synth-failed`, emptied if an earlier failed synthesis wrote it; a folder of
    that name that gen-accel did not write is kept and a numbered name used instead."""
    kept = target.with_name(target.name + ".synth-failed")
    n = 1
    while kept.exists() or kept.is_symlink():
        if kept.is_dir() and not kept.is_symlink() and (kept / SYNTH_FAILED_MARKER).is_file():
            shutil.rmtree(kept)
            break
        n += 1
        kept = target.with_name(f"{target.name}.synth-failed-{n}")
    return kept


def write_rtl(out, cfg) -> None:
    from amaranth.back import verilog

    from rtl_gen.accelerator import Accelerator
    log.info("generating Verilog ...")
    out.write_text("rtl/mnet_accel.v", verilog.convert(Accelerator(cfg), name="mnet_accel"))


def run(args) -> Path:
    """Check the arguments, then build into a staging folder and swap it in."""
    from .build_dir import BuildDir
    plan = plan_run(args)
    with BuildDir(args.out) as out:
        return build(args, plan, out)


def build(args, plan: Plan, out) -> Path:
    """The slow part: TensorFlow, the int8 model, compilation, RTL, checks, commit."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from quantize.native_stderr import load_tensorflow_quietly
    load_tensorflow_quietly()     # its start-up notes (oneDNN, no CUDA) tell a user nothing
    from firmware.compiler import compile_graph
    from firmware.fit_check import check_model_fits
    from quantize.summary import layer_table, layer_table_markdown
    from quantize.tflite_graph import load_graph
    board = plan.board
    t0 = time.time()
    tflite, provenance = obtain_model(args, plan)
    # Errors in a user's model name its file; the seed network's have the layer names.
    graph = load_graph(tflite, name=str(args.model) if args.model is not None else None)
    cfg = config_for_model(args, plan, graph)
    norm = input_norm(args, graph)
    if args.model is not None:
        # TFLite aborts the process on some models the reader cannot foresee: try it in a
        # child first, so even a build run in-process (isolate=False) reports one line.
        from quantize.interpreter_probe import probe
        probe(args.model)
    out.write_bytes("model.tflite", tflite)
    rows = layer_table(graph)
    out.write_json("layers.json", rows)
    out.write_text("layers.md", layer_table_markdown(rows))
    out.write_text("config.json", cfg.to_json() + "\n")
    fw = compile_graph(graph, cfg)
    # Every blocked layer, named as in the model.
    check_model_fits(fw, graph, cfg, name=str(args.model) if args.model is not None else None)
    check_address_space(fw, cfg, args.config)
    write_firmware(out, fw, graph, norm)
    write_rtl(out, cfg)
    verdict = check_against_tflite(graph, tflite, fw, args.check_images, norm)
    out.write_json("tflite_check.json", verdict)
    if verdict.get("images") and not verdict["bit_exact"]:
        raise RuntimeError(f"differs from TFLite on layers {verdict['mismatching_layers']}")
    measured = None
    if args.verify:
        sim_verdict, measured = verify_rtl(graph, tflite, fw, args.verify, norm)
        out.write_json("rtl_verify.json", sim_verdict)
    totals = write_layer_report(out, fw, measured)
    synth = run_synthesis(out, cfg, board) if board is not None else None
    soc = run_soc(out, cfg, plan.soc_board, args) if plan.soc_board is not None else None
    if args.verify and not sim_verdict["bit_exact"]:
        raise RuntimeError(f"RTL simulation differs from TFLite: {sim_verdict['failures']}")
    path = out.commit({"tool": "gen-accel", "model": provenance,
                       "total_macs": sum(r["macs"] for r in rows),
                       "predicted_cycles": totals["predicted_total"],
                       "synthesis": synth,
                       "soc": soc,
                       "measured_cycles": totals["measured"],
                       "seconds": round(time.time() - t0, 2)})
    log.info("wrote %s (%d layers, %s MACs; reference and firmware bit-exact vs TFLite on %d "
             "images%s)", path, len(rows), f"{sum(r['macs'] for r in rows):,}",
             verdict.get("images", 0), rtl_summary(sim_verdict, measured) if args.verify else "")
    return path


def rtl_summary(sim_verdict: dict, measured: dict) -> str:
    """The --verify part of the final line."""
    return (f"; RTL (Verilator) bit-exact on {sim_verdict['images']} images, "
            f"{measured['total']:,} cycles")


def main(argv=None, *, isolate: bool | None = None) -> int:
    """The gen-accel command. `isolate` (default: when run as the command, argv None) runs
    the build in a child process watched by this one (`run_supervised`)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(name)s: %(message)s")
    # -q also silences libraries that set their own loggers' levels (cocotb's runner).
    logging.disable(logging.INFO if args.quiet else logging.NOTSET)
    if isolate is None:
        isolate = argv is None and hasattr(os, "fork")
    if isolate:
        return run_supervised(args)
    return run_reporting_errors(args)


def run_reporting_errors(args) -> int:
    """Run the build; every expected failure, and SIGINT/SIGTERM, becomes one line on stderr
    and an exit status (2 bad input, 1 failed, 130/143 interrupted)."""
    from .build_dir import Interrupted, interrupts_unwind
    try:
        with interrupts_unwind():
            run(args)
    except (Interrupted, KeyboardInterrupt) as e:
        print("gen-accel: interrupted", file=sys.stderr)
        return e.exit_status if isinstance(e, Interrupted) else 130
    except (ValueError, OSError) as e:
        if not isinstance(e, bad_input_errors()):
            raise
        print(f"gen-accel: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        print(f"gen-accel: failed: {e}", file=sys.stderr)
        return 1
    return 0


# Exceptions that mean bad input (exit 2), by module: one can only have been raised if its
# module is loaded, and importing a module just to catch its errors would slow down the
# answer to a bad argument.
BAD_INPUT_ERRORS = {"flow.build_dir": "OutputError", "rtl_gen.config": "ConfigError",
                    "firmware.contract": "ProgramError", "flow.preflight": "TooLargeToBuild",
                    "quantize.tflite_graph": "UnsupportedModelError"}


def bad_input_errors() -> tuple[type, ...]:
    loaded = [getattr(sys.modules[m], name) for m, name in BAD_INPUT_ERRORS.items()
              if m in sys.modules]
    return (UsageError, *loaded)


# After SIGINT/SIGTERM, how long the build may take to clean up before it is killed (a
# signal only reaches Python code once a long native call, e.g. TFLite's converter, returns).
INTERRUPT_GRACE_S = 5.0


def run_supervised(args) -> int:
    """Run the build in a forked child and wait for it. A native abort() (TensorFlow Lite
    aborts on some models instead of raising), a crash or the kernel's out-of-memory killer
    end a process without running any Python: only a parent can still say what happened in
    one line and remove the child's staging folder."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:                                    # the child: the build itself
        code = 1
        try:
            code = run_reporting_errors(args)
        except BaseException:                      # a bug: its traceback is the report
            import traceback
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    signals, status = wait_forwarding_signals(pid)
    from .build_dir import remove_stale_staging, target_path
    if args.out.strip():
        remove_stale_staging(target_path(args.out), pid)    # whatever the child left
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    if signals:
        print("gen-accel: interrupted", file=sys.stderr)
        return 128 + signals[0]
    # A user's model is the likeliest cause of a native crash: the line names its file.
    model = f"{args.model}: " if args.model is not None else ""
    print(f"gen-accel: failed: {model}{death_reason(os.WTERMSIG(status))}; no build was "
          f"written to {args.out}", file=sys.stderr)
    return 1


def wait_forwarding_signals(pid: int) -> tuple[list[int], int]:
    """Wait for child `pid`, passing SIGINT/SIGTERM on to it and killing it if it has not
    ended INTERRUPT_GRACE_S after the first. Returns (signals received, wait status)."""
    import signal
    received: list[int] = []

    def forward(signum, frame):
        received.append(signum)
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    saved = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        deadline = None
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return received, status
            if received and deadline is None:
                deadline = time.monotonic() + INTERRUPT_GRACE_S
            if deadline is not None and time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def death_reason(signum: int) -> str:
    import signal
    name = signal.Signals(signum).name
    if signum == signal.SIGKILL:
        return "the build was killed (SIGKILL), most likely by the system for running out of memory"
    if signum == signal.SIGABRT:
        return ("the build aborted (SIGABRT) inside a native library, most likely TensorFlow "
                "Lite failing a check on the model; its message, if any, is above")
    return f"the build crashed ({name})"


if __name__ == "__main__":
    sys.exit(main())
