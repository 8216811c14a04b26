"""Compile a parsed int8 graph into the layer program and the DDR image.

DDR map (addresses relative to `base`, every region 64-byte aligned):
    params    per layer: weights (engine stream order) then 16-byte channel records
    input     the int8 input, written by the host (its patches when the first layer is a
              convolution other than 1x1 stride 1: host im2col)
    act       one region per layer output, so every intermediate tensor can be read back and
              checked after a single run (DDR is plentiful; on-chip buffers are not)
    program   descriptors, END-terminated: one per layer, or one per band of rows for a
              layer too large for the activation buffers (`firmware.tiling`)
The output tensor is the last layer's region.

A 1x1 convolution at stride 2 inside the network (`is_subsampling_conv`) becomes two
descriptors: a depthwise pass with an identity kernel (centre tap 1, multiplier exactly 1,
output zero point = input zero point, explicit pads putting the centre on input pixel
(2i, 2j)) that writes the subsampled input to a region of its own, then the 1x1 stride-1
convolution over it. Exact by construction: the pass copies every picked value unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from quantize.average_pool import average_pool_multiplier
from quantize.reference import (add_params, mean_multiplier, requant_for, same_padding,
                                softmax_params)
from quantize import fixedpoint as fx
from quantize.tflite_graph import (VIEW_OPS, Graph, Op, UnsupportedModelError, inner_conv_error,
                                   is_subsampling_conv, needs_host_im2col)
from rtl_gen.config import AccelConfig
from firmware.contract import Geometry

from . import layout as L
from .program import DESCRIPTOR_BYTES, Descriptor, Flags, Opcode
from .tiling import split_layer


@dataclass
class TensorPlacement:
    """Where one activation tensor lives in DDR and how it is laid out."""
    tensor: int            # graph tensor index
    addr: int
    shape: tuple[int, ...]  # logical NHWC (or N, C) shape
    c_pad: int              # channels as stored
    zero_point: int

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape[:-1])) * self.c_pad


@dataclass
class Firmware:
    cfg: AccelConfig
    base: int
    descriptors: list[Descriptor]
    image: bytearray
    regions: dict[str, tuple[int, int]]          # name -> (addr, bytes)
    tensors: dict[int, TensorPlacement]           # graph tensor index -> placement
    layer_ops: list[int] = field(default_factory=list)  # descriptor i came from graph op
    bands: list[tuple[int, int]] = field(default_factory=list)  # descriptor i: (band, of bands)
    # Descriptor i's part in its graph op when that op takes more than one pass: "" or
    # SUBSAMPLE (the depthwise pass of a strided 1x1 convolution, see the module docstring).
    roles: list[str] = field(default_factory=list)
    input_tensor: int = 0
    output_tensor: int = 0
    im2col: tuple | None = None  # (stride, pads, zero_point) when the host makes patches
    # Outputs of PAD ops folded into their consumer's padding: never in memory, so never
    # read back (their consumer's output, which is, checks them).
    folded: frozenset[int] = frozenset()

    @property
    def program_addr(self) -> int:
        return self.regions["program"][0]


class _Allocator:
    def __init__(self, base: int):
        self.next = base

    def take(self, nbytes: int) -> int:
        addr = self.next
        self.next = L.round_up(addr + max(nbytes, 1), L.ALIGN)
        return addr


def _fold_pads(graph: Graph) -> tuple[dict[int, tuple[int, int, int, int]], dict[int, int]]:
    """PAD ops whose only consumer is a VALID convolution that applies padding fold into that
    op's pads (exact: the pad value is the zero point, which contributes nothing): a
    depthwise layer (its engine pads), or a convolution on the model input whose patches
    the host makes (`needs_host_im2col`). Returns
    ({consumer op index: (top, left, bottom, right)}, {PAD output tensor: PAD input tensor})."""
    consumers: dict[int, list[Op]] = {}
    for op in graph.ops:
        for t in op.inputs:
            if t is not None and t.data is None:
                consumers.setdefault(t.index, []).append(op)
    pads_into, pad_source = {}, {}
    for op in graph.ops:
        if op.kind != "PAD":
            continue
        users = consumers.get(op.outputs[0].index, [])
        pads_itself = len(users) == 1 and (
            users[0].kind == "DEPTHWISE_CONV_2D" or
            (needs_host_im2col(users[0]) and op.inputs[0].index == graph.input.index))
        if pads_itself and users[0].options["padding"] == "VALID":
            p = op.inputs[1].data
            pads_into[users[0].index] = (int(p[1][0]), int(p[2][0]), int(p[1][1]), int(p[2][1]))
            pad_source[op.outputs[0].index] = op.inputs[0].index
    return pads_into, pad_source


def _pads(op: Op, extra=(0, 0, 0, 0)) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of a convolution, including folded PAD ops."""
    h, w = op.inputs[0].shape[1:3]
    kh, kw = op.inputs[1].shape[1:3]
    sh, sw = op.options["stride"]
    if op.options["padding"] == "SAME":
        _, t, b = same_padding(h, kh, sh)
        _, l, r = same_padding(w, kw, sw)
    else:
        t = l = b = r = 0
    return t + extra[0], l + extra[1], b + extra[2], r + extra[3]


