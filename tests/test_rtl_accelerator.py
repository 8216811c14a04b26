# amaranth: UnusedElaboratable=no
"""The whole accelerator in Amaranth's simulator: a compiled layer program runs out of the
AXI RAM model, programmed over AXI4-Lite, and every layer's output region must equal the
functional model's (`firmware.executor`) byte for byte, and TFLite BUILTIN_REF tensor by
tensor. Also: AXI back-pressure, corrupt programs and bus errors end with an error code, never
a hang; the top converts to Verilog with the AXI port names."""
import re
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from firmware.compiler import compile_graph
from firmware.executor import Memory, execute, host_input, read_tensor
from firmware.program import DESCRIPTOR_BYTES, Descriptor, Opcode
from quantize.convert import golden_interpreter, golden_run, to_int8_tflite_from_float
from quantize.tflite_graph import load_graph
from quantize.verify import assert_bit_exact
from rtl_gen.accelerator import Accelerator
from rtl_gen.config import AccelConfig
from rtl_gen.regs import LAYER_CYCLES_BASE, register_map
from rtl_gen.sequencer import ErrorCode, Limits, ProgramError, check_fits, descriptor_error
from sim.amaranth_axi_lite import LiteMaster
from sim.amaranth_axi_ram import AxiRam

REG = {r.name: r.offset for r in register_map()}
CFG = AccelConfig(pw_out=4, pw_in=4, dw_lanes=4, bus_bytes=8,
                  act_buffer_bytes=1024, weight_buffer_bytes=1024)
# Other buffer geometries: a bus wider than a channel group (16-byte words, 2-lane
# requantizer) and one narrower (4-byte bus, 8-channel words, 32-byte weight blocks).
WIDE_BUS = AccelConfig(pw_out=8, pw_in=2, dw_lanes=2, bus_bytes=16, max_burst=4,
                       act_buffer_bytes=1024, weight_buffer_bytes=1024)
NARROW_BUS = AccelConfig(pw_out=4, pw_in=8, dw_lanes=4, bus_bytes=4, max_outstanding=2,
                         act_buffer_bytes=2048, weight_buffer_bytes=1024)
# Built without the AddUnit, as for a network with no ADD layer (`AccelConfig.with_add`).
NO_ADD = replace(CFG, with_add=False)
BASE = 0x4000_0000
IN_SHAPE = (10, 8, 3)     # odd rows and even columns for the stride-2 depthwise padding
STATUS_BUSY, STATUS_DONE, STATUS_ERROR = 1, 2, 4


