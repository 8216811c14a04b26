"""Whole-network inference on the Verilated accelerator: a compiled layer program runs out of
the fast RTL DDR model (`sim.axi_mem_model`), one cocotb session for any number of images.

    from sim.accel_sim import simulate
    fw = compile_graph(graph, cfg)
    results = simulate(fw, inputs_int8, cfg)            # inputs: (N, H, W, C) int8 or a list
    for r in results:
        assert r.ok, r.error_code
        ours = r.tensors                                # {graph tensor: array}, as read_tensor
        print(r.cycles, r.layer_cycles, r.wall_s)

What happens:

* `build_accelerator` wraps ``Accelerator(cfg)`` with `with_memory` (a DDR of `memory_size`
  bytes: the image rounded up to a power of two, so networks of similar size share a build)
  and builds it with Verilator through `sim.verilator_runner.build`, which reuses the build
  until the RTL (or ``read_latency`` / ``beat_interval``, which are elaboration-time model
  parameters) changes.
* One cocotb session (`sim.cocotb_tests.accel_network`) then runs every image: the DDR image
  is loaded through the model's ``$readmemh`` backdoor for the first image (and again after a
  failed run), later images only rewrite the input region (every layer rewrites its own
  output region completely, so what the previous image left there does not matter); the
  host programs PROG_ADDR and CTRL.START over AXI4-Lite (cocotbext-axi ``AxiLiteMaster``)
  and sleeps until ``irq`` rises, waking only every `CHUNK_CYCLES` simulated cycles to
  enforce the cycle limit, so no Python runs on clock edges while the accelerator works
  (cocotb's ``ClockCycles`` would: it awaits every edge in Python). It then reads STATUS,
  ERROR_CODE, CYCLES and LAYER_CYCLES[i] and dumps the activation and output regions back
  through the backdoor.
* The host turns each dump into per-layer tensors with `firmware.executor.read_tensor`.

A run that does not raise the interrupt within the cycle limit (`cycle_limit`, generous:
eight times the layers' work at the engines' full width plus their bus beats) is soft-reset
and reported with ``timed_out``; a run that ends with STATUS.ERROR is reported with its
``error_code``; neither stops the following images. Progress (one line per image) is printed
from this process while the simulator runs, by a thread that follows the session's progress
file.

Measured on two busy cores (alpha 0.25, default AccelConfig, 278k cycles per inference):
about 175k simulated cycles per CPU second, 3 s wall per image; the Verilator build of the
accelerator takes 2-6 minutes when the RTL changed, plus 20-45 s to convert it to Verilog
(cached by source hash, see `build_accelerator`). Limitations: the DDR model starts at
address 0 (compile with ``base=0``); timing parameters of the model are build-time, so each
(read_latency, beat_interval, memory size, config) is its own build; after a timed-out run
the core is soft-reset but AXI bursts it left in flight are not drained.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from firmware.executor import Memory, host_input, read_tensor
from firmware.program import Opcode
from sim.perf_model import DdrTiming

TEST_MODULE = "sim.cocotb_tests.accel_network"
CLOCK_NS = 10
CHUNK_CYCLES = 200_000           # simulated cycles between wake-ups while a run is going
DEFAULT_READ_LATENCY = 16
DEFAULT_BEAT_INTERVAL = 1
# The RTL DDR model's timing with the defaults above, for `sim.perf_model.predict`.
DDR_TIMING = DdrTiming(read_latency=DEFAULT_READ_LATENCY, write_latency=1)
MIN_MEMORY = 64 << 10
MAX_MEMORY = 256 << 20

STATUS_BUSY, STATUS_DONE, STATUS_ERROR = 1, 2, 4


@dataclass
class SimResult:
    """One image's run. ``tensors`` maps every graph tensor but the input to its array (the
    logical shape, as `read_tensor` gives it) read from the dumped DDR; ``output`` is the
    network output. ``cycles`` is the CYCLES register (busy cycles since START),
    ``sim_cycles`` the clock cycles from START to the interrupt. ``wall_s`` is the wall time
    of the whole image (backdoor load, run, register reads, dump), ``run_wall_s`` of the run
    alone and ``run_cpu_s`` the simulator process's CPU time during it (the two differ on a
    busy machine). ``build_s`` (Verilog conversion, unless cached, plus the Verilator build, unless
    cached), ``build_cached`` (the Verilator build was reused) and ``session_s`` (the whole
    simulator session) are the same for every image of one `simulate` call."""
    index: int
    status: int
    error_code: int
    layer_count: int
    cycles: int
    layer_cycles: list[int]
    sim_cycles: int
    timed_out: bool
    wall_s: float
    run_wall_s: float
    run_cpu_s: float
    load_s: float
    dump_s: float
    tensors: dict[int, np.ndarray] = field(repr=False)
    output: np.ndarray | None = field(repr=False)
    dump_base: int = 0
    dump: bytes = field(default=b"", repr=False)
    build_s: float = 0.0
    build_cached: bool = False
    session_s: float = 0.0

    @property
    def done(self) -> bool:
        return bool(self.status & STATUS_DONE)

    @property
    def error(self) -> bool:
        return self.timed_out or bool(self.status & STATUS_ERROR)

    @property
    def ok(self) -> bool:
        """Finished (DONE) without error and within the cycle limit."""
        return self.done and not self.error

    @property
    def cycles_per_s(self) -> float:
        return self.sim_cycles / self.run_wall_s if self.run_wall_s > 0 else 0.0


def memory_size(fw) -> int:
    """Bytes of DDR the model gets for ``fw``: its image (from address 0, the model's base)
    rounded up to a power of two, at least `MIN_MEMORY`."""
    need = fw.base + len(fw.image)
    if need > MAX_MEMORY:
        raise ValueError(f"the DDR image ends at {need:#x}: more than the {MAX_MEMORY >> 20} MiB "
                         "the simulation model offers (the model starts at address 0; "
                         "compile with base=0)")
    return max(MIN_MEMORY, 1 << (need - 1).bit_length())


def layer_work(d) -> int:
    """MACs (or element operations) of one descriptor: a coarse measure of its work."""
    if d.opcode == Opcode.CONV:
        return d.out_h * d.out_w * d.out_c * d.in_c
    if d.opcode == Opcode.DWCONV:
        return d.out_h * d.out_w * d.out_c * 9
    if d.opcode in (Opcode.MEAN, Opcode.ADD):
        return d.in_h * d.in_w * d.in_c
    if d.opcode == Opcode.SOFTMAX:
        return 64 * max(d.in_c, d.out_c)
    return 0


def layer_floor(d, cfg) -> float:
    """A rough cycle count for one descriptor: its work at the engine's full width (the
    pointwise array's MACs, the depthwise lanes' 3x3 windows, one element a cycle otherwise)
    plus one cycle per bus beat it moves (input, output, weights, channel records). The
    accelerator's layers measured between 0.1x and 1.3x of it."""
    width = {Opcode.CONV: cfg.macs_per_cycle, Opcode.DWCONV: 9 * cfg.dw_lanes}
    moved = (d.in_h * d.in_w * d.in_c + d.out_h * d.out_w * d.out_c + d.weight_bytes
             + 16 * d.out_c)
    return layer_work(d) / width.get(d.opcode, 1) + moved / cfg.bus_bytes


