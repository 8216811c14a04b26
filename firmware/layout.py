"""Byte layouts shared by the compiler, the host driver model and the RTL: how weights,
per-channel parameters and feature maps sit in DDR.

- Feature maps: NHWC int8, channels padded to `channel_align(cfg)`; padded channels hold the
  tensor's zero point (they are real zeros) and meet zero weights downstream.
- Pointwise weights (CONV, dense, an im2col'd first conv): for each tile of pw_out output channels, for
  each group of pw_in inputs, a pw_out x pw_in block (output channel major): exactly the order
  the MAC array consumes them, so the DMA streams them straight in.
- Depthwise weights: for each group of dw_lanes channels, 9 taps x dw_lanes bytes (tap major).
- Channel parameters: 16 bytes per (padded) output channel: bias, multiplier, shift (int32
  each) and a zero word. Padded channels get all zeros, so they produce the zero point.
  With the FLOAT_REQUANT flag (dense layers: TFLite scales those in double precision) the
  last three words are the scale's 53-bit mantissa (low 32, high 21 bits) and its exponent.
- ADD records: two 16-byte records in the channel-parameter format, for the input read from
  `input_addr` then the one read from `weight_addr`: offset (-zero point), multiplier and
  shift (<= 0) of that input's scaling onto the common fixed-point scale, a zero word.
"""
from __future__ import annotations

import numpy as np

from quantize import fixedpoint as fx
from rtl_gen.config import AccelConfig

PARAM_BYTES = 16
ALIGN = 64  # every region starts on a 64-byte line (a whole number of bus beats)


def round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def channel_align(cfg: AccelConfig) -> int:
    return max(cfg.pw_in, cfg.pw_out, cfg.dw_lanes)


def pad_channels(x: np.ndarray, c_pad: int, zero_point: int) -> np.ndarray:
    extra = c_pad - x.shape[-1]
    if extra < 0:
        raise ValueError(f"cannot pad {x.shape[-1]} channels down to {c_pad}")
    widths = [(0, 0)] * (x.ndim - 1) + [(0, extra)]
    return np.pad(x, widths, constant_values=zero_point).astype(np.int8)


def pointwise_weights(w2d: np.ndarray, cfg: AccelConfig, cout_pad: int, k_pad: int) -> bytes:
    """w2d: (Cout, K) int8 -> tiled stream order."""
    w = np.zeros((cout_pad, k_pad), np.int8)
    w[: w2d.shape[0], : w2d.shape[1]] = w2d
    tiles = w.reshape(cout_pad // cfg.pw_out, cfg.pw_out, k_pad // cfg.pw_in, cfg.pw_in)
    return tiles.transpose(0, 2, 1, 3).tobytes()


def unpack_pointwise_weights(raw: bytes, cfg: AccelConfig, cout_pad: int, k_pad: int) -> np.ndarray:
    tiles = np.frombuffer(raw, np.int8).reshape(cout_pad // cfg.pw_out, k_pad // cfg.pw_in,
                                                cfg.pw_out, cfg.pw_in)
    return tiles.transpose(0, 2, 1, 3).reshape(cout_pad, k_pad)


def depthwise_weights(w: np.ndarray, cfg: AccelConfig, c_pad: int) -> bytes:
    """w: (1, 3, 3, C) int8 -> per lane group, 9 taps x dw_lanes."""
    taps = np.zeros((9, c_pad), np.int8)
    taps[:, : w.shape[3]] = w.reshape(9, -1)
    return taps.reshape(9, c_pad // cfg.dw_lanes, cfg.dw_lanes).transpose(1, 0, 2).tobytes()


def unpack_depthwise_weights(raw: bytes, cfg: AccelConfig, c_pad: int) -> np.ndarray:
    g = np.frombuffer(raw, np.int8).reshape(c_pad // cfg.dw_lanes, 9, cfg.dw_lanes)
    return g.transpose(1, 0, 2).reshape(3, 3, c_pad)


def channel_params(bias, multiplier, shift, c_pad: int, float_scale=None) -> bytes:
    rec = np.zeros((c_pad, 4), "<u4")
    n = len(multiplier)
    rec[:n, 0] = np.asarray(bias if bias is not None else np.zeros(n), np.int64) & 0xFFFFFFFF
    if float_scale is None:
        rec[:n, 1] = np.asarray(multiplier, np.int64) & 0xFFFFFFFF
        rec[:n, 2] = np.asarray(shift, np.int64) & 0xFFFFFFFF
    else:
        for c, s in enumerate(float_scale):
            mant, exp = fx.double_parts(float(s))
            rec[c, 1:] = mant & 0xFFFFFFFF, mant >> 32, exp & 0xFFFFFFFF
    return rec.tobytes()


ADD_RECORD_BYTES = 2 * PARAM_BYTES


def add_records(first: tuple[int, int, int], second: tuple[int, int, int]) -> bytes:
    """The ADD records of (offset, multiplier, shift) for the two inputs."""
    return np.array([list(first) + [0], list(second) + [0]], "<i4").tobytes()


def unpack_add_records(raw: bytes) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    r = np.frombuffer(raw[:ADD_RECORD_BYTES], "<i4").reshape(2, 4)
    return tuple(int(v) for v in r[0, :3]), tuple(int(v) for v in r[1, :3])


def unpack_channel_params(raw: bytes, c_pad: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bias, multiplier, shift) as int64; with FLOAT_REQUANT read (bias, mantissa, exponent)
    through `unpack_float_params`."""
    rec = np.frombuffer(raw, "<i4").reshape(c_pad, 4).astype(np.int64)
    return rec[:, 0], rec[:, 1], rec[:, 2]


def unpack_float_params(raw: bytes, c_pad: int) -> tuple[np.ndarray, list[int], list[int]]:
    rec = np.frombuffer(raw, "<u4").reshape(c_pad, 4).astype(np.int64)
    bias = np.where(rec[:, 0] >= 1 << 31, rec[:, 0] - (1 << 32), rec[:, 0])
    mant = [int(lo) | int(hi) << 32 for lo, hi in rec[:, 1:3]]
    exp = [int(e) - (1 << 32) if e >= 1 << 31 else int(e) for e in rec[:, 3]]
    return bias, mant, exp


def im2col(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int],
           pads: tuple[int, int, int, int], zero_point: int) -> np.ndarray:
    """(H, W, C) -> (OH, OW, KH*KW*C) patches in TFLite filter order (kh, kw, c) of a KHxKW
    convolution at stride (SH, SW) with (top, left, bottom, right) padding; out-of-image taps
    take the zero point so they contribute nothing."""
    (kh, kw), (sh, sw), (t, l, b, r) = kernel, stride, pads
    xp = np.pad(x, ((t, b), (l, r), (0, 0)), constant_values=zero_point)
    oh = (xp.shape[0] - kh) // sh + 1
    ow = (xp.shape[1] - kw) // sw + 1
    cols = [xp[i: i + sh * oh: sh, j: j + sw * ow: sw] for i in range(kh) for j in range(kw)]
    return np.concatenate(cols, axis=-1)
