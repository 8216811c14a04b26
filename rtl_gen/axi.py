"""AXI4 and AXI4-Lite interface signatures.

Every channel signal is a *flat* member of one signature, named exactly as in the AMBA
specification (``awaddr``, ``wdata``, ``rlast``, ...), and no channel is nested in a
sub-interface. Amaranth joins the path of a top-level port with ``__``, so a component
member called ``m_axi`` with this signature comes out of ``amaranth.back.verilog`` as the
ports::

    m_axi__awaddr  m_axi__awlen  m_axi__awsize  m_axi__awburst  m_axi__awid
    m_axi__awvalid m_axi__awready
    m_axi__wdata   m_axi__wstrb  m_axi__wlast   m_axi__wvalid   m_axi__wready
    m_axi__bresp   m_axi__bid    m_axi__bvalid  m_axi__bready
    m_axi__araddr  m_axi__arlen  m_axi__arsize  m_axi__arburst  m_axi__arid
    m_axi__arvalid m_axi__arready
    m_axi__rdata   m_axi__rresp  m_axi__rlast   m_axi__rid      m_axi__rvalid m_axi__rready

The separator between the prefix and the AMBA name is ``__`` (two underscores). A
cocotbext-axi bus binds to them with ``AxiBus.from_prefix(dut, "m_axi", bus_separator="__")``
(or equivalently ``from_prefix(dut, "m_axi_")`` with the default ``_`` separator); the
AXI4-Lite register port binds the same way with ``AxiLiteBus``. The optional AMBA signals
(``*lock``, ``*cache``, ``*prot``, ``*qos``, ``*region``, ``*user``) are left out: the
interconnect ties them to their defaults and cocotbext-axi treats them as optional.

The signatures are written from the manager's (master's) side: ``Out`` members are driven by
the manager. A subordinate (slave) port uses ``In(signature)``, i.e. the flipped signature.
"""
from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .config import AccelConfig

# AXI burst types and response codes (AMBA AXI4, A3.4.1 and A3.4.4).
BURST_INCR = 0b01
RESP_OKAY = 0b00
RESP_EXOKAY = 0b01
RESP_SLVERR = 0b10
RESP_DECERR = 0b11

# No burst may cross a 4 KiB address boundary (AMBA AXI4, A3.4.1).
AXI_BOUNDARY_BYTES = 4096


class AXI4Signature(wiring.Signature):
    """AXI4 manager interface, optionally restricted to its read or its write half.

    The read-only and write-only variants let `ReadDMA` and `WriteDMA` be built and tested
    alone; `forward` joins them onto one full interface.
    """

    def __init__(self, *, addr_width: int, data_width: int, id_width: int,
                 read: bool = True, write: bool = True):
        if data_width % 8 or data_width < 8:
            raise ValueError(f"data_width must be a multiple of 8, got {data_width}")
        if not (read or write):
            raise ValueError("an AXI4 interface needs a read half, a write half, or both")
        self.addr_width = addr_width
        self.data_width = data_width
        self.id_width = id_width
        self.read = read
        self.write = write
        members = {}
        if write:
            members.update({
                "awaddr": Out(addr_width), "awlen": Out(8), "awsize": Out(3),
                "awburst": Out(2), "awid": Out(id_width),
                "awvalid": Out(1), "awready": In(1),
                "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wlast": Out(1),
                "wvalid": Out(1), "wready": In(1),
                "bresp": In(2), "bid": In(id_width),
                "bvalid": In(1), "bready": Out(1),
            })
        if read:
            members.update({
                "araddr": Out(addr_width), "arlen": Out(8), "arsize": Out(3),
                "arburst": Out(2), "arid": Out(id_width),
                "arvalid": Out(1), "arready": In(1),
                "rdata": In(data_width), "rresp": In(2), "rlast": In(1), "rid": In(id_width),
                "rvalid": In(1), "rready": Out(1),
            })
        super().__init__(members)

    @classmethod
    def from_config(cls, cfg: AccelConfig, *, read: bool = True, write: bool = True):
        return cls(addr_width=cfg.addr_width, data_width=cfg.bus_bytes * 8,
                   id_width=cfg.id_width, read=read, write=write)

    def __eq__(self, other):
        return (isinstance(other, AXI4Signature) and
                (self.addr_width, self.data_width, self.id_width, self.read, self.write) ==
                (other.addr_width, other.data_width, other.id_width, other.read, other.write))

    def __hash__(self):
        return hash((self.addr_width, self.data_width, self.id_width, self.read, self.write))

    def __repr__(self):
        half = "" if self.read and self.write else (", read only" if self.read else ", write only")
        return (f"AXI4Signature(addr_width={self.addr_width}, data_width={self.data_width}, "
                f"id_width={self.id_width}{half})")


class AXI4LiteSignature(wiring.Signature):
    """AXI4-Lite manager interface (single-beat transfers, no IDs, no bursts)."""

    def __init__(self, *, addr_width: int, data_width: int = 32):
        if data_width not in (32, 64):
            raise ValueError(f"AXI4-Lite data_width must be 32 or 64, got {data_width}")
        self.addr_width = addr_width
        self.data_width = data_width
        super().__init__({
            "awaddr": Out(addr_width), "awvalid": Out(1), "awready": In(1),
            "wdata": Out(data_width), "wstrb": Out(data_width // 8),
            "wvalid": Out(1), "wready": In(1),
            "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "araddr": Out(addr_width), "arvalid": Out(1), "arready": In(1),
            "rdata": In(data_width), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
        })

    def __eq__(self, other):
        return (isinstance(other, AXI4LiteSignature) and
                (self.addr_width, self.data_width) == (other.addr_width, other.data_width))

    def __hash__(self):
        return hash((self.addr_width, self.data_width))

    def __repr__(self):
        return f"AXI4LiteSignature(addr_width={self.addr_width}, data_width={self.data_width})"


def forward(m: Module, outer, inner) -> None:
    """Wire the manager interface ``inner`` of a submodule to the port ``outer`` of its parent.

    ``outer`` may carry more channels than ``inner`` (a full AXI4 port fed by a read-only and a
    write-only DMA); `wiring.connect` refuses that, hence this helper. Both are manager-side
    interfaces (``Out(AXI4Signature)``), so ``Out`` members flow from inner to outer.
    """
    for name, member in inner.signature.members.items():
        if member.flow == Out:
            m.d.comb += getattr(outer, name).eq(getattr(inner, name))
        else:
            m.d.comb += getattr(inner, name).eq(getattr(outer, name))
