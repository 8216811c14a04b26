"""accel-run: classify images with a gen-accel build, on the Verilated accelerator or on a board.

    accel-run --build build/ --sim image.png [more.png ...]
    accel-run --build build/ --sim-soc image.png         # the whole SoC, SDRAM and bridge
    accel-run --build build/ --port /dev/ttyUSB0 image.png

Loads the build's DDR image through the host driver (`firmware.driver`), writes each image's
input region, starts the program, waits for DONE (the interrupt in simulation; polling over
a board's UART bridge), and prints the class, the per-layer cycle counters and any error
code. ``--check`` also runs TFLite on the same input and requires the accelerator's int8
scores to equal it byte for byte. On a board (and ``--sim-soc``) the SDRAM is initialized
over the bridge first, from the build's ``soc/sdram_init.json`` (`firmware.sdram_init`). Exit status: 0 all fine, 1 a run failed (error code,
timeout, mismatch), 2 bad input (one line on stderr).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PROG = "accel-run"


class UsageError(ValueError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_args(argv):
    p = _Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("images", nargs="+", type=Path,
                   help="image files (PNG, JPEG, ...) or int8 .npy input tensors")
    p.add_argument("--build", type=Path, default=Path("build"),
                   help="a gen-accel build folder (default build/)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--sim", action="store_true",
                       help="run on the Verilator simulation of the build's accelerator")
    where.add_argument("--sim-soc", action="store_true",
                       help="run on the Verilator simulation of the whole LiteX SoC (SDRAM "
                            "controller and model, UART bridge; sim.soc_sim)")
    where.add_argument("--port", help="a board's UART bridge (starts litex_server on it)")
    where.add_argument("--server", metavar="HOST:PORT",
                       help="a litex_server already running (UART, Etherbone, ...)")
    p.add_argument("--baudrate", type=int, help="UART bridge baud rate (default: the rate "
                   "gen-accel --soc built the SoC for, from its MANIFEST.json)")
    p.add_argument("--csr-csv", type=Path, help="the SoC build's csr.csv (board runs; "
                   "default <build>/soc/csr.csv)")
    p.add_argument("--poll", action="store_true", help="poll STATUS instead of waiting for "
                   "the interrupt (simulation; a bridge always polls)")
    p.add_argument("--timeout", type=float, help="seconds of device time a run may take "
                   "(default: a generous bound from the program's work)")
    p.add_argument("--check", action="store_true",
                   help="also compare the int8 scores with TFLite's, byte for byte")
    p.add_argument("--json", action="store_true", help="print one JSON record per image")
    return p.parse_args(argv)


def open_transport(args, dep):
    """(transport, clock in Hz the timeout is counted in)."""
    if args.sim:
        from sim.accel_sim import CLOCK_NS, memory_size
        from sim.bridge_transport import VerilatorTransport
        return VerilatorTransport(dep.fw.cfg, memory_size(dep.fw)), 1e9 / CLOCK_NS
    if args.sim_soc:
        from boards.soc import SDRAM_RATE
        from sim.soc_sim import SoCSim
        soc = SoCSim(dep.fw.cfg, sdram_rate=built_soc(args.build).get("sdram_rate", SDRAM_RATE))
        return soc.transport, 1e9 / soc.clock_ns
    from firmware.litex_transport import LiteXTransport
    soc_dir = args.build / "soc"
    csr = args.csr_csv or soc_dir / "csr.csv"
    if not csr.is_file():
        raise UsageError(f"{csr}: no csr.csv (build the SoC with gen-accel --soc, or give "
                         "--csr-csv)")
    if args.port:
        baud = args.baudrate or built_baudrate(args.build)
        t = LiteXTransport.over_uart(args.port, baudrate=baud, csr_csv=str(csr))
    else:
        host, _, port = args.server.rpartition(":")
        if not host or not port.isdigit():
            raise UsageError(f"--server {args.server}: expected HOST:PORT")
        t = LiteXTransport(host=host, port=int(port), csr_csv=str(csr))
    steps = soc_dir / "sdram_init.json"
    if steps.is_file():
        from firmware.sdram_init import init_sdram
        init_sdram(t.client, json.loads(steps.read_text()), t.sleep)
    return t, t.client.constants.config_clock_frequency


def built_soc(build: Path) -> dict:
    """What gen-accel --soc recorded about the build's SoC ({} without one)."""
    try:
        return json.loads((build / "MANIFEST.json").read_text()).get("soc") or {}
    except (OSError, ValueError, AttributeError):
        return {}


