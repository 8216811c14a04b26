"""TFLite's AVERAGE_POOL_2D over the whole map (the TinyML classifier head) runs on the MEAN
unit: its int8 kernel averages RAW values and rounds half away from zero with C division, so
the lowering zeroes the zero points and uses a searched (multiplier, shift) that must equal
that rounding on every sum. Checked exhaustively for the lowering, against TFLite BUILTIN_REF
on whole models, and through gen-accel; pools the MEAN unit cannot run are refused in the
model's terms."""
import json

import numpy as np
import pytest
from keras_models import int8_tflite, pooled_head_tflite
from tflite_edit import edited, schema

from firmware.compiler import compile_graph
from firmware.executor import run_image
from firmware.fit_check import model_blockers
from firmware.program import Opcode
from quantize import fixedpoint as fx
from quantize import tflite_graph
from quantize.average_pool import average_pool_multiplier
from quantize.convert import golden_interpreter, golden_run
from quantize.reference import run_graph
from quantize.tflite_graph import UnsupportedModelError, load_graph
from quantize.verify import assert_bit_exact

# ---------------------------------------------------------------------------- the lowering


def c_rounded_average(total: np.ndarray, count: int) -> np.ndarray:
    """TFLite's reference_integer_ops::AveragePool rounding, written as the C reads:
    acc > 0 ? (acc + count/2) / count : (acc - count/2) / count, '/' truncating. The
    quotients are exact in float64 here (|sums| < 2^53), so np.trunc is C's division."""
    half = count // 2
    return np.trunc((total + np.where(total > 0, half, -half)) / count).astype(np.int64)


def mean_unit(total: np.ndarray, multiplier: int, shift: int) -> np.ndarray:
    """The MEAN descriptor with zero points 0, as the functional model runs it."""
    return np.clip(fx.multiply_by_quantized_multiplier(fx.wrap_int32(total), multiplier, shift),
                   -128, 127)


def test_lowering_rounds_like_tflite_for_every_sum_of_up_to_256_pixels():
    """For every pixel count N in 1..256 a pair is found, and it gives TFLite's average for
    every sum N int8 values can have: [-128 N, 127 N], ties and both signs included."""
    for count in range(1, 257):
        pair = average_pool_multiplier(count)
        assert pair is not None, f"no exact pair for {count} pixels"
        total = np.arange(-128 * count, 127 * count + 1, dtype=np.int64)
        assert np.array_equal(mean_unit(total, *pair), c_rounded_average(total, count)), count


def test_lowering_is_not_mean_rounding():
    """The search is needed: MEAN's folded 1/N multiplier (the same scale in and out) misses
    TFLite's average pool on some sums, e.g. for a 7x7 or 6x6 map."""
    from quantize.reference import mean_multiplier
    for count in (49, 36):
        total = np.arange(-128 * count, 127 * count + 1, dtype=np.int64)
        folded = mean_multiplier(*fx.quantize_multiplier(1.0), count)
        assert not np.array_equal(mean_unit(total, *folded), c_rounded_average(total, count))

# ---------------------------------------------------------------------------- whole models


@pytest.fixture(scope="module", params=[7, 6], ids=["7x7", "6x6"])
def pooled(request):
    """A head pooling a 7x7 (odd) or a 6x6 (even, not a power of two) map."""
    tflite = pooled_head_tflite(request.param)
    return tflite, load_graph(tflite)


def _inputs(graph, n: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(-128, 128, graph.input.shape, dtype=np.int8) for _ in range(n)]


def test_pool_compiles_to_a_mean_with_raw_sums(pooled):
    _, g = pooled
    assert [op.kind for op in g.ops] == ["CONV_2D", "AVERAGE_POOL_2D", "RESHAPE",
                                         "FULLY_CONNECTED", "SOFTMAX"]
    pool = g.ops[1]
    fw = compile_graph(g)
    assert model_blockers(fw, g) == []
    (d,) = [d for d, i in zip(fw.descriptors, fw.layer_ops) if i == pool.index]
    h, w = pool.inputs[0].shape[1:3]
    assert (d.opcode, d.input_zp, d.output_zp) == (Opcode.MEAN, 0, 0)
    assert (d.multiplier, d.shift) == average_pool_multiplier(h * w)


