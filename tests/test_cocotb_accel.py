"""The whole accelerator in Verilator (`sim.accel_sim.simulate`): the seed MobileNet, compiled
with the default AccelConfig, runs real CIFAR-10 test images out of the fast RTL DDR model,
and every layer's output, the final int8 softmax included, must equal TFLite BUILTIN_REF
byte for byte. Also: a corrupt program ends with its error code and a run past the cycle
limit is reported as timed out, not hung.

The Verilator build of the accelerator is cached in ~/.cache/mobilenet-accel/verilator/ (one
for the default configuration, one for the ULX3S 45F configuration); after an RTL change the
first test pays for it, about 3 minutes on two busy cores, and the rest reuse it.
"""
import dataclasses

import numpy as np
import pytest

from firmware.compiler import compile_graph
from firmware.program import DESCRIPTOR_BYTES
from quantize.convert import golden_run
from quantize.verify import assert_bit_exact
from rtl_gen.config import AccelConfig
from rtl_gen.sequencer import ErrorCode, check_fits
from sim.verilator_runner import verilator_available

_unavailable = verilator_available()
pytestmark = pytest.mark.skipif(_unavailable is not None, reason=_unavailable or "")

STATUS_DONE, STATUS_ERROR = 2, 4


@pytest.fixture(scope="module")
def fw_025(net_025):
    fw = compile_graph(net_025.graph, AccelConfig())
    check_fits(fw)
    return fw


def check_against_tflite(net, fw, xs, results):
    """Each result: done without error, every layer and the softmax equal to TFLite, sane
    per-layer cycle counts."""
    layers = len(fw.descriptors) - 1                   # all but END
    out_index = net.interpreter.get_output_details()[0]["index"]
    assert len(results) == len(xs)
    for x, r in zip(xs, results):
        assert not r.timed_out, f"image {r.index}: no interrupt within the cycle limit"
        assert r.status & (STATUS_DONE | STATUS_ERROR) == STATUS_DONE, r
        assert r.error_code == ErrorCode.NONE and r.ok
        assert r.layer_count == layers
        golden = golden_run(net.interpreter, x[None])
        assert assert_bit_exact(net.graph, r.tensors, golden) == len(net.graph.ops)
        want = golden[out_index]
        assert r.output.dtype == np.int8 and r.output.tobytes() == want.tobytes(), \
            f"image {r.index}: softmax {r.output} != TFLite {want}"
        assert len(r.layer_cycles) == layers and all(c > 0 for c in r.layer_cycles), r
        assert sum(r.layer_cycles) <= r.cycles, r


def test_seed_network_bit_exact_on_verilator(net_025, fw_025):
    """Alpha 0.25, default config, two real test images in one simulator session (the
    second reloads only the input region)."""
    from sim.accel_sim import simulate
    xs = net_025.int8_inputs(2)
    assert not np.array_equal(xs[0], xs[1])
    results = simulate(fw_025, xs, fw_025.cfg)
    check_against_tflite(net_025, fw_025, xs, results)
    a, b = results
    assert any(not np.array_equal(a.tensors[t], b.tensors[t]) for t in a.tensors), \
        "two different images gave identical tensors"
    r = a
    print(f"\nVerilator, alpha 0.25 default config: {r.cycles:,} cycles per inference; "
          f"build {r.build_s:.1f} s ({'cached' if r.build_cached else 'fresh'}), "
          + ", ".join(f"image {q.index}: {q.run_wall_s:.1f} s wall / {q.run_cpu_s:.1f} s CPU"
                      for q in results))


def test_error_and_cycle_limit_are_reported(net_025, fw_025):
    """A descriptor with a broken check word stops the run at that layer with
    BAD_DESCRIPTOR; a cycle limit far below the program's needs ends the run as timed out
    (soft reset, not a hang), and a following image in the same session is run anyway."""
    from sim.accel_sim import simulate
    x = net_025.int8_inputs(1)
    image = bytearray(fw_025.image)
    image[fw_025.program_addr - fw_025.base + 3 * DESCRIPTOR_BYTES + 4] ^= 0x01
    (bad,) = simulate(dataclasses.replace(fw_025, image=image), x, progress=False)
    assert bad.done and bad.error and not bad.timed_out and not bad.ok
    assert bad.error_code == ErrorCode.BAD_DESCRIPTOR and bad.layer_count == 3
    assert all(c > 0 for c in bad.layer_cycles[:3])

    slow = simulate(fw_025, np.concatenate([x, x]), max_cycles=5_000, progress=False)
    for r in slow:
        assert r.timed_out and not r.ok and r.sim_cycles >= 5_000 and r.cycles >= 5_000


def test_random_back_pressure_changes_no_result(net_025, fw_025):
    """The DDR model withholds AR/AW/W ready and R/B valid at random, 40% of cycles on each
    channel: every layer is still bit-exact with TFLite, and the run is slower than the
    cycle model's exact no-stall prediction (by ~5%: at alpha 0.25 the loads mostly hide
    behind compute), so the stalls did hit."""
    from sim.accel_sim import DDR_TIMING, simulate
    from sim.perf_model import predict
    xs = net_025.int8_inputs(1)
    (r,) = simulate(fw_025, xs, fw_025.cfg, stall_per_256=102, progress=False)
    check_against_tflite(net_025, fw_025, xs, [r])
    assert r.cycles > predict(fw_025, ddr=DDR_TIMING).total, r.cycles


def check_cycle_model(fw, result):
    """The cycle model predicts every descriptor's LAYER_CYCLES and the run's CYCLES exactly."""
    from sim.accel_sim import DDR_TIMING
    from sim.perf_model import predict
    prediction = predict(fw, ddr=DDR_TIMING)
    assert [layer.cycles for layer in prediction.layers] == result.layer_cycles
    assert prediction.total == result.cycles


def test_tiled_layers_bit_exact_on_verilator(net_025):
    """The ULX3S 45F configuration (8x4 MACs, one depthwise lane, 32 KiB activation buffers):
    alpha 0.25's largest feature maps do not fit, so those layers run as bands of rows through
    DDR. Bit-exact with TFLite on every layer, and the cycle model exact per band."""
    from boards.targets import default_config
    from sim.accel_sim import simulate
    cfg = default_config("ulx3s-45f")
    fw = compile_graph(net_025.graph, cfg)
    check_fits(fw)
    assert any(n > 1 for _, n in fw.bands)
    xs = net_025.int8_inputs(1)
    results = simulate(fw, xs, cfg)
    check_against_tflite(net_025, fw, xs, results)
    check_cycle_model(fw, results[0])


@pytest.mark.slow
def test_alpha1_bit_exact_on_verilator(net_100):
    """Alpha 1 on the default configuration, its large feature maps tiled through DDR, one
    image."""
    from sim.accel_sim import simulate
    fw = compile_graph(net_100.graph, AccelConfig())
    check_fits(fw)
    xs = net_100.int8_inputs(1)
    results = simulate(fw, xs)
    check_against_tflite(net_100, fw, xs, results)
    check_cycle_model(fw, results[0])
    r = results[0]
    print(f"\nVerilator, alpha 1 (default config, tiled): {r.cycles:,} cycles, "
          f"{r.run_wall_s:.1f} s wall / {r.run_cpu_s:.1f} s CPU; build {r.build_s:.1f} s")
