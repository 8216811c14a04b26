"""Board table: each ULX3S board's default accelerator built on the real flow, as resources,
routed Fmax and frames/s of the seed network, measured bit-exact in Verilator.

    python -m bench.boards [--boards ulx3s-85f,ulx3s-45f] [--clock-mhz 100] [--jobs 2]
                           [--out build/bench-boards] [--reuse] [--synth-dir BOARD=PATH]
                           [--config BOARD=JSON] [--alphas 0.25,1]

For each board:

1. Synthesis: `boards.targets.default_config(board, needs_add=False)` (the seed network has
   no ADD layer, so no AddUnit) or `--config BOARD=JSON`, with its clock target set to
   `--clock-mhz`; `rtl_gen.accelerator.Accelerator(cfg)` synthesized, placed and routed out
   of context (`boards.synth.synthesize`, top `mnet_accel`) into
   OUT/BOARD/synth. A missed clock target is not a failure: the routed Fmax is what is
   measured. Each build is a `python -m boards.synth` process, `--jobs` at a time (each
   nextpnr uses one core; an 85F build takes 20+ minutes), running while this process does
   step 2; its progress lines are shown prefixed with the board's name. `--reuse` takes a board's
   existing synth_report.json instead of rebuilding; `--synth-dir BOARD=PATH` names a folder
   built elsewhere (e.g. `gen-accel --synth BOARD` writes DIR/synth, `python -m boards.synth
   --out PATH`).
2. Inference: for each alpha (0.25 and 1) the 28x28 seed network (shipped trained weights,
   else BN-calibrated random ones) compiled for the board's config; a network that does not
   fit the buffers is recorded as "does not fit" with the sequencer's message. Otherwise one
   real CIFAR-10 test image runs through the Verilated accelerator (`sim.accel_sim`, its
   default DDR model: 16-cycle read latency) and every layer is compared with TFLite
   BUILTIN_REF (`flow.cli.verify_rtl`, as `gen-accel --verify 1`). The measured CYCLES
   register must equal `sim.perf_model.predict` (a loud warning otherwise).

Measured and derived, per board and alpha: LUT4 / FF / MULT18X18D / DP16KD used of available,
routed Fmax, cycles per inference, frames/s = Fmax / cycles, MACs (sum of the cycle model's
per-layer MACs, `quantize.summary.MAC_DEFINITION`), MACs per cycle, MAC-unit efficiency =
MACs / (cycles x pw_out x pw_in), MACs/s per MULT18X18D = MACs x frames/s / MULT18X18D used,
and the MULT18X18D share doing MACs = pw_out x pw_in / MULT18X18D used.

Writes OUT/boards.json (all of it, configs and tool versions), OUT/boards.md (the README's
board table, printed at the end) and OUT/boards.png (frames/s and device use per board).
Exit status 0 when every board was built and every network that fits ran bit-exact; 1
otherwise (the files are written either way).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path

DEFAULT_BOARDS = ("ulx3s-85f", "ulx3s-45f")
DEFAULT_ALPHAS = (0.25, 1.0)
INPUT_SIZE = 28
DEFAULT_CLOCK_MHZ = 100.0
DEFAULT_OUT = Path("build/bench-boards")
TOP_NAME = "mnet_accel"
REPORT_JSON_NAME = "synth_report.json"      # boards.synth.REPORT_JSON (checked by the test)
REPO_ROOT = Path(__file__).resolve().parent.parent
# Table column -> SynthReport resource row.
RESOURCES = {"LUT4": "lut", "FF": "ff", "MULT18X18D": "dsp", "DP16KD": "bram"}
OK, DOES_NOT_FIT = "ok", "does not fit"


# ---- progress --------------------------------------------------------------------------------

class Progress:
    """One line per phase, with the seconds since the run started."""

    def __init__(self, enabled: bool = True):
        self.enabled, self.start = enabled, time.monotonic()

    def __call__(self, text: str) -> None:
        if self.enabled:
            print(f"[boards {time.monotonic() - self.start:7.1f}s] {text}", flush=True)


def alpha_key(alpha: float) -> str:
    return f"{alpha:g}"


# ---- configs ---------------------------------------------------------------------------------

def board_config(board: str, clock_mhz: float, config_path: Path | None = None):
    """The board's default AccelConfig for the seed network (no ADD layer: without the
    AddUnit, as `gen-accel --synth` builds it), or the one in `config_path`, at `clock_mhz`."""
    from boards.targets import default_config
    from rtl_gen.config import AccelConfig
    cfg = (AccelConfig.from_dict(json.loads(Path(config_path).read_text()))
           if config_path else default_config(board, needs_add=False))
    return replace(cfg, clock_mhz=float(clock_mhz))


def checked_board_config(board: str, clock_mhz: float, config_path: Path | None = None):
    """`board_config` and `check_config`, or one line naming the --config file's problem."""
    from firmware.contract import check_config
    try:
        cfg = board_config(board, clock_mhz, config_path)
        check_config(cfg)
    except (OSError, ValueError, TypeError) as e:   # ConfigError and JSON errors are ValueErrors
        where = f"--config {board}={config_path}" if config_path else board
        raise SystemExit(f"{where}: {e}") from None
    return cfg


