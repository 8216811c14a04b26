"""A fast DDR model for Verilator runs: an AXI4 subordinate written in RTL, not in Python.

`AxiMemModel` answers AXI4 INCR bursts entirely in hardware, so a full-network simulation
never wakes Python on a clock edge just to move data; `with_memory` wraps a design's ``m_axi``
around one and exposes the design's other ports at the top::

    top = with_memory(AxiDMA(cfg), size=1 << 20, read_latency=20, beat_interval=1)
    b = verilator_runner.build(top, name="dma_ddr")      # picks up top.extra_verilog

and in the cocotb test::

    ddr = AxiMemBackdoor(dut, bus_bytes=cfg.bus_bytes)   # ports ddr__load, ddr__dump, ...
    await ddr.write(0x1000, image)                       # ~0.1 s per MiB
    ...
    result = await ddr.read(0x8000, 4096)

Timing model (at elaboration time, a different setting being a different Verilator build,
except the random back-pressure, which is set at run time):

* ``read_latency``: cycles from an AR handshake to its first R beat being valid, for
  a request that finds the model idle; requests are pipelined, so up to ``queue_depth``
  bursts wait out their latencies at once (like DRAM with many open requests). At least 4.
* ``beat_interval``: the read side fetches at most one beat, and the write side accepts at
  most one W beat, every ``beat_interval`` cycles (1 = full bus rate), independently.
* The B response is valid the cycle after a burst's last W beat; W waits for its AW (which
  AXI4 allows a subordinate to do).
* Random back-pressure, set at run time through the backdoor's ``stall`` input (0..255,
  default 0 = none): each cycle, AR, AW and W are not ready, and R and B beats not yet
  shown are held back, each with probability ``stall``/256 (a free-running LFSR, so a run
  is repeatable). VALID, once shown, stays up until its handshake, as AXI requires.
* Beats outside ``[0, size)`` answer DECERR (reads return zero, writes are dropped); other
  beats answer OKAY. IDs are echoed; responses come back in request order, which is legal
  for a subordinate whatever the IDs.

Not modelled: narrow (``*size`` below the bus width) and FIXED/WRAP bursts (every burst is
treated as full-width INCR), exclusive access, protocol checking (`sim.amaranth_axi_ram`
checks the protocol in Amaranth simulations), refresh or bank conflicts.

Why the storage is hand-written Verilog rather than ``amaranth.lib.memory.Memory``: Amaranth
emits a memory's initial contents word by word, even all-zero ones, through RTLIL and Yosys;
a 1 MiB, 64-bit memory took 24 s and 1 GB of RAM to convert and produced 5.6 MB of Verilog
that Verilator would then have to compile, and contents fixed at build time would force a
rebuild per DDR image. The `STORAGE_VERILOG` module (instantiated with ``Instance``;
`with_memory` hands its text to the runner as ``extra_verilog``) declares a plain array
instead, which Verilator zero-initialises, so memory contents are a run-time matter: on a
clock edge with ``load`` high it runs ``$readmemh("<name>.load.hex")`` and with ``dump``
high ``$writememh("<name>.dump.hex", mem, dump_first, dump_last)``, both in the simulator's
working folder. Measured on 4 MiB: ~0.1 s per MiB to load (mostly Verilator parsing the hex)
and ~0.05 s per MiB to read back, against ~1.3 s and ~0.6 s per MiB through cocotb's
per-element handle access (which would also need the array made public, slowing every
cycle). The model is therefore for Verilator (or another Verilog simulator) only; Amaranth's
own simulator cannot run ``Instance``, and `sim.amaranth_axi_ram` serves that case.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from amaranth.hdl import ClockSignal, Const, Instance, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out
from cocotb.triggers import FallingEdge, RisingEdge

from rtl_gen.axi import AXI4Signature, RESP_DECERR, RESP_OKAY, forward
from rtl_gen.config import AccelConfig

STORAGE_MODULE = "axi_mem_storage"
STORAGE_VERILOG = f"""\
// Backing store of sim/axi_mem_model.py (AxiMemModel); see that module's docstring.
module {STORAGE_MODULE} #(
    parameter integer WIDTH = 64,
    parameter integer DEPTH = 1024,
    parameter integer ABITS = 10,
    parameter LOAD_FILE = "ddr.load.hex",
    parameter DUMP_FILE = "ddr.dump.hex"
) (
    input  wire               clk,
    input  wire               re,
    input  wire [ABITS-1:0]   raddr,
    output reg  [WIDTH-1:0]   rdata,
    input  wire [WIDTH/8-1:0] we,
    input  wire [ABITS-1:0]   waddr,
    input  wire [WIDTH-1:0]   wdata,
    input  wire               load,
    input  wire               dump,
    input  wire [ABITS-1:0]   dump_first,
    input  wire [ABITS-1:0]   dump_last
);
    reg [WIDTH-1:0] mem [0:DEPTH-1];
    wire [WIDTH-1:0] mask;
    genvar g;
    generate
        for (g = 0; g < WIDTH / 8; g = g + 1) begin : lane
            assign mask[g*8 +: 8] = {{8{{we[g]}}}};
        end
    endgenerate
    always @(posedge clk) begin
        if (re) rdata <= mem[raddr];
        if (|we) mem[waddr] <= (mem[waddr] & ~mask) | (wdata & mask);
        if (load) $readmemh(LOAD_FILE, mem);
        if (dump) $writememh(DUMP_FILE, mem, dump_first, dump_last);
    end
