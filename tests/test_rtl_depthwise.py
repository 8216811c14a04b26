"""DepthwiseEngine in Amaranth's simulator against the numpy int8 reference."""
import numpy as np
import pytest
from amaranth.back import verilog

from quantize.reference import depthwise_acc, same_padding
from rtl_gen.config import AccelConfig
from rtl_gen.depthwise import DepthwiseEngine
from stream_sim import check_beats, collect, int8, pack, producer, run_sim, unpack

CFG = AccelConfig(pw_out=4, pw_in=4, dw_lanes=2)
MAX_WIDTH = 8


class Layer:
    """A depthwise layer: x (H, W, C), weights (1, 3, 3, C), biases (C,), stride; SAME
    padding, or `rows` = (top, bottom) padding rows (a band of a tiled feature map) and
    `cols` = (left, right) padding columns (VALID or PyTorch-style padding)."""

    def __init__(self, rng, h, w, c, stride, kind="rand", rows=None, cols=None):
        self.h, self.w, self.stride = h, w, stride
        self.x, self.wt = int8(rng, (h, w, c), kind), int8(rng, (1, 3, 3, c), kind)
        self.zp = {"min": 127, "max": -128}.get(kind, int(rng.integers(-128, 128)))
        self.bias = rng.integers(-2**20, 2**20, c)
        if rows is None:
            rows = same_padding(h, 3, stride)[1:]
        self.pad_top, self.pad_bottom = rows
        if cols is None:
            cols = same_padding(w, 3, stride)[1:]
        self.pad_left, self.pad_right = left, right = cols
        # Padding with the zero point is padding with zeros after the offset.
        xp = np.pad(self.x, ((self.pad_top, self.pad_bottom), (left, right), (0, 0)),
                    constant_values=self.zp)
        self.expected = depthwise_acc(xp[None], self.zp, self.wt, self.bias,
                                      (stride, stride), "VALID")[0]

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
                    "pad_top": self.pad_top, "pad_bottom": self.pad_bottom,
                    "pad_left": self.pad_left, "pad_right": self.pad_right,
                    "input_zp": self.zp, "weights": wt[:, ch].tolist(),
                    "bias": bias[ch].tolist()}
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

    async def take_all(ctx):
        words, _, cycles[0] = await collect(ctx, dut.acc, len(expected),
                                            np.random.default_rng([seed, 2]), p_ready, raw=True)
        outputs.extend(unpack(word, 32, cfg.dw_lanes) for word in words)

    run_sim(dut, producer(dut.tile, tiles, np.random.default_rng([seed, 0]), p_valid),
            producer(dut.pixels, pixels, np.random.default_rng([seed, 1]), p_valid), take_all)
    return outputs, expected, cycles[0]


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
    check_beats(outputs, expected)


@pytest.mark.parametrize("stride", [1, 2])
def test_all_small_shapes(stride):
    """Every H, W in 1..7 (odd and even: SAME padding differs at stride 2), one group each,
    plus the widest map the engine was built for."""
    rng = np.random.default_rng(stride)
    layers = [Layer(rng, h, w, CFG.dw_lanes, stride) for h in range(1, 8) for w in range(1, 8)]
    layers.append(Layer(rng, 2, MAX_WIDTH, CFG.dw_lanes, stride))
    outputs, expected, cycles = simulate(CFG, layers, stride)
    check_beats(outputs, expected)
    # Sustained throughput: one grid position per cycle, groups separated by the drain only.
    assert cycles == sum(DepthwiseEngine.tile_cycles(layer.h, layer.w) for layer in layers) + 1
    assert len(expected) == sum(same_padding(layer.h, 3, stride)[0] *
                                same_padding(layer.w, 3, stride)[0] for layer in layers)


@pytest.mark.parametrize("stride", [1, 2])
def test_band_row_padding(stride):
    """Rows padded 0 or 1 above and below independently (the bands of a feature map tiled
    through DDR), every height with at least one output row, odd and even widths."""
    rng = np.random.default_rng(10 + stride)
    layers = [Layer(rng, h, w, CFG.dw_lanes, stride, rows=(top, bottom))
              for top in (0, 1) for bottom in (0, 1) for h in range(max(1, 3 - top - bottom), 7)
              for w in (1, 4, 5)]
    layers.append(Layer(rng, 3, 3, CFG.dw_lanes, stride))  # SAME: its grid ends with an output
    outputs, expected, cycles = simulate(CFG, layers, stride)
    check_beats(outputs, expected)
    # Still one grid position per cycle, groups separated by the drain only.
    assert cycles == sum(DepthwiseEngine.tile_cycles(layer.h, layer.w) for layer in layers) + 1


@pytest.mark.parametrize("stride", [1, 2])
def test_every_padding(stride):
    """0 or 1 padding rows and columns on each side, independently (VALID, SAME, PyTorch's
    padding=1 and the bands' mixtures), every size with at least one output, odd and even."""
    rng = np.random.default_rng(20 + stride)
    pads = [(before, after) for before in (0, 1) for after in (0, 1)]
    layers = [Layer(rng, h, w, CFG.dw_lanes, stride, rows=rows, cols=cols)
              for rows in pads for cols in pads
              for h in (max(1, 3 - sum(rows)), 4, 5) for w in (max(1, 3 - sum(cols)), 4, 5)]
    outputs, expected, cycles = simulate(CFG, layers, 30 + stride)
    check_beats(outputs, expected)
    assert cycles == sum(DepthwiseEngine.tile_cycles(layer.h, layer.w) for layer in layers) + 1


def test_converts_to_verilog():
    text = verilog.convert(DepthwiseEngine(AccelConfig(), max_width=224), name="depthwise_engine")
    assert "module depthwise_engine" in text
