"""A DDR-like AXI4 subordinate (slave) for Amaranth simulations, with a protocol checker.

`AxiRam` is a behavioural model run as an async testbench beside the design under test::

    ram = AxiRam(1 << 16, bus_bytes=8, read_latency=6, stall=0.3, seed=1)
    ram.load(0x100, payload)
    sim.add_testbench(ram.testbench(dut.m_axi), background=True)
    ...
    assert ram.dump(0x2000, 64) == expected

It binds to any interface with the flat AMBA member names of `rtl_gen.axi.AXI4Signature`
(read-only and write-only halves included) and serves whichever channels it finds.

What it models:
  * a bytearray backing store mapped at ``base``; beats outside it answer DECERR;
  * ``read_latency`` cycles from an accepted AR to its first R beat, ``write_latency``
    cycles from a burst's last W beat to its B;
  * random back-pressure: each cycle, with probability ``stall`` and independently per
    channel, AR/AW/W are not ready and R/B are not valid (seeded `random.Random`, so a
    failing run replays exactly);
  * error injection: beats whose address falls in one of ``error_ranges`` (half-open byte
    ranges) read as SLVERR with zero data; a write burst touching one answers SLVERR and
    writes nothing;
  * W data may arrive before its AW, as AXI4 allows.

Simplifications: responses come back in request order whatever the IDs (legal for a
subordinate, and what a single-ID manager sees anyway), bursts must be INCR with full-width
``*size`` and bus-aligned addresses, and read bursts are served one after another.

What it checks (raising `AxiProtocolError` in the testbench, which fails the simulation):
valid dropped or payload changed before the handshake on AR, AW and W; burst type, size,
alignment and 4 KiB crossing; ``wlast`` on exactly the last beat of each write burst.

It also records ``max_reads_in_flight`` (accepted ARs whose last R beat has not been taken)
and ``max_writes_in_flight`` (accepted AWs whose B has not been taken), plus burst counts,
so tests can check a manager's outstanding-transaction limit.
"""
from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

BURST_INCR = 0b01
RESP_OKAY = 0b00
RESP_SLVERR = 0b10
RESP_DECERR = 0b11
_BOUNDARY = 4096


class AxiProtocolError(AssertionError):
    """The manager under test broke an AXI4 rule."""


@dataclass
class _Burst:
    id: int
    addr: int
    beats: int
    due: int          # first cycle at which its response may be presented
    sent: int = 0     # read beats already taken by the manager