def test_reference_and_functional_model_bit_exact_with_tflite(pooled):
    """Every layer of the numpy reference and of the program run from DDR equals TFLite
    BUILTIN_REF; the pool's sums take both signs and its output varies (not vacuous)."""
    tflite, g = pooled
    interp, fw, pool = golden_interpreter(tflite), compile_graph(g), g.ops[1]
    for x in _inputs(g):
        golden = golden_run(interp, x)
        assert assert_bit_exact(g, run_graph(g, x), golden) == len(g.ops)
        assert assert_bit_exact(g, run_image(fw, x), golden) == len(g.ops)
        sums = golden[pool.inputs[0].index].astype(np.int64).sum(axis=(1, 2))
        assert sums.min() < 0 < sums.max()
        assert np.unique(golden[pool.outputs[0].index]).size > 1


def test_gen_accel_builds_the_pooled_model(tmp_path, monkeypatch):
    """gen-accel takes the 7x7 head (the reader, TFLite probe, compiler, fit check) and its
    own check on real test images is bit-exact. Its Verilog depends on the config alone,
    not the model, and takes most of a minute: skipped here."""
    from flow import cli
    tflite = pooled_head_tflite(7)
    g = load_graph(tflite)
    model, out = tmp_path / "pooled.tflite", tmp_path / "build"
    model.write_bytes(tflite)
    monkeypatch.setattr(cli, "write_rtl", lambda out, cfg: None)
    assert cli.main(["--model", str(model), "--check-images", "2", "--out", str(out), "-q"],
                    isolate=False) == 0
    check = json.loads((out / "tflite_check.json").read_text())
    assert check == {**check, "images": 2, "layers": len(g.ops), "bit_exact": True}
    descriptors = json.loads((out / "firmware" / "memory_map.json").read_text())["descriptors"]
    assert {d["opcode"] for d in descriptors if d["graph_op"] == g.ops[1].index} == {"MEAN"}

# ---------------------------------------------------------------------------- every sum


POOL_CHANNELS = 256


def maps_summing_to(sums: np.ndarray, side: int, channels: int) -> list[np.ndarray]:
    """(1, side, side, channels) int8 maps whose channels sum to `sums` in order (the last
    map filled up with sum 0): floor(S / N) in every pixel, one more in S mod N of them."""
    count = side * side
    sums = np.pad(sums, (0, -len(sums) % channels))
    base, extra = np.divmod(sums, count)
    values = base[:, None] + (np.arange(count)[None, :] < extra[:, None])
    maps = values.reshape(-1, channels, side, side).transpose(0, 2, 3, 1)
    return [m[None].astype(np.int8) for m in maps]


def pool_only_tflite(side: int, channels: int) -> bytes:
    """A model that is only the pool over a side x side map (and its Flatten): its input is
    the pool's, so a test chooses the sums."""
    from keras import layers
    return int8_tflite(lambda x: layers.Flatten()(layers.AveragePooling2D(side)(x)),
                       (side, side, channels))


@pytest.mark.parametrize("side", [6, 7])
def test_every_possible_sum_bit_exact_with_tflite(side):
    """A model that is only the pool (and its Flatten), fed maps whose channel sums are
    every value N int8 pixels can sum to: TFLite BUILTIN_REF, the numpy reference and the
    compiled program agree on all of them, every tie of both signs included."""
    tflite = pool_only_tflite(side, POOL_CHANNELS)
    g = load_graph(tflite)
    assert [op.kind for op in g.ops] == ["AVERAGE_POOL_2D", "RESHAPE"]
    interp, fw, count = golden_interpreter(tflite), compile_graph(g), side * side
    maps = maps_summing_to(np.arange(-128 * count, 127 * count + 1), side, POOL_CHANNELS)
    for x in maps:
        golden = golden_run(interp, x)
        assert assert_bit_exact(g, run_graph(g, x), golden) == 2
        assert assert_bit_exact(g, run_image(fw, x), golden) == 2

# ---------------------------------------------------------------------------- refusals


def test_pool_over_part_of_the_map_refused_naming_the_layer():
    """A 2x2 window over a 4x4 map: one blocker, naming the layer and why."""
    from keras import layers

    def net(x):
        y = layers.AveragePooling2D(pool_size=2, name="local_avg")(layers.Conv2D(4, 1)(x))
        return layers.Dense(3)(layers.Flatten()(y))
    with pytest.raises(UnsupportedModelError) as e:
        load_graph(int8_tflite(net, (4, 4, 3)))
    (line,) = e.value.blockers
    assert str(e.value) == line and "\n" not in line
    assert line.startswith("layer 1 '") and "local_avg" in line
    assert line.endswith("(AVERAGE_POOL_2D): only a global average pool is supported (a window "
                         "over the whole map); this 2x2 window over a 4x4 map gives 2x2 outputs")