def cycle_limit(fw, cfg=None) -> int:
    """A generous bound on one run's cycles: eight times `layer_floor` plus 10,000 cycles for
    every layer, plus 100,000. A healthy accelerator needs a fraction of it (the seed network
    at alpha 0.25 about 1/12); a hung one is stopped by it."""
    cfg = cfg or fw.cfg
    return int(100_000 + sum(10_000 + 8 * layer_floor(d, cfg) for d in fw.descriptors))


def build_accelerator(cfg, mem_bytes: int, *, read_latency: int = DEFAULT_READ_LATENCY,
                      beat_interval: int = DEFAULT_BEAT_INTERVAL, cache_verilog: bool = True):
    """The (cached) Verilator build of ``Accelerator(cfg)`` inside a ``mem_bytes`` DDR model.

    Converting the accelerator to Verilog takes 10-20 s, on every call, before the runner can
    even hash the text; with ``cache_verilog`` the text is kept in
    ``verilog/accel_ddr-<key>.v`` of the Verilator build cache
    (`sim.verilator_runner.build_root`), keyed by the configuration, the model's
    parameters, the Amaranth version and the source of every module the design is generated
    from (`_RTL_SOURCES`), so any edit there converts afresh.
    """
    from sim.axi_mem_model import STORAGE_MODULE, STORAGE_VERILOG
    from sim.verilator_runner import TOPLEVEL, build, to_verilog

    def top():
        from rtl_gen.accelerator import Accelerator
        from sim.axi_mem_model import with_memory
        return with_memory(Accelerator(cfg), size=mem_bytes, read_latency=read_latency,
                           beat_interval=beat_interval)

    if not cache_verilog:
        return build(top(), name="accel_ddr")
    cached = cached_verilog("accel_ddr", [asdict(cfg), mem_bytes, read_latency, beat_interval,
                                          TOPLEVEL], lambda: to_verilog(top(), TOPLEVEL))
    return build(cached, name="accel_ddr",
                 extra_verilog={f"{STORAGE_MODULE}.v": STORAGE_VERILOG})