@pytest.fixture(scope="module")
def model():
    """A seed-shaped int8 network: its parsed graph, golden interpreter and one input."""
    import keras
    from keras import layers
    keras.utils.set_random_seed(7)
    init = "random_normal"
    inp = keras.Input(IN_SHAPE)
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu",
                      bias_initializer=init)(inp)
    x = layers.DepthwiseConv2D(3, strides=1, padding="same", activation="relu",
                               bias_initializer=init)(x)
    x = layers.Conv2D(12, 1, activation="relu", bias_initializer=init)(x)
    x = layers.DepthwiseConv2D(3, strides=2, padding="same", activation="relu",
                               bias_initializer=init)(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(10, bias_initializer=init)(x)
    out = layers.Softmax()(x)
    rng = np.random.default_rng(7)
    tflite = to_int8_tflite_from_float(keras.Model(inp, out),
                                       rng.normal(0, 1, (16, *IN_SHAPE)).astype(np.float32))
    x = rng.integers(-128, 128, (1, *IN_SHAPE), dtype=np.int8)
    return SimpleNamespace(graph=load_graph(tflite), interp=golden_interpreter(tflite), x=x)


def compiled(model, cfg):
    """The model's firmware for `cfg` and the DDR image the functional model leaves."""
    fw = compile_graph(model.graph, cfg, base=BASE)
    assert [d.opcode for d in fw.descriptors] == [
        Opcode.CONV, Opcode.DWCONV, Opcode.CONV, Opcode.DWCONV, Opcode.MEAN, Opcode.CONV,
        Opcode.SOFTMAX, Opcode.END]
    check_fits(fw)
    expected = Memory(bytearray(fw.image), fw.base)
    expected.write(fw.regions["input"][0], host_input(fw, model.x))
    assert execute(expected, fw.program_addr, cfg) == 7
    return SimpleNamespace(graph=model.graph, interp=model.interp, x=model.x, fw=fw,
                           expected=expected)


@pytest.fixture(scope="module")
def net(model):
    return compiled(model, CFG)


class HangingAxiRam(AxiRam):
    """An `AxiRam` whose read bursts starting in one of ``hang_ranges`` (half-open byte
    ranges) answer only after ``hang_latency`` cycles (never, by default): a DDR that stops
    answering reads. The ranges can be cleared later; bursts already taken keep their delay."""

    def __init__(self, *args, hang_ranges=(), hang_latency=10**15, **kwargs):
        self.hang_ranges = [tuple(r) for r in hang_ranges]
        self.hang_latency = hang_latency
        self._last_ar = None
        super().__init__(*args, **kwargs)

    @property
    def read_latency(self):
        # Read when the testbench records an accepted AR, just after `_check_burst`.
        addr = self._last_ar
        if addr is not None and any(lo <= addr < hi for lo, hi in self.hang_ranges):
            return self.hang_latency
        return self._read_latency

    @read_latency.setter
    def read_latency(self, value):
        self._read_latency = value

    def _check_burst(self, kind, addr, length, size, burst):
        if kind == "AR":
            self._last_ar = addr
        super()._check_burst(kind, addr, length, size, burst)


def run_accelerator(fw, image, *, x, stall=0.0, read_latency=4, write_latency=2, seed=0,
                    error_ranges=(), rerun=None, max_cycles=20_000, limits=Limits(),
                    abort_after=None, hang_ranges=(), hang_latency=10**15):
    """Load `image` and the input into the RAM model, start the program over AXI4-Lite and
    wait (bounded) for the interrupt; with `rerun`, call it on the RAM model, clear STATUS and
    run again. With `abort_after`, the first START is followed after that many cycles by a
    CTRL.SOFT_RESET; once BUSY is low (bounded), the image is reloaded and the program
    started again. Returns the RAM model and the registers read back after each run (with
    `abort_after`, the first entry is the STATUS read right after the soft reset drained)."""
    dut = Accelerator(fw.cfg, limits)
    ram = HangingAxiRam(len(image) + 4096, bus_bytes=fw.cfg.bus_bytes, base=fw.base,
                        read_latency=read_latency, write_latency=write_latency, stall=stall,
                        seed=seed, error_ranges=error_ranges, hang_ranges=hang_ranges,
                        hang_latency=hang_latency)

    def load(ram):
        ram.load(fw.base, bytes(image))
        ram.load(fw.regions["input"][0], host_input(fw, x))

    load(ram)
    runs = []

    async def wait_idle(ctx, lite):
        for _ in range(0, max_cycles, 16):
            status = await lite.read(ctx, REG["STATUS"])
            if not status & STATUS_BUSY:
                return status
            await ctx.tick().repeat(16)
        raise AssertionError(f"still busy after {max_cycles} cycles")

    async def run(ctx, lite):
        await lite.write(ctx, REG["CTRL"], 0b011)                 # IRQ_EN | START
        for _ in range(0, max_cycles, 64):
            if ctx.get(dut.irq):
                break
            await ctx.tick().repeat(64)
        else:
            raise AssertionError(f"no interrupt within {max_cycles} cycles")
        regs = {name: await lite.read(ctx, REG[name])
                for name in ("STATUS", "ERROR_CODE", "LAYER_COUNT", "CYCLES_LO")}
        regs["LAYER_CYCLES"] = [await lite.read(ctx, LAYER_CYCLES_BASE + 4 * i)
                                for i in range(regs["LAYER_COUNT"])]
        runs.append(regs)

    async def host(ctx):
        lite = LiteMaster(dut.s_axi)
        await lite.write(ctx, REG["PROG_ADDR_LO"], fw.program_addr)
        if abort_after is not None:
            await lite.write(ctx, REG["CTRL"], 0b011)             # IRQ_EN | START
            await ctx.tick().repeat(abort_after)
            busy = await lite.read(ctx, REG["STATUS"])
            assert busy & STATUS_BUSY, "the run ended before the soft reset"
            await lite.write(ctx, REG["CTRL"], 0b110)             # IRQ_EN | SOFT_RESET
            runs.append({"STATUS": await wait_idle(ctx, lite),
                         "LAYER_COUNT": await lite.read(ctx, REG["LAYER_COUNT"])})
            assert not ctx.get(dut.irq)
            load(ram)
        await run(ctx, lite)
        if rerun is not None:
            rerun(ram)
            await lite.write(ctx, REG["STATUS"], STATUS_DONE | STATUS_ERROR)
            assert not ctx.get(dut.irq)
            await wait_idle(ctx, lite)
            await run(ctx, lite)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(ram.testbench(dut.m_axi), background=True)
    sim.add_testbench(host)
    sim.run()
    return ram, runs


def layer_bytes(d: Descriptor) -> int:
    return d.out_h * d.out_w * d.out_c


def assert_matches_model(net, ram):
    """Every layer's output region, then the whole image, equal to the functional model."""
    fw = net.fw
    for d in fw.descriptors[:-1]:
        got = ram.dump(d.output_addr, layer_bytes(d))
        want = net.expected.read(d.output_addr, layer_bytes(d))
        assert got == want, f"layer {d.layer} ({Opcode(d.opcode).name}) differs from the model"
    assert ram.dump(fw.base, len(fw.image)) == bytes(net.expected.data)


@pytest.mark.parametrize("cfg", [CFG, WIDE_BUS, NARROW_BUS, NO_ADD],
                         ids=["base", "wide", "narrow", "no-add"])
def test_network_bit_exact_with_model_and_tflite(model, cfg):
    net = compiled(model, cfg)
    ram, (regs,) = run_accelerator(net.fw, net.fw.image, x=net.x)
    assert regs["STATUS"] & (STATUS_DONE | STATUS_ERROR) == STATUS_DONE, regs
    assert regs["LAYER_COUNT"] == 7
    assert_matches_model(net, ram)

    mem = Memory(bytearray(ram.dump(BASE, len(net.fw.image))), BASE)
    ours = {t: read_tensor(net.fw, mem, t) for t in net.fw.tensors if t != net.fw.input_tensor}
    assert assert_bit_exact(net.graph, ours, golden_run(net.interp, net.x)) == 7

    cycles = regs["LAYER_CYCLES"]
    assert all(c > 0 for c in cycles) and sum(cycles) <= regs["CYCLES_LO"]
    print(f"\nsimulated cycles ({cfg.pw_out}x{cfg.pw_in}, dw {cfg.dw_lanes}, "
          f"bus {cfg.bus_bytes} B): total {regs['CYCLES_LO']}; per layer "
          + ", ".join(f"{Opcode(d.opcode).name}={c}" for d, c in zip(net.fw.descriptors, cycles)))


# Tiling through DDR: 1 KiB activation buffers against 17x4x32 feature maps (2,176 bytes),
# with pointwise results of 16 requantizer beats against 8 MAC steps for 32 input channels
# (the MAC array waits on the AccSerializer's queue).
TILED = AccelConfig(pw_out=16, pw_in=4, dw_lanes=1, bus_bytes=8,
                    act_buffer_bytes=1024, weight_buffer_bytes=2048)
TILED_SHAPE = (34, 8, 3)


@pytest.fixture(scope="module")
def tiled_model():
    """Seed-shaped, with feature maps larger than TILED's activation buffers."""
    import keras
    from keras import layers
    keras.utils.set_random_seed(11)
    init = "random_normal"
    inp = keras.Input(TILED_SHAPE)
    x = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu",
                      bias_initializer=init)(inp)
    x = layers.DepthwiseConv2D(3, padding="same", activation="relu", bias_initializer=init)(x)
    x = layers.Conv2D(32, 1, activation="relu", bias_initializer=init)(x)
    x = layers.DepthwiseConv2D(3, strides=2, padding="same", activation="relu",
                               bias_initializer=init)(x)
    x = layers.Conv2D(64, 1, activation="relu", bias_initializer=init)(x)
    x = layers.GlobalAveragePooling2D()(x)
    out = layers.Softmax()(layers.Dense(10, bias_initializer=init)(x))
    rng = np.random.default_rng(11)
    tflite = to_int8_tflite_from_float(keras.Model(inp, out),
                                       rng.normal(0, 1, (16, *TILED_SHAPE)).astype(np.float32))
    x = rng.integers(-128, 128, (1, *TILED_SHAPE), dtype=np.int8)
    return SimpleNamespace(graph=load_graph(tflite), interp=golden_interpreter(tflite), x=x)


