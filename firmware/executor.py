"""Functional model of the accelerator: runs a layer program out of a DDR image, reading
every weight, parameter and activation through the byte layouts in `layout.py`.

It shares only the integer kernels with the numpy reference, so agreement with TFLite on
every layer proves the compiler's encoding (descriptors, tiling orders, padding, addresses)
before any RTL runs; the RTL is then checked against the same DDR image.
"""
from __future__ import annotations

import numpy as np

from quantize import fixedpoint as fx
from quantize.reference import (ADD_LEFT_SHIFT, AddParams, SoftmaxParams, add, conv2d_acc,
                                depthwise_acc, softmax)
from rtl_gen.config import AccelConfig

from . import layout as L
from .program import DESCRIPTOR_BYTES, Descriptor, DescriptorError, Flags, Opcode


class Memory:
    """A DDR image addressed from `base`, plus the one piece of accelerator state that
    outlives a descriptor: the MeanUnit's sums between the bands of a tiled MEAN."""

    def __init__(self, image: bytearray, base: int = 0):
        self.data, self.base = image, base
        self.mean_sums = None

    def read(self, addr: int, n: int) -> bytes:
        o = addr - self.base
        if o < 0 or o + n > len(self.data):
            raise DescriptorError(f"access {addr:#x}+{n} outside DDR image")
        return bytes(self.data[o: o + n])

    def write(self, addr: int, data: bytes) -> None:
        o = addr - self.base
        if o < 0 or o + len(data) > len(self.data):
            raise DescriptorError(f"write {addr:#x}+{len(data)} outside DDR image")
        self.data[o: o + len(data)] = data

    def fmap(self, addr: int, h: int, w: int, c: int) -> np.ndarray:
        return np.frombuffer(self.read(addr, h * w * c), np.int8).reshape(1, h, w, c)


def _records(mem: Memory, d: Descriptor) -> bytes:
    return mem.read(d.param_addr, d.out_c * L.PARAM_BYTES)


def _requant(acc, raw: bytes, d: Descriptor, c: int) -> np.ndarray:
    if d.flags & Flags.FLOAT_REQUANT:
        _, mant, exp = L.unpack_float_params(raw, c)
        scaled = np.array([[fx.round_scaled_double(a, mant[i], exp[i]) for i, a in enumerate(row)]
                           for row in acc.reshape(-1, c)], np.int64).reshape(acc.shape)
    else:
        _, mult, shift = L.unpack_channel_params(raw, c)
        scaled = fx.multiply_by_quantized_multiplier(acc, mult, shift)
    return np.clip(scaled + d.output_zp, d.act_min, d.act_max).astype(np.int8)


def _bias(raw: bytes, c: int) -> np.ndarray:
    return L.unpack_channel_params(raw, c)[0]