endmodule
"""

# Cycles from an AR handshake to the first R beat when the burst waits for nothing: the AR
# queue shows it one cycle later, the engine loads it, reads storage, and pushes the R queue.
_MIN_READ_LATENCY = 4


def backdoor_signature(words: int) -> wiring.Signature:
    """Backdoor controls, from the testbench's side; addresses are word indices, ``stall``
    the random back-pressure in 256ths."""
    abits = max(1, (words - 1).bit_length())
    return wiring.Signature({"load": Out(1), "dump": Out(1),
                             "dump_first": Out(abits), "dump_last": Out(abits),
                             "stall": Out(8)})


# Taps of a maximal-length 32-bit Galois LFSR (x^32 + x^22 + x^2 + x + 1), and which byte
# of its state decides the stall of each channel.
_LFSR_TAPS = 0x8020_0003
_STALL_BYTES = {"ar": 0, "aw": 1, "w": 2, "r": 3, "b": 0}


class AxiMemModel(wiring.Component):
    """AXI4 subordinate over a ``size``-byte memory; see the module docstring.

    Ports: ``s_axi`` (``In(AXI4Signature.from_config(cfg))``) and ``backdoor``
    (`backdoor_signature`). ``name`` sets the backdoor file names.
    """

    def __init__(self, cfg: AccelConfig, size: int, *, read_latency: int = 16,
                 beat_interval: int = 1, queue_depth: int = 8, name: str = "ddr"):
        if size <= 0 or size % cfg.bus_bytes:
            raise ValueError(f"size must be a positive multiple of {cfg.bus_bytes}, got {size}")
        if read_latency < _MIN_READ_LATENCY:
            raise ValueError(f"read_latency must be >= {_MIN_READ_LATENCY}, got {read_latency}")
        if beat_interval < 1:
            raise ValueError(f"beat_interval must be >= 1, got {beat_interval}")
        self.cfg = cfg
        self.size = size
        self.words = size // cfg.bus_bytes
        self.read_latency = read_latency
        self.beat_interval = beat_interval
        self.queue_depth = queue_depth
        self.name = name
        super().__init__({
            "s_axi": In(AXI4Signature.from_config(cfg)),
            "backdoor": In(backdoor_signature(self.words)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, axi = self.cfg, self.s_axi
        shift = (cfg.bus_bytes - 1).bit_length()
        abits = len(self.backdoor.dump_first)
        width = cfg.bus_bytes * 8

        re, raddr, rdata = Signal(), Signal(abits), Signal(width)
        we, waddr = Signal(cfg.bus_bytes), Signal(abits)
        m.submodules.storage = Instance(
            STORAGE_MODULE,
            p_WIDTH=width, p_DEPTH=self.words, p_ABITS=abits,
            p_LOAD_FILE=f"{self.name}.load.hex", p_DUMP_FILE=f"{self.name}.dump.hex",
            i_clk=ClockSignal(), i_re=re, i_raddr=raddr, o_rdata=rdata,
            i_we=we, i_waddr=waddr, i_wdata=axi.wdata,
            i_load=self.backdoor.load, i_dump=self.backdoor.dump,
            i_dump_first=self.backdoor.dump_first, i_dump_last=self.backdoor.dump_last)

        word_bits = cfg.addr_width - shift
        burst = data.StructLayout({"word": word_bits, "len": 8, "id": cfg.id_width, "due": 32})
        now = Signal(32)
        m.d.sync += now.eq(now + 1)
        stall = self._stalls(m)

        # ---- read: AR queue (with due times) -> burst engine -> storage -> R queue ----------
        m.submodules.ar_q = ar_q = SyncFIFO(width=burst.size, depth=self.queue_depth)
        ar_in, ar_head = data.View(burst, ar_q.w_data), data.View(burst, ar_q.r_data)
        m.d.comb += [
            axi.arready.eq(ar_q.w_rdy & ~stall["ar"]),
            ar_q.w_en.eq(axi.arvalid & axi.arready),
            ar_in.word.eq(axi.araddr[shift:]), ar_in.len.eq(axi.arlen), ar_in.id.eq(axi.arid),
            ar_in.due.eq(now + (self.read_latency - _MIN_READ_LATENCY + 1)),
        ]
        beat = data.StructLayout({"data": width, "resp": 2, "last": 1, "id": cfg.id_width})
        m.submodules.r_q = r_q = SyncFIFO(width=beat.size, depth=4)
        r_out = data.View(beat, r_q.r_data)
        m.d.comb += [
            axi.rvalid.eq(self._shown(m, r_q.r_rdy, axi.rready, stall["r"])),
            axi.rdata.eq(r_out.data), axi.rresp.eq(r_out.resp),
            axi.rlast.eq(r_out.last), axi.rid.eq(r_out.id),
            r_q.r_en.eq(axi.rvalid & axi.rready),
        ]

        active = Signal()
        word, left, rid = Signal(word_bits), Signal(8), Signal(cfg.id_width)
        pending = Signal()                     # a storage read issued last cycle
        p_last, p_id, p_err = Signal(), Signal(cfg.id_width), Signal()
        due = (now - ar_head.due)[:32].as_signed() >= 0     # modulo 2**32
        issue = Signal()
        m.d.comb += [
            issue.eq(active & self._pace(m, issue) & (r_q.level + pending < r_q.depth)),
            re.eq(issue), raddr.eq(word),
        ]
        with m.If(~active | (issue & (left == 0))):
            m.d.comb += ar_q.r_en.eq(due)
            m.d.sync += [active.eq(ar_q.r_rdy & due), word.eq(ar_head.word),
                         left.eq(ar_head.len), rid.eq(ar_head.id)]
        with m.Elif(issue):
            m.d.sync += [word.eq(word + 1), left.eq(left - 1)]
        m.d.sync += [pending.eq(issue), p_last.eq(left == 0), p_id.eq(rid),
                     p_err.eq(word >= self.words)]
        r_in = data.View(beat, r_q.w_data)
        m.d.comb += [
            r_q.w_en.eq(pending),
            r_in.data.eq(Mux(p_err, 0, rdata)), r_in.resp.eq(Mux(p_err, RESP_DECERR, RESP_OKAY)),
            r_in.last.eq(p_last), r_in.id.eq(p_id),
        ]

        # ---- write: AW queue -> W beats into storage -> B queue ------------------------------
        m.submodules.aw_q = aw_q = SyncFIFO(width=burst.size, depth=self.queue_depth)
        aw_in, aw_head = data.View(burst, aw_q.w_data), data.View(burst, aw_q.r_data)
        m.d.comb += [
            axi.awready.eq(aw_q.w_rdy & ~stall["aw"]),
            aw_q.w_en.eq(axi.awvalid & axi.awready),
            aw_in.word.eq(axi.awaddr[shift:]), aw_in.len.eq(axi.awlen), aw_in.id.eq(axi.awid),
        ]
        resp = data.StructLayout({"resp": 2, "id": cfg.id_width})
        m.submodules.b_q = b_q = SyncFIFO(width=resp.size, depth=self.queue_depth)
        b_out, b_in = data.View(resp, b_q.r_data), data.View(resp, b_q.w_data)
        m.d.comb += [axi.bvalid.eq(self._shown(m, b_q.r_rdy, axi.bready, stall["b"])),
                     axi.bresp.eq(b_out.resp), axi.bid.eq(b_out.id),
                     b_q.r_en.eq(axi.bvalid & axi.bready)]

        w_beat, w_count, w_err = Signal(), Signal(8), Signal()
        w_word = aw_head.word + w_count
        m.d.comb += [
            axi.wready.eq(aw_q.r_rdy & b_q.w_rdy & self._pace(m, w_beat) & ~stall["w"]),
            w_beat.eq(axi.wvalid & axi.wready),
            waddr.eq(w_word),
            we.eq(Mux(w_beat & (w_word < self.words), axi.wstrb, 0)),
        ]
        burst_err = w_err | (w_word >= self.words)
        with m.If(w_beat):
            with m.If(w_count == aw_head.len):
                m.d.comb += [aw_q.r_en.eq(1), b_q.w_en.eq(1),
                             b_in.resp.eq(Mux(burst_err, RESP_DECERR, RESP_OKAY)),
                             b_in.id.eq(aw_head.id)]
                m.d.sync += [w_count.eq(0), w_err.eq(0)]
            with m.Else():
                m.d.sync += [w_count.eq(w_count + 1), w_err.eq(burst_err)]
        return m

    def _stalls(self, m: Module) -> dict:
        """One stall strobe per channel, each high with probability ``backdoor.stall``/256."""
        lfsr = Signal(32, init=1)
        m.d.sync += lfsr.eq(Mux(lfsr[0], (lfsr >> 1) ^ _LFSR_TAPS, lfsr >> 1))
        return {ch: lfsr.word_select(byte, 8) < self.backdoor.stall
                for ch, byte in _STALL_BYTES.items()}

    @staticmethod
    def _shown(m: Module, ready_to_show, taken, stall):
        """VALID of a response channel: withheld while `stall`, except that once shown it
        stays up until taken."""
        held = Signal()
        valid = ready_to_show & (~stall | held)
        m.d.sync += held.eq(valid & ~taken)
        return valid

    def _pace(self, m: Module, taken: Signal):
        """High when a beat may be taken now: once every ``beat_interval`` cycles at most."""
        if self.beat_interval == 1:
            return Const(1)
        wait = Signal(range(self.beat_interval))
        with m.If(taken):
            m.d.sync += wait.eq(self.beat_interval - 1)
        with m.Elif(wait != 0):
            m.d.sync += wait.eq(wait - 1)
        return wait == 0


def with_memory(dut: wiring.Component, *, size: int, cfg: AccelConfig | None = None,
                port: str = "m_axi", name: str = "ddr", **model_args) -> wiring.Component:
    """A simulation top: ``dut`` with its AXI4 manager port ``port`` served by an `AxiMemModel`.

    Every other member of ``dut``'s signature is exposed at the top under the same name (so a
    ``s_axi`` register port stays ``s_axi__awaddr`` ...), plus the model's backdoor as
    ``<name>`` (ports ``<name>__load``, ``<name>__dump``, ``<name>__dump_first``,
    ``<name>__dump_last``). The port may be a read-only or write-only `AXI4Signature`; the
    model's unused half then idles. ``cfg`` defaults to ``dut.cfg``; ``model_args``
    (``read_latency``, ``beat_interval``, ``queue_depth``) go to `AxiMemModel`. The returned
    component carries ``extra_verilog`` for the runner.
    """
    cfg = cfg or dut.cfg
    model = AxiMemModel(cfg, size, name=name, **model_args)
    m_axi = dut.signature.members[port].signature
    full = AXI4Signature.from_config(cfg)
    if (m_axi.addr_width, m_axi.data_width, m_axi.id_width) != \
            (full.addr_width, full.data_width, full.id_width):
        raise ValueError(f"dut.{port} is {m_axi!r} but the model serves {full!r}")
    exposed = {k: v for k, v in dut.signature.members.items() if k != port}
    if name in exposed:
        raise ValueError(f"dut already has a member {name!r}; pass another name")
    members = {**exposed, name: In(backdoor_signature(model.words))}

    class SimTop(wiring.Component):
        extra_verilog = {f"{STORAGE_MODULE}.v": STORAGE_VERILOG}

        def __init__(self):
            super().__init__(members)

        def elaborate(self, platform):
            m = Module()
            m.submodules.dut = dut
            m.submodules.mem = model
            forward(m, wiring.flipped(model.s_axi), getattr(dut, port))
            wiring.connect(m, wiring.flipped(getattr(self, name)), model.backdoor)
            for key, member in exposed.items():
                outer, inner = getattr(self, key), getattr(dut, key)
                if member.is_signature:
                    wiring.connect(m, wiring.flipped(outer), inner)
                elif member.flow == In:
                    m.d.comb += inner.eq(outer)
                else:
                    m.d.comb += outer.eq(inner)
            return m

    return SimTop()


class AxiMemBackdoor:
    """cocotb side of the backdoor: bulk load and read-back of an `AxiMemModel`.

    Each call needs the clock running, takes one to two cycles of simulated time, and must
    not overlap AXI traffic to the same addresses (the model does not order backdoor accesses
    against bursts). ``dut`` is the `with_memory` top; the hex files live in the simulator's
    working folder only during the call.
    """

    def __init__(self, dut, *, bus_bytes: int, name: str = "ddr", clock=None):
        self.bus_bytes = bus_bytes
        self.clock = clock if clock is not None else dut.clk
        self._load = getattr(dut, f"{name}__load")
        self._dump = getattr(dut, f"{name}__dump")
        self._first = getattr(dut, f"{name}__dump_first")
        self._last = getattr(dut, f"{name}__dump_last")
        self._load_file = Path(f"{name}.load.hex")
        self._dump_file = Path(f"{name}.dump.hex")

    async def write(self, addr: int, payload: bytes) -> None:
        """Store ``payload`` at byte address ``addr`` (unaligned edges read-modify-write)."""
        bb = self.bus_bytes
        if not payload:
            return
        lo, hi = addr - addr % bb, -(-(addr + len(payload)) // bb) * bb
        if (lo, hi) != (addr, addr + len(payload)):
            buf = bytearray(await self.read(lo, hi - lo))
            buf[addr - lo:addr - lo + len(payload)] = payload
            payload = bytes(buf)
        # One line of 2*bb hex digits per word, most significant byte first, after an
        # "@<word index>" line that tells $readmemh where to start.
        rows = np.frombuffer(payload, np.uint8).reshape(-1, bb)[:, ::-1].tobytes().hex()
        rows = np.frombuffer(rows.encode("ascii"), np.uint8).reshape(-1, 2 * bb)
        newlines = np.full((len(rows), 1), ord("\n"), np.uint8)
        text = np.hstack([rows, newlines]).tobytes()
        self._load_file.write_bytes(f"@{lo // bb:x}\n".encode() + text)
        await self._pulse(self._load)
        self._load_file.unlink()

    async def read(self, addr: int, length: int) -> bytes:
        """Return ``length`` bytes from byte address ``addr``."""
        bb = self.bus_bytes
        if length <= 0:
            return b""
        lo, hi = addr // bb, -(-(addr + length) // bb)
        self._first.value = lo
        self._last.value = hi - 1
        await self._pulse(self._dump)
        # Verilator writes one plain hex word per line (no comments or addresses), and
        # bytes.fromhex skips the newlines.
        raw = np.frombuffer(bytes.fromhex(self._dump_file.read_text()), np.uint8)
        self._dump_file.unlink()
        data = raw.reshape(-1, bb)[:, ::-1].tobytes()
        return data[addr - lo * bb:addr - lo * bb + length]

    async def _pulse(self, signal) -> None:
        # High for exactly one rising edge; the storage acts on that edge, and by the falling
        # edge its $readmemh/$writememh has run.
        signal.value = 1
        await RisingEdge(self.clock)
        signal.value = 0
        await FallingEdge(self.clock)
