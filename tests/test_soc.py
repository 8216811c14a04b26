"""The accelerator in a LiteX SoC (`boards.soc`): the board SoC's generated gateware, and the
whole-system simulation (`sim.soc_sim`: LiteDRAM controller + SDRAM model + UARTBone bridge
+ accelerator in Verilator) driven by the host driver through the simulated bridge, bit-exact
against TFLite on real CIFAR-10 images.

The SoC simulation uses the gen-accel build of the six-op miniature on the smallest config
(`tiny_build` in conftest.py); its Verilator build is cached like every other (about 30 s to
a few minutes when the RTL changed).
"""
from __future__ import annotations

import csv

import numpy as np
import pytest

from boards.soc import ACCEL_MODULE, REGS_ORIGIN
from firmware.litex_transport import RAM_REGION, REGS_REGION
from rtl_gen.config import AccelConfig
from sim.verilator_runner import verilator_available

_unavailable = verilator_available()
needs_verilator = pytest.mark.skipif(_unavailable is not None, reason=_unavailable or "")


def regions(csr_text: str) -> dict:
    rows = csv.reader(line for line in csr_text.splitlines() if not line.startswith("#"))
    return {r[1]: (int(r[2], 0), int(r[3])) for r in rows if r and r[0] == "memory_region"}


def test_board_soc_gateware_has_the_accelerator_on_sdram_and_bridge(tmp_path):
    """gen-accel --soc's gateware for the ULX3S 85F: the accelerator instance with its AXI
    ports wired, its register window and main_ram in csr.csv, the clock constraint and
    pins in the LPF, the serial bridge and the SDRAM pins, and no CPU."""
    from boards.soc import board_soc, write_soc
    cfg = AccelConfig(pw_out=2, pw_in=2, dw_lanes=1)
    gateware = write_soc(board_soc("ulx3s-85f", cfg, tmp_path / "mnet_accel.v"), tmp_path)
    verilog = (gateware / "soc.v").read_text()
    assert f"{ACCEL_MODULE} {ACCEL_MODULE}(" in verilog
    for port in ("m_axi__arvalid", "m_axi__rdata", "m_axi__wstrb", "s_axi__araddr", "irq"):
        assert f".{port}" in verilog, port
    assert "sdram_dq" in verilog and "serial_rx" in verilog and "VexRiscv" not in verilog
    assert "sys2x" not in verilog                  # the default full-rate SDRAM PHY
    mem = regions((tmp_path / "csr.csv").read_text())
    assert mem[REGS_REGION] == (REGS_ORIGIN, 4096)
    assert mem[RAM_REGION][1] == 32 * 2**20             # the ULX3S's 32 MiB SDRAM
    lpf = (gateware / "soc.lpf").read_text()
    assert "FREQUENCY" in lpf and "LOCATE COMP" in lpf


@needs_verilator
def test_accel_run_sim_soc_checks_against_tflite(tiny_build, images, capsys):
    """accel-run --sim-soc --check: the same CLI as on a board, on the simulated SoC."""
    import json

    from firmware import accel_run
    code = accel_run.main(["--build", str(tiny_build), "--sim-soc", "--check", "--json",
                           str(images[0])])
    out, err = capsys.readouterr()
    assert code == 0, err
    (record,) = [json.loads(line) for line in out.splitlines()]
    assert record["ok"] and record["matches_tflite"] is True


def test_board_soc_refuses_an_unknown_board(tmp_path):
    from boards.soc import board_soc
    with pytest.raises(ValueError, match="no SoC target"):
        board_soc("icebreaker", AccelConfig(), tmp_path / "mnet_accel.v")


@needs_verilator
def test_whole_soc_runs_the_driver_bit_exact_with_tflite(tiny_build, images):
    """The host driver over LiteX's UARTBone client, through the simulated UART stream, the
    SoC bus and LiteDRAM (controller, refresh, SDRAM model): the DDR image and both inputs
    written over the bridge, both images' int8 scores equal TFLite's bytes; the run's
    CYCLES (real DRAM timing) is at least the cycle model's for an ideal memory (one beat
    per clock after a one-cycle latency)."""
    from firmware.deploy import Deployment
    from firmware.driver import AccelDriver, Runner
    from quantize.convert import golden_interpreter, golden_run
    from sim.accel_sim import cycle_limit
    from sim.perf_model import DdrTiming, predict
    from sim.soc_sim import SoCSim

    dep = Deployment.load(tiny_build)
    interp = golden_interpreter((tiny_build / "model.tflite").read_bytes())
    out_index = interp.get_output_details()[0]["index"]
    ideal = predict(dep.fw, ddr=DdrTiming(read_latency=1, write_latency=1)).total
    with SoCSim(dep.fw.cfg) as soc:
        drv = AccelDriver(soc.transport)
        drv.identify()
        runner = Runner(drv, dep, timeout_s=4 * cycle_limit(dep.fw) * soc.clock_ns * 1e-9,
                        use_irq=False)
        for path in images:
            x = dep.quantize_image(path)
            before = soc.dram_stats()
            r = runner.classify(x)
            dram = {k: v - before[k] for k, v in soc.dram_stats().items()}
            # The run's reads and writes reached the SDRAM as 16-bit beats, rows were opened
            assert dram["reads"] * 2 >= len(x.tobytes()) and dram["writes"] > 0
            assert dram["activates"] > 0
            want = golden_run(interp, x)[out_index]
            assert r.status.ok, r.status
            assert r.scores.tobytes() == want.tobytes()
            assert r.label == int(np.argmax(want.reshape(-1)))
            assert len(r.status.layer_cycles) == len(dep.descriptors)
            assert r.status.cycles >= ideal
        assert soc.bridge_cycles >= len(dep.image)      # every image byte crossed the bridge


