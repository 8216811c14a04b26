"""Tiling feature maps through DDR: a CONV or DWCONV layer whose input or output is larger than
an activation buffer runs as several descriptors, each on a band of output rows (a MEAN: on
a band of pixels, `split_mean`; an ADD: on bands of rows that also fit its second input in
the weight buffer).

A band reads the input rows its outputs need (for a 3x3 depthwise layer, one halo row above
and below that a neighbouring band also reads) from the layer's input region, and writes its
output rows into the layer's output region, so the bands of a layer together write exactly
the tensor the whole layer would. The hardware needs nothing band-specific: a band is an
ordinary descriptor with a smaller height, shifted DDR addresses and, for depthwise, padding
rows only where the band touches the top or bottom of the feature map (the DepthwiseEngine
pads rows explicitly). Its store finishes before the next band's input load starts, as for
any layer (`rtl_gen.sequencer`).

Every band starts on a bus word (rows whose bytes are not a multiple of the bus width cannot
be split), and bands are as equal in height as the buffers allow.
"""
from __future__ import annotations

import dataclasses
import math

from rtl_gen.config import AccelConfig
from firmware.contract import Geometry, ProgramError

from .program import Descriptor, Flags, Opcode


# Layers whose output row r needs exactly input row r: 1x1 stride-1 convolutions (and host
# patches), ADD.
_ROW_FOR_ROW = (Opcode.CONV, Opcode.ADD)


class TilingError(ProgramError):
    """A layer too large for the activation buffers that cannot be split into bands."""


def _input_rows(d: Descriptor, first: int, last: int) -> tuple[int, int, int, int]:
    """Input rows [lo, hi) and padding rows (top, bottom) for output rows [first, last)."""
    if d.opcode in _ROW_FOR_ROW:
        return first, last, 0, 0
    s = d.stride
    top = first * s - d.pad_top                 # first input row of the first window
    bottom = (last - 1) * s - d.pad_top + 2     # last input row of the last window
    lo, hi = max(top, 0), min(bottom, d.in_h - 1) + 1
    return lo, hi, lo - top, bottom + 1 - hi


def band(d: Descriptor, first: int, last: int) -> Descriptor:
    """The descriptor computing output rows [first, last) of layer `d`."""
    lo, hi, pad_top, pad_bottom = _input_rows(d, first, last)
    in_row, out_row = d.in_w * d.in_c, d.out_w * d.out_c
    changes = dict(in_h=hi - lo, out_h=last - first,
                   input_addr=d.input_addr + lo * in_row,
                   output_addr=d.output_addr + first * out_row)
    if d.opcode == Opcode.DWCONV:
        changes.update(pad_top=pad_top, pad_bottom=pad_bottom)
    if d.opcode == Opcode.ADD:        # the second input: the same rows of its own tensor
        changes.update(weight_addr=d.weight_addr + lo * in_row, weight_bytes=(hi - lo) * in_row)
    return dataclasses.replace(d, **changes)


def split_layer(d: Descriptor, capacity: int, cfg: AccelConfig,
                name: str | None = None) -> list[Descriptor]:
    """`d` as bands whose inputs and outputs each fit `capacity` bytes; [d] if it fits whole.
    CONV and DWCONV split into bands of rows, MEAN into bands of pixels (`split_mean`); other
    layers are never split (`firmware.contract.check_fits` rejects them if too large). `name`
    names the layer in errors (default: its opcode and descriptor index)."""
    name = name or f"layer {d.layer} ({Opcode(d.opcode).name})"
    in_row, out_row = d.in_w * d.in_c, d.out_w * d.out_c
    if d.opcode == Opcode.ADD:        # its second input goes to the weight buffer
        capacity = min(capacity, Geometry(cfg).weight_capacity)
    if d.in_h * in_row <= capacity and d.out_h * out_row <= capacity:
        return [d]
    if d.opcode == Opcode.MEAN:
        return split_mean(d, capacity, cfg, name)
    if d.opcode not in (Opcode.CONV, Opcode.DWCONV, Opcode.ADD):
        return [d]

    def fits(rows: int) -> bool:
        """Whether every band of at most `rows` output rows fits (the worst band is one in
        the middle of the map, needing the most input rows)."""
        if rows * out_row > capacity:
            return False
        needed = rows if d.opcode in _ROW_FOR_ROW else (rows - 1) * d.stride + 3
        return min(needed, d.in_h) * in_row <= capacity

    if not fits(1):
        raise TilingError(f"{name}: even a band of one output row needs more than the "
                          f"{capacity} B activation buffer (input rows of {in_row} B, output "
                          f"rows of {out_row} B); use larger activation buffers "
                          "(act_buffer_bytes) or a smaller input")
    bus = cfg.bus_bytes
    if in_row % bus or out_row % bus:
        raise TilingError(f"{name} is larger than the "
                          f"{capacity} B activation buffer and its rows ({in_row} B in, "
                          f"{out_row} B out) are not whole {bus} B bus words, so it cannot be "
                          "split into bands of rows")
    rows = max(r for r in range(1, d.out_h + 1) if fits(r))
    count = math.ceil(d.out_h / rows)
    bounds = [round(i * d.out_h / count) for i in range(count + 1)]
    return [band(d, a, b) for a, b in zip(bounds, bounds[1:])]


def split_mean(d: Descriptor, capacity: int, cfg: AccelConfig, name: str) -> list[Descriptor]:
    """A global average pool over more pixels than an activation buffer holds, as bands of
    whole pixels: the MeanUnit keeps its sums from band to band (MEAN_CONTINUE) and only the
    last band, the others being MEAN_PARTIAL, requantizes with the multiplier folded for the
    whole map and stores the result."""

    pixels, per_band = d.in_h * d.in_w, capacity // d.in_c
    limit = Geometry(cfg).mean_pixels
    if per_band < 1 or pixels > limit:
        raise TilingError(f"{name}: a global average over {pixels} pixels of {d.in_c} "
                          f"channels does not fit: the MeanUnit sums up to {limit} pixels, an "
                          f"activation buffer holds {capacity} B; use larger activation "
                          "buffers (act_buffer_bytes)")
    if d.in_c % cfg.bus_bytes:
        raise TilingError(f"{name}: its {d.in_c}-byte pixels are not whole {cfg.bus_bytes} B "
                          "bus words, so the MEAN cannot be split into bands of pixels")
    count = math.ceil(pixels / per_band)
    bounds = [round(i * pixels / count) for i in range(count + 1)]
    bands = []
    for k, (a, b) in enumerate(zip(bounds, bounds[1:])):
        flags = d.flags | (Flags.MEAN_CONTINUE if k else 0) | \
            (Flags.MEAN_PARTIAL if k < count - 1 else 0)
        bands.append(dataclasses.replace(d, in_h=1, in_w=b - a, flags=flags,
                                         input_addr=d.input_addr + a * d.in_c))
    return bands