def describe_config(cfg) -> str:
    """E.g. '16x8 MACs, 4 dw lanes, 64-bit bus, 2x64 + 32 KiB'."""
    lanes = f"{cfg.dw_lanes} dw lane{'s' if cfg.dw_lanes > 1 else ''}"
    return (f"{cfg.pw_out}x{cfg.pw_in} MACs, {lanes}, {8 * cfg.bus_bytes}-bit bus, "
            f"2x{_kib(cfg.act_buffer_bytes)} + {_kib(cfg.weight_buffer_bytes)} KiB"
            + ("" if cfg.with_add else ", no AddUnit"))


def _kib(nbytes: int) -> str:
    return f"{nbytes / 1024:g}"


def board_label(board: str) -> str:
    """E.g. 'ULX3S 85F (LFE5U-85F-6)': the board and its device with speed grade."""
    from boards.targets import get_board
    b = get_board(board)
    args = list(b.nextpnr_args)
    speed = args[args.index("--speed") + 1] if "--speed" in args else None
    device = f"{b.device}-{speed}" if speed else b.device
    return f"{b.name.upper().replace('-', ' ')} ({device})"


def parse_assignments(items: list[str], option: str) -> dict[str, Path]:
    """['BOARD=PATH', ...] -> {BOARD: Path}; argparse-style error on a malformed item."""
    from boards.targets import BOARDS
    out = {}
    for item in items or ():
        board, sep, path = item.partition("=")
        if not sep or not path:
            raise SystemExit(f"{option} must look like BOARD=PATH, got {item!r}")
        if board not in BOARDS:
            raise SystemExit(f"{option}: unknown board {board!r}; known: {', '.join(BOARDS)}")
        out[board] = Path(path)
    return out


# ---- step 1: synthesis -----------------------------------------------------------------------

def synth_folder(out: Path, board: str, synth_dirs: dict) -> Path:
    return Path(synth_dirs[board]) if board in synth_dirs else Path(out) / board / "synth"


def reusable_report(folder: Path) -> dict | None:
    """The synth report in `folder` (boards.synth's REPORT_JSON), None if there is none."""
    path = Path(folder) / REPORT_JSON_NAME
    return json.loads(path.read_text()) if path.is_file() else None


def recorded_config(folder: Path) -> dict | None:
    """The AccelConfig a synth folder was built from, where its builder wrote it down:
    accel_config.json beside the report (this script, `python -m boards.synth`) or
    config.json one level up (a `gen-accel --synth` build folder)."""
    for path in (Path(folder) / "accel_config.json", Path(folder).parent / "config.json"):
        if path.is_file():
            with contextlib.suppress(ValueError):
                return json.loads(path.read_text())
    return None