def run_layer(mem: Memory, d: Descriptor, cfg: AccelConfig) -> None:
    if d.opcode == Opcode.CONV:
        x = mem.fmap(d.input_addr, d.in_h, d.in_w, d.in_c)
        w = L.unpack_pointwise_weights(mem.read(d.weight_addr, d.weight_bytes), cfg, d.out_c, d.in_c)
        raw = _records(mem, d)
        acc = conv2d_acc(x, d.input_zp, w[:, None, None, :], _bias(raw, d.out_c))
        y = _requant(acc, raw, d, d.out_c)
    elif d.opcode == Opcode.DWCONV:
        x = mem.fmap(d.input_addr, d.in_h, d.in_w, d.in_c)
        xp = np.pad(x, ((0, 0), (d.pad_top, d.pad_bottom), (d.pad_left, d.pad_right), (0, 0)),
                    constant_values=d.input_zp)
        w = L.unpack_depthwise_weights(mem.read(d.weight_addr, d.weight_bytes), cfg, d.in_c)
        raw = _records(mem, d)
        acc = depthwise_acc(xp, d.input_zp, w[None], _bias(raw, d.out_c), (d.stride, d.stride), "VALID")
        y = _requant(acc, raw, d, d.out_c)
    elif d.opcode == Opcode.MEAN:
        x = mem.fmap(d.input_addr, d.in_h, d.in_w, d.in_c).astype(np.int64)
        total = x.sum(axis=(1, 2)) - d.input_zp * d.in_h * d.in_w
        if d.flags & Flags.MEAN_CONTINUE:       # a later band of pixels: add to the sums
            total = total + mem.mean_sums
        if d.flags & Flags.MEAN_PARTIAL:        # more bands follow: keep the sums, no output
            mem.mean_sums = total
            return
        y = np.clip(fx.multiply_by_quantized_multiplier(fx.wrap_int32(total), d.multiplier, d.shift)
                    + d.output_zp, -128, 127).astype(np.int8)
    elif d.opcode == Opcode.SOFTMAX:
        x = np.frombuffer(mem.read(d.input_addr, d.in_c), np.int8)[None, : d.real_c]
        y = L.pad_channels(softmax(x, SoftmaxParams(d.multiplier, d.shift, d.aux)), d.out_c, -128)
    elif d.opcode == Opcode.ADD:
        # The input scalings from the records, the output stage from the descriptor. Padded
        # channels hold the zero points: they sum to the output's.
        x1 = mem.fmap(d.input_addr, d.in_h, d.in_w, d.in_c)
        x2 = np.frombuffer(mem.read(d.weight_addr, d.weight_bytes), np.int8).reshape(x1.shape)
        first, second = L.unpack_add_records(mem.read(d.param_addr, L.ADD_RECORD_BYTES))
        y = add(x1, x2, AddParams(ADD_LEFT_SHIFT, *first, *second, d.multiplier, d.shift,
                                  d.output_zp, d.act_min, d.act_max))
    elif d.opcode == Opcode.PAD:
        x = mem.fmap(d.input_addr, d.in_h, d.in_w, d.in_c)
        y = np.pad(x, ((0, 0), (d.pad_top, d.pad_bottom), (d.pad_left, d.pad_right), (0, 0)),
                   constant_values=d.input_zp)
    else:
        raise DescriptorError(f"layer {d.layer}: unknown opcode {d.opcode}")
    mem.write(d.output_addr, np.ascontiguousarray(y).tobytes())


def execute(mem: Memory, program_addr: int, cfg: AccelConfig, max_layers: int = 4096) -> int:
    """Run descriptors from program_addr until END; returns the number of layers run."""
    for i in range(max_layers):
        d = Descriptor.unpack(mem.read(program_addr + i * DESCRIPTOR_BYTES, DESCRIPTOR_BYTES))
        if d.opcode == Opcode.END:
            return i
        run_layer(mem, d, cfg)
    raise DescriptorError(f"no END descriptor within {max_layers} layers")


def host_input(fw, x: np.ndarray) -> bytes:
    """The bytes the host writes to the input region for one int8 NHWC image."""
    x = np.asarray(x, np.int8).reshape(fw.tensors[fw.input_tensor].shape if fw.im2col is None
                                       else (-1,) + x.shape[-3:])
    place = fw.tensors[fw.input_tensor]
    if fw.im2col is not None:
        x = L.im2col(x[0], *fw.im2col)[None]
    return L.pad_channels(x, place.c_pad, place.zero_point).tobytes()


def read_tensor(fw, mem: Memory, tensor: int) -> np.ndarray:
    """A tensor read back from DDR in its logical (unpadded) shape."""
    p = fw.tensors[tensor]
    raw = np.frombuffer(mem.read(p.addr, p.nbytes), np.int8)
    return raw.reshape(p.shape[:-1] + (p.c_pad,))[..., : p.shape[-1]]


def run_image(fw, x: np.ndarray) -> dict[int, np.ndarray]:
    """The functional model end to end: compiled program `fw` run from its DDR image on one
    int8 image `x`; every tensor it writes, as read back from DDR (by tensor index)."""
    mem = Memory(bytearray(fw.image), fw.base)
    mem.write(fw.regions["input"][0], host_input(fw, x))
    layers = execute(mem, fw.program_addr, fw.cfg)
    if layers != len(fw.descriptors) - 1:
        raise DescriptorError(f"the program ended after {layers} of "
                              f"{len(fw.descriptors) - 1} layers")
    return {t: read_tensor(fw, mem, t) for t in fw.tensors if t != fw.input_tensor}
