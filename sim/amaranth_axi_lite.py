"""A minimal AXI4-Lite manager for Amaranth testbenches: one transfer at a time, AW and W
presented together, every response checked to be OKAY."""
from rtl_gen.axi import RESP_OKAY


class LiteMaster:
    def __init__(self, bus):
        self.bus = bus

    async def write(self, ctx, addr, value):
        bus = self.bus
        for sig, v in ((bus.awaddr, addr), (bus.wdata, value), (bus.wstrb, 0xF),
                       (bus.awvalid, 1), (bus.wvalid, 1), (bus.bready, 1)):
            ctx.set(sig, v)
        await ctx.tick().until(bus.awready)
        ctx.set(bus.awvalid, 0)
        ctx.set(bus.wvalid, 0)
        (resp,) = await ctx.tick().sample(bus.bresp).until(bus.bvalid)
        ctx.set(bus.bready, 0)
        assert resp == RESP_OKAY, f"AXI4-Lite write to {addr:#x} answered {resp}"

    async def read(self, ctx, addr):
        bus = self.bus
        ctx.set(bus.araddr, addr)
        ctx.set(bus.arvalid, 1)
        await ctx.tick().until(bus.arready)
        ctx.set(bus.arvalid, 0)
        ctx.set(bus.rready, 1)
        data, resp = await ctx.tick().sample(bus.rdata, bus.rresp).until(bus.rvalid)
        ctx.set(bus.rready, 0)
        assert resp == RESP_OKAY, f"AXI4-Lite read of {addr:#x} answered {resp}"
        return data
