# amaranth: UnusedElaboratable=no
"""AXI4-Lite register file: map table, bus behaviour and core-side signals, in simulation."""
import random

import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from rtl_gen.axi import RESP_OKAY, RESP_SLVERR
from rtl_gen.regs import (ACCEL_ID, LAYER_CYCLES_BASE, REGMAP_VERSION, RegisterFile,
                          register_fields, register_map)

REG = {r.name: r.offset for r in register_map()}
N_LAYERS = 12


class LiteMaster:
    """AXI4-Lite manager for testbenches: random gaps before each valid and ready, AW and W
    presented independently, valid held until its handshake."""

    def __init__(self, bus, rng):
        self.bus = bus
        self.rng = rng

    def _gap(self):
        return self.rng.choice([0, 0, 1, 3])

    async def write(self, ctx, addr, value, strb=0xF):
        bus = self.bus
        ctx.set(bus.awaddr, addr)
        ctx.set(bus.wdata, value)
        ctx.set(bus.wstrb, strb)
        aw_at, w_at, b_at = self._gap(), self._gap(), self._gap()
        aw_done = w_done = False
        cycle = 0
        while True:
            ctx.set(bus.awvalid, int(not aw_done and cycle >= aw_at))
            ctx.set(bus.wvalid, int(not w_done and cycle >= w_at))
            ctx.set(bus.bready, int(cycle >= b_at))
            _, _, awv, awr, wv, wr, bv, br, resp = await ctx.tick().sample(
                bus.awvalid, bus.awready, bus.wvalid, bus.wready, bus.bvalid, bus.bready,
                bus.bresp)
            aw_done |= bool(awv and awr)
            w_done |= bool(wv and wr)
            cycle += 1
            assert cycle < 50, "AXI-Lite write did not complete"
            if bv and br:
                assert aw_done and w_done, "B before both AW and W were taken"
                ctx.set(bus.bready, 0)
                return resp

    async def read(self, ctx, addr):
        bus = self.bus
        ctx.set(bus.araddr, addr)
        ar_at, r_at = self._gap(), self._gap()
        ar_done = False
        cycle = 0
        while True:
            ctx.set(bus.arvalid, int(not ar_done and cycle >= ar_at))
            ctx.set(bus.rready, int(cycle >= r_at))
            _, _, arv, arr, rv, rr, data, resp = await ctx.tick().sample(
                bus.arvalid, bus.arready, bus.rvalid, bus.rready, bus.rdata, bus.rresp)
            ar_done |= bool(arv and arr)
            cycle += 1
            assert cycle < 50, "AXI-Lite read did not complete"
            if rv and rr:
                assert ar_done
                ctx.set(bus.rready, 0)
                return data, resp

    async def read_ok(self, ctx, addr):
        data, resp = await self.read(ctx, addr)
        assert resp == RESP_OKAY, f"read of {addr:#x} answered {resp}"
        return data


def run(bench, seed=0, n_layers=N_LAYERS):
    """Simulate `bench(ctx, dut, master, pulses)`; `pulses` lists the cycles on which
    start / soft_reset were high, as recorded by a background monitor."""
    dut = RegisterFile(n_layers=n_layers)
    master = LiteMaster(dut.s_axi, random.Random(seed))
    pulses = {"start": [], "soft_reset": []}
    state = {"cycle": 0}

    async def monitor(ctx):
        while True:
            _, _, start, soft_reset = await ctx.tick().sample(dut.start, dut.soft_reset)
            if start:
                pulses["start"].append(state["cycle"])
            if soft_reset:
                pulses["soft_reset"].append(state["cycle"])
            state["cycle"] += 1

    async def main(ctx):
        await bench(ctx, dut, master, pulses)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(monitor, background=True)
    sim.add_testbench(main)
    sim.run()


async def pulse(ctx, signal):
    ctx.set(signal, 1)
    await ctx.tick()
    ctx.set(signal, 0)


# ---- the map as data ------------------------------------------------------------------------

def test_register_map_is_consistent():
    regs = register_map(N_LAYERS)
    names = [r.name for r in regs]
    assert len(set(names)) == len(names)
    spans = sorted((r.offset, r.offset + 4 * r.count) for r in regs)
    assert all(off % 4 == 0 for off, _ in spans)
    assert all(end <= nxt for (_, end), (nxt, _) in zip(spans, spans[1:])), "overlap"
    assert {r.access for r in regs} <= {"RO", "RW", "RW1C"}
    assert all(isinstance(r.description, str) and r.description for r in regs)
    assert regs[-1].name == "LAYER_CYCLES" and regs[-1].count == N_LAYERS
    by_name = {r.name: r for r in regs}
    for reg_name in {f.register for f in register_fields()}:
        assert reg_name in by_name
        fields = sorted((f.lsb, f.lsb + f.width) for f in register_fields()
                        if f.register == reg_name)
        assert all(end <= nxt for (_, end), (nxt, _) in zip(fields, fields[1:]))
        assert fields[-1][1] <= 32
    with pytest.raises(ValueError):
        RegisterFile(n_layers=1024, addr_width=12)


