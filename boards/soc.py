"""The accelerator in a LiteX SoC: a real SDRAM controller behind its DMA, a host bridge in
front of its registers.

    soc = board_soc("ulx3s-85f", cfg, accel_verilog)     # the ULX3S: its SDR SDRAM, a UART
    soc = SimSoC(cfg, accel_verilog)                     # the same SoC for Verilator

LiteX and LiteDRAM are Migen-based, so the Amaranth-generated ``mnet_accel`` Verilog enters
as an Instance (`AccelCore`). The SoC has no CPU; the host drives everything over the bridge:

    host --UARTBone--> SoC bus (Wishbone) --+--> mnet_accel AXI4-Lite registers (``mnet_accel``)
                                            +--> LiteDRAM port --+
    mnet_accel AXI4 master --LiteDRAMAXI2Native--> LiteDRAM port --+--> crossbar --> controller --> SDRAM

* The accelerator's DDR address 0 is SDRAM byte 0, which the bridge sees at ``main_ram``'s
  base: `firmware.litex_transport` reads both windows from the build's csr.csv.
* No L2 cache on ``main_ram``: the bridge's writes must reach the SDRAM before the
  accelerator (which has its own controller port, outside any cache) reads them.
* The interrupt line drives user LED 0 on a board and is not on the bridge: the driver polls
  STATUS (`firmware.driver`).
* The controller comes up under hardware control with the PHY's mode registers at their
  reset values; `firmware.sdram_init` replays LiteDRAM's init sequence through the bridge
  before the first access on a board (the simulation model needs none).

`SimSoC`'s platform replaces the UART's serial pins by the byte stream of LiteX's
``RS232PHYModel`` (one byte per cycle each way, no baud rate) and the SDRAM chip by
LiteDRAM's ``SDRAMPHYModel`` of the same module, whose controller keeps the real timings,
refresh included (`sim.soc_sim`); it also counts the controller's DFI commands
(`DFICommandCounters`: row activations, refreshes, reads, writes) for the host to read.
"""
from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

from migen import ClockSignal, If, Instance, ResetSignal, Signal
from migen.genlib.io import CRG

from litex.build.generic_platform import GenericPlatform, Pins, Subsignal
from litex.gen import LiteXModule
from litex.soc.integration.soc import SoCRegion
from litex.soc.integration.soc_core import SoCCore
from litex.soc.interconnect.axi import AXIInterface, AXILiteInterface
from litex.soc.interconnect.csr import CSRStatus

from firmware.litex_transport import RAM_REGION, REGS_REGION  # noqa: F401 (csr.csv regions)
from rtl_gen.accelerator import REGS_ADDR_WIDTH
from rtl_gen.config import AccelConfig

ACCEL_MODULE = "mnet_accel"
REGS_ORIGIN = 0x8000_0000           # an uncached I/O window on the SoC bus
SDRAM_MODULE = "MT48LC16M16"        # litex-boards' ULX3S default (32 MiB, 16-bit SDR)
BRIDGE_BAUDRATE = 115_200
SOC_BOARDS = {"ulx3s-25f": "LFE5U-25F", "ulx3s-45f": "LFE5U-45F", "ulx3s-85f": "LFE5U-85F"}
SOC_CLOCK_MHZ = 50.0                # the accelerator and the SDRAM controller
# SDRAM clock : SoC clock. "1:1" (litex-boards' ULX3S default): GENSDRPHY, one 16-bit beat
# per cycle. "1:2": HalfRateGENSDRPHY runs the chip at twice the SoC clock, two beats per SoC
# cycle on a 32-bit controller port (+31% cycles over the ideal memory instead of +70% in
# simulation, `bench.soc`), but
# its 100 MHz domain placed at 86 MHz on the 85F (nextpnr's estimate; no routed build yet).
SDRAM_RATE = "1:1"


def sdram_phy_settings(rate: str, clk_freq: float):
    """The board PHY's settings (latencies, phases) at ``rate``, for the simulation model to
    match: LiteDRAM's PHY class instantiated on stand-in pads and dropped."""
    from litedram.phy import GENSDRPHY, HalfRateGENSDRPHY
    from migen import Record
    pads = [("a", 13), ("ba", 2), ("cs_n", 1), ("cke", 1), ("ras_n", 1), ("cas_n", 1),
            ("we_n", 1), ("dq", 16), ("dm", 2)]
    phy = {"1:1": GENSDRPHY, "1:2": HalfRateGENSDRPHY}[rate]
    return phy(Record(pads), clk_freq).settings


