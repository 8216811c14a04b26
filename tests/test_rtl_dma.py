"""AXI4 DMA engines against the behavioural AXI RAM, in Amaranth's simulator.

Every data check is byte for byte against the RAM model's backing store; the model itself
checks the AXI rules (stable valid/payload, legal bursts, wlast) on every cycle.
"""
import random
import re
from collections import deque

import pytest
from amaranth.back import verilog
from amaranth.hdl import ClockDomain, Module
from amaranth.sim import Simulator

from rtl_gen.config import AccelConfig
from rtl_gen.dma import AxiDMA, BurstSplitter, ReadDMA, WriteDMA
from rtl_gen.axi import AXI4Signature
from sim.amaranth_axi_ram import AxiProtocolError, AxiRam
from stream_sim import run_sim

DEFAULT = AccelConfig()                                              # 64-bit, 16 beats, 4 out
SMALL = AccelConfig(bus_bytes=4, max_burst=4, max_outstanding=2)     # many small bursts
WIDE = AccelConfig(bus_bytes=16, max_burst=256, max_outstanding=1)   # whole-page bursts
RAM_BYTES = 3 * 4096


def split_reference(addr, length, cfg):
    """The bursts AXI4 allows: at most max_burst beats, never across 4 KiB."""
    bursts = []
    while length > 0:
        to_page = (4096 - addr % 4096) // cfg.bus_bytes
        beats = min(length // cfg.bus_bytes, cfg.max_burst, to_page)
        bursts.append((addr, beats))
        addr += beats * cfg.bus_bytes
        length -= beats * cfg.bus_bytes
    return bursts


def random_commands(rng, cfg, count):
    """(addr, length) pairs clustered around 4 KiB boundaries, 1 to ~3 bursts long."""
    commands = []
    for _ in range(count):
        page = rng.randrange(1, RAM_BYTES // 4096)
        before = rng.randrange(0, min(2 * cfg.max_burst + 2, 4096 // cfg.bus_bytes))
        addr = page * 4096 - before * cfg.bus_bytes
        beats = rng.choice([1, cfg.max_burst - 1, cfg.max_burst, cfg.max_burst + 1,
                            rng.randrange(1, 3 * cfg.max_burst + 3)])
        beats = max(1, min(beats, (RAM_BYTES - addr) // cfg.bus_bytes))
        commands.append((addr, beats * cfg.bus_bytes))
    return commands


def stream_commands(rng, cfg):
    """The commands of a streaming test: 20 random ones, or for WIDE 3 and a full-page burst
    followed by a short one."""
    commands = random_commands(rng, cfg, 20 if cfg is not WIDE else 3)
    if cfg is WIDE:
        commands.append((4096, 4096 + 64))
    return commands


STREAM_CASES = pytest.mark.parametrize(
    "cfg,stall", [(DEFAULT, 0.0), (DEFAULT, 0.5), (SMALL, 0.3), (WIDE, 0.2)],
    ids=["default-nostall", "default-stall", "small-stall", "wide-stall"])


def filled_ram(cfg, seed, **kwargs):
    ram = AxiRam(RAM_BYTES, bus_bytes=cfg.bus_bytes, seed=seed, **kwargs)
    ram.load(0, random.Random(seed).randbytes(RAM_BYTES))
    return ram


async def send_command(ctx, cmd, addr, length):
    ctx.set(cmd.payload.addr, addr)
    ctx.set(cmd.payload.length, length)
    ctx.set(cmd.valid, 1)
    await ctx.tick().until(cmd.ready)
    ctx.set(cmd.valid, 0)


async def wait_done(ctx, done, limit):
    """Wait for the done pulse and return the cycles it took; fail instead of hanging if it
    does not come within `limit`."""
    for cycle in range(limit):
        _, _, pulse = await ctx.tick().sample(done)
        if pulse:
            return cycle
    raise AssertionError(f"command did not complete within {limit} cycles")


async def clear_error(ctx, dut):
    """Pulse error_clear and check that the sticky error flag drops."""
    ctx.set(dut.error_clear, 1)
    await ctx.tick()
    ctx.set(dut.error_clear, 0)
    assert not ctx.get(dut.error)


def stream_sink(out, beats, rng, stall):
    """Background testbench taking stream beats with random ready, checking valid is held."""
    async def run(ctx):
        held = None
        while True:
            ready = int(rng.random() >= stall)
            ctx.set(out.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(out.valid, out.payload)
            if held is not None:
                assert valid and payload == held, "stream valid/payload not held until ready"
            held = payload if valid and not ready else None
            if valid and ready:
                beats.append(payload)
    return run


def stream_source(src, words, rng, stall):
    """Background testbench offering `words` (a deque, refilled by the test) with gaps."""
    async def run(ctx):
        offered = False
        while True:
            if not offered and words and rng.random() >= stall:
                ctx.set(src.payload, words.popleft())
                offered = True
            ctx.set(src.valid, int(offered))
            _, _, ready = await ctx.tick().sample(src.ready)
            if offered and ready:
                offered = False
    return run


def to_bytes(words, cfg):
    return b"".join(w.to_bytes(cfg.bus_bytes, "little") for w in words)


def words_of(payload, cfg):
    bb = cfg.bus_bytes
    return [int.from_bytes(payload[i:i + bb], "little") for i in range(0, len(payload), bb)]


# ---- burst splitting ------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", [DEFAULT, SMALL, WIDE], ids=["default", "small", "wide"])
def test_burst_splitter_matches_axi_rules(cfg):
    dut = BurstSplitter(cfg)
    rng = random.Random(5)
    commands = random_commands(rng, cfg, 12) + [(4096 - cfg.bus_bytes, 2 * cfg.bus_bytes)]
    shift = cfg.bus_bytes.bit_length() - 1

    async def bench(ctx):
        for addr, length in commands:
            ctx.set(dut.load_addr, addr >> shift)
            ctx.set(dut.load_beats, length >> shift)
            ctx.set(dut.load, 1)
            await ctx.tick()
            ctx.set(dut.load, 0)
            got, cycles = [], 0
            while not ctx.get(dut.empty):
                # The first burst comes two cycles after load, then one a cycle.
                assert ctx.get(dut.valid) == (cycles > 0), (addr, length, cycles)
                if ctx.get(dut.valid):
                    got.append((ctx.get(dut.addr) << shift, ctx.get(dut.beats)))
                ctx.set(dut.next, ctx.get(dut.valid))
                await ctx.tick()
                ctx.set(dut.next, 0)
                cycles += 1
            assert got == split_reference(addr, length, cfg), (addr, length)
            assert cycles == len(got) + 1, (addr, length)

    run_sim(dut, bench)


# ---- read side ------------------------------------------------------------------------------

@STREAM_CASES
def test_read_dma_streams_memory_in_order(cfg, stall):
    dut = ReadDMA(cfg)
    rng = random.Random(11)
    ram = filled_ram(cfg, 1, read_latency=5, stall=stall)
    commands = stream_commands(rng, cfg)
    beats = []

    async def bench(ctx):
        for addr, length in commands:
            beats.clear()
            await send_command(ctx, dut.cmd, addr, length)
            assert ctx.get(dut.busy)
            await wait_done(ctx, dut.done, 40 * length // cfg.bus_bytes + 200)
            assert to_bytes(beats, cfg) == ram.dump(addr, length), (addr, length)
            assert not ctx.get(dut.busy) and not ctx.get(dut.error)

    run_sim(dut, bench,
            background=[ram.testbench(dut.m_axi), stream_sink(dut.data, beats, rng, stall)])
    assert ram.read_bursts == sum(len(split_reference(a, n, cfg)) for a, n in commands)
    assert 1 <= ram.max_reads_in_flight <= cfg.max_outstanding


@pytest.mark.parametrize("cfg", [DEFAULT, SMALL], ids=["default", "small"])
def test_read_dma_keeps_max_outstanding_bursts_in_flight(cfg):
    """With a long latency the DMA fills its outstanding budget, never more, and streams at
    close to one beat a cycle."""
    dut = ReadDMA(cfg)
    latency = 30
    ram = filled_ram(cfg, 2, read_latency=latency)
    addr, length = 0, 2048
    beats = []
    cycles = []

    async def bench(ctx):
        await send_command(ctx, dut.cmd, addr, length)
        cycles.append(await wait_done(ctx, dut.done, 10 * length))

    run_sim(dut, bench, background=[ram.testbench(dut.m_axi),
                                    stream_sink(dut.data, beats, random.Random(0), 0)])
    assert to_bytes(beats, cfg) == ram.dump(addr, length)
    assert ram.max_reads_in_flight == cfg.max_outstanding
    n_beats, n_bursts = length // cfg.bus_bytes, length // cfg.bus_bytes // cfg.max_burst
    # Either the bus (a beat a cycle) or the latency per round of max_outstanding bursts
    # limits; a DMA with one burst in flight would need n_bursts * (latency + max_burst).
    round_trip = latency + 6
    bound = max(n_beats, n_bursts // cfg.max_outstanding * round_trip) + round_trip
    assert cycles[0] <= bound, (cycles[0], bound)


def test_read_dma_zero_length_completes():
    dut = ReadDMA(DEFAULT)
    ram = filled_ram(DEFAULT, 3)
    beats = []

    async def bench(ctx):
        await send_command(ctx, dut.cmd, 0x100, 0)
        await wait_done(ctx, dut.done, 10)

    run_sim(dut, bench, background=[ram.testbench(dut.m_axi),
                                    stream_sink(dut.data, beats, random.Random(0), 0)])
    assert beats == [] and ram.read_bursts == 0


@pytest.mark.parametrize("where", ["slverr", "decerr"])
def test_read_error_finishes_command_and_is_sticky(where):
    cfg = DEFAULT
    dut = ReadDMA(cfg)
    rng = random.Random(4)
    if where == "slverr":
        ram = filled_ram(cfg, 4, stall=0.3, error_ranges=[(0x1040, 0x1048)])
        bad_addr, bad_len = 0x1000, 0x200               # 4 bursts, the second one faults
    else:
        ram = filled_ram(cfg, 4, stall=0.3)
        bad_addr, bad_len = RAM_BYTES - 0x40, 0x80      # runs off the end of the RAM
    good_addr, good_len = 0x2010, 0x148
    beats = []

    async def bench(ctx):
        await send_command(ctx, dut.cmd, bad_addr, bad_len)
        await wait_done(ctx, dut.done, 2000)
        assert ctx.get(dut.error) and not ctx.get(dut.busy)
        assert len(beats) == bad_len // cfg.bus_bytes
        got, want = to_bytes(beats, cfg), ram.dump(bad_addr, bad_len)
        assert got[:0x40] == want[:0x40]                # beats before the fault are intact
        beats.clear()
        # Sticky through a good command, cleared only by error_clear.
        await send_command(ctx, dut.cmd, good_addr, good_len)
        await wait_done(ctx, dut.done, 2000)
        assert ctx.get(dut.error)
        assert to_bytes(beats, cfg) == ram.dump(good_addr, good_len)
        await clear_error(ctx, dut)

    run_sim(dut, bench,
            background=[ram.testbench(dut.m_axi), stream_sink(dut.data, beats, rng, 0.3)])


# ---- write side -----------------------------------------------------------------------------

@STREAM_CASES
def test_write_dma_stores_stream(cfg, stall):
    dut = WriteDMA(cfg)
    rng = random.Random(21)
    ram = filled_ram(cfg, 5, write_latency=4, stall=stall)
    commands = stream_commands(rng, cfg)
    expected = bytearray(ram.dump(0, RAM_BYTES))
    words = deque()

    async def bench(ctx):
        for addr, length in commands:
            payload = rng.randbytes(length)
            expected[addr:addr + length] = payload
            words.extend(words_of(payload, cfg))
            await send_command(ctx, dut.cmd, addr, length)
            await wait_done(ctx, dut.done, 40 * length // cfg.bus_bytes + 200)
            assert not words, "DMA finished before taking all its data"
            assert ram.dump(0, RAM_BYTES) == expected, (addr, length)
            assert not ctx.get(dut.busy) and not ctx.get(dut.error)

    run_sim(dut, bench,
            background=[ram.testbench(dut.m_axi), stream_source(dut.data, words, rng, stall)])
    assert ram.write_bursts == sum(len(split_reference(a, n, cfg)) for a, n in commands)
    assert 1 <= ram.max_writes_in_flight <= cfg.max_outstanding


def test_write_dma_takes_only_its_commands_beats():
    """Data offered ahead of a command stays in the stream until that command starts."""
    cfg = SMALL
    dut = WriteDMA(cfg)
    ram = filled_ram(cfg, 6)
    rng = random.Random(6)
    first, second = rng.randbytes(40), rng.randbytes(24)
    words = deque(words_of(first + second, cfg))

    async def bench(ctx):
        await send_command(ctx, dut.cmd, 0x800, len(first))
        await wait_done(ctx, dut.done, 500)
        assert len(words) + 1 >= len(second) // cfg.bus_bytes  # at most one word on offer
        await ctx.tick().repeat(20)
        assert ram.dump(0xFF0, 64) == filled_ram(cfg, 6).dump(0xFF0, 64)
        await send_command(ctx, dut.cmd, 0xFF0, len(second))
        await wait_done(ctx, dut.done, 500)
        assert ram.dump(0x800, len(first)) == first
        assert ram.dump(0xFF0, len(second)) == second

    run_sim(dut, bench,
            background=[ram.testbench(dut.m_axi), stream_source(dut.data, words, rng, 0)])


def test_write_error_finishes_command_and_is_sticky():
    cfg = DEFAULT
    dut = WriteDMA(cfg)
    rng = random.Random(7)
    ram = filled_ram(cfg, 7, stall=0.3, error_ranges=[(0x1100, 0x1108)])
    before = ram.dump(0, RAM_BYTES)
    addr, length = 0x1000, 0x300                        # 6 bursts, the third one faults
    payload = rng.randbytes(length)
    words = deque(words_of(payload, cfg))

    async def bench(ctx):
        await send_command(ctx, dut.cmd, addr, length)
        await wait_done(ctx, dut.done, 3000)
        assert ctx.get(dut.error) and not ctx.get(dut.busy)
        assert not words, "the faulting command must still drain its data stream"
        await clear_error(ctx, dut)

    run_sim(dut, bench,
            background=[ram.testbench(dut.m_axi), stream_source(dut.data, words, rng, 0.3)])
    faulting = slice(0x1100, 0x1180)                    # the 16-beat burst holding the error
    mem = ram.dump(0, RAM_BYTES)
    assert mem[faulting] == before[faulting]
    assert mem[addr:0x1100] == payload[:0x100]
    assert mem[0x1180:addr + length] == payload[0x180:]


# ---- both sides on one port -----------------------------------------------------------------

def test_axi_dma_reads_and_writes_concurrently():
    cfg = DEFAULT
    dut = AxiDMA(cfg)
    rng = random.Random(8)
    ram = filled_ram(cfg, 8, read_latency=8, stall=0.25)
    src_addr, dst_addr, length = 0x0F80, 0x2040, 0x400
    original = ram.dump(src_addr, length)
    payload = rng.randbytes(length)
    words = deque(words_of(payload, cfg))
    beats = []

    async def bench(ctx):
        await send_command(ctx, dut.rd_cmd, src_addr, length)
        await send_command(ctx, dut.wr_cmd, dst_addr, length)
        assert ctx.get(dut.rd_busy) and ctx.get(dut.wr_busy)
        pending = {"rd": True, "wr": True}
        for _ in range(3000):
            _, _, rd_done, wr_done = await ctx.tick().sample(dut.rd_done, dut.wr_done)
            pending["rd"] &= not rd_done
            pending["wr"] &= not wr_done
            if not any(pending.values()):
                break
        assert not any(pending.values()), pending
        assert not ctx.get(dut.rd_error) and not ctx.get(dut.wr_error)

    run_sim(dut, bench, background=[ram.testbench(dut.m_axi),
                                    stream_sink(dut.rd_data, beats, rng, 0.25),
                                    stream_source(dut.wr_data, words, rng, 0.25)])
    assert to_bytes(beats, cfg) == original
    assert ram.dump(dst_addr, length) == payload


# ---- the RAM model's own checker ------------------------------------------------------------

def _violation_dropped_valid(ctx, axi):
    ctx.set(axi.araddr, 0x40)
    ctx.set(axi.arvalid, 1)
    return [("arvalid", 0)]                         # withdrawn while the RAM stalls


def _violation_crosses_4k(ctx, axi):
    ctx.set(axi.araddr, 0x0FF8)
    ctx.set(axi.arlen, 1)
    ctx.set(axi.arvalid, 1)
    return []


def _violation_early_wlast(ctx, axi):
    ctx.set(axi.awaddr, 0x80)
    ctx.set(axi.awlen, 3)
    ctx.set(axi.awvalid, 1)
    ctx.set(axi.wvalid, 1)
    ctx.set(axi.wlast, 1)                           # on every beat of a 4-beat burst
    return []


@pytest.mark.parametrize("violation", [_violation_dropped_valid, _violation_crosses_4k,
                                       _violation_early_wlast])
def test_ram_model_rejects_protocol_violations(violation):
    """The checks the DMA tests rely on do fire: a hand-driven manager breaking a rule fails."""
    axi = AXI4Signature.from_config(DEFAULT).create()
    ram = AxiRam(RAM_BYTES, bus_bytes=8, stall=1.0 if violation is _violation_dropped_valid
                 else 0.0, seed=0)

    async def bench(ctx):
        ctx.set(axi.arsize, 3)
        ctx.set(axi.arburst, 1)
        ctx.set(axi.awsize, 3)
        ctx.set(axi.awburst, 1)
        later = violation(ctx, axi)
        await ctx.tick()
        for name, value in later:
            ctx.set(getattr(axi, name), value)
        for _ in range(10):
            await ctx.tick()

    clocked = Module()
    clocked.domains.sync = ClockDomain()
    sim = Simulator(clocked)
    sim.add_clock(1e-8)
    sim.add_testbench(ram.testbench(axi), background=True)
    sim.add_testbench(bench)
    with pytest.raises(AxiProtocolError):
        sim.run()


# ---- Verilog --------------------------------------------------------------------------------

# AMBA name -> (direction from the manager's side, width or None for the data/address buses)
AXI_PORTS = {
    "read": {"araddr": ("output", 32), "arlen": ("output", 8), "arsize": ("output", 3),
             "arburst": ("output", 2), "arid": ("output", 4), "arvalid": ("output", 1),
             "arready": ("input", 1), "rdata": ("input", 64), "rresp": ("input", 2),
             "rlast": ("input", 1), "rid": ("input", 4), "rvalid": ("input", 1),
             "rready": ("output", 1)},
    "write": {"awaddr": ("output", 32), "awlen": ("output", 8), "awsize": ("output", 3),
              "awburst": ("output", 2), "awid": ("output", 4), "awvalid": ("output", 1),
              "awready": ("input", 1), "wdata": ("output", 64), "wstrb": ("output", 8),
              "wlast": ("output", 1), "wvalid": ("output", 1), "wready": ("input", 1),
              "bresp": ("input", 2), "bid": ("input", 4), "bvalid": ("input", 1),
              "bready": ("output", 1)},
}


def top_ports(text, top):
    """{port: (direction, width)} of module `top` in Yosys-written Verilog."""
    body = text[text.index(f"module {top}("):]
    body = body[:body.index("endmodule")]
    return {name: (direction, int(msb) + 1 if msb else 1)
            for direction, msb, name in
            re.findall(r"^\s*(input|output)\s+(?:\[(\d+):0\]\s+)?(\w+);", body, re.M)}


@pytest.mark.parametrize("cls,halves", [(ReadDMA, ["read"]), (WriteDMA, ["write"]),
                                        (AxiDMA, ["read", "write"])])
def test_dma_converts_to_verilog_with_axi_port_names(cls, halves):
    ports = top_ports(verilog.convert(cls(DEFAULT), name=cls.__name__), cls.__name__)
    want = {f"m_axi__{n}": d for half in halves for n, d in AXI_PORTS[half].items()}
    assert {p: d for p, d in ports.items() if p.startswith("m_axi__")} == want