def built_baudrate(build: Path) -> int:
    """The bridge rate the build's SoC was made for (115200 if it does not say)."""
    return int(built_soc(build).get("baudrate", 115200))


def read_input(dep, path: Path):
    return dep.load_tensor(path) if path.suffix.lower() == ".npy" else dep.quantize_image(path)


def describe(dep, path: Path, result, class_names) -> list[str]:
    s = result.status
    if s.ok:
        name = f" ({class_names[result.label]})" if class_names else ""
        head = f"{path}: class {result.label}{name}, {s.cycles:,} cycles"
    else:
        head = (f"{path}: FAILED, {s.error_name} after {s.layer_count} of "
                f"{len(dep.descriptors)} descriptors, {s.cycles:,} cycles")
    lines = [head]
    for i, c in enumerate(s.layer_cycles):
        d = dep.descriptors[i]
        band = f" band {d['band'] + 1}/{d['bands']}" if d["bands"] > 1 else ""
        lines.append(f"  layer {i:3d} {d['opcode']:<8} {d['layer_name']}{band}: {c:,} cycles")
    return lines


def class_names(dep):
    """CIFAR-10's names for a 10-class seed-network build, else None."""
    try:
        manifest = json.loads((dep.folder / "MANIFEST.json").read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("model", {}).get("source") == "seed" and dep.num_classes == 10:
        from quantize.data import CLASSES
        return CLASSES
    return None


def run(args) -> int:
    from firmware.deploy import Deployment
    from firmware.driver import AccelDriver, Runner
    from sim.accel_sim import cycle_limit
    for path in args.images:
        if not path.is_file():
            raise UsageError(f"{path}: no such input file")
    if args.timeout is not None and not args.timeout > 0:
        raise UsageError(f"--timeout must be > 0, got {args.timeout}")
    dep = Deployment.load(args.build)
    xs = [read_input(dep, p) for p in args.images]
    golden = None
    if args.check:
        import os
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        from quantize.native_stderr import load_tensorflow_quietly
        load_tensorflow_quietly()         # its start-up notes tell a user nothing
        from quantize.convert import golden_interpreter, golden_run
        interp = golden_interpreter((args.build / "model.tflite").read_bytes())
        out_index = interp.get_output_details()[0]["index"]
        golden = [golden_run(interp, x.reshape(dep.graph.input.shape))[out_index] for x in xs]
    transport, clock_hz = open_transport(args, dep)
    failed = 0
    names = class_names(dep)
    try:
        drv = AccelDriver(transport)
        drv.identify()
        timeout = args.timeout or 4 * cycle_limit(dep.fw) / clock_hz
        runner = Runner(drv, dep, timeout_s=timeout, use_irq=not args.poll)
        for i, (path, x) in enumerate(zip(args.images, xs)):
            r = runner.classify(x)
            match = None
            if golden is not None and r.status.ok:
                match = r.scores.tobytes() == golden[i].tobytes()
            failed += (not r.status.ok) or match is False
            if args.json:
                print(json.dumps({"input": str(path), "class": r.label, "ok": r.status.ok,
                                  "error": None if r.status.ok else r.status.error_name,
                                  "cycles": r.status.cycles,
                                  "layer_cycles": r.status.layer_cycles,
                                  "scores": None if r.scores is None else
                                  r.scores.reshape(-1).tolist(), "matches_tflite": match}))
            else:
                print("\n".join(describe(dep, path, r, names)))
                if match is not None:
                    print(f"  int8 scores {'equal' if match else 'DIFFER FROM'} TFLite's")
    finally:
        transport.close()
    return 1 if failed else 0


def main(argv=None) -> int:
    args = parse_args(argv)
    from firmware.deploy import BuildError
    from firmware.driver import DriverError
    try:
        return run(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (UsageError, BuildError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except (DriverError, OSError) as e:
        print(f"{PROG}: failed: {e}", file=sys.stderr)
        return 1
    except AssertionError as e:             # sim.verilator_runner.SimulationFailed
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"{PROG}: simulation failed: {first}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