def compiled_tiled(model):
    """`tiled_model` for TILED: its first four layers run as bands of rows, its MEAN (9x2x64)
    as two bands of pixels."""
    fw = compile_graph(model.graph, TILED, base=BASE)
    check_fits(fw)
    bands = [(Opcode(d.opcode).name, d.stride, d.pad_top, d.pad_bottom)
             for d, (_, n) in zip(fw.descriptors, fw.bands) if n > 1]
    assert {b[0] for b in bands} == {"CONV", "DWCONV", "MEAN"}
    assert {b[1:] for b in bands if b[0] == "DWCONV"} >= {(1, 1, 0), (1, 0, 0), (1, 0, 1),
                                                         (2, 1, 0), (2, 0, 1)}, bands
    expected = Memory(bytearray(fw.image), fw.base)
    expected.write(fw.regions["input"][0], host_input(fw, model.x))
    assert execute(expected, fw.program_addr, TILED) == len(fw.descriptors) - 1
    return SimpleNamespace(graph=model.graph, interp=model.interp, x=model.x, fw=fw,
                           expected=expected)


def test_tiled_network_under_back_pressure(tiled_model):
    """Bands of rows through DDR, depthwise bands with every row padding at both strides, a
    MEAN over two bands of pixels, random AXI back-pressure: every band's output equals the
    functional model, every tensor TFLite."""
    net = compiled_tiled(tiled_model)
    ram, (regs,) = run_accelerator(net.fw, net.fw.image, x=net.x, stall=0.3, seed=5,
                                   max_cycles=200_000)
    assert regs["STATUS"] & (STATUS_DONE | STATUS_ERROR) == STATUS_DONE, regs
    assert regs["LAYER_COUNT"] == len(net.fw.descriptors) - 1
    assert_matches_model(net, ram)
    mem = Memory(bytearray(ram.dump(BASE, len(net.fw.image))), BASE)
    ours = {t: read_tensor(net.fw, mem, t) for t in net.fw.tensors if t != net.fw.input_tensor}
    assert assert_bit_exact(net.graph, ours, golden_run(net.interp, net.x)) == 8