def config_mismatch(recorded: dict | None, cfg) -> list[str]:
    """Fields (other than the clock target) where a reused build's config differs from `cfg`;
    a field the record lacks (written before the field existed) has its default, as
    `AccelConfig.from_dict` reads it."""
    if recorded is None:
        return []
    from rtl_gen.config import AccelConfig
    built = {**asdict(AccelConfig()), **recorded}
    return [f"{k}: built {built.get(k)!r}, measuring {v!r}" for k, v in asdict(cfg).items()
            if k != "clock_mhz" and built.get(k) != v]


def synth_command(board: str, folder: Path, cfg) -> list[str]:
    """`python -m boards.synth` for `Accelerator(cfg)` on `board` into `folder`: it writes
    the config (accel_config.json) and the reports there, and exits 0 (clock met), 1 (missed,
    reports written), 3 (does not fit) or 4 (tool failure)."""
    config = Path(folder) / "accel_config.json"
    config.write_text(cfg.to_json() + "\n")
    return [sys.executable, "-m", "boards.synth", "--board", board,
            "--component", "rtl_gen.accelerator:Accelerator", "--config", str(config),
            "--clock-mhz", repr(float(cfg.clock_mhz)), "--top", TOP_NAME, "--out", str(folder)]


def synthesis_outcome(folder: Path, returncode: int, output_tail: list[str]) -> dict:
    """{"report": SynthReport dict or None, "error": message or None} of a finished
    `synth_command`; a missed clock target (exit 1 with a report) is a report, not an error."""
    report = reusable_report(folder)
    if returncode in (0, 1) and report is not None:
        return {"report": report, "error": None}
    errors = [line for line in output_tail if line.startswith("error:")]
    last = errors[-1] if errors else (output_tail[-1] if output_tail else "no output")
    return {"report": None, "error": f"exit status {returncode}: {last}"}


class Syntheses:
    """Each board's synthesis: a reused report, or a `synth_command` process (at most `jobs`
    at once, each watched by a thread) that runs while the caller simulates. `command` makes
    the process (tests pass a stand-in)."""

    def __init__(self, jobs: int, say: Progress, command=synth_command):
        self.say, self.command = say, command
        self.slots = threading.Semaphore(jobs)
        self.cancelled = threading.Event()
        self.threads, self.procs, self.done = {}, {}, {}

    def reuse(self, board: str, folder: Path, report: dict, cfg) -> None:
        self.say(f"{board}: reusing {folder} (Fmax {report['fmax_mhz']:.2f} MHz, target "
                 f"{report['target_mhz']:g})")
        if report.get("board") != board:
            self.done[board] = {"report": None, "error": f"{folder}: a report for "
                                f"{report.get('board')!r}, not {board}", "folder": str(folder)}
            return
        for problem in config_mismatch(recorded_config(folder), cfg):
            warn(f"{board}: the reused build in {folder} has another config ({problem})")
        self.done[board] = {"report": report, "error": None, "folder": str(folder),
                            "reused": True}

    def start(self, board: str, folder: Path, cfg) -> None:
        self.say(f"{board}: synthesis queued ({cfg.clock_mhz:g} MHz target) into {folder}, "
                 f"in the background")
        thread = threading.Thread(target=self._build, args=(board, Path(folder), cfg),
                                  name=f"synth-{board}", daemon=True)
        self.threads[board] = thread
        thread.start()

    def _build(self, board: str, folder: Path, cfg) -> None:
        with self.slots:
            try:
                outcome = ({"report": None, "error": "cancelled"} if self.cancelled.is_set()
                           else self._run(board, folder, cfg))
            except Exception as e:      # e.g. the folder cannot be written: keep the others
                outcome = {"report": None, "error": f"{type(e).__name__}: {e}"}
        self.done[board] = {**outcome, "folder": str(folder), "reused": False}
        self.say(f"{board}: synthesis {summarize_synthesis(self.done[board])}")

    def _run(self, board: str, folder: Path, cfg) -> dict:
        """Run the build, its output prefixed with the board's name; keep its last lines."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / REPORT_JSON_NAME).unlink(missing_ok=True)    # never mistake an old report
        self.say(f"{board}: synthesis started")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(
            [str(REPO_ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
        tail = []
        with subprocess.Popen(self.command(board, folder, cfg), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1,
                              env=env, start_new_session=True) as proc:
            self.procs[board] = proc
            if self.cancelled.is_set():         # cancel() ran while this one was starting
                proc.send_signal(signal.SIGINT)
            for line in proc.stdout:
                print(f"{board}: {line}", end="", flush=True)
                tail = (tail + [line.strip()])[-20:]
            proc.wait()
        self.procs.pop(board, None)
        return synthesis_outcome(folder, proc.returncode, tail)

    def result(self, board: str) -> dict:
        """The board's outcome, waiting for its build if it is still running."""
        thread = self.threads.get(board)
        if thread is not None and thread.is_alive():
            self.say(f"{board}: waiting for synthesis")
            thread.join()
        return self.done[board]

    def cancel(self, grace_s: float = 30.0) -> None:
        """Stop every build: queued ones never start, running ones get SIGINT (boards.synth
        then stops its tools), SIGKILL after `grace_s`."""
        self.cancelled.set()
        for proc in list(self.procs.values()):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
        for proc in list(self.procs.values()):
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        for thread in self.threads.values():
            thread.join()


