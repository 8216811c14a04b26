"""The layer program: one fixed-size descriptor per layer, read by the sequencer from DDR.

A descriptor is 16 little-endian 32-bit words. The last word is a check value (XOR of the
other 15 with a magic) so the sequencer can flag a corrupt or misplaced program instead of
running garbage. The same table drives `pack`, `unpack` and the C header.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, fields
from enum import IntEnum

DESCRIPTOR_BYTES = 64
CHECK_MAGIC = 0x4D4E4554  # "MNET"


class Opcode(IntEnum):
    END = 0       # stop; raise done
    CONV = 1      # pointwise engine: 1x1 conv, dense, or a 3x3 conv on host-im2col'd input
    DWCONV = 2    # depthwise 3x3 engine, stride 1/2, explicit pads
    MEAN = 3      # global average pool
    SOFTMAX = 4   # int8 softmax over `real_c` values
    PAD = 5       # spatial zero-point padding
    ADD = 6       # elementwise int8 ADD: input_addr + weight_addr (the second input), see
                  # layout.add_records for the input scalings at param_addr


class Flags:
    IM2COL = 1 << 0         # input holds host-made 3x3 patches (first conv)
    FLOAT_REQUANT = 1 << 1  # channel records hold double scales (dense layers), see layout.py
    # A MEAN whose input is too large for an activation buffer runs as bands of pixels:
    MEAN_CONTINUE = 1 << 2  # add to the sums of the previous MEAN band instead of restarting
    MEAN_PARTIAL = 1 << 3   # more bands follow: no output, nothing stored


# (field, word, bit offset, width, signed): the single source of the binary format.
FIELDS: tuple[tuple[str, int, int, int, bool], ...] = (
    ("opcode", 0, 0, 8, False), ("flags", 0, 8, 8, False), ("layer", 0, 16, 16, False),
    ("in_h", 1, 0, 16, False), ("in_w", 1, 16, 16, False),
    ("in_c", 2, 0, 16, False), ("out_c", 2, 16, 16, False),
    ("out_h", 3, 0, 16, False), ("out_w", 3, 16, 16, False),
    ("stride", 4, 0, 8, False), ("pad_top", 4, 8, 8, False),
    ("pad_left", 4, 16, 8, False), ("pad_bottom", 4, 24, 8, False),
    ("pad_right", 5, 0, 8, False), ("kernel", 5, 8, 8, False), ("real_c", 5, 16, 16, False),
    ("input_addr", 6, 0, 32, False), ("output_addr", 7, 0, 32, False),
    ("weight_addr", 8, 0, 32, False), ("weight_bytes", 9, 0, 32, False),
    ("param_addr", 10, 0, 32, False),
    ("input_zp", 11, 0, 8, True), ("output_zp", 11, 8, 8, True),
    ("act_min", 11, 16, 8, True), ("act_max", 11, 24, 8, True),
    ("multiplier", 12, 0, 32, True), ("shift", 13, 0, 32, True), ("aux", 14, 0, 32, True),
)


class DescriptorError(ValueError):
    """A descriptor that cannot be encoded or fails its check word."""


@dataclass
class Descriptor:
    opcode: int = Opcode.END
    flags: int = 0
    layer: int = 0
    in_h: int = 0
    in_w: int = 0
    in_c: int = 0
    out_c: int = 0
    out_h: int = 0
    out_w: int = 0
    stride: int = 1
    pad_top: int = 0
    pad_left: int = 0
    pad_bottom: int = 0
    pad_right: int = 0
    kernel: int = 1
    real_c: int = 0
    input_addr: int = 0
    output_addr: int = 0
    weight_addr: int = 0
    weight_bytes: int = 0
    param_addr: int = 0
    input_zp: int = 0
    output_zp: int = 0
    act_min: int = -128
    act_max: int = 127
    multiplier: int = 0    # MEAN: folded multiplier; SOFTMAX: input multiplier; ADD: output's
    shift: int = 0         # MEAN: shift; SOFTMAX: input left shift; ADD: output's (<= 0)
    aux: int = 0           # SOFTMAX: diff_min

    def pack(self) -> bytes:
        words = [0] * 16
        for name, word, lo, width, signed in FIELDS:
            v = int(getattr(self, name))
            vmin, vmax = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
            if not vmin <= v <= vmax:
                raise DescriptorError(f"layer {self.layer}: {name}={v} does not fit {width} bits")
            words[word] |= (v & ((1 << width) - 1)) << lo
        words[15] = check_word(words)
        return struct.pack("<16I", *words)

    @classmethod
    def unpack(cls, raw: bytes) -> "Descriptor":
        if len(raw) != DESCRIPTOR_BYTES:
            raise DescriptorError(f"descriptor must be {DESCRIPTOR_BYTES} bytes, got {len(raw)}")
        words = struct.unpack("<16I", raw)
        if words[15] != check_word(words):
            raise DescriptorError(f"descriptor check word mismatch ({words[15]:#010x})")
        d = {}
        for name, word, lo, width, signed in FIELDS:
            v = (words[word] >> lo) & ((1 << width) - 1)
            d[name] = v - (1 << width) if signed and v >> (width - 1) else v
        return cls(**d)


def check_word(words) -> int:
    c = CHECK_MAGIC
    for w in words[:15]:
        c ^= w
    return c


assert {f[0] for f in FIELDS} == {f.name for f in fields(Descriptor)}