@pytest.mark.slow
def test_seed_network_default_config():
    """The seed MobileNet (alpha 0.25, all 26 layers) on an 8x8 input with the default
    AccelConfig: every layer equal to the functional model and to TFLite."""
    from quantize.model import ModelSpec
    from quantize.pipeline import build_int8_model
    int8 = build_int8_model(ModelSpec(0.25, input_size=8))
    graph = load_graph(int8.tflite)
    x = np.random.default_rng(1).integers(-128, 128, (1, 8, 8, 3), dtype=np.int8)
    net = SimpleNamespace(graph=graph, interp=golden_interpreter(int8.tflite), x=x)
    fw = compile_graph(graph, AccelConfig(), base=BASE)
    check_fits(fw)
    net.fw, net.expected = fw, Memory(bytearray(fw.image), fw.base)
    net.expected.write(fw.regions["input"][0], host_input(fw, x))
    assert execute(net.expected, fw.program_addr, fw.cfg) == 26
    ram, (regs,) = run_accelerator(fw, fw.image, x=x, max_cycles=200_000)
    assert regs["STATUS"] & (STATUS_DONE | STATUS_ERROR) == STATUS_DONE, regs
    assert_matches_model(net, ram)
    mem = Memory(bytearray(ram.dump(BASE, len(fw.image))), BASE)
    ours = {t: read_tensor(fw, mem, t) for t in fw.tensors if t != fw.input_tensor}
    assert assert_bit_exact(graph, ours, golden_run(net.interp, x)) == 26
    print(f"\nseed network a0.25 8x8, default config: {regs['CYCLES_LO']} cycles")


