"""Whole-system simulation: the LiteX SoC of `boards.soc` (LiteDRAM controller with the SDRAM
model, UARTBone bridge, the accelerator) in Verilator, driven by the host driver through
the simulated bridge.

    with SoCSim(cfg) as soc:
        drv = AccelDriver(soc.transport)             # firmware.litex_transport.LiteXTransport
        drv.identify()
        ...
        print(soc.bridge_cycles)                     # clock cycles spent moving bridge bytes

The host side is a board's, byte for byte: `firmware.litex_transport.LiteXTransport` over
LiteX's own ``CommUART`` (the UARTBone protocol ``litex_server`` speaks), whose serial port
is `SimSerial`: the bytes go over a socket to the cocotb bench
(`sim.cocotb_tests.soc_bridge`), which clocks them into the SoC's UART byte stream. What is
not simulated is the serial line itself (a real 115,200 baud UART moves ~11.5 kB/s, one byte
per clock here) and the SDRAM chip's pins (LiteDRAM's ``SDRAMPHYModel`` stands in for PHY
and chip; the controller, its refresh and its bank machines are the real gateware).

Builds: the accelerator's Verilog (cached like `sim.accel_sim`'s), LiteX's SoC Verilog
around it (a second or two; its date comments dropped so the text, and with it the
Verilator build, is the same each time), one Verilator build of both (cached by
`sim.verilator_runner.build`).
"""
from __future__ import annotations

import hashlib
import tempfile
from dataclasses import asdict
from pathlib import Path

from boards.soc import ACCEL_MODULE, SDRAM_RATE, SOC_CLOCK_MHZ
from firmware.litex_transport import RAM_REGION, REGS_REGION

SOC_TOP = "soc"
TEST_MODULE = "sim.cocotb_tests.soc_bridge"
IDLE_LIMIT = 100_000            # cycles a bridge transfer may go without a byte moving


def accelerator_verilog(cfg) -> Path:
    """The bare ``mnet_accel`` Verilog of ``cfg`` (as gen-accel writes it), cached."""
    from sim.accel_sim import cached_verilog
    from sim.verilator_runner import to_verilog

    def make():
        from rtl_gen.accelerator import Accelerator
        return to_verilog(Accelerator(cfg), ACCEL_MODULE)
    return cached_verilog(ACCEL_MODULE, [asdict(cfg), ACCEL_MODULE], make)


def soc_sources(cfg, accel: Path, *, clock_mhz: float = SOC_CLOCK_MHZ,
                sdram_rate: str = SDRAM_RATE):
    """(the SoC's Verilog without its date comments, its csr.csv, its SDRAM init steps)."""
    from boards.soc import SimSoC, quiet_litex, sdram_init_steps, write_soc
    with tempfile.TemporaryDirectory(prefix="mnet-soc-") as tmp:
        with quiet_litex():
            soc = SimSoC(cfg, accel, clock_mhz=clock_mhz, sdram_rate=sdram_rate)
        gateware = write_soc(soc, Path(tmp), SOC_TOP)
        text = (gateware / f"{SOC_TOP}.v").read_text()
        csr = (Path(tmp) / "csr.csv").read_text()
    keep = [ln for ln in text.splitlines() if not ln.lstrip().startswith("//")]
    return "\n".join(keep) + "\n", csr, sdram_init_steps(soc)


def build_soc(cfg, *, clock_mhz: float = SOC_CLOCK_MHZ, sdram_rate: str = SDRAM_RATE):
    """(the Verilator build of the simulation SoC around ``cfg``'s accelerator, its csr.csv
    text, its SDRAM init steps)."""
    from sim.verilator_runner import build, build_root
    accel = accelerator_verilog(cfg)
    text, csr, steps = soc_sources(cfg, accel, clock_mhz=clock_mhz, sdram_rate=sdram_rate)
    folder = build_root() / "verilog"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{SOC_TOP}-{hashlib.sha256(text.encode()).hexdigest()[:16]}.v"
    if not path.is_file():
        path.write_text(text)
    return build(path, name="soc", toplevel=SOC_TOP,
                 extra_verilog={f"{ACCEL_MODULE}.v": accel.read_text()}), csr, steps


