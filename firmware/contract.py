"""The hardware/firmware contract: what the accelerator's RTL (`rtl_gen`) and the host side
(`firmware`: compiler, drivers, C header) must agree on, in one module both import and that
needs no HDL: the register map (offsets, fields, ID and version), the error codes the core
reports, the fixed capacities of its units (`Limits`) and the on-chip buffer geometry a
config implies (`Geometry`). The layer program's descriptor format is `firmware.program`.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from firmware.layout import PARAM_BYTES, channel_align
from rtl_gen.config import AccelConfig

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
