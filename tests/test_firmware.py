"""The compiled layer program, run by the functional model straight out of the DDR image,
equals TFLite on every layer: this pins the compiler's encodings before any RTL runs."""
import numpy as np
import pytest

from firmware import layout as L
from firmware.compiler import compile_graph
from firmware.executor import Memory, execute, host_input, read_tensor
from firmware.program import Descriptor, DescriptorError, Opcode
from quantize.convert import golden_run
from quantize.verify import assert_bit_exact
from firmware.tiling import TilingError
from rtl_gen.config import AccelConfig
from rtl_gen.sequencer import Geometry, check_fits

CONFIGS = [AccelConfig(), AccelConfig(pw_out=4, pw_in=4, dw_lanes=2), AccelConfig(pw_out=32, pw_in=16, dw_lanes=16)]


def run_image(net, fw, x):
    mem = Memory(bytearray(fw.image), fw.base)
    mem.write(fw.regions["input"][0], host_input(fw, x[None]))
    layers = execute(mem, fw.program_addr, fw.cfg)
    return layers, {t: read_tensor(fw, mem, t) for t in fw.tensors if t != fw.input_tensor}


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.pw_out}x{c.pw_in}-dw{c.dw_lanes}")
@pytest.mark.parametrize("alpha_fixture", ["net_025", "net_100"])
def test_program_bit_exact_every_layer(alpha_fixture, cfg, request):
    net = request.getfixturevalue(alpha_fixture)
    fw = compile_graph(net.graph, cfg, base=0x8000_0000)
    assert layer_opcodes(fw) == (
        [Opcode.CONV] + [Opcode.DWCONV, Opcode.CONV] * 11 + [Opcode.MEAN, Opcode.CONV, Opcode.SOFTMAX])
    assert fw.descriptors[-1].opcode == Opcode.END
    for addr, n in fw.regions.values():
        assert addr % L.ALIGN == 0 and fw.base <= addr and addr + n <= fw.base + len(fw.image)
    for x in net.int8_inputs(2):
        layers, ours = run_image(net, fw, x)
        assert layers == len(fw.descriptors) - 1
        assert assert_bit_exact(net.graph, ours, golden_run(net.interpreter, x[None])) == 26


def layer_opcodes(fw):
    """The opcode of each network layer (the bands of a tiled layer counted once)."""
    return [d.opcode for d, (band, _) in zip(fw.descriptors, fw.bands) if band == 0]


@pytest.mark.parametrize("act_kib,alpha_fixture", [(16, "net_025"), (64, "net_100")])
def test_tiled_program_bit_exact_every_layer(act_kib, alpha_fixture, request):
    """Activation buffers far smaller than the feature maps: CONV and DWCONV layers run as
    bands of rows through DDR (stride 1 and 2, bands touching the top, the bottom, neither),
    every band passes the sequencer's checks, and every layer still equals TFLite."""
    net = request.getfixturevalue(alpha_fixture)
    cfg = AccelConfig(pw_out=8, pw_in=8, dw_lanes=4, act_buffer_bytes=act_kib * 1024)
    fw = compile_graph(net.graph, cfg, base=0x4000_0000)
    check_fits(fw)
    tiled = {op for op, (_, n) in zip(fw.layer_ops, fw.bands) if n > 1}
    banded = [d for d, (_, n) in zip(fw.descriptors, fw.bands) if n > 1]
    assert len(tiled) >= 8
    assert {d.opcode for d in banded} == {Opcode.CONV, Opcode.DWCONV}
    assert {d.stride for d in banded if d.opcode == Opcode.DWCONV} == {1, 2}
    assert {(d.pad_top, d.pad_bottom) for d in banded if d.opcode == Opcode.DWCONV} >= {
        (1, 0), (0, 0), (0, 1)}
    capacity = Geometry(cfg).act_capacity
    assert all(d.in_h * d.in_w * d.in_c <= capacity and d.out_h * d.out_w * d.out_c <= capacity
               for d in fw.descriptors)
    assert len(layer_opcodes(fw)) == 26
    for x in net.int8_inputs(2):
        layers, ours = run_image(net, fw, x)
        assert layers == len(fw.descriptors) - 1
        assert assert_bit_exact(net.graph, ours, golden_run(net.interpreter, x[None])) == 26


def test_untileable_layer_is_rejected(net_025):
    """A buffer smaller than one band's rows: the compiler names the layer and the sizes."""
    cfg = AccelConfig(pw_out=8, pw_in=8, dw_lanes=4, act_buffer_bytes=1024)
    with pytest.raises(TilingError, match=r"layer \d+ '.*' \(DEPTHWISE_CONV_2D\): even a band of one output "
                                          r"row needs more than the 1024 B activation buffer"):
        compile_graph(net_025.graph, cfg)


def test_descriptor_roundtrip_and_check_word():
    d = Descriptor(opcode=Opcode.DWCONV, layer=3, in_h=14, in_w=14, in_c=64, out_c=64, out_h=7,
                   out_w=7, stride=2, pad_bottom=1, pad_right=1, input_zp=-128, output_zp=-5,
                   act_min=-128, act_max=127, multiplier=-(1 << 31), shift=-31, aux=-992,
                   input_addr=0xFFFF_FFC0)
    raw = d.pack()
    assert len(raw) == 64 and Descriptor.unpack(raw) == d
    corrupt = bytearray(raw)
    corrupt[20] ^= 0x10
    with pytest.raises(DescriptorError, match="check word"):
        Descriptor.unpack(bytes(corrupt))
    with pytest.raises(DescriptorError, match="in_h=70000 does not fit 16 bits"):
        Descriptor(in_h=70000).pack()


def test_weight_layouts_roundtrip():
    cfg = AccelConfig(pw_out=4, pw_in=8, dw_lanes=2)
    rng = np.random.default_rng(0)
    w = rng.integers(-128, 128, (6, 13), dtype=np.int8)
    raw = L.pointwise_weights(w, cfg, 8, 16)
    back = L.unpack_pointwise_weights(raw, cfg, 8, 16)
    assert np.array_equal(back[:6, :13], w) and not back[6:].any() and not back[:, 13:].any()
    # Stream order: the first block is output channels 0..3 x inputs 0..7.
    assert np.array_equal(np.frombuffer(raw[:32], np.int8).reshape(4, 8), w[:4, :8])
    dw = rng.integers(-128, 128, (1, 3, 3, 5), dtype=np.int8)
    draw = L.depthwise_weights(dw, cfg, 6)
    assert np.array_equal(L.unpack_depthwise_weights(draw, cfg, 6)[..., :5], dw[0])
    assert np.array_equal(np.frombuffer(draw[:2], np.int8), dw[0, 0, 0, :2])


def test_corrupt_program_is_detected(net_025):
    fw = compile_graph(net_025.graph, AccelConfig())
    mem = Memory(bytearray(fw.image))
    mem.data[fw.program_addr + 5 * 64 + 8] ^= 1
    with pytest.raises(DescriptorError, match="check word"):
        execute(mem, fw.program_addr, fw.cfg)