# ---- bus behaviour --------------------------------------------------------------------------

def test_identity_and_read_only_inputs():
    async def bench(ctx, dut, m, pulses):
        assert await m.read_ok(ctx, REG["ID"]) == ACCEL_ID
        assert await m.read_ok(ctx, REG["VERSION"]) == REGMAP_VERSION
        ctx.set(dut.error_code, 0xA5)
        ctx.set(dut.layer_count, 29)
        assert await m.read_ok(ctx, REG["ERROR_CODE"]) == 0xA5
        assert await m.read_ok(ctx, REG["LAYER_COUNT"]) == 29
        assert await m.write(ctx, REG["ID"], 0) == RESP_OKAY          # RO: ignored
        assert await m.write(ctx, REG["LAYER_COUNT"], 0) == RESP_OKAY
        assert await m.read_ok(ctx, REG["ID"]) == ACCEL_ID
        assert await m.read_ok(ctx, REG["LAYER_COUNT"]) == 29
        ctx.set(dut.busy, 1)
        assert await m.read_ok(ctx, REG["STATUS"]) & 1
        ctx.set(dut.busy, 0)
        assert not await m.read_ok(ctx, REG["STATUS"]) & 1

    run(bench)


def test_unmapped_offsets_answer_slverr():
    async def bench(ctx, dut, m, pulses):
        for addr in (0x28, 0x80, 0xFC, LAYER_CYCLES_BASE + 4 * N_LAYERS, 0xFFC):
            data, resp = await m.read(ctx, addr)
            assert (data, resp) == (0, RESP_SLVERR), hex(addr)
            assert await m.write(ctx, addr, 0xFFFFFFFF) == RESP_SLVERR, hex(addr)
        assert await m.read_ok(ctx, REG["ID"]) == ACCEL_ID

    run(bench)


@pytest.mark.parametrize("seed", [1, 2])
def test_prog_addr_read_write_with_byte_strobes(seed):
    rng = random.Random(seed)

    async def bench(ctx, dut, m, pulses):
        lo, hi = rng.getrandbits(32), rng.getrandbits(32)
        await m.write(ctx, REG["PROG_ADDR_LO"], lo)
        await m.write(ctx, REG["PROG_ADDR_HI"], hi)
        assert ctx.get(dut.prog_addr) == hi << 32 | lo
        for _ in range(6):
            value, strb = rng.getrandbits(32), rng.getrandbits(4)
            mask = sum(0xFF << 8 * i for i in range(4) if strb >> i & 1)
            lo = (lo & ~mask) | (value & mask)
            assert await m.write(ctx, REG["PROG_ADDR_LO"], value, strb) == RESP_OKAY
            assert await m.read_ok(ctx, REG["PROG_ADDR_LO"]) == lo
        assert await m.read_ok(ctx, REG["PROG_ADDR_HI"]) == hi
        assert ctx.get(dut.prog_addr) == hi << 32 | lo

    run(bench, seed)


def test_ctrl_start_and_soft_reset_are_single_cycle_pulses():
    async def bench(ctx, dut, m, pulses):
        await m.write(ctx, REG["CTRL"], 0b001)
        await ctx.tick().repeat(3)
        assert len(pulses["start"]) == 1 and pulses["soft_reset"] == []
        assert await m.read_ok(ctx, REG["CTRL"]) == 0                 # START reads 0
        await m.write(ctx, REG["CTRL"], 0b011)                        # start + irq enable
        await ctx.tick().repeat(3)
        assert len(pulses["start"]) == 2
        assert await m.read_ok(ctx, REG["CTRL"]) == 0b010
        await m.write(ctx, REG["CTRL"], 0b110)                        # soft reset, keep irq_en
        await ctx.tick().repeat(3)
        assert len(pulses["soft_reset"]) == 1 and len(pulses["start"]) == 2
        assert await m.read_ok(ctx, REG["CTRL"]) == 0b010
        await m.write(ctx, REG["CTRL"], 0b111, strb=0b1110)           # byte 0 not written
        await ctx.tick().repeat(3)
        assert len(pulses["start"]) == 2 and len(pulses["soft_reset"]) == 1
        await m.write(ctx, REG["STATUS"], 0b001)                      # other registers: no pulse
        assert len(pulses["start"]) == 2

    run(bench)