def test_global_average_pool_rounds_like_tflite():
    """TFLite's AVERAGE_POOL_2D over a whole 6x6 map, run by the MEAN unit on raw sums with
    the host's searched multiplier (`quantize.average_pool`), as three bands of pixels. Its
    64 channels sum to the extremes and to each side of rounding steps (ties 36 q + 18, of
    both signs, where TFLite's rounding follows the sign): the RTL equals the functional
    model and TFLite."""
    from test_average_pool import maps_summing_to, pool_only_tflite
    side, channels = 6, 64
    count = side * side
    steps = np.unique(np.r_[np.linspace(-128, 126, 18).astype(int), -1, 0]) * count + count // 2
    sums = np.r_[-128 * count, 127 * count, (steps[:, None] + [-1, 0, 1]).ravel()]
    assert len(sums) <= channels
    (x,) = maps_summing_to(sums, side, channels)
    tflite = pool_only_tflite(side, channels)
    graph = load_graph(tflite)
    fw = compile_graph(graph, CFG, base=BASE)
    check_fits(fw)
    assert {d.opcode for d in fw.descriptors[:-1]} == {Opcode.MEAN} and len(fw.bands) == 3
    net = SimpleNamespace(graph=graph, fw=fw, expected=Memory(bytearray(fw.image), fw.base))
    net.expected.write(fw.regions["input"][0], host_input(fw, x))
    assert execute(net.expected, fw.program_addr, CFG) == 3
    ram, (regs,) = run_accelerator(fw, fw.image, x=x)
    assert regs["STATUS"] & (STATUS_DONE | STATUS_ERROR) == STATUS_DONE, regs
    assert_matches_model(net, ram)
    mem = Memory(bytearray(ram.dump(BASE, len(fw.image))), BASE)
    ours = {t: read_tensor(fw, mem, t) for t in fw.tensors if t != fw.input_tensor}
    assert assert_bit_exact(graph, ours, golden_run(golden_interpreter(tflite), x)) == 2


def test_back_pressure_and_latency_do_not_change_results(net):
    ram, (regs,) = run_accelerator(net.fw, net.fw.image, x=net.x, stall=0.4, read_latency=11,
                                   write_latency=7, seed=3)
    assert regs["STATUS"] & (STATUS_DONE | STATUS_ERROR) == STATUS_DONE, regs
    assert_matches_model(net, ram)