def compile_graph(graph: Graph, cfg: AccelConfig = AccelConfig(), base: int = 0) -> Firmware:
    ca = L.channel_align(cfg)
    pads_into, pad_source = _fold_pads(graph)
    ops = [op for op in graph.ops if op.outputs[0].index not in pad_source]

    alloc = _Allocator(base)
    capacity = Geometry(cfg).act_capacity
    chunks: list[tuple[int, bytes]] = []
    descriptors: list[Descriptor] = []
    tensors: dict[int, TensorPlacement] = {}

    first = ops[0]
    x = graph.input
    host_patches = needs_host_im2col(first) and _source(first, pad_source) == x.index
    subsampled = {op.index for op in ops
                  if is_subsampling_conv(op) and not (host_patches and op is first)}

    # Parameters first, so the activation regions form one contiguous block after them.
    params_start = alloc.next
    weight_regions, subsample_regions = {}, {}
    add_order = {op.index: _add_order(op, ops[k - 1] if k else None, pad_source)
                 for k, op in enumerate(ops) if op.kind == "ADD"}
    for op in ops:
        weight_regions[op.index] = (_place_add_params(op, add_order[op.index], alloc, chunks)
                                    if op.kind == "ADD" else _place_params(op, cfg, alloc, chunks))
        if op.index in subsampled:
            subsample_regions[op.index] = _place_identity_params(op, cfg, alloc, chunks)
    params_end = alloc.next

    im2col = None
    if host_patches:
        pads = _pads(first, pads_into.get(first.index, (0, 0, 0, 0)))
        kernel = tuple(first.inputs[1].shape[1:3])
        im2col = (kernel, tuple(first.options["stride"]), pads, x.zp)
        oh, ow = first.outputs[0].shape[1:3]
        k = kernel[0] * kernel[1] * x.shape[3]
        tensors[x.index] = TensorPlacement(x.index, 0, (1, oh, ow, k), L.round_up(k, ca), x.zp)
    else:
        tensors[x.index] = TensorPlacement(x.index, 0, x.shape, L.round_up(x.shape[-1], ca), x.zp)
    input_addr = alloc.take(tensors[x.index].nbytes)
    tensors[x.index].addr = input_addr

    act_start = alloc.next
    layer_ops: list[int] = []
    bands: list[tuple[int, int]] = []
    roles: list[str] = []
    errors: list[ValueError] = []

    def emit(d: Descriptor, op: Op, role: str = "") -> None:
        """Append `d` (as its bands when too large for the buffers) for graph op `op`."""
        d.layer = len(descriptors)
        parts = split_layer(d, capacity, cfg, op.describe() + (f" ({role})" if role else ""))
        for k, part in enumerate(parts):
            part.layer = len(descriptors)
            descriptors.append(part)
            layer_ops.append(op.index)
            bands.append((k, len(parts)))
            roles.append(role)

    for op in ops:
        src = add_order[op.index][0] if op.kind == "ADD" else _source(op, pad_source)
        needed = add_order[op.index] if op.kind == "ADD" else (src,)
        if any(t not in tensors for t in needed):
            errors.append(UnsupportedModelError(f"{op.describe()}: input is not produced by "
                                                "a mapped layer"))
            continue
        y = op.outputs[0]
        if op.kind in VIEW_OPS:      # same bytes, another shape: no layer of its own
            t_in = tensors[src]
            tensors[y.index] = TensorPlacement(y.index, t_in.addr, y.shape, t_in.c_pad, t_in.zero_point)
            continue
        c_pad = L.round_up(y.shape[-1], ca)
        place = TensorPlacement(y.index, 0, y.shape, c_pad, y.zp)
        place.addr = alloc.take(place.nbytes)
        tensors[y.index] = place     # placed even if refused: later layers still get checked
        source = tensors[src]
        try:
            if op.kind == "ADD":
                emit(_add_descriptor(op, source, tensors[add_order[op.index][1]], place,
                                     weight_regions[op.index]), op)
                continue
            if op.index in subsampled:
                picked = TensorPlacement(-1, 0, (1,) + y.shape[1:3] + source.shape[3:],
                                         source.c_pad, source.zero_point)
                picked.addr = alloc.take(picked.nbytes)
                emit(_subsample_descriptor(source, picked, subsample_regions[op.index]),
                     op, SUBSAMPLE)
                source = picked
            d = _descriptor(op, cfg, source, place, weight_regions[op.index],
                            pads_into.get(op.index, (0, 0, 0, 0)), im2col is not None and op is first,
                            op.index in subsampled)
            emit(d, op)
        except ValueError as e:      # UnsupportedModelError, TilingError: go on, report all
            errors.append(e)
            continue
    _raise_all(errors)
    act_end = alloc.next

    descriptors.append(Descriptor(opcode=Opcode.END, layer=len(descriptors)))
    program_addr = alloc.take(len(descriptors) * DESCRIPTOR_BYTES)
    image = bytearray(alloc.next - base)
    program = b"".join(d.pack() for d in descriptors)
    image[program_addr - base: program_addr - base + len(program)] = program
    for addr, data in chunks:
        image[addr - base: addr - base + len(data)] = data
    out = tensors[graph.output.index]
    regions = {"program": (program_addr, len(program)), "params": (params_start, params_end - params_start),
               "input": (input_addr, tensors[x.index].nbytes),
               "activations": (act_start, act_end - act_start), "output": (out.addr, out.nbytes)}
    return Firmware(cfg, base, descriptors, image, regions, tensors, layer_ops, bands, roles,
                    x.index, graph.output.index, im2col, frozenset(pad_source))


