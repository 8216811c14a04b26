"""The numpy int8 reference equals TFLite's BUILTIN_REF interpreter on every intermediate
tensor of the seed network, on real CIFAR-10 test images."""
import numpy as np
import pytest

from quantize.convert import golden_run
from quantize.reference import run_graph
from quantize.verify import MismatchError, assert_bit_exact, compare_layers

SEED_OPS = ["CONV_2D"] + ["DEPTHWISE_CONV_2D", "CONV_2D"] * 11 + ["MEAN", "FULLY_CONNECTED", "SOFTMAX"]


@pytest.mark.parametrize("alpha_fixture", ["net_025", "net_100"])
def test_seed_network_layer_by_layer(alpha_fixture, request):
    net = request.getfixturevalue(alpha_fixture)
    assert [op.kind for op in net.graph.ops] == SEED_OPS
    for x in net.int8_inputs(4):
        x = x[None]
        golden = golden_run(net.interpreter, x)
        ours = run_graph(net.graph, x)
        assert assert_bit_exact(net.graph, ours, golden) == len(SEED_OPS)
        # Not vacuous: the softmax output is a real distribution over the 10 classes.
        probs = ours[net.graph.output.index].astype(int) + 128
        assert 200 <= probs.sum() <= 266 and len(np.unique(probs)) > 1


@pytest.mark.parametrize("layer", [0, 11, 23, 24, 25])
def test_corrupted_expected_value_fails(net_025, layer):
    x = net_025.int8_inputs(1)
    golden = golden_run(net_025.interpreter, x)
    ours = run_graph(net_025.graph, x)
    t = net_025.graph.ops[layer].outputs[0].index
    corrupted = dict(golden)
    corrupted[t] = golden[t].copy()
    flat = corrupted[t].reshape(-1)
    flat[flat.size // 2] = np.int8(flat[flat.size // 2] ^ 1)
    with pytest.raises(MismatchError, match=f"layer {layer} "):
        assert_bit_exact(net_025.graph, ours, corrupted)
    diffs = compare_layers(net_025.graph, ours, corrupted)
    assert [d.op_index for d in diffs if d.mismatches] == [layer]
    assert diffs[layer].mismatches == 1 and diffs[layer].max_abs_diff == 1


def test_batched_reference_equals_single_image_runs(net_025):
    """The reference runs whole batches (used for accuracy); each row equals its own run."""
    xs = net_025.int8_inputs(3)
    from quantize.reference import run_op
    batch = xs
    singles = [x[None] for x in xs]
    for op in net_025.graph.ops:
        batch = run_op(op, batch)
        singles = [run_op(op, s) for s in singles]
        np.testing.assert_array_equal(batch, np.concatenate(singles))