def test_status_sticky_bits_write_one_to_clear_and_irq():
    async def bench(ctx, dut, m, pulses):
        assert await m.read_ok(ctx, REG["STATUS"]) == 0
        await pulse(ctx, dut.done)
        await ctx.tick().repeat(5)
        assert await m.read_ok(ctx, REG["STATUS"]) == 0b010           # sticky
        assert not ctx.get(dut.irq)                                   # irq disabled
        await m.write(ctx, REG["CTRL"], 0b010)
        assert ctx.get(dut.irq)
        await m.write(ctx, REG["STATUS"], 0b101)                      # W1C of other bits only
        assert await m.read_ok(ctx, REG["STATUS"]) == 0b010 and ctx.get(dut.irq)
        await m.write(ctx, REG["STATUS"], 0b010)
        assert await m.read_ok(ctx, REG["STATUS"]) == 0 and not ctx.get(dut.irq)

        await pulse(ctx, dut.error)
        assert await m.read_ok(ctx, REG["STATUS"]) == 0b100
        assert not ctx.get(dut.irq)                                   # irq is DONE only
        await m.write(ctx, REG["STATUS"], 0b100)
        assert await m.read_ok(ctx, REG["STATUS"]) == 0

        # A done pulse on the very edge that takes the clearing write survives it.
        bus = dut.s_axi
        for sig, value in ((bus.awaddr, REG["STATUS"]), (bus.wdata, 0b010), (bus.wstrb, 0xF),
                           (bus.awvalid, 1), (bus.wvalid, 1), (bus.bready, 1), (dut.done, 1)):
            ctx.set(sig, value)
        _, _, taken = await ctx.tick().sample(bus.awready)
        assert taken
        for sig in (bus.awvalid, bus.wvalid, dut.done):
            ctx.set(sig, 0)
        await ctx.tick().until(bus.bvalid)
        ctx.set(bus.bready, 0)
        assert await m.read_ok(ctx, REG["STATUS"]) == 0b010

        await pulse(ctx, dut.error)
        await m.write(ctx, REG["CTRL"], 0b100)                        # soft reset clears both
        await ctx.tick()
        assert await m.read_ok(ctx, REG["STATUS"]) == 0

    run(bench)


def test_cycle_counter_counts_busy_cycles_and_restarts_on_start():
    async def bench(ctx, dut, m, pulses):
        await m.write(ctx, REG["CTRL"], 0b001)
        ctx.set(dut.busy, 1)
        await ctx.tick().repeat(37)
        ctx.set(dut.busy, 0)
        assert await m.read_ok(ctx, REG["CYCLES_LO"]) == 37
        assert await m.read_ok(ctx, REG["CYCLES_HI"]) == 0
        await ctx.tick().repeat(10)                                   # idle: no counting
        assert await m.read_ok(ctx, REG["CYCLES_LO"]) == 37
        await m.write(ctx, REG["CTRL"], 0b001)
        await ctx.tick()
        assert await m.read_ok(ctx, REG["CYCLES_LO"]) == 0

    run(bench)


def test_layer_cycle_array_written_by_core_read_over_bus():
    rng = random.Random(3)
    values = {i: rng.getrandbits(32) for i in range(N_LAYERS)}

    async def bench(ctx, dut, m, pulses):
        port = dut.layer_cycles
        for i in rng.sample(range(N_LAYERS), N_LAYERS):
            ctx.set(port.index, i)
            ctx.set(port.value, values[i])
            await pulse(ctx, port.strobe)
        ctx.set(port.index, 3)
        ctx.set(port.value, 0xDEADBEEF)
        await ctx.tick().repeat(2)                                    # no strobe, no write
        for i in range(N_LAYERS):
            assert await m.read_ok(ctx, LAYER_CYCLES_BASE + 4 * i) == values[i], i
        assert await m.write(ctx, LAYER_CYCLES_BASE, 0) == RESP_OKAY  # read-only
        assert await m.read_ok(ctx, LAYER_CYCLES_BASE) == values[0]

    run(bench)


# ---- Verilog --------------------------------------------------------------------------------

def test_register_file_converts_to_verilog_with_axi_lite_port_names():
    text = verilog.convert(RegisterFile(n_layers=32), name="RegisterFile")
    for name in ("awaddr", "awvalid", "awready", "wdata", "wstrb", "wvalid", "wready",
                 "bresp", "bvalid", "bready", "araddr", "arvalid", "arready",
                 "rdata", "rresp", "rvalid", "rready"):
        assert f"s_axi__{name};" in text, name
    for port in ("output start;", "output soft_reset;", "output irq;",
                 "output [63:0] prog_addr;", "input [4:0] layer_cycles__index;",
                 "input layer_cycles__strobe;", "input [31:0] layer_cycles__value;"):
        assert port in text, port