class AccelCore:
    """``mnet_accel`` as a Migen Instance with LiteX AXI interfaces: ``bus`` (its AXI4 master,
    for a LiteDRAM port) and ``regs`` (its AXI4-Lite subordinate, for the SoC bus)."""

    def __init__(self, cfg: AccelConfig):
        self.cfg = cfg
        self.bus = AXIInterface(data_width=8 * cfg.bus_bytes, address_width=cfg.addr_width,
                                id_width=cfg.id_width)
        self.regs = AXILiteInterface(data_width=32, address_width=32)
        self.irq = Signal()

    def instance(self) -> Instance:
        m, s = self.bus, self.regs
        ports = dict(i_clk=ClockSignal("sys"), i_rst=ResetSignal("sys"), o_irq=self.irq)
        # AXI4 master: the accelerator drives INCR bursts with ids; prot/cache/lock/qos stay 0.
        for ch, name in ((m.aw, "aw"), (m.ar, "ar")):
            ports.update({f"o_m_axi__{name}addr": ch.addr, f"o_m_axi__{name}len": ch.len,
                          f"o_m_axi__{name}size": ch.size, f"o_m_axi__{name}burst": ch.burst,
                          f"o_m_axi__{name}id": ch.id, f"o_m_axi__{name}valid": ch.valid,
                          f"i_m_axi__{name}ready": ch.ready})
        ports.update({"o_m_axi__wdata": m.w.data, "o_m_axi__wstrb": m.w.strb,
                      "o_m_axi__wlast": m.w.last, "o_m_axi__wvalid": m.w.valid,
                      "i_m_axi__wready": m.w.ready,
                      "i_m_axi__bresp": m.b.resp, "i_m_axi__bid": m.b.id,
                      "i_m_axi__bvalid": m.b.valid, "o_m_axi__bready": m.b.ready,
                      "i_m_axi__rdata": m.r.data, "i_m_axi__rresp": m.r.resp,
                      "i_m_axi__rlast": m.r.last, "i_m_axi__rid": m.r.id,
                      "i_m_axi__rvalid": m.r.valid, "o_m_axi__rready": m.r.ready})
        # AXI4-Lite registers: the window's offset is the low REGS_ADDR_WIDTH address bits.
        low = slice(0, REGS_ADDR_WIDTH)
        ports.update({"i_s_axi__awaddr": s.aw.addr[low], "i_s_axi__awvalid": s.aw.valid,
                      "o_s_axi__awready": s.aw.ready,
                      "i_s_axi__wdata": s.w.data, "i_s_axi__wstrb": s.w.strb,
                      "i_s_axi__wvalid": s.w.valid, "o_s_axi__wready": s.w.ready,
                      "o_s_axi__bresp": s.b.resp, "o_s_axi__bvalid": s.b.valid,
                      "i_s_axi__bready": s.b.ready,
                      "i_s_axi__araddr": s.ar.addr[low], "i_s_axi__arvalid": s.ar.valid,
                      "o_s_axi__arready": s.ar.ready,
                      "o_s_axi__rdata": s.r.data, "o_s_axi__rresp": s.r.resp,
                      "o_s_axi__rvalid": s.r.valid, "i_s_axi__rready": s.r.ready})
        return Instance(ACCEL_MODULE, **ports)


def add_accelerator(soc: SoCCore, cfg: AccelConfig, accel_verilog: Path) -> AccelCore:
    """Put ``mnet_accel`` (its Verilog file) into ``soc``, which must already have its SDRAM
    (`SoCCore.add_sdram`): registers at `REGS_ORIGIN`, DMA on a port of its own."""
    from litedram.frontend.axi import LiteDRAMAXI2Native

    core = AccelCore(cfg)
    soc.platform.add_source(str(accel_verilog))
    soc.specials += core.instance()
    soc.bus.add_slave(REGS_REGION, core.regs,
                      SoCRegion(origin=REGS_ORIGIN, size=1 << REGS_ADDR_WIDTH, cached=False))
    port = soc.sdram.crossbar.get_port(data_width=8 * cfg.bus_bytes)
    soc.submodules.accel_dma = LiteDRAMAXI2Native(core.bus, port, base_address=0)
    return core


# The board SoC --------------------------------------------------------------------------------

def board_soc(board: str, cfg: AccelConfig, accel_verilog: Path, *,
              clock_mhz: float = SOC_CLOCK_MHZ, baudrate: int = BRIDGE_BAUDRATE,
              sdram_rate: str = SDRAM_RATE):
    """litex-boards' ULX3S target (its PLL, SDR SDRAM PHY and pins) without CPU, UART or L2
    cache, plus a UARTBone bridge on the board's USB serial port and the accelerator."""
    from litex_boards.targets.radiona_ulx3s import BaseSoC

    if board not in SOC_BOARDS:
        raise ValueError(f"--soc {board}: no SoC target for it (have {', '.join(SOC_BOARDS)})")
    soc = BaseSoC(device=SOC_BOARDS[board], sys_clk_freq=clock_mhz * 1e6,
                  sdram_module_cls=SDRAM_MODULE, sdram_rate=sdram_rate,
                  with_led_chaser=False, l2_size=0,
                  cpu_type=None, with_uart=False, integrated_rom_size=0,
                  integrated_sram_size=0)
    soc.add_uartbone(uart_name="serial", baudrate=baudrate)
    core = add_accelerator(soc, cfg, accel_verilog)
    soc.comb += soc.platform.request("user_led", 0).eq(core.irq)
    return soc


