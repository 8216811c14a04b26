"""What the seed network's shapes alone decide, checked before it is built.

Building, calibrating and converting a Keras MobileNet takes minutes and gigabytes, yet
whether its program fits the accelerator depends only on the layer shapes, which follow
from (alpha, input size) and the architecture of `quantize.model`. `check_seed_network`
derives the descriptors `firmware.compiler` would emit, splits them into bands exactly as
`firmware.tiling` does, and applies the sequencer's size rules (`descriptor_error`), so a
network that cannot fit is refused in a fraction of a second with the message the full flow
would give; and it refuses a network whose float build would exhaust the machine's memory.
Imports no TensorFlow.
"""
from __future__ import annotations

import os

from firmware.layout import channel_align
from firmware.program import Descriptor, Flags, Opcode
from firmware.tiling import split_layer
from quantize.model import BLOCKS, STEM_CHANNELS, ModelSpec

from rtl_gen.config import AccelConfig
from firmware.contract import ErrorCode, Geometry, ProgramError, descriptor_error

# Peak memory of building an untrained seed network (Keras model, BatchNorm calibration on a
# batch of 32 images through a probe per layer, TFLite conversion on 200 calibration images),
# measured with /usr/bin/time on this flow: alpha 0.25 / 28 px 0.77 GB, alpha 1 / 48 px 3.0 GB,
# alpha 0.5 / 96 px 5.1 GB, alpha 1 / 96 px 8.4 GB. It grows as ~90 copies of one image's float
# activations (all layer outputs) over a ~1.2 GB base; the rule rounds both up.
BUILD_BASE_BYTES = 1.5e9
BUILD_ACTIVATION_COPIES = 100
# Share of the machine's memory a build may be expected to take.
MEMORY_SHARE = 0.8


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _same_pads(size: int, stride: int) -> tuple[int, int, int]:
    """(output size, pad before, pad after) of TFLite SAME padding for a 3x3 window."""
    out = -(-size // stride)
    total = max((out - 1) * stride + 3 - size, 0)
    return out, total // 2, total - total // 2


def seed_descriptors(spec: ModelSpec, cfg: AccelConfig) -> list[tuple[str, Descriptor]]:
    """(layer name, descriptor) of every layer `firmware.compiler` emits for the seed
    network, before tiling; names as in the TFLite graph's ops ("layer i '...' (KIND)")."""
    ca = channel_align(cfg)
    layers = []

    def add(keras_name, kind, d):
        d.layer = len(layers)
        layers.append((f"layer {d.layer} '{keras_name}' ({kind})", d))

    def conv(keras_name, kind, h, w, in_c, out_c, **fields):
        add(keras_name, kind, Descriptor(opcode=Opcode.CONV, in_h=h, in_w=w, out_h=h, out_w=w,
                                         in_c=in_c, out_c=out_c, weight_bytes=in_c * out_c,
                                         **fields))

    # The stem: a stride-2 3x3 conv on host-made im2col patches of 9 x 3 values per pixel.
    h, _, _ = _same_pads(spec.input_size, 2)
    c = _round_up(spec.channels(STEM_CHANNELS), ca)
    conv("conv1", "CONV_2D", h, h, _round_up(27, ca), c, kernel=3, stride=2,
         flags=Flags.IM2COL)
    for i, (stride, out_ch) in enumerate(BLOCKS):
        out_h, top, bottom = _same_pads(h, stride)
        add(f"block_{i}_depthwise", "DEPTHWISE_CONV_2D", Descriptor(
            opcode=Opcode.DWCONV, kernel=3, stride=stride, in_h=h, in_w=h, in_c=c,
            out_h=out_h, out_w=out_h, out_c=c, weight_bytes=9 * c,
            pad_top=top, pad_left=top, pad_bottom=bottom, pad_right=bottom))
        h, out_c = out_h, _round_up(spec.channels(out_ch), ca)
        conv(f"block_{i}_project", "CONV_2D", h, h, c, out_c)
        c = out_c
    add("avg_pool", "MEAN", Descriptor(opcode=Opcode.MEAN, in_h=h, in_w=h, in_c=c,
                                       out_h=1, out_w=1, out_c=c))
    classes = _round_up(spec.num_classes, ca)
    conv("logits", "FULLY_CONNECTED", 1, 1, c, classes)
    add("softmax", "SOFTMAX", Descriptor(opcode=Opcode.SOFTMAX, in_h=1, in_w=1, in_c=classes,
                                         out_h=1, out_w=1, out_c=classes,
                                         real_c=spec.num_classes))
    return layers


def check_fits(spec: ModelSpec, cfg: AccelConfig) -> None:
    """Raise `ProgramError` (a `TilingError` where tiling gives up) naming the first layer
    of the seed network that the accelerator built for `cfg` cannot run. Only size limits
    are judged here; every other rule is the compiler's own and holds for this network."""
    capacity = Geometry(cfg).act_capacity
    for name, d in seed_descriptors(spec, cfg):
        for part in split_layer(d, capacity, cfg, name):
            if descriptor_error(part, cfg) == ErrorCode.TOO_LARGE:
                raise ProgramError(
                    f"{name}: too large for the accelerator (input {part.in_h}x{part.in_w}x"
                    f"{part.in_c}, output {part.out_h}x{part.out_w}x{part.out_c}, weights "
                    f"{part.weight_bytes} B; activation buffers {capacity} B, weight buffer "
                    f"{cfg.weight_buffer_bytes} B); use a larger config or a smaller network")


def float_activation_bytes(spec: ModelSpec) -> int:
    """Bytes of every layer output of one image in float32 (the Keras model's view)."""
    h = -(-spec.input_size // 2)
    c = spec.channels(STEM_CHANNELS)
    total = h * h * c
    for stride, out_ch in BLOCKS:
        h = -(-h // stride)
        total += h * h * c                       # depthwise output
        c = spec.channels(out_ch)
        total += h * h * c                       # pointwise output
    return 4 * total


def build_memory_bytes(spec: ModelSpec) -> float:
    return BUILD_BASE_BYTES + BUILD_ACTIVATION_COPIES * float_activation_bytes(spec)


def physical_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None                              # not known here: no limit


class TooLargeToBuild(ValueError):
    """A seed network whose float build would not fit the machine's memory."""


def check_memory(spec: ModelSpec) -> None:
    need, have = build_memory_bytes(spec), physical_memory_bytes()
    if have is not None and need > MEMORY_SHARE * have:
        raise TooLargeToBuild(
            f"{spec.name} would need about {need / 1e9:.0f} GB of memory to build, calibrate "
            f"and convert in float ({BUILD_BASE_BYTES / 1e9:g} GB + {BUILD_ACTIVATION_COPIES} x "
            f"the {float_activation_bytes(spec) / 1e6:.0f} MB of float activations of one "
            f"image), more than {MEMORY_SHARE:.0%} of this machine's {have / 1e9:.0f} GB; use a "
            "smaller alpha or input size")


def check_seed_network(spec: ModelSpec, cfg: AccelConfig) -> None:
    check_fits(spec, cfg)
    check_memory(spec)