def summarize_synthesis(outcome: dict) -> str:
    report = outcome.get("report")
    if report is None:
        return f"FAILED: {outcome.get('error')}"
    met = "met" if report["fmax_mhz"] >= report["target_mhz"] else "missed"
    return f"done: Fmax {report['fmax_mhz']:.2f} MHz (target {report['target_mhz']:g}, {met})"


def warn(text: str) -> None:
    bar = "!" * 78
    print(f"{bar}\nWARNING: {text}\n{bar}", file=sys.stderr, flush=True)


# ---- step 2: networks on the Verilated accelerator -------------------------------------------

def build_network(alpha: float) -> dict:
    """The 28x28 seed network at `alpha`: {"graph", "tflite", "trained"}."""
    from quantize.model import ModelSpec
    from quantize.pipeline import build_int8_model
    from quantize.tflite_graph import load_graph
    m = build_int8_model(ModelSpec(alpha, INPUT_SIZE))
    return {"graph": load_graph(m.tflite), "tflite": m.tflite, "trained": m.trained}


def compile_for(network: dict, cfg):
    """(firmware, None), or (None, message) when the network does not fit `cfg`."""
    from firmware.compiler import compile_graph
    from firmware.contract import ProgramError, check_fits
    try:
        fw = compile_graph(network["graph"], cfg)
        check_fits(fw, cfg)
    except ProgramError as e:
        return None, str(e)
    return fw, None


def run_network(network: dict, fw) -> dict:
    """One real test image through the Verilated accelerator, every layer checked against
    TFLite, and the cycle model's prediction for the same DDR timing."""
    from flow.cli import verify_rtl
    from sim.accel_sim import DDR_TIMING
    from sim.perf_model import predict
    prediction = predict(fw, ddr=DDR_TIMING)
    verdict, measured = verify_rtl(network["graph"], network["tflite"], fw, 1)
    predicted_layers = [layer.cycles for layer in prediction.layers]
    return {
        "status": OK if verdict["bit_exact"] else "not bit-exact",
        "bit_exact": verdict["bit_exact"], "failures": verdict["failures"],
        "inputs": verdict["inputs"], "trained_weights": network["trained"],
        "descriptors": len(prediction.layers),
        "cycles": measured["total"], "predicted_cycles": prediction.total,
        "layer_cycles": measured["layers"], "predicted_layer_cycles": predicted_layers,
        "prediction_exact": (measured["total"] == prediction.total
                             and list(measured["layers"]) == predicted_layers),
        "macs": sum(layer.macs for layer in prediction.layers),
        "sim_cycles_per_second": verdict["cycles_per_second"],
    }


