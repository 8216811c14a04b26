"""The whole-accelerator check several model tests share: one input through the Verilated
accelerator, every layer bit-exact against TFLite, every descriptor's cycles as predicted."""
from quantize.verify import assert_bit_exact


def assert_verilator_exact(graph, fw, x, golden, folded=frozenset()):
    """Run int8 input `x` (no batch axis) of compiled `fw` in Verilator; assert the run ends
    well, its tensors equal `golden` on every mapped op and its cycles equal the cycle
    model's per descriptor. Returns the `SimResult`."""
    from sim.accel_sim import DDR_TIMING, simulate
    from sim.perf_model import predict
    (r,) = simulate(fw, [x], progress=False)
    assert r.ok and r.layer_count == len(fw.descriptors) - 1, r
    assert assert_bit_exact(graph, r.tensors, golden, folded) == len(graph.ops) - len(folded)
    prediction = predict(fw, ddr=DDR_TIMING)
    assert [layer.cycles for layer in prediction.layers] == r.layer_cycles
    assert prediction.total == r.cycles
    return r, prediction