def cached_verilog(stem: str, key: list, make) -> Path:
    """``verilog/<stem>-<hash>.v`` of the Verilator build cache, written by ``make()`` (the
    Verilog text) unless there: keyed by ``key``, the Amaranth version and the source of
    every module the RTL is generated from (`_RTL_SOURCES`)."""
    import amaranth

    from sim.verilator_runner import VERILOG_DIR, build_root
    h = hashlib.sha256(json.dumps([key, amaranth.__version__]).encode())
    for path in _rtl_sources():
        h.update(str(path.relative_to(_REPO)).encode() + b"\0" + path.read_bytes())
    cached = build_root() / VERILOG_DIR / f"{stem}-{h.hexdigest()[:16]}.v"
    try:
        os.utime(cached)                # used now: pruned last
    except FileNotFoundError:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(make())
        tmp.replace(cached)
    return cached


_REPO = Path(__file__).resolve().parent.parent
# What the accelerator's Verilog depends on: rtl_gen imports firmware (program, layout),
# which imports quantize (fixedpoint); the DDR model lives in sim/axi_mem_model.py.
_RTL_SOURCES = ("rtl_gen", "firmware", "quantize", "sim/axi_mem_model.py")


def _rtl_sources() -> list[Path]:
    paths = []
    for name in _RTL_SOURCES:
        p = _REPO / name
        paths += sorted(p.rglob("*.py")) if p.is_dir() else [p]
    return paths