def needs_add_unit(graph: Graph) -> bool:
    """Whether `compile_graph` emits ADD layers for `graph` (MobileNetV2's residuals), so that
    an accelerator running it needs the AddUnit (`AccelConfig.with_add`)."""
    return any(op.kind == "ADD" for op in graph.ops)


def _raise_all(errors: list[ValueError]) -> None:
    """One error as it is; several as one of the first one's class, their messages joined
    with '; ' (a user fixes them all at once, not one per run)."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise type(errors[0])("; ".join(str(e) for e in errors))


def _source(op: Op, pad_source: dict[int, int]) -> int:
    t = op.inputs[0].index
    return pad_source.get(t, t)


def _add_order(op: Op, previous: Op | None, pad_source: dict[int, int]) -> tuple[int, int]:
    """An ADD's two input tensors as (read from the activation buffer, loaded like weights):
    the previous layer's output first when it is one of them (MobileNetV2's projection; the
    block input it adds came from DDR anyway), so that it stays on chip."""
    a, b = (pad_source.get(t.index, t.index) for t in op.inputs[:2])
    if previous is not None and previous.outputs[0].index == b:
        return b, a
    return a, b


def _place_add_params(op: Op, order: tuple[int, int], alloc: _Allocator, chunks) -> _Params:
    """An ADD's records (`layout.add_records`) for its inputs in `order`, and its
    `reference.AddParams` (the output stage) as the requantization."""
    p = add_params(op)
    scalings = {op.inputs[0].index: (p.input1_offset, p.input1_multiplier, p.input1_shift),
                op.inputs[1].index: (p.input2_offset, p.input2_multiplier, p.input2_shift)}
    records = L.add_records(scalings[order[0]], scalings[order[1]])
    p_addr = alloc.take(len(records))
    chunks.append((p_addr, records))
    return _Params(param_addr=p_addr, requant=p)


def _add_descriptor(op: Op, first: TensorPlacement, second: TensorPlacement,
                    dst: TensorPlacement, params: _Params) -> Descriptor:
    """An ADD reading `first` into the activation buffer and `second` into the weight buffer
    (same shape and padding: both are the block's feature map)."""
    p = params.requant
    if first.shape != second.shape or first.c_pad != second.c_pad:
        raise UnsupportedModelError(f"{op.describe()}: inputs of shapes {first.shape} and "
                                    f"{second.shape} (only equal shapes)")
    _, h, w, _ = first.shape
    return Descriptor(opcode=Opcode.ADD, in_h=h, in_w=w, out_h=h, out_w=w,
                      in_c=first.c_pad, out_c=dst.c_pad, real_c=dst.shape[-1],
                      input_addr=first.addr, output_addr=dst.addr,
                      weight_addr=second.addr, weight_bytes=second.nbytes,
                      param_addr=params.param_addr,
                      input_zp=first.zero_point, output_zp=p.output_offset,
                      act_min=p.act_min, act_max=p.act_max,
                      multiplier=p.output_multiplier, shift=p.output_shift)


@dataclass
class _Params:
    """Where a weighted op's weights and channel records went, and its requantization."""
    weight_addr: int = 0
    weight_bytes: int = 0
    param_addr: int = 0
    requant: object = None


def _place_params(op: Op, cfg: AccelConfig, alloc: _Allocator, chunks) -> _Params:
    """Lay out weights and channel records of a weighted op."""
    if op.kind not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
        return _Params()
    ca = L.channel_align(cfg)
    w = op.inputs[1].data
    bias = op.inputs[2].data if len(op.inputs) > 2 and op.inputs[2] is not None else None
    rq = requant_for(op)
    if op.kind == "DEPTHWISE_CONV_2D":
        c_pad = L.round_up(w.shape[3], ca)
        wbytes = L.depthwise_weights(w, cfg, c_pad)
    else:
        # (Cout, K): K = Cin for 1x1 and dense, KH*KW*Cin in (kh, kw, c) order for an
        # im2col'd first convolution.
        w2d = w.reshape(w.shape[0], -1)
        c_pad = L.round_up(w2d.shape[0], ca)
        wbytes = L.pointwise_weights(w2d, cfg, c_pad, L.round_up(w2d.shape[1], ca))
    w_addr = alloc.take(len(wbytes))
    chunks.append((w_addr, wbytes))
    params = L.channel_params(bias, rq.multiplier, rq.shift, c_pad, rq.float_scale)
    p_addr = alloc.take(len(params))
    chunks.append((p_addr, params))
    return _Params(w_addr, len(wbytes), p_addr, rq)


SUBSAMPLE = "subsample"
# Requantization by exactly 1: MultiplyByQuantizedMultiplier(acc, 2^30, 1) = acc.
IDENTITY_MULTIPLIER, IDENTITY_SHIFT = 1 << 30, 1


def _place_identity_params(op: Op, cfg: AccelConfig, alloc: _Allocator, chunks) -> _Params:
    """The subsampling pass's depthwise weights (centre tap 1 on every channel of the op's
    input) and channel records (bias 0, multiplier exactly 1)."""
    ca = L.channel_align(cfg)
    c = op.inputs[0].shape[-1]
    c_pad = L.round_up(c, ca)
    w = np.zeros((1, 3, 3, c), np.int8)
    w[0, 1, 1, :] = 1
    wbytes = L.depthwise_weights(w, cfg, c_pad)
    w_addr = alloc.take(len(wbytes))
    chunks.append((w_addr, wbytes))
    params = L.channel_params(np.zeros(c, np.int64), np.full(c, IDENTITY_MULTIPLIER),
                              np.full(c, IDENTITY_SHIFT), c_pad)
    p_addr = alloc.take(len(params))
    chunks.append((p_addr, params))
    return _Params(w_addr, len(wbytes), p_addr)


def _subsample_descriptor(src: TensorPlacement, dst: TensorPlacement, params: _Params
                          ) -> Descriptor:
    """A stride-2 depthwise pass copying input pixel (2i, 2j) to output pixel (i, j): one
    row and column of padding before puts the 3x3 window's centre there, one after keeps
    the output size of a 1x1 stride-2 convolution, ceil(in / 2), for even and odd sizes."""
    (in_h, in_w), (out_h, out_w) = src.shape[1:3], dst.shape[1:3]
    return Descriptor(opcode=Opcode.DWCONV, kernel=3, stride=2,
                      pad_top=1, pad_left=1, pad_bottom=1, pad_right=1,
                      in_h=in_h, in_w=in_w, out_h=out_h, out_w=out_w,
                      in_c=src.c_pad, out_c=dst.c_pad, real_c=src.shape[-1],
                      input_addr=src.addr, output_addr=dst.addr,
                      input_zp=src.zero_point, output_zp=src.zero_point,
                      weight_addr=params.weight_addr, weight_bytes=params.weight_bytes,
                      param_addr=params.param_addr)


def _lower_average_pool(op: Op, d: Descriptor, pixels: int) -> None:
    """A global AVERAGE_POOL_2D as a MEAN: zero points 0, so the MeanUnit sums the raw values
    whose sign TFLite's rounding follows, and the pair `average_pool_multiplier` verified to
    round those sums as TFLite does (`quantize.average_pool`)."""
    pair = average_pool_multiplier(pixels)
    if pair is None:
        raise UnsupportedModelError(f"{op.describe()}: no exact multiplier for an average "
                                    f"over {pixels} pixels")
    d.opcode = Opcode.MEAN
    d.input_zp = d.output_zp = 0
    d.multiplier, d.shift = pair
    d.out_h = d.out_w = 1


def _descriptor(op: Op, cfg: AccelConfig, src: TensorPlacement, dst: TensorPlacement,
                weights, extra_pads, first_im2col: bool, subsampled: bool = False) -> Descriptor:
    """The descriptor of `op` reading `src` (for a `subsampled` convolution: its
    subsampling pass's output) and writing `dst`."""
    x, y = op.inputs[0], op.outputs[0]
    in_shape, out_shape = src.shape, dst.shape
    d = Descriptor(input_addr=src.addr, output_addr=dst.addr, input_zp=src.zero_point,
                   output_zp=y.zp, in_c=src.c_pad, out_c=dst.c_pad, real_c=y.shape[-1])
    d.weight_addr, d.weight_bytes, d.param_addr = (weights.weight_addr, weights.weight_bytes,
                                                   weights.param_addr)
    if len(in_shape) == 4:
        d.in_h, d.in_w = in_shape[1:3]
    else:
        d.in_h = d.in_w = 1
    if len(out_shape) == 4:
        d.out_h, d.out_w = out_shape[1:3]
    else:
        d.out_h = d.out_w = 1
    if op.kind in ("CONV_2D", "FULLY_CONNECTED"):
        d.opcode = Opcode.CONV
        rq = weights.requant
        d.act_min, d.act_max = rq.act_min, rq.act_max
        if rq.float_scale is not None:
            d.flags |= Flags.FLOAT_REQUANT
        if op.kind == "CONV_2D":
            (kh, kw), (sh, sw) = op.inputs[1].shape[1:3], op.options["stride"]
            if first_im2col:
                # A 1x1 convolution over the host's patches; kernel and stride are recorded.
                d.kernel, d.stride = max(kh, kw), max(sh, sw)
                d.flags |= Flags.IM2COL
            elif needs_host_im2col(op) and not subsampled:
                raise inner_conv_error(op)
            else:
                d.kernel, d.stride = 1, 1
    elif op.kind == "DEPTHWISE_CONV_2D":
        d.opcode, d.kernel, d.stride = Opcode.DWCONV, 3, op.options["stride"][0]
        d.pad_top, d.pad_left, d.pad_bottom, d.pad_right = _pads(op, extra_pads)
        rq = weights.requant
        d.act_min, d.act_max = rq.act_min, rq.act_max
    elif op.kind == "MEAN":
        m, s = fx.quantize_multiplier(float(np.float32(x.scale[0])) / float(np.float32(y.scale[0])))
        d.opcode = Opcode.MEAN
        d.multiplier, d.shift = mean_multiplier(m, s, in_shape[1] * in_shape[2])
        d.out_h = d.out_w = 1
    elif op.kind == "AVERAGE_POOL_2D":
        _lower_average_pool(op, d, in_shape[1] * in_shape[2])
    elif op.kind == "SOFTMAX":
        p = softmax_params(x.scale[0], op.options.get("beta", 1.0))
        d.opcode = Opcode.SOFTMAX
        d.multiplier, d.shift, d.aux = p.input_multiplier, p.input_left_shift, p.diff_min
    elif op.kind == "PAD":
        pads = op.inputs[1].data
        d.opcode = Opcode.PAD
        d.pad_top, d.pad_bottom = int(pads[1][0]), int(pads[1][1])
        d.pad_left, d.pad_right = int(pads[2][0]), int(pads[2][1])
    else:
        raise UnsupportedModelError(f"{op.describe()}: no accelerator mapping")
    return d
