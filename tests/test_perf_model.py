# amaranth: UnusedElaboratable=no
"""The cycle model (`sim.perf_model`) against the accelerator in Amaranth simulation: on the
tiny seed-shaped network of `test_rtl_accelerator`, with the fixed-latency AXI RAM model (no
random stalls), every layer's predicted cycles must equal its LAYER_CYCLES register, and the
total must equal CYCLES: the model is cycle-exact."""
import dataclasses

import pytest

from firmware.program import Opcode
from sim.perf_model import DdrTiming, predict
from test_rtl_accelerator import (CFG, NARROW_BUS, STATUS_DONE, STATUS_ERROR, WIDE_BUS,
                                  compiled, compiled_tiled, corrupted, model, run_accelerator,
                                  tiled_model)

__all__ = ["model", "tiled_model"]     # network fixtures shared with test_rtl_accelerator


def reading_older_output(fw):
    """`fw` with layer 2 reading layer 0's output: not chained, so it reloads its input from
    DDR once layer 1's store is done."""
    d0, d1 = fw.descriptors[:2]
    changes = dict(input_addr=d0.output_addr, input_zp=d1.input_zp)
    descriptors = list(fw.descriptors)
    descriptors[2] = dataclasses.replace(descriptors[2], **changes)
    return dataclasses.replace(fw, descriptors=descriptors, image=corrupted(fw, 2, **changes))


@pytest.mark.parametrize("cfg, ddr, program", [
    (CFG, DdrTiming(), None),
    (WIDE_BUS, DdrTiming(read_latency=20, write_latency=120), None),   # stores hold layers up
    (NARROW_BUS, DdrTiming(read_latency=30, write_latency=40),           # read gaps
     reading_older_output),
], ids=["base", "wide-slow-writes", "narrow-slow-reads-reload"])
def test_model_matches_measured_cycles(model, cfg, ddr, program):
    net = compiled(model, cfg)
    fw = net.fw if program is None else program(net.fw)
    prediction = predict(fw, ddr=ddr)
    _, (regs,) = run_accelerator(fw, fw.image, x=net.x, read_latency=ddr.read_latency,
                                 write_latency=ddr.write_latency)
    assert regs["STATUS"] & (STATUS_DONE | STATUS_ERROR) == STATUS_DONE, regs

    rows = [(p.layer, p.op, p.cycles, measured)
            for p, measured in zip(prediction.layers, regs["LAYER_CYCLES"], strict=True)]
    rows.append(("total", "", prediction.total, regs["CYCLES_LO"]))
    errors = [abs(predicted - measured) / measured for *_, predicted, measured in rows]
    print("\nlayer op predicted measured: " + "; ".join(
        f"{layer} {op} {predicted} {measured}" for layer, op, predicted, measured in rows)
        + f" (max error {100 * max(errors):.1f}%)")
    for layer, op, predicted, measured in rows:
        assert predicted == measured, f"layer {layer} {op}: predicted {predicted}, measured {measured}"


def test_model_matches_measured_cycles_of_bands(tiled_model):
    """A program tiled through DDR (bands of rows, depthwise bands ending without an output
    row, a depthwise output serialized over two requantizer beats): still cycle-exact."""
    ddr = DdrTiming(read_latency=9, write_latency=3)
    fw = compiled_tiled(tiled_model).fw
    prediction = predict(fw, ddr=ddr)
    _, (regs,) = run_accelerator(fw, fw.image, x=tiled_model.x, read_latency=ddr.read_latency,
                                 write_latency=ddr.write_latency, max_cycles=200_000)
    assert regs["STATUS"] & (STATUS_DONE | STATUS_ERROR) == STATUS_DONE, regs
    assert [p.cycles for p in prediction.layers] == regs["LAYER_CYCLES"]
    assert prediction.total == regs["CYCLES_LO"]


def test_model_counts_each_transfer_once(model):
    """What the model says about the schedule: only layer 0 loads its input, each layer
    stores its output once, and every weight and record byte is read once."""
    fw = compiled(model, CFG).fw
    layers = predict(fw).layers
    assert [layer.chained for layer in layers] == [False] + [True] * 6
    assert layers[0].input_bytes == fw.regions["input"][1]
    assert all(layer.input_bytes == 0 for layer in layers[1:])
    for layer, d in zip(layers, fw.descriptors):
        assert layer.output_bytes == -(-d.out_h * d.out_w * d.out_c // 8) * 8
        if d.opcode in (Opcode.CONV, Opcode.DWCONV):
            assert layer.weight_bytes == -(-d.weight_bytes // 8) * 8
            assert layer.record_bytes == 16 * d.out_c
    assert sum(layer.macs for layer in layers) == (
        5 * 4 * 8 * 27 + 5 * 4 * 8 * 9 + 5 * 4 * 12 * 8 + 3 * 2 * 12 * 9 + 10 * 12)