# The simulation SoC ---------------------------------------------------------------------------

class DFICommandCounters(LiteXModule):
    """Counts the commands the SDRAM controller issues on its DFI (per phase, chip selected):
    ACTIVATE (a row opened: the row misses), PRECHARGE, REFRESH, READ, WRITE, as CSRs the
    host reads over the bridge (``<name>_activates`` ...). Observes only."""

    # (ras_n, cas_n, we_n) of each command (JESD79 truth table)
    COMMANDS = {"activates": (0, 1, 1), "precharges": (0, 1, 0), "refreshes": (0, 0, 1),
                "reads": (1, 0, 1), "writes": (1, 0, 0)}

    def __init__(self, dfi):
        for name, (ras, cas, we) in self.COMMANDS.items():
            csr = CSRStatus(32, name=name, description=f"DFI {name} since reset (all phases)")
            setattr(self, f"_{name}", csr)
            for phase in dfi.phases:
                hit = (~phase.cs_n[0] & (phase.ras_n == ras) & (phase.cas_n == cas)
                       & (phase.we_n == we))
                self.sync += If(hit, csr.status.eq(csr.status + 1))


_SIM_IO = [
    ("sys_clk", 0, Pins(1)),
    ("sys_rst", 0, Pins(1)),
    ("serial", 0,
        Subsignal("source_valid", Pins(1)), Subsignal("source_ready", Pins(1)),
        Subsignal("source_data", Pins(8)),
        Subsignal("sink_valid", Pins(1)), Subsignal("sink_ready", Pins(1)),
        Subsignal("sink_data", Pins(8))),
    ("irq", 0, Pins(1)),
]


class SimPlatform(GenericPlatform):
    """Pins for Verilator: clock, reset, the bridge's byte streams, the interrupt."""

    def __init__(self):
        super().__init__("sim", _SIM_IO)

    def build(self, fragment, build_dir, build_name, run=True, **kwargs):
        out = Path(build_dir) / f"{build_name}.v"
        out.parent.mkdir(parents=True, exist_ok=True)
        self.get_verilog(fragment, name=build_name).write(str(out))
        return out


class SimSoC(SoCCore):
    """`board_soc`'s SoC on `SimPlatform`: same controller, crossbar, bridge and accelerator;
    LiteDRAM's SDRAM model for the chip, the RS232 byte-stream model for the UART."""

    def __init__(self, cfg: AccelConfig, accel_verilog: Path, *,
                 clock_mhz: float = SOC_CLOCK_MHZ, sdram_module: str = SDRAM_MODULE,
                 sdram_rate: str = SDRAM_RATE):
        from litedram import modules as litedram_modules
        from litedram.phy.model import SDRAMPHYModel
        from litex.soc.cores.uart import RS232PHYModel, UARTBone

        platform = SimPlatform()
        sys_clk_freq = int(clock_mhz * 1e6)
        self.crg = CRG(platform.request("sys_clk"), platform.request("sys_rst"))
        SoCCore.__init__(self, platform, sys_clk_freq, cpu_type=None, with_uart=False,
                         integrated_rom_size=0, integrated_sram_size=0, ident="")
        module = getattr(litedram_modules, sdram_module)(sys_clk_freq, sdram_rate)
        self.sdrphy = SDRAMPHYModel(module=module,
                                    settings=sdram_phy_settings(sdram_rate, sys_clk_freq),
                                    clk_freq=sys_clk_freq)
        self.add_sdram("sdram", phy=self.sdrphy, module=module, l2_cache_size=0)
        self.dram_stats = DFICommandCounters(self.sdrphy.dfi)
        self.uartbone_phy = RS232PHYModel(platform.request("serial"))
        self.uartbone = UARTBone(self.uartbone_phy, sys_clk_freq)
        self.bus.add_master(name="uartbone", master=self.uartbone.wishbone)
        core = add_accelerator(self, cfg, accel_verilog)
        self.comb += platform.request("irq").eq(core.irq)


