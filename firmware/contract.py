"""The hardware/firmware contract: what the accelerator's RTL (`rtl_gen`) and the host side
(`firmware`: compiler, drivers, C header) must agree on, in one module both import and that
needs no HDL: the register map (offsets, fields, ID and version), the error codes the core
reports, the fixed capacities of its units (`Limits`), the on-chip buffer geometry a
config implies (`Geometry`) and the rules a config (`check_config`) and each descriptor
(`layer_checks`) must follow, which the sequencer builds into its CHECK state and the host
runs before a build (`check_fits`). The layer program's descriptor format is
`firmware.program`.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from types import SimpleNamespace
from typing import NamedTuple

from firmware.layout import PARAM_BYTES, channel_align
from firmware.program import Descriptor, Flags, Opcode
from rtl_gen.config import AccelConfig, ConfigError

# ---- register map --------------------------------------------------------------------------

ACCEL_ID = 0x4D4E4143            # ASCII "MNAC": MobileNet accelerator
REGMAP_VERSION = 0x0001_0000     # major << 16 | minor << 8 | patch of this register map
LAYER_CYCLES_BASE = 0x100
LAYER_CYCLES_STRIDE = 4
# Per-descriptor cycle counters (a layer tiled through DDR takes one descriptor per band).
LAYER_COUNTERS = 256


class Register(NamedTuple):
    """One register, or an array of ``count`` registers ``LAYER_CYCLES_STRIDE`` apart.

    ``access``: ``RO`` read-only; ``RW`` read/write; ``RW1C`` readable, bits written 1 are
    cleared (see `register_fields` for which bits of mixed registers do what).
    """
    name: str
    offset: int
    access: str
    description: str
    count: int = 1


class Field(NamedTuple):
    """A bit field of a register. ``access`` adds ``W1P`` (write 1 to pulse, reads 0) and
    ``W1C`` (sticky, write 1 to clear) to the register access kinds."""
    register: str
    name: str
    lsb: int
    width: int
    access: str
    description: str


_FIXED = [
    Register("ID", 0x00, "RO", f"Constant {ACCEL_ID:#010x} (ASCII 'MNAC'): identifies the core."),
    Register("VERSION", 0x04, "RO",
             "Register map version: major << 16 | minor << 8 | patch."),
    Register("CTRL", 0x08, "RW",
             "Control: START and SOFT_RESET pulse when written 1 (read 0); IRQ_EN is a plain bit."),
    Register("STATUS", 0x0C, "RW1C",
             "Status: BUSY follows the core; DONE and ERROR are sticky, cleared by writing 1."),
    Register("ERROR_CODE", 0x10, "RO", "Error code reported by the core (8 bits)."),
    Register("PROG_ADDR_LO", 0x14, "RW", "Program (command list) address in DDR, bits 31..0."),
    Register("PROG_ADDR_HI", 0x18, "RW", "Program (command list) address in DDR, bits 63..32."),
    Register("LAYER_COUNT", 0x1C, "RO",
             "Layers of the current run whose output has reached DDR (16 bits)."),
    Register("CYCLES_LO", 0x20, "RO",
             "Cycles spent busy since the last START, bits 31..0. Reading it latches CYCLES_HI."),
    Register("CYCLES_HI", 0x24, "RO",
             "Bits 63..32 of the busy cycle count, as latched by the last CYCLES_LO read."),
]

_FIELDS = [
    Field("CTRL", "START", 0, 1, "W1P",
          "Write 1 to run the program at PROG_ADDR; restarts CYCLES, leaves STATUS.DONE alone."),
    Field("CTRL", "IRQ_EN", 1, 1, "RW", "Drive the interrupt output while STATUS.DONE is set."),
    Field("CTRL", "SOFT_RESET", 2, 1, "W1P",
          "Write 1 to reset the core; also clears STATUS.DONE, STATUS.ERROR and the cycle count."),
    Field("STATUS", "BUSY", 0, 1, "RO", "The core is running."),
    Field("STATUS", "DONE", 1, 1, "W1C", "The core finished a run (sticky)."),
    Field("STATUS", "ERROR", 2, 1, "W1C", "The core reported an error (sticky); see ERROR_CODE."),
    Field("ERROR_CODE", "CODE", 0, 8, "RO", "Error code reported by the core."),
    Field("LAYER_COUNT", "COUNT", 0, 16, "RO",
          "Layers of the current run whose output has reached DDR."),
]


def register_map(n_layers: int = LAYER_COUNTERS) -> list[Register]:
    """The register map of a `RegisterFile` with ``n_layers`` per-layer cycle counters."""
    return _FIXED + [Register(
        "LAYER_CYCLES", LAYER_CYCLES_BASE, "RO",
        f"Cycles spent in layer i of the last run, at LAYER_CYCLES + {LAYER_CYCLES_STRIDE} * i "
        f"(i < {n_layers}).", count=n_layers)]


def register_fields() -> list[Field]:
    """Bit fields of the registers that are not a plain 32-bit number."""
    return list(_FIELDS)


# ---- what the core reports and what it holds -------------------------------------------------

class ErrorCode(IntEnum):
    """Value of the ERROR_CODE register after a run that ended with STATUS.ERROR."""
    NONE = 0
    BAD_DESCRIPTOR = 1       # check word mismatch, or the layer field is not its position
    BAD_OPCODE = 2           # no such opcode
    UNSUPPORTED = 3          # a valid layer this hardware does not run (PAD, a CONV other
                             # than 1x1 stride 1 without IM2COL, depthwise kernel != 3 or
                             # stride > 2, ADD on a config built without the AddUnit)
    UNSUPPORTED_PADDING = 4  # depthwise pads the engine cannot apply (it pads 0 or 1 rows
                             # and columns on each side)
    BAD_SHAPE = 5            # inconsistent sizes (zero, unaligned channels, out != f(in))
    TOO_LARGE = 6            # a feature map, weight tile or dimension beyond the buffers
    BAD_ALIGNMENT = 7        # a DDR address not aligned to the bus width
    AXI_READ_ERROR = 8       # SLVERR/DECERR on a read (descriptor, input, weights, records)
    AXI_WRITE_ERROR = 9      # SLVERR/DECERR on an output write
    WATCHDOG = 10            # no progress (no AXI or datapath handshake) for
                             # `Limits.watchdog_cycles` cycles, e.g. DDR never answering


@dataclass(frozen=True)
class Limits:
    """Sizes of the fixed-capacity units, beyond the buffers of `AccelConfig`. The defaults
    cover MobileNet up to 224x224 inputs and ImageNet-sized channel counts."""
    max_width: int = 224      # depthwise line buffer: feature map width and height
    max_channels: int = 2048  # MEAN per-channel sums: MobileNetV2 pools 1280, ResNets 2048
    max_classes: int = 1024   # SOFTMAX logits (the SoftmaxUnit's ceiling): ImageNet heads
    max_layers: int = LAYER_COUNTERS  # per-descriptor cycle registers (later ones uncounted)
    # A run making no progress this long ends with WATCHDOG (`Accelerator`). Units such as
    # the SoftmaxUnit compute internally for a while between handshakes: keep it >= ~1000.
    watchdog_cycles: int = 1 << 20


class Geometry:
    """Word sizes and capacities of the on-chip buffers, derived from the config.

    Every chunk moved in or out of a buffer is a power of two no larger than its word, so
    no access straddles two words (see `rtl_gen.buffers`).
    """

    def __init__(self, cfg: AccelConfig):
        ca = channel_align(cfg)
        self.cfg = cfg
        self.channel_align = ca
        # Activation buffers: pixels' channel groups and bus words.
        self.act_word = max(ca, cfg.bus_bytes)
        self.act_depth = cfg.act_buffer_bytes // self.act_word
        self.act_capacity = self.act_word * self.act_depth
        # Weight buffer: one pointwise step's pw_out x pw_in block, a depthwise tap, bus words.
        self.block = cfg.pw_out * cfg.pw_in
        self.weight_word = max(self.block, cfg.bus_bytes, cfg.dw_lanes)
        self.weight_depth = cfg.weight_buffer_bytes // self.weight_word
        self.weight_capacity = self.weight_word * self.weight_depth
        # A pointwise tile lives in one of two slots (half the buffer each), so the next
        # tile's weights can load while it computes; a depthwise layer uses the whole buffer.
        self.weight_slot = self.weight_word * (self.weight_depth // 2)
        # Requantizer lanes: a depthwise result is one beat, a pointwise one pw_out / dw_lanes
        # beats (`check_config`: dw_lanes <= pw_out).
        self.lanes = cfg.dw_lanes
        # Channel records held at once (a pointwise tile or a depthwise group).
        self.records = cfg.pw_out
        # Loaded as whole bus words.
        self.record_slots = max(self.records, cfg.bus_bytes // PARAM_BYTES)
        # The MEAN unit counts pixels up to a full activation buffer.
        self.mean_pixels = self.act_capacity // ca


# ---- the rules a descriptor must follow ------------------------------------------------------
# Written once, for Python integers (the host: `check_fits`, `descriptor_error`) and Amaranth
# values (the sequencer's CHECK state) alike, so hardware and host cannot disagree.

def check_config(cfg: AccelConfig) -> None:
    """Configurations the accelerator cannot be built for. Every DMA read must start on a
    bus word: a pointwise tile's weights (pw_out * C bytes) and a tile's or a group's
    channel records (16 bytes each) must be whole bus words."""
    ca = channel_align(cfg)
    if cfg.dw_lanes > cfg.pw_out:
        raise ConfigError(f"dw_lanes={cfg.dw_lanes} must be <= pw_out={cfg.pw_out} (the "
                          "requantizer has dw_lanes lanes: a depthwise result is one beat)")
    if (cfg.pw_out * ca) % cfg.bus_bytes:
        raise ConfigError(f"bus_bytes={cfg.bus_bytes} must divide pw_out * channel_align = "
                          f"{cfg.pw_out * ca} (a pointwise tile's weights start on a bus word)")
    if (PARAM_BYTES * cfg.dw_lanes) % cfg.bus_bytes:
        raise ConfigError(f"bus_bytes={cfg.bus_bytes} must divide {PARAM_BYTES} * "
                          "dw_lanes (channel records are loaded per tile)")


def _mux(cond, a, b):
    if isinstance(cond, bool):
        return a if cond else b
    from amaranth.hdl import Mux      # only the sequencer passes Amaranth values
    return Mux(cond, a, b)


def _not(x):
    return x == 0


def times9(x):
    """9 * x as a shift and an add, for Python integers and Amaranth values alike (a `*` by a
    constant that is not a power of two would cost a DSP block)."""
    return (x << 3) + x


def depthwise_sizes(d) -> dict:
    """A depthwise layer's padded input height, output height and width and tap bytes, as
    `layer_checks` compares them (Python integers or Amaranth values: the sequencer registers
    them while it computes the size products, so no check is more than one compare deep)."""
    s1 = d.stride == 1
    padded_h = d.in_h + d.pad_top + d.pad_bottom
    padded_w = d.in_w + d.pad_left + d.pad_right
    return {"padded_h": padded_h, "padded_w": padded_w,
            "dw_out_h": _mux(s1, padded_h - 2, (padded_h - 1) >> 1),
            "dw_out_w": _mux(s1, padded_w - 2, (padded_w - 1) >> 1),
            "taps_bytes": times9(d.in_c)}


def _same(x):
    return x


def layer_checks(d, cfg: AccelConfig, limits: Limits, stage=_same) -> list:
    """[(ErrorCode, failed)] in priority order for a non-END descriptor `d`.

    `d` has the descriptor fields plus `in_pixels`, `out_pixels`, `in_bytes`, `out_bytes`,
    `weight_product` (out_c * in_c) and the `depthwise_sizes`. The expressions use only
    operators that mean the same on Python integers (host check) and Amaranth values (the
    sequencer's CHECK state), so hardware and host cannot disagree.

    Each check is an OR of terms, each term a few compares of one kind of layer; `stage`
    wraps every term. The host leaves it the identity; the sequencer passes a register, so
    that a check is a compare deep in one cycle and an OR of terms in the next.
    """
    g = Geometry(cfg)
    ca, bus = g.channel_align, cfg.bus_bytes
    op = d.opcode
    conv, dw = op == Opcode.CONV, op == Opcode.DWCONV
    mean, softmax, pad = op == Opcode.MEAN, op == Opcode.SOFTMAX, op == Opcode.PAD
    add = op == Opcode.ADD
    s1, s2 = d.stride == 1, d.stride == 2
    im2col = (d.flags & Flags.IM2COL) != 0

    def misaligned(x, n):
        return (x & (n - 1)) != 0

    # Explicit padding (a band of a tiled feature map has none inside the map).
    padded_h, padded_w, dw_out_h = d.padded_h, d.padded_w, d.dw_out_h

    zero = ((d.in_h == 0) | (d.in_w == 0) | (d.in_c == 0) |
            (d.out_h == 0) | (d.out_w == 0) | (d.out_c == 0))
    unit_out = (d.out_h != 1) | (d.out_w != 1)
    unsupported = (pad |
                   (conv & _not(((d.kernel == 1) & s1) | im2col)) |
                   (dw & ((d.kernel != 3) | _not(s1 | s2))))
    if not cfg.with_add:        # built without the AddUnit: an ADD is a layer it cannot run
        unsupported = unsupported | add
    def any_of(*terms):
        """The OR of `terms`, each staged."""
        result = False
        for term in terms:
            result = result | stage(term)
        return result

    return [
        (ErrorCode.BAD_OPCODE, any_of(_not(conv | dw | mean | softmax | pad | add))),
        (ErrorCode.UNSUPPORTED, any_of(unsupported)),
        # The engine pads 0 or 1 rows (columns) on each side: SAME, VALID and PyTorch's 1.
        (ErrorCode.UNSUPPORTED_PADDING, any_of(
            dw & ((d.pad_top > 1) | (d.pad_bottom > 1) | (d.pad_left > 1) |
                  (d.pad_right > 1)))),
        (ErrorCode.BAD_SHAPE, any_of(
            zero | misaligned(d.in_c, ca) | misaligned(d.out_c, ca),
            conv & ((d.out_h != d.in_h) | (d.out_w != d.in_w) |
                    (d.weight_bytes != d.weight_product)),
            dw & ((d.out_c != d.in_c) | (padded_h < 3) | (padded_w < 3) |
                  (d.out_h != dw_out_h) | (d.out_w != d.dw_out_w) |
                  (d.weight_bytes != d.taps_bytes)),
            mean & ((d.out_c != d.in_c) | unit_out),
            add & ((d.out_c != d.in_c) | (d.out_h != d.in_h) | (d.out_w != d.in_w) |
                   (d.weight_bytes != d.in_bytes)),
            softmax & ((d.in_h != 1) | (d.in_w != 1) | unit_out | (d.real_c == 0) |
                       (d.real_c > d.in_c) | (d.real_c > d.out_c)))),
        (ErrorCode.TOO_LARGE, any_of(
            d.in_bytes > g.act_capacity,
            d.out_bytes > g.act_capacity,
            conv & (cfg.pw_out * d.in_c > g.weight_slot),
            dw & ((d.taps_bytes > g.weight_capacity) |
                  (d.in_h > limits.max_width) | (d.in_w > limits.max_width)),
            mean & ((d.in_c > limits.max_channels) | (d.in_pixels > g.mean_pixels)),
            add & (d.weight_bytes > g.weight_capacity),
            softmax & (d.real_c > limits.max_classes))),
        (ErrorCode.BAD_ALIGNMENT, any_of(
            misaligned(d.input_addr, bus) | misaligned(d.output_addr, bus),
            (conv | dw | add) & (misaligned(d.weight_addr, bus) |
                                 misaligned(d.param_addr, bus)))),
    ]


def descriptor_error(desc: Descriptor, cfg: AccelConfig, limits: Limits = Limits()):
    """The `ErrorCode` the sequencer stops with on this descriptor, or None if it runs."""
    if desc.opcode == Opcode.END:
        return None
    d = SimpleNamespace(**vars(desc))
    d.in_pixels, d.out_pixels = desc.in_h * desc.in_w, desc.out_h * desc.out_w
    d.in_bytes, d.out_bytes = d.in_pixels * desc.in_c, d.out_pixels * desc.out_c
    d.weight_product = desc.out_c * desc.in_c
    vars(d).update(depthwise_sizes(desc))
    for code, failed in layer_checks(d, cfg, limits):
        if failed:
            return code
    return None


class ProgramError(ValueError):
    """A compiled program the accelerator would refuse; the message names the layer."""


def check_fits(firmware, cfg: AccelConfig | None = None, limits: Limits = Limits()) -> None:
    """Raise `ProgramError` naming the first layer the accelerator built for `cfg` (default:
    the firmware's own) would stop on, e.g. a MEAN input larger than an activation buffer
    (CONV and DWCONV layers that large are compiled as bands of rows, `firmware.tiling`)."""
    cfg = cfg or firmware.cfg
    check_config(cfg)
    g = Geometry(cfg)
    for d in firmware.descriptors:
        code = descriptor_error(d, cfg, limits)
        if code == ErrorCode.UNSUPPORTED and d.opcode == Opcode.ADD:
            raise ProgramError(f"layer {d.layer} (ADD): the accelerator was built without the "
                               "ADD unit (config with_add=false), so it would stop with "
                               "UNSUPPORTED")
        if code is not None:
            sizes = (f"input {d.in_h}x{d.in_w}x{d.in_c} = {d.in_h * d.in_w * d.in_c} B, output "
                     f"{d.out_h}x{d.out_w}x{d.out_c} = {d.out_h * d.out_w * d.out_c} B, "
                     f"activation buffers {g.act_capacity} B, weight buffer "
                     f"{g.weight_capacity} B = 2 pointwise tile slots of {g.weight_slot} B")
            kind = Opcode(d.opcode).name if d.opcode in set(Opcode) else f"opcode {d.opcode}"
            raise ProgramError(f"layer {d.layer} ({kind}): the accelerator "
                               f"would stop with {code.name} ({sizes})")