def _pool_op(model):
    """The unpacked model's AVERAGE_POOL_2D operator."""
    s = schema()
    return next(o for o in model.subgraphs[0].operators
                if model.operatorCodes[o.opcodeIndex].builtinCode
                == s.BuiltinOperator.AVERAGE_POOL_2D)


def _fused_relu(model):
    """The pool fuses a RELU; its output zero point is not -128, so the RELU clamps."""
    _pool_op(model).builtinOptions.fusedActivationFunction = \
        schema().ActivationFunctionType.RELU


def test_pool_with_a_clamping_fused_relu_refused():
    tflite = edited(pooled_head_tflite(7), _fused_relu)
    pool_out = load_graph(pooled_head_tflite(7)).ops[1].outputs[0]
    assert pool_out.zp > -128
    with pytest.raises(UnsupportedModelError, match=r"^layer 1 '.*avg.*' \(AVERAGE_POOL_2D\): "
                       rf"its fused RELU clamps the average to \[{pool_out.zp}, 127\]; the MEAN "
                       r"unit that runs it clamps to \[-128, 127\] only$"):
        load_graph(tflite)


def _pool_output_zero_point_moved(model):
    """The pool's output zero point one above its input's: TFLite (a release build) would
    still average the raw values, which then mean something else."""
    q = model.subgraphs[0].tensors[_pool_op(model).outputs[0]].quantization
    q.zeroPoint = [int(q.zeroPoint[0]) + 1]


def test_pool_that_would_requantize_refused():
    with pytest.raises(UnsupportedModelError) as e:
        load_graph(edited(pooled_head_tflite(7), _pool_output_zero_point_moved))
    (line,) = e.value.blockers
    assert line.startswith("layer 1 '") and "(AVERAGE_POOL_2D): output quantization" in line
    assert line.endswith("TFLite's int8 average pool cannot requantize")


def test_pool_without_an_exact_multiplier_refused(monkeypatch):
    """A pixel count the search finds no exact pair for is refused, never approximated."""
    monkeypatch.setattr(tflite_graph, "average_pool_multiplier", lambda count: None)
    with pytest.raises(UnsupportedModelError, match=r"^layer 1 '.*avg.*' \(AVERAGE_POOL_2D\): "
                       r"no multiplier and shift make the MEAN unit round a sum over 7x7 = 49 "
                       r"pixels as TFLite's average pool does$"):
        load_graph(pooled_head_tflite(7))


def test_pool_larger_than_the_verified_range_refused(monkeypatch):
    """Past `average_pool.MAX_PIXELS` the exhaustive check would take too long: refused
    (here with the limit lowered below the 7x7 head's 49 pixels)."""
    monkeypatch.setattr(tflite_graph, "MAX_POOL_PIXELS", 48)
    with pytest.raises(UnsupportedModelError, match=r"^layer 1 '.*avg.*' \(AVERAGE_POOL_2D\): "
                       r"an average over 7x7 = 49 pixels is more than the 48 whose rounding "
                       r"the flow verifies$"):
        load_graph(pooled_head_tflite(7))


def test_pool_larger_than_the_mean_unit_refused_naming_the_layer():
    """The MEAN unit's pixel limit holds for the pool as for MEAN: a config whose MeanUnit
    sums 16 pixels cannot take the 7x7 head, and the error names the model's layer."""
    from firmware.tiling import TilingError
    from rtl_gen.config import AccelConfig
    from rtl_gen.sequencer import Geometry
    cfg = AccelConfig(pw_out=64, pw_in=8, dw_lanes=8, act_buffer_bytes=1024)
    limit = Geometry(cfg).mean_pixels
    assert limit < 49
    with pytest.raises(TilingError, match=r"^layer 1 '.*avg.*' \(AVERAGE_POOL_2D\): a global "
                       rf"average over 49 pixels of 64 channels does not fit: the MeanUnit sums "
                       rf"up to {limit} pixels"):
        compile_graph(load_graph(pooled_head_tflite(7)), cfg)