@contextlib.contextmanager
def quiet_litex():
    """LiteX logs its whole SoC (regions, hierarchy) at INFO level while it builds."""
    logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def write_soc(soc, out_dir: Path, name: str = "soc") -> Path:
    """LiteX's builder without its toolchain: gateware (Verilog, constraints) and csr.csv
    under ``out_dir`` (`build_board_soc` runs the tools itself). Returns the gateware
    folder."""
    from litex.soc.integration.builder import Builder

    with quiet_litex():
        builder = Builder(soc, output_dir=str(out_dir), compile_software=False,
                          compile_gateware=False, csr_csv=str(Path(out_dir) / "csr.csv"))
        builder.build(build_name=name, run=False)
    return Path(builder.gateware_dir)


# SDRAM initialization ---------------------------------------------------------------------------

def sdram_init_steps(soc) -> list[dict]:
    """LiteDRAM's init sequence for ``soc``'s SDRAM (what a LiteX BIOS runs at boot), as
    `firmware.sdram_init` replays it over the bridge: each step a DFII ``control`` or
    ``command`` value with its address/bank, then ``delay`` clock cycles."""
    from litedram.init import get_sdram_phy_init_sequence

    from firmware.sdram_init import DFII_BITS
    sequence, _ = get_sdram_phy_init_sequence(soc.sdram.controller.settings.phy,
                                              soc.sdram.controller.settings.timing)
    steps = []
    for comment, address, bank, cmd, delay in sequence:
        kind = "control" if "DFII_CONTROL" in cmd else "command"
        value = 0
        for bit in cmd.split("|"):
            value |= DFII_BITS[bit]
        steps.append({"comment": comment, kind: value, "address": address, "bank": bank,
                      "delay": delay})
    return steps


# The board build --------------------------------------------------------------------------------

FLASH_COMMANDS = """\
# Load the SoC into the FPGA (lost at power-off) ...
openFPGALoader --board ulx3s gateware/soc.bit
# ... or write it to the board's SPI flash (kept)
openFPGALoader --board ulx3s -f gateware/soc.bit
"""


def build_board_soc(board: str, cfg: AccelConfig, out_dir: Path, *,
                    clock_mhz: float = SOC_CLOCK_MHZ, baudrate: int = BRIDGE_BAUDRATE,
                    sdram_rate: str = SDRAM_RATE,
                    bitstream: bool = True,
                    progress: bool = True, timeout_s: float | None = None) -> dict:
    """Everything a board needs, under ``out_dir``: ``gateware/`` (the accelerator's Verilog
    for the board's FPGA, the SoC's Verilog and LPF, ``build.sh``, with ``bitstream`` the
    tools' logs, ``soc.bit`` and the synthesis report), ``csr.csv``/``csr.json`` (the bus
    map the host reads), ``sdram_init.json`` and ``flash.sh``. Raises `boards.synth`'s
    errors (`TimingError` when the routed SoC misses ``clock_mhz``). Returns a summary."""
    from amaranth.back import verilog

    from boards.synth import build_verilog_bitstream
    from boards.targets import get_board
    from rtl_gen.accelerator import Accelerator

    out_dir = Path(out_dir)
    gateware = out_dir / "gateware"
    gateware.mkdir(parents=True, exist_ok=True)
    accel = gateware / f"{ACCEL_MODULE}.v"
    # For the board's platform, so the DSP units instantiate MULT18X18D with their registers.
    accel.write_text(verilog.convert(Accelerator(cfg), name=ACCEL_MODULE,
                                     platform=get_board(board).platform()))
    with quiet_litex():
        soc = board_soc(board, cfg, accel, clock_mhz=clock_mhz, baudrate=baudrate,
                        sdram_rate=sdram_rate)
    write_soc(soc, out_dir, "soc")
    # LiteX's own script names absolute paths and plain tool names; build.sh replaces it.
    for stale in ("soc.ys", "build_soc.sh"):
        (gateware / stale).unlink(missing_ok=True)
    (out_dir / "sdram_init.json").write_text(json.dumps(sdram_init_steps(soc), indent=1) + "\n")
    (out_dir / "flash.sh").write_text("#!/bin/sh\nset -e\ncd \"$(dirname \"$0\")\"\n"
                                      + FLASH_COMMANDS)
    summary = {"board": board, "clock_mhz": clock_mhz, "sdram_module": SDRAM_MODULE,
               "sdram_rate": sdram_rate,
               "bridge": "UARTBone", "baudrate": baudrate, "bitstream": None}
    if bitstream:
        report = build_verilog_bitstream(gateware, "soc", [accel.name, "soc.v"], "soc.lpf",
                                         board, progress=progress, timeout_s=timeout_s)
        summary["bitstream"] = "gateware/soc.bit"
        summary["fmax_mhz"] = report.fmax_mhz
        summary["resources"] = {k: v.used for k, v in report.resources.items()}
    return summary
