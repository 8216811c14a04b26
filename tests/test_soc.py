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

pytest.importorskip("litex", reason="the SoC needs the 'soc' extra (pip install -e '.[soc]')")

from boards.soc import ACCEL_MODULE, RAM_REGION, REGS_ORIGIN, REGS_REGION  # noqa: E402
from rtl_gen.config import AccelConfig  # noqa: E402
from sim.verilator_runner import verilator_available  # noqa: E402

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
    gateware = write_soc(board_soc("ulx3s-85f", cfg, tmp_path / "mnet_accel.v"), tmp_path,
                         quiet=True)
    verilog = (gateware / "soc.v").read_text()
    assert f"{ACCEL_MODULE} {ACCEL_MODULE}(" in verilog
    for port in ("m_axi__arvalid", "m_axi__rdata", "m_axi__wstrb", "s_axi__araddr", "irq"):
        assert f".{port}" in verilog, port
    assert "sdram_dq" in verilog and "serial_rx" in verilog and "VexRiscv" not in verilog
    mem = regions((tmp_path / "csr.csv").read_text())
    assert mem[REGS_REGION] == (REGS_ORIGIN, 4096)
    assert mem[RAM_REGION][1] == 32 * 2**20             # the ULX3S's 32 MiB SDRAM
    lpf = (gateware / "soc.lpf").read_text()
    assert "FREQUENCY" in lpf and "LOCATE COMP" in lpf


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
            r = runner.classify(x)
            want = golden_run(interp, x)[out_index]
            assert r.status.ok, r.status
            assert r.scores.tobytes() == want.tobytes()
            assert r.label == int(np.argmax(want.reshape(-1)))
            assert len(r.status.layer_cycles) == len(dep.descriptors)
            assert r.status.cycles >= ideal
        assert soc.bridge_cycles >= len(dep.image)      # every image byte crossed the bridge