def measure_network(network: dict, cfg, label: str, say: Progress) -> dict:
    """The run record of one network on one config: does not fit, failed, or measured."""
    say(f"{label}: compile")
    fw, problem = compile_for(network, cfg)
    if fw is None:
        say(f"{label}: does not fit: {problem}")
        return {"status": DOES_NOT_FIT, "message": problem}
    say(f"{label}: Verilator run of one test image ({len(fw.descriptors)} descriptors; a new "
        f"config builds for minutes)")
    try:
        run = run_network(network, fw)
    except Exception as e:      # e.g. sim.verilator_runner.SimulationFailed: keep the others
        say(f"{label}: simulation FAILED: {e}")
        return {"status": "simulation failed", "message": f"{type(e).__name__}: {e}"}
    say(f"{label}: {run['cycles']:,} cycles measured, {run['predicted_cycles']:,} predicted, "
        f"{'bit-exact' if run['bit_exact'] else 'NOT BIT-EXACT'}")
    if not run["prediction_exact"]:
        warn(f"{label}: measured {run['cycles']:,} cycles, the cycle model predicts "
             f"{run['predicted_cycles']:,} (per layer: measured {run['layer_cycles']}, "
             f"predicted {run['predicted_layer_cycles']})")
    if not run["bit_exact"]:
        warn(f"{label}: the accelerator differs from TFLite: {run['failures']}")
    return run


# ---- step 3: arithmetic ----------------------------------------------------------------------

def resource_usage(report: dict) -> dict:
    """{'LUT4': {'used', 'available'}, 'FF': ..., 'MULT18X18D': ..., 'DP16KD': ...} from a
    SynthReport dict (its `resources` rows)."""
    rows = report["resources"]
    return {column: {"used": int(rows[row]["used"]), "available": int(rows[row]["available"])}
            for column, row in RESOURCES.items()}


def mult18_mac_share(cfg, mult18_used: int) -> float:
    """Share of the MULT18X18D used that are the pointwise MAC array."""
    return cfg.pw_out * cfg.pw_in / mult18_used


def cycle_metrics(run: dict, cfg) -> dict:
    """How well a measured run uses the MAC array (no clock needed)."""
    cycles, macs = run["cycles"], run["macs"]
    return {"macs_per_cycle": macs / cycles,
            "mac_efficiency": macs / (cycles * cfg.macs_per_cycle)}


def rate_metrics(run: dict, fmax_mhz: float, mult18_used: int) -> dict:
    """Throughput of a measured run at the routed Fmax."""
    fps = fmax_mhz * 1e6 / run["cycles"]
    return {"fps": fps, "latency_ms": 1e3 / fps,
            "macs_per_s_per_mult18": run["macs"] * fps / mult18_used}


def board_row(board: str, cfg, synthesis: dict, runs: dict) -> dict:
    """Everything measured for one board: config, synthesis, per-alpha runs with metrics."""
    report = synthesis.get("report")
    row = {"board": board, "label": board_label(board), "config": asdict(cfg),
           "config_text": describe_config(cfg),
           "synthesis": {k: v for k, v in synthesis.items() if k != "report"},
           "resources": None, "fmax_mhz": None, "target_mhz": None, "timing_met": None,
           "mult18_mac_share": None, "networks": {}}
    if report is not None:
        row["resources"] = resource_usage(report)
        row["fmax_mhz"], row["target_mhz"] = report["fmax_mhz"], report["target_mhz"]
        row["timing_met"] = report["fmax_mhz"] >= report["target_mhz"]
        row["synthesis"].update(tools=report.get("tools"), seconds=report.get("seconds"),
                                clocks=report.get("clocks"))
        row["mult18_mac_share"] = mult18_mac_share(cfg, row["resources"]["MULT18X18D"]["used"])
    for alpha, run in runs.items():
        run = dict(run)
        if run["status"] == OK:
            run.update(cycle_metrics(run, cfg))
            if report is not None:
                run.update(rate_metrics(run, row["fmax_mhz"],
                                        row["resources"]["MULT18X18D"]["used"]))
        row["networks"][alpha] = run
    return row


# ---- step 4: output --------------------------------------------------------------------------

def _count(n: int) -> str:
    return f"{n:,}"


def _fps(fps: float) -> str:
    return f"{fps:.0f}" if fps >= 100 else f"{fps:.1f}"


def _per_second(x: float) -> str:
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= scale:
            return f"{x / scale:.2f} {unit}"
    return f"{x:.0f}"


