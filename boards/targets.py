"""Board targets and the accelerator configuration that fits each of them.

A `Board` names an amaranth-boards platform (used for bitstream builds), the nextpnr device
arguments (used for out-of-context builds) and the device's resources, so that a build can be
rejected before place and route and `default_config` can size the accelerator.

Resources (Lattice ECP5 family data sheet, FPGA-DS-02012, table 1.1; nextpnr reports the same
counts as "available"): a slice holds two LUT4s and two FFs, a sysDSP slice two MULT18X18D,
an EBR is one DP16KD of 18 Kbit.

    device      LUT4 = FF   MULT18X18D   DP16KD (18 Kbit)
    LFE5U-25F      24 288           28         56
    LFE5U-45F      43 848           72        108
    LFE5U-85F      83 640          156        208

DSP blocks are for MACs: Yosys maps every multiplier of two variable operands onto
MULT18X18D, so the accelerator writes the products that are not MACs of the pointwise array
(depthwise taps, the sequencer's size products, the dense layer's requantizer digits) as LUT
logic (`rtl_gen.lut_mul`); only the Requantizer keeps DSP blocks (two per lane, its third
product in LUTs), and the SoftmaxUnit borrows its first lane's. The smallest accelerator
needs 4 of them, so even a
25F (28) takes one (pw 4x4, 1 depthwise lane by `estimate`, its LUTs binding; no routed
build of it measured yet). An iCE40 UP5K
(5 280 LUTs, 8 SB_MAC16) is far smaller still, and nextpnr-ice40 has no out-of-context mode.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from itertools import product

from amaranth_boards.ulx3s import ULX3S_25F_Platform, ULX3S_45F_Platform, ULX3S_85F_Platform

from rtl_gen.config import AccelConfig, ConfigError


@dataclass(frozen=True)
class Board:
    name: str
    platform: type              # amaranth-boards platform, for bitstream builds
    device: str
    nextpnr: str                # nextpnr-ecp5 binary suffix ...
    nextpnr_args: tuple         # ... and its device arguments
    luts: int
    ffs: int
    mult18: int
    bram_blocks: int
    clock_mhz: float            # accelerator clock target (see `default_config`)
    # Most depthwise lanes worth building on the device (None: the DSPs and LUTs decide).
    # The 85F's 8-lane DepthwiseEngine never finished routing with LUT-multiplier taps; with
    # LUT-RAM table taps it routes (72.99 MHz, 69d8aa1), but no faster in frames/s than 4
    # lanes (83.02 MHz, 40a000e) until its group load's fan-out is registered
    # (boards/TIMING.md).
    max_dw_lanes: int | None = None

    BRAM_BLOCK_BITS = 18 * 1024

    @property
    def bram_bits(self) -> int:
        return self.bram_blocks * self.BRAM_BLOCK_BITS


def _ulx3s(size: str, platform: type, luts: int, mult18: int, bram_blocks: int,
           max_dw_lanes: int | None = None) -> Board:
    # ULX3S: CABGA381 package, speed grade 6 (amaranth-boards: package "BG381", speed "6").
    args = (f"--{size}k", "--package", "CABGA381", "--speed", "6")
    return Board(name=f"ulx3s-{size}f", platform=platform, device=platform.device,
                 nextpnr="ecp5", nextpnr_args=args,
                 luts=luts, ffs=luts, mult18=mult18, bram_blocks=bram_blocks, clock_mhz=30.0,
                 max_dw_lanes=max_dw_lanes)


BOARDS = {b.name: b for b in (
    _ulx3s("85", ULX3S_85F_Platform, luts=83640, mult18=156, bram_blocks=208, max_dw_lanes=4),
    _ulx3s("45", ULX3S_45F_Platform, luts=43848, mult18=72, bram_blocks=108),
    _ulx3s("25", ULX3S_25F_Platform, luts=24288, mult18=28, bram_blocks=56),
)}
DEFAULT_BOARD = "ulx3s-85f"


def get_board(board: str | Board) -> Board:
    if isinstance(board, Board):
        return board
    try:
        return BOARDS[board]
    except KeyError:
        raise ValueError(f"unknown board {board!r}; known: {', '.join(BOARDS)}") from None


# ---- resource model of rtl_gen.accelerator.Accelerator ------------------------------------------

# MULT18X18D per Requantizer lane: its 32x32 product (`requant.srdhm_pipeline`, Karatsuba,
# the unsigned 16x16 low product in LUTs).
# Nothing else outside the MAC array takes one: the MeanUnit shares the Requantizer, the
# SoftmaxUnit borrows lane 0's product, and the depthwise taps, the sequencer's size products
# and the FloatRequantizer's digits are LUT logic (`rtl_gen.lut_mul`).
MULT18_PER_LANE = 2
# Coarse logic model, LUT4 slots (LUT4 + 2 * CCU2C + 2 * DPR16X4 of synth_ecp5's statistics):
# a base plus one term per MAC of the array, one per depthwise tap (a lane's share of the
# DepthwiseEngine with the Requantizer's, MeanUnit's and serializer's lane logic: lanes are
# what costs LUTs) and one per lane for the AddUnit (two LUT-built 9x31-bit scalings,
# rounding shifts). The base and the MAC term were fitted on four syntheses with LUT
# multipliers for taps (the 45F's 8x8 MACs + 2 lanes without the AddUnit 21,173 slots, the
# 85F's 16x8 + 8 lanes 48,845 without it and 61,655 with it, the smallest CI config 15,623);
# the tap term on the two of the current RTL, whose taps are table lookups in LUT RAM
# (`depthwise`): the 45F's 8x8 + 4 lanes 25,292 slots (25,318 estimated) and the 85F's
# 16x8 + 8 lanes 40,892 (40,886), both without the AddUnit (420 a tap as LUT multipliers).
# The AddUnit's lanes are costed at a 45F build with it at 4 lanes (8,703 slots more than
# without), erring towards configs that route. Before the rings moved to LUT RAM each MAC
# cost ~150 slots (its share of the weight reader's 5-entry flip-flop ring and select).
LUT_BASE, LUT_PER_MULT = 9750, 52
LUT_PER_DW_TAP = 340
LUT_PER_ADD_LANE = 2150
# Shares of a device the default configuration may plan for: the LUT model is coarse, and
# nextpnr needs slack to route; the DSP and BRAM counts are exact (see `estimate`).
LUT_BUDGET, BRAM_BUDGET = 0.8, 0.9

# DP16KD aspect ratios: (data bits per word, words).
_BRAM_MODES = ((36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384))


def bram_blocks(width: int, depth: int, byte_writes: bool, read_ports: int = 1) -> int:
    """DP16KD blocks Yosys uses for a width x depth memory with one write port: the best
    aspect ratio. With byte write enables a 9-bit lane holds one byte, so 36/18/9-bit modes
    carry 32/16/8 data bits. A DP16KD has two ports, one taken by the write, so each further
    read port at its own address costs a copy of the memory."""
    def cost(bits, words):
        lane = 8 * (bits // 9) if byte_writes and bits >= 9 else bits
        return math.ceil(width / lane) * math.ceil(depth / words)
    return read_ports * min(cost(bits, words) for bits, words in _BRAM_MODES)


@dataclass(frozen=True)
class Estimate:
    mult18: int
    bram_blocks: int
    luts: int


def estimate(cfg: AccelConfig) -> Estimate:
    """Resources of `Accelerator(cfg)` after synth_ecp5, with the default `Limits`.

    MULT18X18D: one per int8 product (9x8 bits fit one 18x18): pw_out * pw_in in the MAC array,
    two per Requantizer lane (`MULT18_PER_LANE`), whose products the MeanUnit and the
    SoftmaxUnit share.
    BRAM: the two activation buffers (byte writes; read by the layer's reader and the store
    reader, so two copies each), the weight buffer (its bus-word write enables counted as byte
    lanes: a 64-bit lane takes two 36-bit blocks), the depthwise line buffer (two rows of
    pixels), the MeanUnit sums, the per-layer cycle registers and the SoftmaxUnit's logits and
    exponentials.
    Both formulas reproduce synth_ecp5 exactly: `default_config("ulx3s-85f")` 173 DP16KD
    (152 MULT18X18D with three per lane; 144 now), the 45F's 8x8 MACs + 4 lanes 72 and 89.
    With one reader per activation buffer (read_ports=1) they matched an earlier accelerator
    as exactly: AccelConfig() 280 and 106, pw 2x2 with one lane 37 and 24.
    """
    from firmware.contract import Geometry, Limits

    g, limits = Geometry(cfg), Limits()
    mult18 = cfg.pw_out * cfg.pw_in + MULT18_PER_LANE * g.lanes
    # MeanUnit(lanes, max_channels, max_pixels) keeps ceil(max_channels / lanes) rows of `lanes`
    # sums of (255 * max_pixels).bit_length() + 1 bits.
    mean_bits = g.lanes * ((255 * g.mean_pixels).bit_length() + 1)
    blocks = (2 * bram_blocks(8 * g.act_word, g.act_depth, True, read_ports=2)
              + bram_blocks(8 * g.weight_word, g.weight_depth, True)
              + bram_blocks(2 * 8 * cfg.dw_lanes, limits.max_width + 1, False)
              + bram_blocks(mean_bits, -(-limits.max_channels // g.lanes), False)
              + bram_blocks(32, limits.max_layers, False)
              # the SoftmaxUnit's logits and exponentials (registered reads: block RAMs)
              + bram_blocks(8, limits.max_classes, False)
              + bram_blocks(32, limits.max_classes, False))
    luts = (LUT_BASE + LUT_PER_MULT * cfg.pw_out * cfg.pw_in + LUT_PER_DW_TAP * 9 * cfg.dw_lanes
            + (LUT_PER_ADD_LANE * g.lanes if cfg.with_add else 0))
    return Estimate(mult18=mult18, bram_blocks=blocks, luts=luts)


def _valid(cfg: AccelConfig) -> bool:
    from firmware.contract import check_config
    try:
        check_config(cfg)
    except ConfigError:
        return False
    return True


def default_config(board: str | Board = DEFAULT_BOARD, needs_add: bool = True) -> AccelConfig:
    """The largest accelerator that fits `board`, at the board's clock target; with
    `needs_add` false (a network without ADD layers, such as MobileNet v1) the largest one
    without the AddUnit (`AccelConfig.with_add`), whose LUTs then buy depthwise lanes.

    Pointwise convolutions carry about 95 % of MobileNet's MACs, so the search maximises the
    MAC array (pw_out * pw_in) first, then the depthwise lanes, then prefers the squarer array
    (smaller channel padding, `firmware.layout.channel_align`) with pw_out >= pw_in. The DSPs
    bind: MULT18X18D = pw_out*pw_in + 2*dw_lanes (`estimate`; dw_lanes <= pw_out and at most
    the bus's bytes).

    * ULX3S 85F, 156 MULT18X18D: 16x8 MACs + 4 lanes = 128 + 8 = 136, 94% of them MACs
      (32x8 needs 272), with the AddUnit or without it. Its DSPs and LUTs would take 8 lanes
      (144 blocks; ~58.1k and ~40.9k of its 83.6k LUT4 slots estimated, 80% being
      `LUT_BUDGET`), and with the taps as LUT-RAM tables they route, at 72.99 MHz: no more
      frames/s than 4 lanes at 83.02 MHz, so the board caps its lanes at 4
      (`Board.max_dw_lanes`). (`AccelConfig()`, the simulations' default, keeps 8 lanes.)
    * ULX3S 45F, 72 MULT18X18D: 8x8 MACs + 4 lanes = 64 + 8 = 72, 89% MACs, without the
      AddUnit (25.3k of 43.8k LUT4 slots synthesized) or with it (~33.9k estimated, 77%;
      with the taps as LUT multipliers the AddUnit's LUTs held it at 2 lanes).
    * ULX3S 25F, 28 MULT18X18D: 4x4 MACs + 1 lane = 16 + 2 = 18 (its 24k LUT4 bind);
      without the AddUnit 4x4 + 2 lanes = 20 (~16.7k LUT4 slots estimated).

    Buffers keep the AccelConfig defaults (64 KiB per activation buffer, 64 KiB of weights:
    what the firmware's networks are compiled for; the weight buffer's words are a whole
    pw_out x pw_in block wide, so 512 of them cost no more block RAMs than 256) and are
    halved together only while they exceed 90 % of the DP16KDs. 85F: 173 of 208 blocks
    (each activation buffer is stored twice, 64 blocks). 45F: 32 + 32 KiB, 88 of 108 blocks;
    alpha 0.25's 14x14x256 layers then run as two bands of rows each (`firmware.tiling`),
    alpha 1 does not fit (a stride-2 depthwise band needs three 14 KiB input rows).

    Clock: 30 MHz on both (ECP5 speed grade 6), the target `gen-accel --synth` must meet; the
    RTL is pipelined for 100 MHz (README's board table for what each board routed at). The
    ULX3S's 25 MHz
    oscillator reaches the target through an EHXPLLL.
    """
    board = get_board(board)
    base = AccelConfig(clock_mhz=board.clock_mhz, with_add=needs_add)
    pow2 = [1 << k for k in range(7)]
    best, fewest_mult18 = None, None
    for pw_out, pw_in, lanes, bus in product(pow2, pow2, pow2, (8, 4)):
        cfg = replace(base, pw_out=pw_out, pw_in=pw_in, dw_lanes=lanes, bus_bytes=bus)
        if not _valid(cfg):
            continue
        est = estimate(cfg)
        fewest_mult18 = min(est.mult18, fewest_mult18 or est.mult18)
        if est.mult18 > board.mult18 or est.luts > LUT_BUDGET * board.luts:
            continue
        if board.max_dw_lanes is not None and lanes > board.max_dw_lanes:
            continue
        cfg = _shrink_buffers(cfg, board)
        key = (pw_out * pw_in, lanes, -max(pw_out, pw_in), pw_out >= pw_in, bus)
        if cfg is not None and (best is None or key > best[0]):
            best = (key, cfg)
    if best is None:
        raise ConfigError(f"no accelerator configuration fits {board.name} ({board.device}): the "
                          f"smallest needs {fewest_mult18} MULT18X18D, the device has "
                          f"{board.mult18}")
    return best[1]


def _shrink_buffers(cfg: AccelConfig, board: Board) -> AccelConfig | None:
    """`cfg` with its buffers halved until it fits `board`, or None if it never does."""
    while True:
        if estimate(cfg).bram_blocks <= BRAM_BUDGET * board.bram_blocks:
            return cfg
        if cfg.act_buffer_bytes <= 1024 and cfg.weight_buffer_bytes <= 1024:
            return None
        cfg = replace(cfg, act_buffer_bytes=max(1024, cfg.act_buffer_bytes // 2),
                      weight_buffer_bytes=max(1024, cfg.weight_buffer_bytes // 2))
