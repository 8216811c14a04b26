"""DepthwiseEngine in Amaranth's simulator against the numpy int8 reference."""
import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from quantize.reference import depthwise_acc, same_padding
from rtl_gen.config import AccelConfig
from rtl_gen.depthwise import DepthwiseEngine

CFG = AccelConfig(pw_out=4, pw_in=4, dw_lanes=2)
MAX_WIDTH = 8

IDLE_LIMIT = 1000    # cycles without an output before a test gives up on a hung engine


def pack(values, width):
    word = 0
    for i, v in enumerate(np.ravel(values)):
        word |= (int(v) & ((1 << width) - 1)) << (i * width)
    return word


def unpack(word, width, n):
    vals = [(word >> (i * width)) & ((1 << width) - 1) for i in range(n)]
    return [v - (1 << width) if v >> (width - 1) else v for v in vals]


def int8(rng, shape, kind):
    """Random int8 values, or the extremes that stress the 9-bit difference and the sums."""
    if kind == "min":
        return np.full(shape, -128, np.int8)
    if kind == "max":
        return np.full(shape, 127, np.int8)
    return rng.integers(-128, 128, shape).astype(np.int8)


class Layer:
    """A depthwise layer: x (H, W, C), weights (1, 3, 3, C), biases (C,), stride."""

    def __init__(self, rng, h, w, c, stride, kind="rand"):
        self.h, self.w, self.stride = h, w, stride
        self.x, self.wt = int8(rng, (h, w, c), kind), int8(rng, (1, 3, 3, c), kind)
        self.zp = {"min": 127, "max": -128}.get(kind, int(rng.integers(-128, 128)))
        self.bias = rng.integers(-2**20, 2**20, c)
        self.expected = depthwise_acc(self.x[None], self.zp, self.wt, self.bias,
                                      (stride, stride), "SAME")[0]

    def groups(self, lanes):
        return -(-self.x.shape[2] // lanes)

    def beats(self, lanes, rng):
        """Per group: the tile descriptor, the pixel beats and the expected outputs. Padded
        channels get random data and are not checked."""
        c = self.x.shape[2]
        cp = self.groups(lanes) * lanes
        x = rng.integers(-128, 128, (self.h, self.w, cp))
        wt = rng.integers(-128, 128, (9, cp))
        bias = rng.integers(-2**20, 2**20, cp)
        x[..., :c], wt[:, :c], bias[:c] = self.x, self.wt.reshape(9, c), self.bias
        for g in range(self.groups(lanes)):
            ch = slice(g * lanes, (g + 1) * lanes)
            tile = {"height": self.h, "width": self.w, "stride2": self.stride == 2,
                    "input_zp": self.zp, "weights": wt[:, ch].tolist(), "bias": bias[ch].tolist()}
            pixels = [pack(x[i, j, ch], 8) for i in range(self.h) for j in range(self.w)]
            expected = self.expected[..., ch]
            yield tile, pixels, list(expected.reshape(-1, expected.shape[-1]))


def simulate(cfg, layers, seed, p_valid=1.0, p_ready=1.0):
    """Run the layers' groups back to back; returns (outputs, expected, cycles until the last
    output)."""
    dut = DepthwiseEngine(cfg, max_width=MAX_WIDTH)
    rng = np.random.default_rng(seed)
    tiles, pixels, expected = [], [], []
    for layer in layers:
        for tile, px, exp in layer.beats(cfg.dw_lanes, rng):
            tiles.append(tile)
            pixels.extend(px)
            expected.extend(exp)
    outputs, cycles = [], [0]

    def driver(stream, beats, which):
        sub_rng = np.random.default_rng([seed, which])

        async def drive(ctx):
            for beat in beats:
                while sub_rng.random() >= p_valid:
                    await ctx.tick()
                ctx.set(stream.payload if isinstance(beat, dict) else stream.payload.as_value(),
                        beat)
                ctx.set(stream.valid, 1)
                await ctx.tick().until(stream.ready)
                ctx.set(stream.valid, 0)
        return drive

    async def collect(ctx):
        sub_rng = np.random.default_rng([seed, 2])
        idle = 0
        while len(outputs) < len(expected):
            ready = bool(sub_rng.random() < p_ready)
            ctx.set(dut.acc.ready, ready)
            _, _, valid, word = await ctx.tick().sample(dut.acc.valid, dut.acc.payload.as_value())
            cycles[0] += 1
            if valid and ready:
                outputs.append(unpack(word, 32, cfg.dw_lanes))
                idle = 0
            idle += 1
            assert idle < IDLE_LIMIT, f"no output for {IDLE_LIMIT} cycles after {len(outputs)}"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(driver(dut.tile, tiles, 0))
    sim.add_testbench(driver(dut.pixels, pixels, 1))
    sim.add_testbench(collect)
    sim.run()
    return outputs, expected, cycles[0]


def check(outputs, expected):
    assert len(outputs) == len(expected)
    for i, (got, want) in enumerate(zip(outputs, expected)):
        assert got[:len(want)] == list(want), f"output beat {i}"


def random_layer(lanes, rng, kind):
    """H, W in 1..7, one or two channel groups (the second possibly partial), stride 1 or 2."""
    h, w = (int(v) for v in rng.integers(1, 8, 2))
    c = int(rng.integers(1, 2 * lanes + 1))
    return Layer(rng, h, w, c, int(rng.integers(1, 3)), kind)


@pytest.mark.parametrize("lanes,seed", [(2, s) for s in range(8)] + [(1, 0), (4, 0)])
def test_random_layers_with_backpressure(lanes, seed):
    """Stalls on every stream, extremes included, groups of different shapes back to back."""
    cfg = AccelConfig(dw_lanes=lanes)
    rng = np.random.default_rng(seed)
    kinds = ["rand", "rand", "min", "rand", "max"]
    layers = [random_layer(lanes, rng, kinds[(i + seed) % len(kinds)]) for i in range(6)]
    outputs, expected, _ = simulate(cfg, layers, seed, p_valid=0.7, p_ready=0.6)
    check(outputs, expected)


@pytest.mark.parametrize("stride", [1, 2])
def test_all_small_shapes(stride):
    """Every H, W in 1..7 (odd and even: SAME padding differs at stride 2), one group each,
    plus the widest map the engine was built for."""
    rng = np.random.default_rng(stride)
    layers = [Layer(rng, h, w, CFG.dw_lanes, stride) for h in range(1, 8) for w in range(1, 8)]
    layers.append(Layer(rng, 2, MAX_WIDTH, CFG.dw_lanes, stride))
    outputs, expected, cycles = simulate(CFG, layers, stride)
    check(outputs, expected)
    # Sustained throughput: one grid position per cycle, groups separated by the drain only.
    assert cycles == sum(DepthwiseEngine.tile_cycles(layer.h, layer.w) for layer in layers) + 1
    assert len(expected) == sum(same_padding(layer.h, 3, stride)[0] *
                                same_padding(layer.w, 3, stride)[0] for layer in layers)


def test_converts_to_verilog():
    text = verilog.convert(DepthwiseEngine(AccelConfig(), max_width=224), name="depthwise_engine")
    assert "module depthwise_engine" in text