def run_cell(run: dict | None) -> str:
    """'cycles / fps' of a measured run, or what happened instead."""
    if run is None:
        return "-"
    if run["status"] == DOES_NOT_FIT:
        return "does not fit"
    if run["status"] != OK:
        return f"**{run['status']}**"
    if "fps" not in run:                    # measured, but no synthesis to time it
        return f"{_count(run['cycles'])} / -"
    mark = "" if run["prediction_exact"] else " (**model differs**)"
    return f"{_count(run['cycles'])} / {_fps(run['fps'])}{mark}"


def usage_cell(use: dict) -> str:
    return f"{_count(use['used'])} / {_count(use['available'])}"


def markdown_row(row: dict, alphas: list[str]) -> str:
    cells = [row["label"], row["config_text"]]
    use = row["resources"]
    if use is None:
        error = row["synthesis"].get("error") or "no synthesis"
        cells += [f"synthesis failed: {error}"] + ["-"] * 4
    else:
        mult = use["MULT18X18D"]
        cells += [usage_cell(use["LUT4"]), usage_cell(use["FF"]),
                  f"{usage_cell(mult)} ({100 * row['mult18_mac_share']:.0f}% MACs)",
                  usage_cell(use["DP16KD"]), f"{row['fmax_mhz']:.1f} MHz"]
    runs = row["networks"]
    cells += [run_cell(runs.get(a)) for a in alphas]
    per_mult = [f"{a}: {_per_second(runs[a]['macs_per_s_per_mult18'])}" for a in alphas
                if a in runs and "macs_per_s_per_mult18" in runs[a]]
    cells.append("; ".join(per_mult) or "-")
    return "| " + " | ".join(cells) + " |"


