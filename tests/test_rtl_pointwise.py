"""PointwiseEngine in Amaranth's simulator against the numpy int8 reference."""
import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Signal
from amaranth.utils import exact_log2

from firmware.layout import im2col
from quantize.reference import conv2d_acc, fully_connected_acc, same_padding
from rtl_gen.config import AccelConfig
from rtl_gen.pointwise import PointwiseEngine
from stream_sim import IDLE_LIMIT, check_beats, int8, pack, run_sim, send, unpack

CFG = AccelConfig(pw_out=4, pw_in=4, dw_lanes=2)
# Other array shapes: a deeper adder tree, and none at all.
OTHER_CFGS = [AccelConfig(pw_out=2, pw_in=8), AccelConfig(pw_out=8, pw_in=1)]


def cfg_id(value):
    return f"{value.pw_out}x{value.pw_in}" if isinstance(value, AccelConfig) else None


class Layer:
    """One matrix-shaped layer: pixels (P, K) int8, weights (N, K) int8, biases (N,), and the
    expected (P, N) accumulators. Packs the steps in the engine's weight-stationary order."""

    def __init__(self, x, zp, w, bias, expected):
        self.x, self.zp, self.w, self.bias = x, zp, w, bias
        self.expected = np.asarray(expected, np.int64).reshape(x.shape[0], w.shape[0])

    def steps(self, cfg):
        return self.x.shape[0] * self.tiles(cfg) * -(-self.x.shape[1] // cfg.pw_in)

    def tiles(self, cfg):
        return -(-self.w.shape[0] // cfg.pw_out)

    def with_bias(self, bias_of_lane):
        """The same layer with bias[n] = bias_of_lane[n % len(bias_of_lane)] (so every tile
        of every such layer has the same biases)."""
        n = self.w.shape[0]
        bias = np.resize(bias_of_lane, n)
        return Layer(self.x, self.zp, self.w, bias, self.expected - self.bias + bias)

    def beats(self, cfg, rng, common_bias=None):
        """(act, weight) packed beats, one packed bias word per tile, and the expected
        outputs, in stream order. Padded input lanes use either padding rule at random:
        garbage activations over zero weights, or zero-point activations under garbage
        weights. Padded output lanes get garbage weights and biases (`common_bias` for all
        lanes if given) and are not checked."""
        (p, k), n = self.x.shape, self.w.shape[0]
        ks, tiles = -(-k // cfg.pw_in), self.tiles(cfg)
        xp = rng.integers(-128, 128, (p, ks * cfg.pw_in))
        xp[:, :k] = self.x
        wp = rng.integers(-128, 128, (tiles * cfg.pw_out, ks * cfg.pw_in))
        if rng.random() < 0.5:
            wp[:n, k:] = 0
        else:
            xp[:, k:] = self.zp
        wp[:n, :k] = self.w
        bp = (rng.integers(-2**20, 2**20, tiles * cfg.pw_out) if common_bias is None
              else np.resize(common_bias, tiles * cfg.pw_out))
        bp[:n] = self.bias
        acts, weights, biases, expected = [], [], [], []
        flag_at = 8 * cfg.pw_in
        for t in range(tiles):
            lanes = slice(t * cfg.pw_out, (t + 1) * cfg.pw_out)
            biases.append(pack(bp[lanes], 32))
            for px in range(p):
                expected.append(self.expected[px, lanes])
                for s in range(ks):
                    chans = slice(s * cfg.pw_in, (s + 1) * cfg.pw_in)
                    flags = (s == 0) | (s == ks - 1) << 1
                    acts.append(pack(xp[px, chans], 8) | flags << flag_at)
                    weights.append(pack(wp[lanes, chans], 8))
        return acts, weights, biases, expected


def conv1x1_layer(cfg, rng, kind="rand"):
    h, w, cin, cout = (int(v) for v in
                       rng.integers(1, [5, 5, 3 * cfg.pw_in + 1, 2 * cfg.pw_out + 1]))
    x, wt = int8(rng, (1, h, w, cin), kind), int8(rng, (cout, 1, 1, cin), kind)
    zp = {"min": 127, "max": -128}.get(kind, int(rng.integers(-128, 128)))
    bias = rng.integers(-2**20, 2**20, cout)
    return Layer(x.reshape(h * w, cin), zp, wt.reshape(cout, cin), bias,
                 conv2d_acc(x, zp, wt, bias, (1, 1), "VALID"))


def dense_layer(cfg, rng, kind="rand"):
    cin, cout = (int(v) for v in rng.integers(1, [3 * cfg.pw_in + 1, 2 * cfg.pw_out + 1]))
    x, wt = int8(rng, (1, cin), kind), int8(rng, (cout, cin), kind)
    zp = int(rng.integers(-128, 128))
    bias = rng.integers(-2**20, 2**20, cout)
    return Layer(x, zp, wt, bias, fully_connected_acc(x, zp, wt, bias))


def first_conv_layer(cfg, rng, kind="rand"):
    """3x3 stride-2 SAME conv on 3 channels, as 27-wide im2col patches."""
    h, w, cout = (int(v) for v in rng.integers(1, [6, 6, 2 * cfg.pw_out + 1]))
    x, wt = int8(rng, (h, w, 3), kind), int8(rng, (cout, 3, 3, 3), kind)
    zp = {"min": 127, "max": -128}.get(kind, int(rng.integers(-128, 128)))
    bias = rng.integers(-2**20, 2**20, cout)
    (_, top, bottom), (_, left, right) = same_padding(h, 3, 2), same_padding(w, 3, 2)
    patches = im2col(x, (3, 3), (2, 2), (top, left, bottom, right), zp)
    return Layer(patches.reshape(-1, 27), zp, wt.reshape(cout, -1), bias,
                 conv2d_acc(x[None], zp, wt, bias, (2, 2), "SAME"))


async def take_with_credits(ctx, dut, results, count, rng, release_prob, held_max):
    """The engine's consumer: a queue of `held_max` entries that takes every `acc` beat in
    its valid cycle (appending its raw bits to `results`) and frees an entry (pulsing
    `release`) at random. Fails if the engine offers a result the queue has no room for,
    or hangs. Returns the cycle of the last result."""
    held, idle, cycle = 0, 0, 0
    while len(results) < count:
        release = held > 0 and rng.random() < release_prob
        held -= release
        ctx.set(dut.release, release)
        _, _, valid, payload = await ctx.tick().sample(dut.acc.valid, dut.acc.payload.as_value())
        if valid:
            held += 1
            assert held <= held_max, "a result without a free queue entry"
            results.append(payload)
            idle = 0
        last = cycle
        cycle, idle = cycle + 1, idle + 1
        assert idle < IDLE_LIMIT, f"no output for {IDLE_LIMIT} cycles after {len(results)}"
    ctx.set(dut.release, 0)
    return last


def simulate(cfg, layers, seed, p_valid=1.0, p_release=1.0, credits=2, common_bias=None):
    """Stream the layers back to back; returns (outputs, expected, cycles until the last
    output, the engine's latency). Without `common_bias` the act sender waits at each tile
    boundary until the previous tile's results are out, then switches `bias` (as the
    sequencer does); with it, every tile has the same biases and nothing waits."""
    dut = PointwiseEngine(cfg, credits=credits)
    rng = np.random.default_rng(seed)
    per_layer = [layer.beats(cfg, rng, common_bias) for layer in layers]
    expected = [e for beats in per_layer for e in beats[3]]
    words, cycles = [], [0]

    # Where each tile starts in the act stream, with its bias word and the results before it.
    tile_starts, pos, done = {}, 0, 0
    for layer, (acts, _, biases, _) in zip(layers, per_layer):
        ks = len(acts) // (len(biases) * layer.x.shape[0])
        for t, bias in enumerate(biases):
            tile_starts[pos] = (bias, done, layer.zp)
            pos += layer.x.shape[0] * ks
            done += layer.x.shape[0]

    def driver(stream, which):
        """Sender of one stream with random idle cycles; the act sender also sets the zero
        point and the biases as each tile's first beat goes out."""
        beats = [b for layer_beats in per_layer for b in layer_beats[which]]
        sub_rng = np.random.default_rng([seed, which])

        async def drive(ctx):
            for i, beat in enumerate(beats):
                also = []
                if stream is dut.act and i in tile_starts:
                    bias, results_before, zp = tile_starts[i]
                    if common_bias is None:
                        while len(words) < results_before:
                            await ctx.tick()
                    ctx.set(dut.bias.as_value(), bias)
                    also = [(dut.input_zp, zp)]
                await send(ctx, stream, beat, sub_rng, p_valid, also)
        return drive

    async def take_all(ctx):
        cycles[0] = await take_with_credits(ctx, dut, words, len(expected),
                                            np.random.default_rng([seed, 3]), p_release,
                                            credits)

    run_sim(dut, take_all, background=[driver(dut.act, 0), driver(dut.weight, 1)])
    outputs = [unpack(word, 32, cfg.pw_out) for word in words]
    return outputs, expected, cycles[0], dut.latency


KINDS = ["rand", "rand", "rand", "min", "max"]


def random_layers(cfg, seed, count):
    """Mixed 1x1 conv, dense and im2col layers, extremes included."""
    rng = np.random.default_rng(seed)
    makers = [conv1x1_layer, dense_layer, first_conv_layer]
    return [makers[i % 3](cfg, rng, KINDS[(i + seed) % len(KINDS)]) for i in range(count)]


@pytest.mark.parametrize("cfg,seed", [(CFG, s) for s in range(8)] +
                         [(cfg, s) for cfg in OTHER_CFGS for s in range(2)], ids=cfg_id)
def test_random_layers_with_backpressure(cfg, seed):
    """Gaps on both input streams, a consumer that frees its queue entries at random, and
    queues of 1 to 3 entries: every result exact, none offered without a free entry."""
    credits = 1 + seed % 3
    outputs, expected, _, _ = simulate(cfg, random_layers(cfg, seed, 18), seed,
                                       p_valid=0.7, p_release=0.4, credits=credits)
    check_beats(outputs, expected)


@pytest.mark.parametrize("cfg", [CFG, *OTHER_CFGS], ids=cfg_id)
def test_sustained_throughput(cfg):
    """With no stream stalling and a credit for every result in flight (a freed entry is
    seen one cycle after it is taken), a layer costs one
    cycle per MAC step: the latency is paid once for back-to-back layers."""
    rng = np.random.default_rng(7)
    common = rng.integers(-2**20, 2**20, cfg.pw_out)
    layers = [layer.with_bias(common) for layer in random_layers(cfg, 100, 9)]
    # Operand registers, the DSP block's input and output registers, one register per
    # adder-tree level, the accumulator.
    latency = 1 + 2 + exact_log2(cfg.pw_in) + 1
    assert latency == {1: 4, 4: 6, 8: 7}[cfg.pw_in]
    outputs, expected, cycles, engine_latency = simulate(cfg, layers, 100, credits=latency + 2,
                                                         common_bias=common)
    assert engine_latency == latency
    check_beats(outputs, expected)
    assert cycles == sum(layer.steps(cfg) for layer in layers) + latency - 1


def test_converts_to_verilog():
    dut = PointwiseEngine(AccelConfig())
    # acc.ready of the credit stream is a constant, not a port.
    ports = [value for _, _, value in dut.signature.flatten(dut) if isinstance(value, Signal)]
    text = verilog.convert(dut, name="pointwise_engine", ports=ports)
    assert "module pointwise_engine" in text