# ---- the C driver ----------------------------------------------------------------------------

def compile_c_driver(build, out_dir):
    """gen-accel's firmware/mnet_accel.c, built as a shared library with the host's C
    compiler, warnings as errors."""
    import shutil
    import subprocess
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    lib = out_dir / "libmnet_accel.so"
    fw = build / "firmware"
    subprocess.run([cc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-O1", "-shared", "-fPIC",
                    "-I", str(fw), str(fw / "mnet_accel.c"), "-o", str(lib)], check=True,
                   capture_output=True, text=True)
    return lib


class CPort:
    """An mnet_port (mnet_driver.h) whose callbacks are a Python transport's methods."""

    def __init__(self, transport):
        import ctypes as C
        u32, u64, vp = C.c_uint32, C.c_uint64, C.c_void_p
        t = transport
        self.types = {
            "read32": C.CFUNCTYPE(u32, vp, u32), "write32": C.CFUNCTYPE(None, vp, u32, u32),
            "read_mem": C.CFUNCTYPE(None, vp, u64, vp, u32),
            "write_mem": C.CFUNCTYPE(None, vp, u64, vp, u32),
            "sleep_us": C.CFUNCTYPE(None, vp, u32)}
        self.callbacks = {
            "read32": self.types["read32"](lambda _, off: t.read32(off)),
            "write32": self.types["write32"](lambda _, off, v: t.write32(off, v)),
            "read_mem": self.types["read_mem"](
                lambda _, addr, dst, n: C.memmove(dst, t.read_mem(addr, n), n)),
            "write_mem": self.types["write_mem"](
                lambda _, addr, src, n: t.write_mem(addr, C.string_at(src, n))),
            "sleep_us": self.types["sleep_us"](lambda _, us: t.sleep(us * 1e-6))}

        class Port(C.Structure):
            _fields_ = [(k, v) for k, v in self.types.items()] + [("ctx", vp)]
        self.port = Port(**self.callbacks, ctx=None)


def result_type():
    import ctypes as C

    class Result(C.Structure):
        _fields_ = [("status", C.c_uint32), ("error_code", C.c_uint32),
                    ("layer_count", C.c_uint32), ("cycles", C.c_uint64),
                    ("timed_out", C.c_int)]
    return Result


def test_c_driver_compiles_cleanly(tiny_build, tmp_path):
    assert compile_c_driver(tiny_build, tmp_path).is_file()


@needs_verilator
def test_c_driver_classifies_on_the_simulated_soc_bit_exact(tiny_build, images, tmp_path):
    """The C driver (gen-accel's firmware/mnet_accel.c) runs the inference: identify, load
    the DDR image, classify an image through the simulated UART bridge and SDRAM; its int8
    scores equal TFLite's and its class is their argmax."""
    import ctypes as C

    from firmware.deploy import Deployment
    from quantize.convert import golden_interpreter, golden_run
    from sim.accel_sim import cycle_limit
    from sim.soc_sim import SoCSim

    lib = C.CDLL(str(compile_c_driver(tiny_build, tmp_path)))
    dep = Deployment.load(tiny_build)
    interp = golden_interpreter((tiny_build / "model.tflite").read_bytes())
    want = golden_run(interp, dep.quantize_image(images[1]))[
        interp.get_output_details()[0]["index"]].reshape(-1)
    x = dep.input_bytes(dep.quantize_image(images[1]))
    with SoCSim(dep.fw.cfg) as soc:
        port = CPort(soc.transport)
        p = C.byref(port.port)
        assert lib.mnet_identify(p) == 0
        assert lib.mnet_load_image(p, dep.image, len(dep.image)) == 0
        assert lib.mnet_load_image(p, dep.image, len(dep.image) - 1) == -5   # MNET_E_ARG
        scores = (C.c_int8 * dep.num_classes)()
        result = result_type()()
        timeout_us = int(4 * cycle_limit(dep.fw) * soc.clock_ns * 1e-3)
        label = lib.mnet_classify(p, x, len(x), scores, timeout_us, C.byref(result))
        assert bytes(C.string_at(scores, dep.num_classes)) == want.tobytes()
        assert label == int(np.argmax(want))
        assert result.error_code == 0 and not result.timed_out and result.cycles > 0
        assert result.layer_count == len(dep.descriptors)