def detail_rows(rows: list[dict], alphas: list[str]) -> list[str]:
    """Per board and alpha: MACs, MACs per cycle and MAC-unit efficiency."""
    lines = ["| board | alpha | MACs | cycles (predicted) | MACs / cycle | MAC-unit efficiency "
             "| frames/s | MACs/s per MULT18X18D |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        for a in alphas:
            run = row["networks"].get(a)
            if run is None or run["status"] != OK:
                status = "-" if run is None else run["status"]
                lines.append(f"| {row['label']} | {a} | {status} | | | | | |")
                continue
            timed = "fps" in run
            lines.append(
                f"| {row['label']} | {a} | {_count(run['macs'])} | {_count(run['cycles'])} "
                f"({_count(run['predicted_cycles'])}) | {run['macs_per_cycle']:.1f} "
                f"| {100 * run['mac_efficiency']:.1f}% "
                f"| {_fps(run['fps']) if timed else '-'} "
                f"| {_per_second(run['macs_per_s_per_mult18']) if timed else '-'} |")
    return lines


def markdown_table(rows: list[dict], alphas: list[str], clock_mhz: float, tools: dict) -> str:
    head = (["board (device)", "config", "LUT4", "FF", "MULT18X18D (MAC share)", "DP16KD",
             "Fmax"] + [f"alpha {a} cycles / fps" for a in alphas] + ["MACs/s per multiplier"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += [markdown_row(row, alphas) for row in rows]
    from quantize.summary import MAC_DEFINITION
    from sim.accel_sim import DDR_TIMING
    targets = sorted({row["target_mhz"] for row in rows if row["target_mhz"]}) or [clock_mhz]
    lines += ["", f"Out of context, {' / '.join(f'{t:.4g}' for t in targets)} MHz target, "
              f"Fmax after routing; "
              f"{INPUT_SIZE}x{INPUT_SIZE} seed network, one real CIFAR-10 test image "
              f"bit-exact with TFLite in Verilator (DDR read latency "
              f"{DDR_TIMING.read_latency} cycles), cycles = the CYCLES register; "
              f"frames/s = Fmax / cycles. MAC share: pw_out x pw_in of the MULT18X18D used. "
              f"{MAC_DEFINITION} Tools: "
              + ", ".join(f"{k} {v}" for k, v in tools.items()) + ".", ""]
    lines += detail_rows(rows, alphas)
    return "\n".join(lines) + "\n"


def write_json(path: Path, rows: list[dict], alphas: list[str], clock_mhz: float,
               tools: dict) -> None:
    from sim.accel_sim import DDR_TIMING
    path.write_text(json.dumps({
        "clock_target_mhz": clock_mhz, "input_size": INPUT_SIZE, "alphas": alphas,
        "ddr_timing": asdict(DDR_TIMING), "tools": tools, "boards": rows}, indent=1) + "\n")


def write_png(path: Path, rows: list[dict], alphas: list[str]) -> None:
    """Frames/s bars per board (one per alpha) on the left axis; the share of the device's
    LUT4, MULT18X18D and DP16KD used as markers on the right axis."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    width = 0.55 / max(len(alphas), 1)          # the bars take x - 0.375 .. x + 0.175

    xs = range(len(rows))
    for i, a in enumerate(alphas):
        offset, labelled = (i - (len(alphas) - 1) / 2) * width - 0.1, False
        for x, row in zip(xs, rows):
            run = row["networks"].get(a) or {}
            if "fps" in run:
                bar = ax.bar(x + offset, run["fps"], width, color=f"C{i}",
                             label=None if labelled else f"alpha {a}")
                ax.bar_label(bar, fmt="%.1f", fontsize=8)
                labelled = True
            else:
                ax.text(x + offset, 0, run.get("status", "-").replace(" ", "\n"),
                        ha="center", va="bottom", fontsize=7, color=f"C{i}")
    ax.set_xticks(list(xs), [f"{r['label']}\n{r['config_text']}" for r in rows], fontsize=8)
    ax.set_ylabel("frames/s at routed Fmax")
    ax.set_title("Seed network 28x28 per ULX3S board (bit-exact in Verilator)")
    share = ax.twinx()
    for k, (column, marker) in enumerate((("LUT4", "o"), ("MULT18X18D", "s"), ("DP16KD", "^"))):
        points = [(x + 0.27 + 0.06 * k,
                   100 * r["resources"][column]["used"] / r["resources"][column]["available"])
                  for x, r in zip(xs, rows) if r["resources"]]
        if points:
            share.scatter(*zip(*points), marker=marker, color=f"C{k + len(alphas)}",
                          label=f"{column} used", zorder=3)
    share.set_ylim(0, 105)
    share.set_ylabel("% of the device used")
    handles = [h for a_ in (ax, share) for h in a_.get_legend_handles_labels()[0]]
    labels = [lab for a_ in (ax, share) for lab in a_.get_legend_handles_labels()[1]]
    if handles:
        fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=len(handles))
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(out: Path, rows: list[dict], alphas: list[str], clock_mhz: float,
                  tools: dict) -> str:
    """boards.json, boards.md and boards.png in `out`; returns the Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "boards.json", rows, alphas, clock_mhz, tools)
    table = markdown_table(rows, alphas, clock_mhz, tools)
    (out / "boards.md").write_text(table)
    write_png(out / "boards.png", rows, alphas)
    return table


def all_good(rows: list[dict]) -> bool:
    """Every board built, every network that fits ran bit-exact."""
    return all(row["resources"] is not None
               and all(run["status"] in (OK, DOES_NOT_FIT) for run in row["networks"].values())
               for row in rows)


# ---- command line ----------------------------------------------------------------------------

def parse_args(argv=None):
    from boards.targets import BOARDS
    p = argparse.ArgumentParser(prog="python -m bench.boards",
                                description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--boards", default=",".join(DEFAULT_BOARDS),
                   help=f"comma-separated boards (default %(default)s; known: {', '.join(BOARDS)})")
    p.add_argument("--alphas", default=",".join(alpha_key(a) for a in DEFAULT_ALPHAS),
                   help="comma-separated width multipliers (default %(default)s)")
    p.add_argument("--clock-mhz", type=float, default=DEFAULT_CLOCK_MHZ,
                   help="clock target of the syntheses (default %(default)g)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help="output folder (default %(default)s); syntheses in OUT/BOARD/synth")
    p.add_argument("--jobs", type=int, default=1,
                   help="syntheses run at once, in background processes (default 1)")
    p.add_argument("--reuse", action="store_true",
                   help="take a board's existing synth_report.json instead of rebuilding")
    p.add_argument("--synth-dir", action="append", metavar="BOARD=PATH",
                   help="an existing synth folder (with synth_report.json) for BOARD")
    p.add_argument("--config", action="append", metavar="BOARD=JSON",
                   help="AccelConfig JSON for BOARD instead of its default config")
    args = p.parse_args(argv)
    args.boards = [b.strip() for b in args.boards.split(",") if b.strip()]
    unknown = [b for b in args.boards if b not in BOARDS]
    if unknown or not args.boards:
        p.error(f"unknown board(s) {', '.join(unknown) or '(none given)'}; "
                f"known: {', '.join(BOARDS)}")
    try:
        args.alphas = [float(a) for a in args.alphas.split(",") if a.strip()]
    except ValueError:
        p.error(f"--alphas must be numbers, got {args.alphas!r}")
    if args.jobs < 1:
        p.error("--jobs must be >= 1")
    args.synth_dirs = parse_assignments(args.synth_dir, "--synth-dir")
    args.configs = parse_assignments(args.config, "--config")
    return args


def start_syntheses(args, configs: dict, say: Progress) -> Syntheses:
    """Reuse what may be reused, queue the other boards' builds."""
    synths = Syntheses(args.jobs, say)
    for board in args.boards:
        folder = synth_folder(args.out, board, args.synth_dirs)
        report = reusable_report(folder)
        if board in args.synth_dirs and report is None:
            raise SystemExit(f"--synth-dir {board}={folder}: no synth_report.json there")
        if report is not None and (args.reuse or board in args.synth_dirs):
            synths.reuse(board, folder, report, configs[board])
        else:
            synths.start(board, folder, configs[board])
    return synths


def measure_all_networks(args, configs: dict, say: Progress) -> dict:
    """{board: {alpha key: run record}}: each network built once, run on every board."""
    from quantize.native_stderr import load_tensorflow_quietly
    load_tensorflow_quietly()
    runs = {board: {} for board in args.boards}
    for alpha in args.alphas:
        say(f"alpha {alpha_key(alpha)}: building the int8 seed network ({INPUT_SIZE}x{INPUT_SIZE})")
        network = build_network(alpha)
        if not network["trained"]:
            say(f"alpha {alpha_key(alpha)}: no shipped trained weights, BN-calibrated random ones")
        for board in args.boards:
            runs[board][alpha_key(alpha)] = measure_network(
                network, configs[board], f"{board} alpha {alpha_key(alpha)}", say)
    return runs


@contextlib.contextmanager
def gen_accel_log_as_progress(say: Progress):
    """`flow.cli.verify_rtl` reports through the gen-accel logger: show it as our lines
    meanwhile (the logger is restored afterwards)."""
    class ToProgress(logging.Handler):
        def emit(self, record):
            say(f"  {record.getMessage()}")
    log = logging.getLogger("gen-accel")
    handler, saved = ToProgress(), (log.level, log.propagate)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.level, log.propagate = saved


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    say = Progress()
    configs = {b: checked_board_config(b, args.clock_mhz, args.configs.get(b))
               for b in args.boards}
    for board, cfg in configs.items():
        say(f"{board}: {describe_config(cfg)} ({cfg.macs_per_cycle} MAC units)")
    synths = start_syntheses(args, configs, say)
    try:
        with gen_accel_log_as_progress(say):
            runs = measure_all_networks(args, configs, say)
        rows = [board_row(b, configs[b], synths.result(b), runs[b]) for b in args.boards]
    except BaseException:
        synths.cancel()
        raise
    from boards.synth import tool_versions
    alphas = [alpha_key(a) for a in args.alphas]
    table = write_outputs(args.out, rows, alphas, args.clock_mhz, tool_versions())
    say(f"wrote {args.out / 'boards.json'}, {args.out / 'boards.md'}, {args.out / 'boards.png'}")
    print()
    print(table, end="")
    return 0 if all_good(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