class AxiRam:
    """Behavioural AXI4 memory; see the module docstring."""

    def __init__(self, size: int, *, bus_bytes: int, base: int = 0, read_latency: int = 4,
                 write_latency: int = 2, stall: float = 0.0, seed: int = 0,
                 error_ranges=()):
        if read_latency < 1 or write_latency < 1:
            raise ValueError("latencies are at least one cycle")
        self.mem = bytearray(size)
        self.bus_bytes = bus_bytes
        self.base = base
        self.read_latency = read_latency
        self.write_latency = write_latency
        self.stall = stall
        self.error_ranges = [tuple(r) for r in error_ranges]
        self._rng = random.Random(seed)
        self.read_bursts = 0
        self.write_bursts = 0
        self.max_reads_in_flight = 0
        self.max_writes_in_flight = 0

    # ---- backing store -------------------------------------------------------------------

    def load(self, addr: int, payload: bytes) -> None:
        off = addr - self.base
        self.mem[off:off + len(payload)] = payload

    def dump(self, addr: int, length: int) -> bytes:
        off = addr - self.base
        return bytes(self.mem[off:off + length])

    def _beat_resp(self, addr: int) -> int:
        if not (self.base <= addr and addr + self.bus_bytes <= self.base + len(self.mem)):
            return RESP_DECERR
        if any(lo < addr + self.bus_bytes and addr < hi for lo, hi in self.error_ranges):
            return RESP_SLVERR
        return RESP_OKAY

    def _check_burst(self, kind: str, addr: int, length: int, size: int, burst: int) -> None:
        bb = self.bus_bytes
        if burst != BURST_INCR:
            raise AxiProtocolError(f"{kind}: burst type {burst}, only INCR is modelled")
        if 1 << size != bb:
            raise AxiProtocolError(f"{kind}: size {size} is not the full bus width ({bb} B)")
        if addr % bb:
            raise AxiProtocolError(f"{kind}: address {addr:#x} not aligned to {bb} B")
        if addr % _BOUNDARY + (length + 1) * bb > _BOUNDARY:
            raise AxiProtocolError(f"{kind}: burst {addr:#x}+{length + 1} beats crosses 4 KiB")

    def _ready(self) -> int:
        return int(self._rng.random() >= self.stall)

    # ---- the testbench -------------------------------------------------------------------

    def testbench(self, axi):
        """Return an async testbench serving ``axi``; add it with ``background=True``."""
        has_read = hasattr(axi, "arvalid")
        has_write = hasattr(axi, "awvalid")
        names = []
        if has_read:
            names += ["arvalid", "araddr", "arlen", "arsize", "arburst", "arid", "rready"]
        if has_write:
            names += ["awvalid", "awaddr", "awlen", "awsize", "awburst", "awid",
                      "wvalid", "wdata", "wstrb", "wlast", "bready"]
        sampled = [getattr(axi, n) for n in names]

        async def run(ctx):
            driven = {}

            def drive(name, value):
                if driven.get(name) != value:
                    ctx.set(getattr(axi, name), value)
                    driven[name] = value

            reads = deque()       # accepted read bursts, oldest first
            r_beat = None         # (rdata, rresp, rlast, rid) presented on R, or None
            writes = deque()      # accepted write bursts awaiting their data
            w_data = deque()      # (wdata, wstrb, wlast) beats not yet matched to an AW
            b_queue = deque()     # (due cycle, bresp, bid)
            b_resp = None         # (bresp, bid) presented on B, or None
            writes_in_flight = 0
            held = {}             # channel -> payload left waiting for its handshake
            cycle = 0
            while True:
                if has_read:
                    drive("arready", self._ready())
                    if r_beat is None and reads and reads[0].due <= cycle and self._ready():
                        head = reads[0]
                        addr = head.addr + head.sent * self.bus_bytes
                        resp = self._beat_resp(addr)
                        word = 0
                        if resp == RESP_OKAY:
                            off = addr - self.base
                            word = int.from_bytes(self.mem[off:off + self.bus_bytes], "little")
                        r_beat = (word, resp, int(head.sent == head.beats - 1), head.id)
                    drive("rvalid", int(r_beat is not None))
                    if r_beat is not None:
                        for n, v in zip(("rdata", "rresp", "rlast", "rid"), r_beat):
                            drive(n, v)
                if has_write:
                    drive("awready", self._ready())
                    drive("wready", self._ready())
                    if b_resp is None and b_queue and b_queue[0][0] <= cycle and self._ready():
                        _, resp, bid = b_queue.popleft()
                        b_resp = (resp, bid)
                    drive("bvalid", int(b_resp is not None))
                    if b_resp is not None:
                        drive("bresp", b_resp[0])
                        drive("bid", b_resp[1])

                _, _, *values = await ctx.tick().sample(*sampled)
                v = dict(zip(names, values))
                cycle += 1

                if has_read:
                    self._check_held(held, "AR", v["arvalid"],
                                     (v["araddr"], v["arlen"], v["arsize"], v["arburst"],
                                      v["arid"]), driven["arready"])
                    if v["arvalid"] and driven["arready"]:
                        self._check_burst("AR", v["araddr"], v["arlen"], v["arsize"],
                                          v["arburst"])
                        reads.append(_Burst(v["arid"], v["araddr"], v["arlen"] + 1,
                                            cycle - 1 + self.read_latency))
                        self.read_bursts += 1
                        self.max_reads_in_flight = max(self.max_reads_in_flight, len(reads))
                    if r_beat is not None and v["rready"]:
                        reads[0].sent += 1
                        if r_beat[2]:
                            reads.popleft()
                        r_beat = None
                if has_write:
                    self._check_held(held, "AW", v["awvalid"],
                                     (v["awaddr"], v["awlen"], v["awsize"], v["awburst"],
                                      v["awid"]), driven["awready"])
                    self._check_held(held, "W", v["wvalid"],
                                     (v["wdata"], v["wstrb"], v["wlast"]), driven["wready"])
                    if v["awvalid"] and driven["awready"]:
                        self._check_burst("AW", v["awaddr"], v["awlen"], v["awsize"],
                                          v["awburst"])
                        writes.append(_Burst(v["awid"], v["awaddr"], v["awlen"] + 1, 0))
                        writes_in_flight += 1
                        self.write_bursts += 1
                        self.max_writes_in_flight = max(self.max_writes_in_flight,
                                                        writes_in_flight)
                    if v["wvalid"] and driven["wready"]:
                        w_data.append((v["wdata"], v["wstrb"], v["wlast"]))
                    while writes and len(w_data) >= writes[0].beats:
                        burst = writes.popleft()
                        beats = [w_data.popleft() for _ in range(burst.beats)]
                        b_queue.append((cycle - 1 + self.write_latency,
                                        self._commit_write(burst, beats), burst.id))
                    if b_resp is not None and v["bready"]:
                        b_resp = None
                        writes_in_flight -= 1

        return run

    @staticmethod
    def _check_held(held: dict, channel: str, valid: int, payload: tuple, ready: int) -> None:
        """Valid must stay high, with the same payload, from assertion until handshake."""
        waiting = held.pop(channel, None)
        if waiting is not None:
            if not valid:
                raise AxiProtocolError(f"{channel}: valid dropped before the handshake")
            if payload != waiting:
                raise AxiProtocolError(f"{channel}: payload changed while waiting for ready")
        if valid and not ready:
            held[channel] = payload

    def _commit_write(self, burst: _Burst, beats) -> int:
        bb = self.bus_bytes
        for i, (_, _, last) in enumerate(beats):
            if last != (i == burst.beats - 1):
                raise AxiProtocolError(f"W: wlast={last} on beat {i} of a {burst.beats}-beat "
                                       f"burst at {burst.addr:#x}")
        addrs = [burst.addr + i * bb for i in range(burst.beats)]
        resp = max(self._beat_resp(a) for a in addrs)
        if resp == RESP_OKAY:
            for a, (word, strb, _) in zip(addrs, beats):
                off = a - self.base
                for lane, byte in enumerate(word.to_bytes(bb, "little")):
                    if strb >> lane & 1:
                        self.mem[off + lane] = byte
        return resp
