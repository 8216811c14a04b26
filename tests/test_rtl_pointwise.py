"""PointwiseEngine in Amaranth's simulator against the numpy int8 reference."""
import numpy as np
import pytest
from amaranth.back import verilog

from firmware.layout import im2col_3x3
from quantize.reference import conv2d_acc, fully_connected_acc, same_padding
from rtl_gen.config import AccelConfig
from rtl_gen.pointwise import PointwiseEngine
from stream_sim import check_beats, collect, int8, pack, run_sim, send, unpack

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

    def beats(self, cfg, rng):
        """(act, weight, bias) packed beats and the expected outputs, in stream order.
        Padded input lanes use either padding rule at random: garbage activations over zero
        weights, or zero-point activations under garbage weights. Padded output lanes get
        garbage weights and biases and are not checked."""
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
        bp = rng.integers(-2**20, 2**20, tiles * cfg.pw_out)
        bp[:n] = self.bias
        acts, weights, biases, expected = [], [], [], []
        flag_at = 8 * cfg.pw_in
        for t in range(tiles):
            lanes = slice(t * cfg.pw_out, (t + 1) * cfg.pw_out)
            for px in range(p):
                biases.append(pack(bp[lanes], 32))
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
    patches = im2col_3x3(x, 2, (top, left, bottom, right), zp)
    return Layer(patches.reshape(-1, 27), zp, wt.reshape(cout, -1), bias,
                 conv2d_acc(x[None], zp, wt, bias, (2, 2), "SAME"))


def simulate(cfg, layers, seed, p_valid=1.0, p_ready=1.0):
    """Stream the layers back to back; returns (outputs, expected, cycles until the last output,
    the engine's latency)."""
    dut = PointwiseEngine(cfg)
    rng = np.random.default_rng(seed)
    per_layer = [layer.beats(cfg, rng) for layer in layers]
    expected = [e for beats in per_layer for e in beats[3]]
    outputs, cycles = [], [0]

    def driver(stream, which):
        """Sender of one stream with random idle cycles; the act sender also switches the
        zero point as each layer's first beat goes out."""
        beats = [b for layer_beats in per_layer for b in layer_beats[which]]
        zps, start = {}, 0
        for layer, layer_beats in zip(layers, per_layer):
            zps[start] = layer.zp
            start += len(layer_beats[which])
        sub_rng = np.random.default_rng([seed, which])

        async def drive(ctx):
            for i, beat in enumerate(beats):
                also = [(dut.input_zp, zps[i])] if stream is dut.act and i in zps else []
                await send(ctx, stream, beat, sub_rng, p_valid, also)
        return drive

    async def take_all(ctx):
        words, _, cycles[0] = await collect(ctx, dut.acc, len(expected),
                                            np.random.default_rng([seed, 3]), p_ready, raw=True)
        outputs.extend(unpack(word, 32, cfg.pw_out) for word in words)

    run_sim(dut, *(driver(stream, which) for which, stream in
                   enumerate((dut.act, dut.weight, dut.bias))), take_all)
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
    """Stalls on every stream; the bias stream is starved and the output blocked at random."""
    outputs, expected, _, _ = simulate(cfg, random_layers(cfg, seed, 18), seed,
                                       p_valid=0.7, p_ready=0.6)
    check_beats(outputs, expected)


@pytest.mark.parametrize("cfg", [CFG, *OTHER_CFGS], ids=cfg_id)
def test_sustained_throughput(cfg):
    """With no stream stalling, a layer costs one cycle per MAC step: the latency is paid
    once for back-to-back layers."""
    layers = random_layers(cfg, 100, 9)
    outputs, expected, cycles, latency = simulate(cfg, layers, 100)
    check_beats(outputs, expected)
    assert latency == {1: 3, 4: 5, 8: 6}[cfg.pw_in]    # log2(pw_in) + 3
    assert cycles == sum(layer.steps(cfg) for layer in layers) + latency


def test_converts_to_verilog():
    text = verilog.convert(PointwiseEngine(AccelConfig()), name="pointwise_engine")
    assert "module pointwise_engine" in text
