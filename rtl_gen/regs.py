"""Control/status registers of the accelerator, behind an AXI4-Lite subordinate port.

The register map is data (`firmware.contract`): `register_map()` and `register_fields()`
return the tables that both the hardware decoder below and the firmware's drivers and C
header are built from, so they cannot drift apart.

Byte offsets are within the accelerator's AXI4-Lite window; address bits above
``addr_width`` are ignored (the interconnect decodes the base). All registers are 32 bits.
Reads of unmapped offsets answer SLVERR with data 0; writes to read-only registers are
ignored and answer OKAY; writes to unmapped offsets answer SLVERR.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from firmware.contract import (  # noqa: F401 (the register map, re-exported for the RTL's users)
    ACCEL_ID, LAYER_COUNTERS, LAYER_CYCLES_BASE, LAYER_CYCLES_STRIDE, REGMAP_VERSION, Field,
    Register, register_fields, register_map)

from .axi import AXI4LiteSignature, RESP_OKAY, RESP_SLVERR

def layer_cycles_signature(n_layers: int) -> wiring.Signature:
    """The core's write port into the per-layer cycle counter array (no back-pressure)."""
    return wiring.Signature({"index": Out(range(n_layers)), "value": Out(32), "strobe": Out(1)})


class RegisterFile(wiring.Component):
    """AXI4-Lite register file; see `register_map()` for the programmer's view.

    Core-side ports:
      ``start``, ``soft_reset`` (out): one-cycle pulses on a CTRL write of 1 to the bit.
      ``irq`` (out): level, STATUS.DONE & CTRL.IRQ_EN.
      ``prog_addr`` (out, 64): PROG_ADDR_HI:PROG_ADDR_LO.
      ``busy`` (in): the core is running; CYCLES counts the cycles it is high.
      ``done``, ``error`` (in): set the sticky STATUS bits (a pulse is enough).
      ``error_code`` (in, 8), ``layer_count`` (in, 16): shown read-only.
      ``layer_cycles`` (in, `layer_cycles_signature`): ``strobe`` stores ``value`` at entry
      ``index`` of the LAYER_CYCLES array; the array lives in a memory, not flops.
    Bus port: ``s_axi`` (AXI4-Lite subordinate, 32-bit data), Verilog ports ``s_axi__awaddr``
    and so on.
    """

    def __init__(self, *, n_layers: int = LAYER_COUNTERS, addr_width: int = 12):
        if n_layers < 1:
            raise ValueError("n_layers must be at least 1")
        end = LAYER_CYCLES_BASE + LAYER_CYCLES_STRIDE * n_layers
        if end > 1 << addr_width:
            raise ValueError(f"{n_layers} layer counters need {end} bytes, more than the "
                             f"{1 << addr_width} of a {addr_width}-bit window")
        self.n_layers = n_layers
        self.addr_width = addr_width
        super().__init__({
            "s_axi": In(AXI4LiteSignature(addr_width=addr_width)),
            "start": Out(1), "soft_reset": Out(1), "irq": Out(1), "prog_addr": Out(64),
            "busy": In(1), "done": In(1), "error": In(1),
            "error_code": In(8), "layer_count": In(16),
            "layer_cycles": In(layer_cycles_signature(n_layers)),
        })

    def elaborate(self, platform):
        m = Module()
        bus = self.s_axi
        regs = {r.name: r for r in register_map(self.n_layers)}

        irq_en = Signal()
        done_flag = Signal()
        error_flag = Signal()
        prog_lo = Signal(32)
        prog_hi = Signal(32)
        cycles = Signal(64)
        cycles_hi_latched = Signal(32)

        m.submodules.layer_mem = mem = Memory(shape=32, depth=self.n_layers, init=[])
        wr_port = mem.write_port()
        rd_port = mem.read_port()
        lc = self.layer_cycles
        m.d.comb += [
            wr_port.addr.eq(lc.index),
            wr_port.data.eq(lc.value),
            wr_port.en.eq(lc.strobe & (lc.index < self.n_layers)),
        ]

        # ---- writes: take AW and W together, answer on B ------------------------------------
        write = Signal()
        m.d.comb += [
            write.eq(bus.awvalid & bus.wvalid & ~bus.bvalid),
            bus.awready.eq(write),
            bus.wready.eq(write),
        ]
        byte0 = bus.wstrb[0]
        ctrl_write = write & self._hits(bus.awaddr, regs["CTRL"])
        status_write = write & self._hits(bus.awaddr, regs["STATUS"])
        m.d.sync += [
            self.start.eq(ctrl_write & byte0 & bus.wdata[0]),
            self.soft_reset.eq(ctrl_write & byte0 & bus.wdata[2]),
        ]
        with m.If(ctrl_write & byte0):
            m.d.sync += irq_en.eq(bus.wdata[1])
        for name, reg in (("PROG_ADDR_LO", prog_lo), ("PROG_ADDR_HI", prog_hi)):
            with m.If(write & self._hits(bus.awaddr, regs[name])):
                for i in range(4):
                    with m.If(bus.wstrb[i]):
                        m.d.sync += reg[8 * i:8 * i + 8].eq(bus.wdata[8 * i:8 * i + 8])
        with m.If(write):
            m.d.sync += [
                bus.bvalid.eq(1),
                bus.bresp.eq(Mux(self._mapped(bus.awaddr, regs.values()), RESP_OKAY, RESP_SLVERR)),
            ]
        with m.Elif(bus.bready):
            m.d.sync += bus.bvalid.eq(0)

        # ---- sticky status, cycle counter -----------------------------------------------------
        clear_done = self.soft_reset | (status_write & byte0 & bus.wdata[1])
        clear_error = self.soft_reset | (status_write & byte0 & bus.wdata[2])
        for flag, clear, set_ in ((done_flag, clear_done, self.done),
                                  (error_flag, clear_error, self.error)):
            with m.If(clear):
                m.d.sync += flag.eq(0)
            with m.If(set_):
                m.d.sync += flag.eq(1)
        with m.If(self.start | self.soft_reset):
            m.d.sync += cycles.eq(0)
        with m.Elif(self.busy):
            m.d.sync += cycles.eq(cycles + 1)
        m.d.comb += [
            self.irq.eq(done_flag & irq_en),
            self.prog_addr.eq(Cat(prog_lo, prog_hi)),
        ]

        # ---- reads: AR, one cycle for the memory, one for its output register, then R ---------
        layer_value = Signal(32)     # the block RAM's read data, registered off its slow output
        values = {
            "ID": Const(ACCEL_ID, 32),
            "VERSION": Const(REGMAP_VERSION, 32),
            "CTRL": Cat(Const(0, 1), irq_en),
            "STATUS": Cat(self.busy, done_flag, error_flag),
            "ERROR_CODE": self.error_code,
            "PROG_ADDR_LO": prog_lo,
            "PROG_ADDR_HI": prog_hi,
            "LAYER_COUNT": self.layer_count,
            "CYCLES_LO": cycles[:32],
            "CYCLES_HI": cycles_hi_latched,
            "LAYER_CYCLES": layer_value,
        }
        assert values.keys() == regs.keys(), "register map and decoder disagree"

        pending, decode = Signal(), Signal()
        rd_addr = Signal(self.addr_width)
        m.d.comb += [
            bus.arready.eq(~pending & ~decode & ~bus.rvalid),
            rd_port.en.eq(bus.arvalid & bus.arready),
            rd_port.addr.eq((bus.araddr - LAYER_CYCLES_BASE)[2:]),
        ]
        with m.If(bus.arvalid & bus.arready):
            m.d.sync += [pending.eq(1), rd_addr.eq(bus.araddr)]
        with m.If(pending):
            m.d.sync += [pending.eq(0), decode.eq(1), layer_value.eq(rd_port.data)]
        with m.If(decode):
            m.d.sync += [decode.eq(0), bus.rvalid.eq(1),
                         bus.rresp.eq(RESP_SLVERR), bus.rdata.eq(0)]
            for name, reg in regs.items():
                with m.If(self._hits(rd_addr, reg)):
                    m.d.sync += [bus.rresp.eq(RESP_OKAY), bus.rdata.eq(values[name])]
            with m.If(self._hits(rd_addr, regs["CYCLES_LO"])):
                m.d.sync += cycles_hi_latched.eq(cycles[32:])
        with m.Elif(bus.rready):
            m.d.sync += bus.rvalid.eq(0)
        return m

    @staticmethod
    def _hits(addr, reg: Register):
        """Whether byte address ``addr`` selects (an entry of) ``reg``."""
        word = addr[2:]
        first = reg.offset >> 2
        if reg.count == 1:
            return word == first
        return (word >= first) & (word < first + reg.count)

    @classmethod
    def _mapped(cls, addr, regs):
        """Whether byte address ``addr`` selects any register of ``regs``."""
        return Cat(cls._hits(addr, reg) for reg in regs).any()
