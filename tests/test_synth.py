"""The board flow: out-of-context Yosys + nextpnr builds of small components and of the
smallest whole accelerator, a bitstream build, the failure modes, and the board resource
model. About six minutes on one core; the board-sized accelerator builds are marked slow
(tens of minutes)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from amaranth.hdl import Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from boards.synth import (REPORT_JSON, REPORT_MD, FitError, SynthError, TimingError,
                          build_bitstream, main, synthesize)
from boards.targets import BOARDS, bram_blocks, default_config, estimate, get_board
from rtl_gen.config import AccelConfig, ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
LIMIT_S = 600   # per build: a stuck tool fails the test instead of hanging CI


class Counter(wiring.Component):
    count: Out(16)

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.count.eq(self.count + 1)
        return m


class Products(wiring.Component):
    """`n` registered 9x9 products, one MULT18X18D each, XORed into one output."""
    a: In(signed(9))
    b: In(signed(9))
    o: Out(signed(18))

    def __init__(self, n: int):
        self.n = n
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        folded = 0
        for i in range(self.n):
            p = Signal(signed(18), name=f"p{i}")
            m.d.sync += p.eq(self.a * (self.b + i))
            folded = folded ^ p
        m.d.comb += self.o.eq(folded)
        return m


def test_requantizer_out_of_context_via_cli(tmp_path):
    board = get_board("ulx3s-85f")
    rc = main(["--board", board.name, "--component", "rtl_gen.requant:Requantizer",
               "--clock-mhz", "20", "--out", str(tmp_path), "--quiet", "--timeout", str(LIMIT_S),
               "--placer-density", "0.8"])
    assert rc == 0
    report = json.loads((tmp_path / REPORT_JSON).read_text())
    assert (tmp_path / REPORT_MD).read_text().startswith("# top on ulx3s-85f")
    for log in ("yosys.log", "nextpnr.log", "nextpnr_report.json"):
        assert (tmp_path / log).stat().st_size > 0
    use = report["resources"]
    assert 100 < use["lut"]["used"] < 10_000
    assert 50 < use["ff"]["used"] < 5_000
    assert 0 < use["carry"]["used"] and 0 < use["dsp"]["used"] <= 16   # the 32x32 product
    assert use["io"]["used"] == 0                                      # out of context
    # The device table in boards.targets agrees with what nextpnr says the device has.
    assert use["lut"]["available"] == board.luts and use["ff"]["available"] == board.ffs
    assert use["dsp"]["available"] == board.mult18
    assert use["bram"]["available"] == board.bram_blocks
    assert report["target_mhz"] == 20 and 20 <= report["fmax_mhz"] < 1000
    assert report["timing_met"] and report["clock"] == "clk"


def test_placer_density_out_of_range_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--out", str(tmp_path), "--placer-density", "1.5"])
    assert e.value.code == 2
    assert "--placer-density must be in (0, 1], got 1.5" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_impossible_clock_raises_timing_error(tmp_path):
    with pytest.raises(TimingError) as e:
        synthesize(Counter(), "ulx3s-85f", 2000, tmp_path, progress=False, timeout_s=LIMIT_S)
    report = e.value.report
    assert 0 < report.fmax_mhz < 2000 and report.target_mhz == 2000
    assert "2000.00 MHz target" in str(e.value)
    saved = json.loads((tmp_path / REPORT_JSON).read_text())
    assert saved["timing_met"] is False and saved["fmax_mhz"] == report.fmax_mhz


def test_too_many_multipliers_raise_fit_error(tmp_path):
    board = get_board("ulx3s-25f")
    with pytest.raises(FitError, match=r"MULT18X18D: 30 needed, 28 on the device"):
        synthesize(Products(30), board, 10, tmp_path, progress=False, timeout_s=LIMIT_S)
    assert not (tmp_path / "nextpnr.log").exists()      # rejected before place and route


def test_design_without_clock_is_rejected(tmp_path):
    class Wire(wiring.Component):
        i: In(4)
        o: Out(4)

        def elaborate(self, platform):
            m = Module()
            m.d.comb += self.o.eq(self.i)
            return m

    with pytest.raises(SynthError, match="no 'clk' input"):
        synthesize(Wire(), "ulx3s-85f", 10, tmp_path, progress=False)


def test_blinky_bitstream(tmp_path):
    from amaranth_boards.test.blinky import Blinky

    report = build_bitstream(Blinky(), "ulx3s-85f", tmp_path, progress=False, timeout_s=LIMIT_S)
    assert (tmp_path / "top.bit").stat().st_size > 100_000
    assert not report.out_of_context and report.resources["io"].used > 0
    assert report.target_mhz == pytest.approx(25.0, rel=1e-3)     # the ULX3S oscillator
    assert report.timing_met and report.fmax_mhz > 25


@pytest.mark.parametrize("width,depth,byte_writes,read_ports,blocks", [
    (8, 2048, True, 1, 1), (64, 8192, True, 2, 64), (1024, 256, True, 1, 32),
    (168, 128, False, 1, 5), (168, 128, True, 1, 6), (32, 64, False, 1, 1)])
def test_bram_blocks(width, depth, byte_writes, read_ports, blocks):
    assert bram_blocks(width, depth, byte_writes, read_ports) == blocks


def test_estimate_matches_the_calibration_synthesis():
    # synth_ecp5 of Accelerator(AccelConfig()) for the 85F, 16x8 MACs + 8 depthwise lanes:
    # 144 MULT18X18D (128 of them the MAC array, 2 per Requantizer lane, whose first the
    # softmax borrows), 173 DP16KD (softmax of up to 1024 logits).
    est = estimate(AccelConfig())
    assert (est.mult18, est.bram_blocks) == (144, 173)
    # The 45F's default without the AddUnit (8x8 MACs + 4 lanes), synthesized with the
    # Requantizer's low products in LUTs and the depthwise taps as LUT-RAM tables: 72
    # MULT18X18D, 89 DP16KD, 16,950 LUT4 + 3,718 CCU2C + 453 DPR16X4.
    cfg = default_config("ulx3s-45f", needs_add=False)
    est = estimate(cfg)
    assert (cfg.pw_out, cfg.pw_in, cfg.dw_lanes) == (8, 8, 4)
    assert (est.mult18, est.bram_blocks) == (72, 89)
    assert 0.95 <= est.luts / (16950 + 2 * 3718 + 2 * 453) <= 1.05


@pytest.mark.parametrize("needs_add", [True, False], ids=["with-add", "no-add"])
@pytest.mark.parametrize("name", ["ulx3s-85f", "ulx3s-45f"])
def test_default_config_fits(name, needs_add):
    board = get_board(name)
    cfg = default_config(board, needs_add=needs_add)
    assert cfg.with_add == needs_add
    est = estimate(cfg)
    assert est.mult18 <= board.mult18 and est.bram_blocks <= board.bram_blocks
    assert est.luts < board.luts and cfg.clock_mhz == board.clock_mhz
    assert cfg.pw_out * cfg.pw_in >= 32


@pytest.mark.parametrize("needs_add", [True, False], ids=["with-add", "no-add"])
@pytest.mark.parametrize("name", ["ulx3s-85f", "ulx3s-45f"])
def test_default_config_runs_the_seed_network(name, needs_add, net_025):
    """The board's accelerator runs alpha 0.25 (on the 45F, its largest layers as bands of
    rows through DDR: `tests/test_cocotb_accel.py` runs that program in Verilator), with the
    AddUnit or without it (as gen-accel --synth builds it for the seed network)."""
    from firmware.compiler import compile_graph
    from rtl_gen.sequencer import check_fits
    fw = compile_graph(net_025.graph, default_config(name, needs_add=needs_add))
    check_fits(fw)
    assert any(n > 1 for _, n in fw.bands) == (name == "ulx3s-45f")


def test_default_config_explains_a_board_too_small():
    import dataclasses
    tiny = dataclasses.replace(get_board("ulx3s-25f"), name="tiny-ecp5", mult18=3)
    with pytest.raises(ConfigError, match="tiny-ecp5.*the smallest needs 4 MULT18X18D"):
        default_config(tiny)
    with pytest.raises(ValueError, match="known: " + ", ".join(BOARDS)):
        get_board("icebreaker")


# The smallest accelerator: every engine, the DMA, the sequencer and the registers, with a
# 2x2 MAC array, one depthwise lane, a 32-bit bus and small buffers. About 4 minutes.
# Its clock target is the regression floor for the routed Fmax (issue #9): the accelerator
# is pipelined for 100+ MHz, so a slow path that comes back fails here.
FMAX_FLOOR_MHZ = 95
SMALLEST = AccelConfig(pw_out=2, pw_in=2, dw_lanes=1, bus_bytes=4, max_burst=8,
                       max_outstanding=2, act_buffer_bytes=4096, weight_buffer_bytes=2048,
                       clock_mhz=FMAX_FLOOR_MHZ)


def test_smallest_accelerator_out_of_context(tmp_path):
    """The whole accelerator (a small config) through Yosys + nextpnr on the ULX3S 45F: it
    fits, routes at FMAX_FLOOR_MHZ or faster, and uses exactly the multipliers and block RAMs
    that `boards.targets.estimate` predicts (LUTs are a fitted model: within 20%)."""
    from rtl_gen.accelerator import Accelerator

    board = get_board("ulx3s-45f")
    report = synthesize(Accelerator(SMALLEST), board, SMALLEST.clock_mhz, tmp_path,
                        top_name="mnet_accel", progress=False, timeout_s=1800)
    use, est = report.resources, estimate(SMALLEST)
    assert report.timing_met and report.fmax_mhz >= FMAX_FLOOR_MHZ, report.fmax_mhz
    assert (use["dsp"].used, use["bram"].used) == (est.mult18, est.bram_blocks)
    assert 0.8 <= est.luts / use["lut"].used <= 1.2, (est.luts, use["lut"].used)
    assert use["lut"].used < board.luts and use["io"].used == 0


@pytest.mark.slow
def test_accelerator_default_config_out_of_context(tmp_path):
    from rtl_gen.accelerator import Accelerator

    cfg = default_config("ulx3s-85f")
    report = synthesize(Accelerator(cfg), "ulx3s-85f", cfg.clock_mhz, tmp_path,
                        timeout_s=3600)
    est = estimate(cfg)
    assert report.resources["dsp"].used == est.mult18
    assert report.resources["bram"].used == est.bram_blocks
    assert report.timing_met


def _processes_in(folder: Path) -> list[int]:
    """PIDs of the live processes whose working directory is `folder` (the tools run there)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if Path(os.readlink(entry / "cwd")) == folder:
                    pids.append(int(entry.name))
            except OSError:       # gone, a zombie, or not ours to read
                pass
    return pids