# ---- gen-accel --soc -------------------------------------------------------------------------

def gen_accel(argv, capsys):
    from flow import cli
    code = cli.main([str(a) for a in argv], isolate=False)
    out, err = capsys.readouterr()
    return code, out, err


def test_gen_accel_soc_argument_errors_are_one_line(tmp_path, capsys):
    cases = [(["--soc", "icebreaker"], "no SoC target"),
             (["--no-bitstream"], "need --soc"),
             (["--soc", "ulx3s-85f", "--soc-baud", "100"], "9600..3000000"),
             (["--soc", "ulx3s-85f", "--soc-clock", "400"], "10..150 MHz"),
             (["--soc", "ulx3s-85f", "--synth", "ulx3s-45f"], "different boards")]
    for argv, message in cases:
        code, out, err = gen_accel([*argv, "--out", tmp_path / "b", "-q"], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (argv, err)
        assert not (tmp_path / "b").exists()


def test_gen_accel_soc_writes_gateware_bus_map_and_flash_script(tmp_path, capsys):
    """--soc ulx3s-45f --no-bitstream: the SoC folder accel-run --port reads (csr.csv with
    the accelerator's window, sdram_init.json), the gateware and flash.sh, the C driver next
    to the header; the manifest names the SoC."""
    import json

    from keras_models import tiny_mobilenet_tflite
    from conftest import SMALLEST
    model, config = tmp_path / "tiny.tflite", tmp_path / "smallest.json"
    model.write_bytes(tiny_mobilenet_tflite())
    config.write_text(json.dumps(SMALLEST))
    out = tmp_path / "build"
    code, _, err = gen_accel(["--model", model, "--config", config, "--soc", "ulx3s-45f",
                              "--soc-baud", "1000000", "--soc-sdram-rate", "1:2", "--no-bitstream",
                              "--check-images", "1",
                              "--out", out, "-q"],
                             capsys)
    assert code == 0, err
    soc = out / "soc"
    for name in ("csr.csv", "sdram_init.json", "flash.sh", "gateware/soc.v", "gateware/soc.lpf",
                 "gateware/mnet_accel.v"):
        assert (soc / name).is_file(), name
    assert REGS_REGION in regions((soc / "csr.csv").read_text())
    steps = json.loads((soc / "sdram_init.json").read_text())
    assert steps[0]["control"] and any(s.get("command") for s in steps)
    assert "openFPGALoader" in (soc / "flash.sh").read_text()
    assert "MULT18X18D" in (soc / "gateware/mnet_accel.v").read_text()   # the board's DSPs
    for name in ("mnet_accel.c", "mnet_driver.h", "mnet_accel.h"):
        assert (out / "firmware" / name).is_file()
    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert manifest["soc"]["board"] == "ulx3s-45f" and manifest["soc"]["bitstream"] is None
    assert manifest["soc"]["baudrate"] == 1_000_000 and manifest["soc"]["sdram_rate"] == "1:2"
    assert "sys2x" in (soc / "gateware/soc.v").read_text()     # the half-rate PHY's clock
    from firmware.accel_run import built_baudrate
    assert built_baudrate(out) == 1_000_000


@pytest.mark.slow
def test_gen_accel_soc_bitstream_meets_its_clock(tiny_build, tmp_path, capsys):
    """gen-accel --soc ulx3s-45f on the smallest config, the whole flow (about 6 minutes on
    two cores): a bitstream, routed at or above the SoC's 50 MHz (measured 85.81 MHz), and
    the report in the manifest."""
    import json

    from conftest import SMALLEST
    config = tmp_path / "smallest.json"
    config.write_text(json.dumps(SMALLEST))
    out = tmp_path / "build"
    code, _, err = gen_accel(["--model", tiny_build / "model.tflite", "--config", config,
                              "--soc", "ulx3s-45f", "--check-images", "1", "--out", out, "-q"],
                             capsys)
    assert code == 0, err
    soc = json.loads((out / "MANIFEST.json").read_text())["soc"]
    assert (out / "soc" / soc["bitstream"]).stat().st_size > 100_000
    assert soc["fmax_mhz"] >= soc["clock_mhz"] == 50
    assert soc["resources"]["dsp"] == 7            # the accelerator's, nothing else's
