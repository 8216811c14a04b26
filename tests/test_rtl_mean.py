"""MeanUnit RTL against quantize.reference.mean_hw."""
import numpy as np
import pytest
from amaranth.back import verilog

from quantize import fixedpoint as fx
from quantize.reference import mean_hw, mean_multiplier
from rtl_gen.mean_unit import MeanUnit
from rtl_gen.requant import Requantizer
from stream_sim import collect, run_sim, send, set_ports


class MeanCase:
    """One feature map with its quantization, the unit's settings and the reference output."""

    def __init__(self, x, input_zp, input_scale, output_zp, output_scale):
        self.x = x
        h, w, c = x.shape
        multiplier, shift = fx.quantize_multiplier(float(np.float32(input_scale)) /
                                                   float(np.float32(output_scale)))
        m, s = mean_multiplier(multiplier, shift, h * w)
        self.ports = {"channels": c, "pixels": h * w, "input_zp": input_zp,
                      "output_zp": output_zp, "multiplier": m, "shift": s}
        self.want = mean_hw(x[None], input_zp, input_scale, output_zp, output_scale)[0]

    def beats(self, lanes, rng):
        """NHWC beats; lanes past the channel count carry junk the unit must ignore."""
        h, w, c = self.x.shape
        groups = -(-c // lanes)
        padded = rng.integers(-128, 128, (h * w, groups * lanes))
        padded[:, :c] = self.x.reshape(h * w, c)
        return [[int(v) for v in row] for row in padded.reshape(-1, lanes)]


def random_case(rng, max_side=7, max_channels=32):
    """Channels centred at random levels with noise, scales and zero points chosen so most
    means land inside int8 (rounding visible) and some saturate."""
    h, w = rng.integers(2, max_side + 1, 2)
    c = int(rng.integers(1, max_channels + 1))
    centre = rng.integers(-100, 101, c)
    x = np.clip(centre + rng.integers(-40, 41, (h, w, c)), -128, 127).astype(np.int8)
    input_scale = float(rng.uniform(0.005, 0.1))
    output_scale = input_scale / float(rng.uniform(0.3, 1.5))
    return MeanCase(x, int(rng.integers(-30, 31)), input_scale, int(rng.integers(-20, 21)),
                    output_scale)


def extreme_cases():
    """Sums at both ends of the range: all -128 with zp 127 and all 127 with zp -128."""
    low = np.full((7, 7, 32), -128, np.int8)
    high = np.full((7, 7, 32), 127, np.int8)
    return [MeanCase(low, 127, 0.02, 0, 0.5), MeanCase(high, -128, 0.02, 0, 0.5),
            MeanCase(low, -128, 0.05, 5, 0.05), MeanCase(high, 127, 0.05, -5, 0.05)]


def run_means(dut, cases, seed, valid_prob=1.0, ready_prob=1.0):
    """Run the maps one after the other through one unit; returns each map's channel outputs
    and, per map, the ticks from the last input beat to the first output beat."""
    rng = np.random.default_rng(seed)
    results, first_output_delay = [], []

    async def bench(ctx):
        for case in cases:
            set_ports(ctx, dut, case.ports)
            await ctx.tick()            # settings lead the first beat by a cycle
            for beat in case.beats(dut.lanes, rng):
                await send(ctx, dut.i_stream, beat, rng, valid_prob)
            channels = case.x.shape[2]
            payloads, at, _ = await collect(ctx, dut.o_stream, -(-channels // dut.lanes), rng,
                                            ready_prob)
            first_output_delay.append(at[0] + 1)
            outs = [payload[k] for payload in payloads for k in range(dut.lanes)]
            results.append(np.array(outs[:channels], np.int64))

    run_sim(dut, bench)
    return results, first_output_delay


def check(dut, cases, **kw):
    results, delays = run_means(dut, cases, **kw)
    for case, got in zip(cases, results):
        np.testing.assert_array_equal(got, case.want, err_msg=f"shape {case.x.shape}")
    return delays


def test_mean_random_maps_with_stalls():
    rng = np.random.default_rng(20)
    cases = [random_case(rng) for _ in range(25)]
    want = np.concatenate([case.want for case in cases])
    assert np.mean((want > -128) & (want < 127)) > 0.7
    check(MeanUnit(lanes=4, max_channels=32, max_pixels=49), cases, seed=21,
          valid_prob=0.8, ready_prob=0.6)


def test_mean_extremes():
    check(MeanUnit(lanes=8, max_channels=32, max_pixels=49), extreme_cases(), seed=22)


def test_mean_single_group_forwarding():
    """channels <= lanes: every beat read-modify-writes the row written the cycle before."""
    rng = np.random.default_rng(23)
    cases = [random_case(rng, max_channels=4) for _ in range(4)]
    check(MeanUnit(lanes=4, max_channels=32, max_pixels=49), cases, seed=24)


def test_mean_one_lane():
    rng = np.random.default_rng(25)
    cases = [random_case(rng, max_side=4, max_channels=6) for _ in range(3)]
    check(MeanUnit(lanes=1, max_channels=8, max_pixels=16), cases, seed=26, ready_prob=0.7)


def test_mean_output_timing():
    """Back to back, the first mean leaves Requantizer.LATENCY + 4 cycles after the last beat."""
    rng = np.random.default_rng(27)
    cases = [random_case(rng) for _ in range(2)]
    delays = check(MeanUnit(lanes=8, max_channels=32, max_pixels=49), cases, seed=28)
    assert delays == [Requantizer.LATENCY + 4] * len(cases)


@pytest.mark.parametrize("lanes", [1, 8])
def test_mean_converts_to_verilog(lanes):
    assert "module" in verilog.convert(MeanUnit(lanes, max_channels=64, max_pixels=64),
                                       name="mean_unit")


def test_mean_over_parts():
    """Maps arriving as parts of rows (a MEAN tiled through DDR): `accumulate` continues the
    sums, `emit` only on the last part; parts of one pixel and uneven parts included, and a
    whole map in one part between them starts from zero again."""
    rng = np.random.default_rng(29)
    cases = [random_case(rng) for _ in range(6)]
    dut = MeanUnit(lanes=4, max_channels=32, max_pixels=49)
    splits = []
    for i, case in enumerate(cases):
        pixels = case.x.shape[0] * case.x.shape[1]
        cuts = sorted(set(rng.integers(1, pixels, i % 3 + 1).tolist())) if i % 2 == 0 else []
        splits.append([b - a for a, b in zip([0] + cuts, cuts + [pixels])])
    results = []

    async def bench(ctx):
        for case, parts in zip(cases, splits):
            beats = case.beats(dut.lanes, rng)
            per_pixel = len(beats) // sum(parts)
            for k, part in enumerate(parts):
                set_ports(ctx, dut, {**case.ports, "pixels": part, "accumulate": k > 0,
                                     "emit": k == len(parts) - 1})
                await ctx.tick()
                for beat in beats[:part * per_pixel]:
                    await send(ctx, dut.i_stream, beat, rng, 0.8)
                beats = beats[part * per_pixel:]
                await ctx.tick().repeat(3)          # the next part's descriptor
            channels = case.x.shape[2]
            payloads, _, _ = await collect(ctx, dut.o_stream, -(-channels // dut.lanes), rng, 0.7)
            results.append(np.array([p[k] for p in payloads for k in range(dut.lanes)][:channels]))

    run_sim(dut, bench)
    assert any(len(parts) > 2 for parts in splits) and any(len(p) == 1 for p in splits)
    for case, got in zip(cases, results):
        np.testing.assert_array_equal(got, case.want, err_msg=f"shape {case.x.shape}")