def corrupted(fw, index, **changes):
    """The firmware image with descriptor `index` changed; `check=False` breaks its check
    word, otherwise the descriptor is re-packed with a valid one."""
    image = bytearray(fw.image)
    at = fw.program_addr - fw.base + index * DESCRIPTOR_BYTES
    if changes.pop("check", True):
        d = Descriptor.unpack(bytes(image[at:at + DESCRIPTOR_BYTES]))
        for name, value in changes.items():
            setattr(d, name, value)
        image[at:at + DESCRIPTOR_BYTES] = d.pack()
    else:
        image[at + 4] ^= 0x01
    return image


def test_layer_reading_an_older_output_reloads_it(net):
    """Layer 2 made to read layer 0's output (the shape of layer 1's) is not chained: it
    reloads its input from DDR once layer 1's store is done, instead of taking layer 1's
    output from the activation buffer; every layer still equals the functional model."""
    d0, d1 = net.fw.descriptors[:2]
    image = corrupted(net.fw, 2, input_addr=d0.output_addr, input_zp=d1.input_zp)
    expected = Memory(bytearray(image), net.fw.base)
    expected.write(net.fw.regions["input"][0], host_input(net.fw, net.x))
    assert execute(expected, net.fw.program_addr, CFG) == 7
    ram, (regs,) = run_accelerator(net.fw, image, x=net.x)
    assert regs["STATUS"] & (STATUS_DONE | STATUS_ERROR) == STATUS_DONE, regs
    assert_matches_model(SimpleNamespace(fw=net.fw, expected=expected), ram)
    assert expected.data != net.expected.data


def assert_error(regs, code, layers_done):
    assert regs["STATUS"] & (STATUS_BUSY | STATUS_DONE | STATUS_ERROR) == \
        STATUS_DONE | STATUS_ERROR, regs
    assert regs["ERROR_CODE"] == code, ErrorCode(regs["ERROR_CODE"]).name
    assert regs["LAYER_COUNT"] == layers_done


def test_corrupt_descriptor_stops_with_bad_descriptor(net):
    _, (regs,) = run_accelerator(net.fw, corrupted(net.fw, 1, check=False), x=net.x)
    assert_error(regs, ErrorCode.BAD_DESCRIPTOR, 1)


def test_bus_errors_stop_the_run_and_the_next_run_succeeds(net):
    """SLVERR on layer 0's weights ends the first run with a read error; once the fault is
    gone, a second START (sticky DMA errors cleared) runs the whole program."""
    d = net.fw.descriptors[0]
    ram, (failed, ok) = run_accelerator(
        net.fw, net.fw.image, x=net.x, error_ranges=[(d.weight_addr, d.weight_addr + 8)],
        rerun=lambda ram: ram.error_ranges.clear())
    assert_error(failed, ErrorCode.AXI_READ_ERROR, 0)
    assert ok["STATUS"] & (STATUS_DONE | STATUS_ERROR) == STATUS_DONE, ok
    assert ok["LAYER_COUNT"] == 7
    assert_matches_model(net, ram)


def test_slverr_on_an_output_stops_with_write_error(net):
    d = net.fw.descriptors[1]
    _, (regs,) = run_accelerator(net.fw, net.fw.image, x=net.x,
                                 error_ranges=[(d.output_addr, d.output_addr + 8)])
    assert_error(regs, ErrorCode.AXI_WRITE_ERROR, 1)


@pytest.mark.parametrize("layer, changes, code", [
    (0, {"in_h": 200, "out_h": 200}, ErrorCode.TOO_LARGE),   # larger than the buffers
    (0, {"opcode": Opcode.PAD}, ErrorCode.UNSUPPORTED),
    (0, {"opcode": 9}, ErrorCode.BAD_OPCODE),
    (0, {"layer": 3}, ErrorCode.BAD_DESCRIPTOR),             # misplaced descriptor
    (1, {"pad_top": 2}, ErrorCode.UNSUPPORTED_PADDING),      # rows: 0 or 1 padding rows
    (1, {"pad_left": 2}, ErrorCode.UNSUPPORTED_PADDING),     # columns: 0 or 1 too
    (1, {"pad_left": 0}, ErrorCode.BAD_SHAPE),               # out_w no longer follows
    (1, {"pad_top": 0}, ErrorCode.BAD_SHAPE),                # out_h no longer follows
])
def test_invalid_layer_stops_with_its_code(net, layer, changes, code):
    image = corrupted(net.fw, layer, **changes)
    at = net.fw.program_addr - net.fw.base + layer * DESCRIPTOR_BYTES
    if changes.get("layer") is None:
        assert descriptor_error(Descriptor.unpack(bytes(image[at:at + 64])), CFG) == code
    _, (regs,) = run_accelerator(net.fw, image, x=net.x)
    assert_error(regs, code, layer)