class SimSerial:
    """What LiteX's ``CommUART`` needs of a pyserial port, over the simulation: writes are
    gathered and clocked into the SoC when the host reads, sleeps or flushes."""

    def __init__(self, session):
        self.session = session
        self._out, self._in = bytearray(), bytearray()
        self.cycles = 0                         # clock cycles spent moving bytes

    def write(self, data) -> int:
        self._out += bytes(data)
        return len(data)

    def read(self, n: int) -> bytes:
        if len(self._in) < n:
            self.flush(want=n - len(self._in))
        out, self._in = bytes(self._in[:n]), self._in[n:]
        return out

    def inWaiting(self) -> int:                 # noqa: N802 (pyserial's name)
        return len(self._in)

    def flush(self, want: int = 0) -> None:
        if not self._out and not want:
            return
        answer, data = self.session.call("xfer", bytes(self._out), n=len(self._out),
                                         want=want)
        self._out.clear()
        self._in += data
        self.cycles += answer["cycles"]

    def open(self):
        pass

    def close(self):
        pass


def _sim_comm(port: SimSerial, csr_csv: Path):
    from litex.tools.remote.comm_uart import CommUART
    from litex.tools.remote.csr_builder import CSRBuilder

    class SimComm(CommUART):
        """LiteX's UARTBone client on `SimSerial` instead of a serial device."""

        def __init__(self):
            CSRBuilder.__init__(self, comm=self, csr_csv=str(csr_csv))
            self.port, self.baudrate, self.debug, self.addr_bytes = port, "sim", False, 4
    return SimComm()


class SoCSim:
    """The simulated SoC and a `LiteXTransport` to it (``transport``); see the module
    docstring. ``clock_mhz``: the SoC's clock, which sets the SDRAM controller's timings.
    The SDRAM is initialized through the bridge first (`firmware.sdram_init`), as on a board."""

    def __init__(self, cfg, *, clock_mhz: float = SOC_CLOCK_MHZ, sdram_rate: str = SDRAM_RATE):
        from firmware.litex_transport import LiteXTransport
        from firmware.sdram_init import init_sdram
        from sim.bridge_transport import CocotbSession
        self.clock_ns = 1e3 / clock_mhz
        self.build, csr, steps = build_soc(cfg, clock_mhz=clock_mhz, sdram_rate=sdram_rate)
        self.session = CocotbSession(self.build, TEST_MODULE,
                                     {"clock_ns": self.clock_ns, "idle_limit": IDLE_LIMIT},
                                     prefix="soc_bridge")
        self.csr_csv = self.session.run_dir / "csr.csv"
        self.csr_csv.write_text(csr)
        self.serial = SimSerial(self.session)
        self.comm = _sim_comm(self.serial, self.csr_csv)
        self.transport = LiteXTransport.over_client(
            self.comm, regs_base=getattr(self.comm.mems, REGS_REGION).base,
            mem_base=getattr(self.comm.mems, RAM_REGION).base, sleep=self.sleep,
            on_close=self._end)
        init_sdram(self.comm, steps, self.sleep)

    def sleep(self, seconds: float) -> None:
        self.serial.flush()
        self.session.call("idle", cycles=max(1, round(seconds * 1e9 / self.clock_ns)))

    def dram_stats(self) -> dict[str, int]:
        """The SDRAM controller's DFI commands since reset (`boards.soc.DFICommandCounters`)."""
        from boards.soc import DFICommandCounters
        return {name: int(getattr(self.comm.regs, f"dram_stats_{name}").read())
                for name in DFICommandCounters.COMMANDS}

    @property
    def bridge_cycles(self) -> int:
        return self.serial.cycles

    def close(self) -> None:
        self.transport.close()              # ends the session (`_end`)

    def _end(self) -> None:
        self.serial.flush()
        self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