def _dump_range(fw, bb: int) -> tuple[int, int]:
    """Byte range covering every activation tensor and the output (not the input)."""
    spans = [(p.addr, p.addr + p.nbytes) for t, p in fw.tensors.items() if t != fw.input_tensor]
    for name in ("activations", "output"):
        if name in fw.regions:
            addr, n = fw.regions[name]
            spans.append((addr, addr + n))
    lo, hi = min(s[0] for s in spans), max(s[1] for s in spans)
    return lo - lo % bb, -(-hi // bb) * bb


def _as_images(inputs_int8) -> list[np.ndarray]:
    if isinstance(inputs_int8, np.ndarray) and inputs_int8.ndim == 4:
        return [inputs_int8[i:i + 1] for i in range(len(inputs_int8))]
    return [np.asarray(x) for x in inputs_int8]


class _ProgressPrinter(threading.Thread):
    """Prints each line the session appends to its progress file, as it appears."""

    def __init__(self, path: Path, total: int):
        super().__init__(daemon=True)
        self.path, self.total, self.seen = path, total, 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.wait(0.25):
            self.poll()
        self.poll()

    def poll(self):
        if not self.path.is_file():
            return
        lines = self.path.read_text().splitlines()
        for line in lines[self.seen:]:
            if not line.endswith("}"):
                break               # still being written
            r = json.loads(line)
            self.seen += 1
            if r.get("timed_out"):
                state = f"TIMED OUT after {r['sim_cycles']:,} cycles"
            elif r["status"] & STATUS_ERROR:
                state = f"ERROR code {r['error_code']}"
            else:
                state = "done"
            print(f"[accel_sim] image {r['index'] + 1}/{self.total}: {state}, "
                  f"{r['cycles']:,} cycles, run {r['run_wall_s']:.1f} s "
                  f"({r['sim_cycles'] / max(r['run_wall_s'], 1e-9):,.0f} cycles/s, "
                  f"{r['run_cpu_s']:.1f} s CPU), "
                  f"image total {r['wall_s']:.1f} s", flush=True)


def simulate(firmware, inputs_int8: Sequence[np.ndarray] | np.ndarray, cfg=None, *,
             read_latency: int = DEFAULT_READ_LATENCY,
             beat_interval: int = DEFAULT_BEAT_INTERVAL, stall_per_256: int = 0,
             progress: bool = True, max_cycles: int | None = None,
             keep_run_dir: bool = False) -> list[SimResult]:
    """Run ``firmware`` on each int8 input (NHWC, with or without the batch axis) on the
    Verilated accelerator built for ``cfg`` (default: the firmware's own config); see the
    module docstring. ``stall_per_256`` sets the DDR model's random back-pressure (a run-time
    setting: same build; the cycle model then no longer applies). ``max_cycles`` overrides
    `cycle_limit`. Returns one `SimResult` per input, in order. Raises `sim.verilator_runner.SimulationFailed` if the build or the
    session itself fails (not for a run that ends with an error code or times out). The run
    folder (simulator log, dumps) is removed afterwards unless ``keep_run_dir`` or failure.
    """
    from sim.verilator_runner import run
    fw = firmware
    cfg = cfg or fw.cfg
    if not 0 <= stall_per_256 <= 255:
        raise ValueError(f"stall_per_256 must be 0..255, got {stall_per_256}")
    images = _as_images(inputs_int8)
    if not images:
        return []
    in_addr, in_len = fw.regions["input"]
    inputs = [host_input(fw, x) for x in images]
    if any(len(i) != in_len for i in inputs):
        raise ValueError(f"an input is not {in_len} bytes once laid out for the input region")
    mem_bytes = memory_size(fw)
    t_build = time.perf_counter()
    b = build_accelerator(cfg, mem_bytes, read_latency=read_latency,
                          beat_interval=beat_interval)
    build_s = time.perf_counter() - t_build

    runs = b.directory / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="accel_network-", dir=runs))
    (run_dir / "image.bin").write_bytes(bytes(fw.image))
    (run_dir / "inputs.bin").write_bytes(b"".join(inputs))
    dump_lo, dump_hi = _dump_range(fw, cfg.bus_bytes)
    params = {
        "bus_bytes": cfg.bus_bytes, "clock_ns": CLOCK_NS, "chunk_cycles": CHUNK_CYCLES,
        "base": fw.base, "image_bytes": len(fw.image), "program_addr": fw.program_addr,
        "input_addr": in_addr, "input_bytes": in_len, "images": len(inputs),
        "dump_lo": dump_lo, "dump_hi": dump_hi,
        "max_cycles": int(max_cycles or cycle_limit(fw, cfg)), "stall": stall_per_256,
    }
    printer = _ProgressPrinter(run_dir / "progress.jsonl", len(inputs)) if progress else None
    if printer:
        printer.start()
    t0 = time.perf_counter()
    try:
        run(b, TEST_MODULE, params=params, test_dir=run_dir)
    finally:
        if printer:
            printer.stop.set()
            printer.join()
    session_s = time.perf_counter() - t0

    records = json.loads((run_dir / "results.json").read_text())
    results = []
    for r in records:
        dump = (run_dir / f"dump_{r['index']}.bin").read_bytes()
        mem = Memory(bytearray(dump), dump_lo)
        tensors = {t: read_tensor(fw, mem, t) for t in fw.tensors if t != fw.input_tensor}
        results.append(SimResult(
            index=r["index"], status=r["status"], error_code=r["error_code"],
            layer_count=r["layer_count"], cycles=r["cycles"], layer_cycles=r["layer_cycles"],
            sim_cycles=r["sim_cycles"], timed_out=r["timed_out"], wall_s=r["wall_s"],
            run_wall_s=r["run_wall_s"], run_cpu_s=r["run_cpu_s"], load_s=r["load_s"],
            dump_s=r["dump_s"],
            tensors=tensors, output=tensors.get(fw.output_tensor), dump_base=dump_lo,
            dump=dump, build_s=build_s, build_cached=b.cached, session_s=session_s))
    if not keep_run_dir:
        shutil.rmtree(run_dir, ignore_errors=True)
    return results


def main(argv=None) -> int:
    """``python -m sim.accel_sim [ALPHA] [N]``: the seed network on N CIFAR-10 test images,
    checked against TFLite."""
    argv = sys.argv[1:] if argv is None else argv
    alpha = float(argv[0]) if argv else 0.25
    n = int(argv[1]) if len(argv) > 1 else 1
    from firmware.compiler import compile_graph
    from quantize.convert import golden_interpreter, golden_run
    from quantize.model import ModelSpec
    from quantize.pipeline import build_int8_model, sample_inputs
    from quantize.tflite_graph import load_graph
    from quantize.verify import assert_bit_exact
    from rtl_gen.config import AccelConfig
    int8 = build_int8_model(ModelSpec(alpha))
    graph = load_graph(int8.tflite)
    cfg = AccelConfig()           # larger feature maps run as bands of rows (firmware.tiling)
    fw = compile_graph(graph, cfg)
    xs, _ = sample_inputs(graph, n)
    interp = golden_interpreter(int8.tflite)
    for x, r in zip(xs, simulate(fw, xs, cfg)):
        layers = assert_bit_exact(graph, r.tensors, golden_run(interp, x[None]), fw.folded)
        print(f"image {r.index}: bit-exact over {layers} layers, {r.cycles:,} cycles")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