@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="needs Linux /proc")
def test_sigterm_stops_the_tools(tmp_path):
    """`kill` of `python -m boards.synth` during place and route leaves no nextpnr behind."""
    out = tmp_path.resolve()
    proc = subprocess.Popen([sys.executable, "-m", "boards.synth", "--board", "ulx3s-45f",
                             "--component", "rtl_gen.requant:Requantizer", "--clock-mhz", "20",
                             "--out", str(out), "--quiet"], cwd=REPO_ROOT)
    log = out / "nextpnr.log"
    hang_guard = time.monotonic() + 600      # only a hung tool gets near this
    while not (log.exists() and log.stat().st_size > 0) and proc.poll() is None:
        assert time.monotonic() < hang_guard, "nextpnr never started"
        time.sleep(0.05)
    assert proc.poll() is None, "the build ended before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=600) == 128 + signal.SIGTERM
    assert _processes_in(out) == []


def test_yosys_failure_messages(tmp_path):
    """A failed Yosys run gets one line: its ERROR, or the silent exit inside ABC9 named."""
    from boards.synth import _yosys_failure
    log = tmp_path / "yosys.log"
    log.write_text("2.46.14.5. Executing ABC9.\nRunning ABC command: \"/yosys-abc\" -s -f x\n")
    assert "exited inside ABC9 with no message" in _yosys_failure(log)
    log.write_text("1. Executing Verilog-2005 frontend\nERROR: syntax error, unexpected ';'\n")
    assert _yosys_failure(log).startswith("yosys failed: ERROR: syntax error")
    assert _yosys_failure(tmp_path / "missing.log").startswith("yosys failed; see")


def test_lean_yosys_runs_map_the_same_netlist(tmp_path):
    """The retry for an ABC9 that dies on a large netlist (`_yosys_scripts(lean=True)`: the LUT
    mapping in a process of its own, on a stripped netlist) maps what one run maps."""
    from amaranth.back import verilog

    from boards.synth import _cell_counts, _yosys_scripts, tool_path
    dut = Products(3)
    (tmp_path / "top.v").write_text(verilog.convert(dut, name="top"))
    cells = {}
    for lean in (False, True):
        run = tmp_path / ("lean" if lean else "one")
        run.mkdir()
        (run / "top.v").write_text((tmp_path / "top.v").read_text())
        for k, script in enumerate(_yosys_scripts("top", ["top.v"], lean)):
            (run / f"s{k}.ys").write_text(script)
            subprocess.run([tool_path("yosys"), "-q", f"s{k}.ys"], cwd=run, check=True,
                           capture_output=True, timeout=LIMIT_S)
        assert (run / "top.json").exists()
        cells[lean] = {k: v for k, v in _cell_counts(run / "top.stat.json").items()
                       if not k.startswith("$")}
    assert cells[True] == cells[False]
    assert cells[True]["MULT18X18D"] == 3