def test_add_without_the_add_unit_stops_with_unsupported(model):
    """On an accelerator built without the AddUnit, an ADD descriptor that the one with it
    would run (layer 1 made an ADD of its own 5x4x8 input and a second input of that size)
    stops the run with UNSUPPORTED before anything of it is loaded; the layer before it
    completes."""
    net = compiled(model, NO_ADD)
    d = net.fw.descriptors[1]
    image = corrupted(net.fw, 1, opcode=Opcode.ADD, weight_bytes=d.in_h * d.in_w * d.in_c)
    at = net.fw.program_addr - net.fw.base + DESCRIPTOR_BYTES
    add = Descriptor.unpack(bytes(image[at:at + DESCRIPTOR_BYTES]))
    assert descriptor_error(add, CFG) is None
    assert descriptor_error(add, NO_ADD) == ErrorCode.UNSUPPORTED
    _, (regs,) = run_accelerator(net.fw, image, x=net.x)
    assert_error(regs, ErrorCode.UNSUPPORTED, 1)


def test_check_fits_names_the_layer_too_large(net):
    wide = AccelConfig(pw_out=64, pw_in=16, dw_lanes=16, act_buffer_bytes=1024)
    fw = compile_graph(net.graph, AccelConfig(pw_out=64, pw_in=16, dw_lanes=16))
    with pytest.raises(ProgramError, match=r"layer 0 \(CONV\).*TOO_LARGE"):
        check_fits(fw, wide)                            # 20 im2col pixels x 64 channels
    tiled = compile_graph(net.graph, wide)              # compiled for the small buffers:
    check_fits(tiled)                                   # bands of rows that fit
    assert len(tiled.descriptors) > len(fw.descriptors)


def test_accelerator_converts_to_verilog_with_axi_port_names():
    text = verilog.convert(Accelerator(AccelConfig()), name="mnet_accel")
    header = text[text.index("module mnet_accel("):]
    header = header[:header.index(");")]
    ports = set(re.findall(r"\\?([A-Za-z_][\w$]*)", header)) - {"module", "mnet_accel"}
    ports -= {"clk", "rst"}
    assert ports, header
    assert all(p.startswith(("m_axi__", "s_axi__")) or p == "irq" for p in ports), ports
    for name in ("m_axi__araddr", "m_axi__rdata", "m_axi__awlen", "m_axi__wlast",
                 "s_axi__awaddr", "s_axi__rdata", "irq"):
        assert name in ports


def layer_start(net, layer):
    """Cycle (after START) at which `layer` starts, from an undisturbed run's LAYER_CYCLES."""
    _, (regs,) = run_accelerator(net.fw, net.fw.image, x=net.x)
    return sum(regs["LAYER_CYCLES"][:layer]), regs["LAYER_CYCLES"][layer]


