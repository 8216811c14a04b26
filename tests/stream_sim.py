"""Shared testbench pieces for the RTL tests: streams with random valid/ready, array payloads
packed into words, random int8 data with the extremes, and the simulator set-up."""
import numpy as np
from amaranth.sim import Simulator

IDLE_LIMIT = 5000    # cycles without an output before a test gives up on a hung unit
                     # (a 16-logit softmax computes ~1,100 cycles before its first output)


def pack(values, width):
    """Signed lane values into one word, lane 0 in the low bits."""
    word = 0
    for i, v in enumerate(np.ravel(values)):
        word |= (int(v) & ((1 << width) - 1)) << (i * width)
    return word


def unpack(word, width, n):
    """The `n` signed `width`-bit lanes of a word, lane 0 first."""
    vals = [(word >> (i * width)) & ((1 << width) - 1) for i in range(n)]
    return [v - (1 << width) if v >> (width - 1) else v for v in vals]


def int8(rng, shape, kind):
    """Random int8 values, or the extremes (all -128 for "min", all 127 for "max") that stress
    the differences and the sums."""
    if kind == "min":
        return np.full(shape, -128, np.int8)
    if kind == "max":
        return np.full(shape, 127, np.int8)
    return rng.integers(-128, 128, shape).astype(np.int8)


def set_ports(ctx, dut, ports):
    """Set the DUT's ports named by the keys of `ports` to its values."""
    for port, value in ports.items():
        ctx.set(getattr(dut, port), value)


async def send(ctx, stream, beat, rng, valid_prob=1.0, also=()):
    """Offer one beat on `stream` after random idle cycles (one each time
    `rng.random() >= valid_prob`) and hold it until taken. An int beat is the payload's raw
    bits; the (signal, value) pairs in `also` are set together with the payload."""
    while rng.random() >= valid_prob:
        await ctx.tick()
    for signal, value in also:
        ctx.set(signal, value)
    ctx.set(stream.payload.as_value() if isinstance(beat, int) else stream.payload, beat)
    ctx.set(stream.valid, 1)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


def producer(stream, beats, rng, valid_prob=1.0):
    """A testbench sending `beats` on `stream` one after the other, see `send`."""
    async def testbench(ctx):
        for beat in beats:
            await send(ctx, stream, beat, rng, valid_prob)
    return testbench


async def collect(ctx, stream, count, rng, ready_prob=1.0, raw=False, idle_limit=IDLE_LIMIT):
    """Take `count` beats from `stream`, raising ready each cycle when
    `rng.random() < ready_prob`. Checks that a valid beat holds until it is taken, and fails
    rather than hang after `idle_limit` cycles without a beat. Returns the payloads (the raw
    bits if `raw`), the cycle of each transfer (the first cycle is 0) and the cycles taken."""
    payloads, at, held, idle, cycle = [], [], None, 0, 0
    while len(payloads) < count:
        ready = int(rng.random() < ready_prob)
        ctx.set(stream.ready, ready)
        _, _, valid, payload = await ctx.tick().sample(
            stream.valid, stream.payload.as_value() if raw else stream.payload)
        if held is not None:
            assert valid and payload == held, "output changed before it was taken"
        held = payload if valid and not ready else None
        if valid and ready:
            payloads.append(payload)
            at.append(cycle)
            idle = 0
        cycle += 1
        idle += 1
        assert idle < idle_limit, f"no output for {idle_limit} cycles after {len(payloads)}"
    return payloads, at, cycle


def run_sim(dut, *testbenches, background=()):
    """Simulate `dut` on a 100 MHz clock until every testbench in `testbenches` returns."""
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for bench in background:
        sim.add_testbench(bench, background=True)
    for bench in testbenches:
        sim.add_testbench(bench)
    sim.run()


def run_stream(dut, beats, n_out, ports=None, seed=0, valid_prob=1.0, ready_prob=1.0):
    """Set `ports`, drive `beats` into dut.i_stream and collect `n_out` payloads from
    dut.o_stream, with random gaps and back-pressure from one generator seeded `seed`;
    returns (outputs, cycle of each output transfer)."""
    rng = np.random.default_rng(seed)
    result = []

    async def send_all(ctx):
        set_ports(ctx, dut, ports or {})
        await producer(dut.i_stream, beats, rng, valid_prob)(ctx)

    async def take_all(ctx):
        result.extend(await collect(ctx, dut.o_stream, n_out, rng, ready_prob))

    run_sim(dut, take_all, background=[send_all])
    outputs, cycles, _ = result
    return outputs, cycles


def check_beats(outputs, expected):
    """Every output beat starts with the expected lanes (the rest are padding)."""
    assert len(outputs) == len(expected)
    for i, (got, want) in enumerate(zip(outputs, expected)):
        assert got[:len(want)] == list(want), f"output beat {i}"