@pytest.mark.parametrize("layer", [1, 2])
def test_soft_reset_mid_layer_aborts_and_the_next_run_is_bit_exact(net, layer):
    """CTRL.SOFT_RESET halfway through layer 1 (DWCONV) or 2 (CONV): the core drains its
    AXI bursts (the RAM model checks every handshake) and goes idle with STATUS clear and no
    interrupt; a new START then runs the whole program bit-exact."""
    start, length = layer_start(net, layer)
    ram, (aborted, ok) = run_accelerator(net.fw, net.fw.image, x=net.x,
                                         abort_after=start + length // 2)
    assert aborted["STATUS"] & (STATUS_BUSY | STATUS_DONE | STATUS_ERROR) == 0, aborted
    assert aborted["LAYER_COUNT"] == 0
    assert ok["STATUS"] & (STATUS_DONE | STATUS_ERROR) == STATUS_DONE, ok
    assert ok["ERROR_CODE"] == ErrorCode.NONE and ok["LAYER_COUNT"] == 7
    assert_matches_model(net, ram)


def test_soft_reset_under_back_pressure_then_rerun(net):
    start, length = layer_start(net, 2)
    ram, (aborted, ok) = run_accelerator(net.fw, net.fw.image, x=net.x, stall=0.4,
                                         read_latency=11, write_latency=7, seed=5,
                                         abort_after=start + length // 3)
    assert aborted["STATUS"] & (STATUS_BUSY | STATUS_DONE | STATUS_ERROR) == 0, aborted
    assert ok["STATUS"] & (STATUS_DONE | STATUS_ERROR) == STATUS_DONE, ok
    assert_matches_model(net, ram)


def test_watchdog_does_not_fire_on_a_normal_run(net):
    """A 1024-cycle watchdog still lets the whole program run: compute and stalls make
    progress often enough."""
    ram, (regs,) = run_accelerator(net.fw, net.fw.image, x=net.x, stall=0.4, read_latency=11,
                                   write_latency=7, seed=3, limits=Limits(watchdog_cycles=1024))
    assert regs["STATUS"] & (STATUS_DONE | STATUS_ERROR) == STATUS_DONE, regs
    assert_matches_model(net, ram)


def test_ddr_never_answering_a_read_ends_with_watchdog(net):
    """Layer 1's weights never come back: the run ends with WATCHDOG and the interrupt instead
    of hanging. The read burst stays outstanding, so the core keeps BUSY (draining) for good:
    an AXI master cannot abandon it."""
    d = net.fw.descriptors[1]
    _, (regs,) = run_accelerator(net.fw, net.fw.image, x=net.x,
                                 limits=Limits(watchdog_cycles=1024),
                                 hang_ranges=[(d.weight_addr, d.weight_addr + 8)])
    assert regs["STATUS"] & (STATUS_DONE | STATUS_ERROR) == STATUS_DONE | STATUS_ERROR, regs
    assert regs["STATUS"] & STATUS_BUSY, regs
    assert regs["ERROR_CODE"] == ErrorCode.WATCHDOG, ErrorCode(regs["ERROR_CODE"]).name
    assert regs["LAYER_COUNT"] == 1


def test_watchdog_then_late_answer_drains_and_the_next_run_succeeds(net):
    """A read answered only after 4000 cycles trips a 1024-cycle watchdog; once the late
    burst has drained the core is idle, and a new START runs the program bit-exact."""
    d = net.fw.descriptors[2]
    ram, (failed, ok) = run_accelerator(
        net.fw, net.fw.image, x=net.x, limits=Limits(watchdog_cycles=1024),
        hang_ranges=[(d.weight_addr, d.weight_addr + 8)], hang_latency=4000,
        rerun=lambda ram: ram.hang_ranges.clear())
    assert failed["ERROR_CODE"] == ErrorCode.WATCHDOG
    assert failed["STATUS"] & (STATUS_DONE | STATUS_ERROR) == STATUS_DONE | STATUS_ERROR
    assert ok["STATUS"] & (STATUS_BUSY | STATUS_DONE | STATUS_ERROR) == STATUS_DONE, ok
    assert ok["ERROR_CODE"] == ErrorCode.NONE and ok["LAYER_COUNT"] == 7
    assert_matches_model(net, ram)
