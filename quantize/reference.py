"""Bit-exact numpy int8 reference of the TFLite ops the accelerator runs.

Each kernel mirrors TFLite's reference integer kernels (the BUILTIN_REF resolver) including
how Prepare() derives multipliers from the float scales. `run_graph` executes a parsed model
and returns every intermediate tensor, so tests compare layer by layer.
"""
from __future__ import annotations

import math

from dataclasses import dataclass

import numpy as np

from . import fixedpoint as fx
from .average_pool import global_average_pool
from .tflite_graph import VIEW_OPS, Graph, Op, UnsupportedModelError, activation_inputs

# ---------------------------------------------------------------------------- parameters


def effective_scales(input_scale, filter_scales, output_scale) -> np.ndarray:
    """double(in) * double(w[c]) / double(out), as PopulateConvolutionQuantizationParams."""
    s_in = float(np.float32(input_scale))
    s_out = float(np.float32(output_scale))
    return np.array([s_in * float(np.float32(ws)) / s_out for ws in np.ravel(filter_scales)])


def per_channel_multipliers(input_scale, filter_scales, output_scale) -> tuple[np.ndarray, np.ndarray]:
    pairs = [fx.quantize_multiplier(s) for s in effective_scales(input_scale, filter_scales, output_scale)]
    return (np.array([p[0] for p in pairs], np.int64), np.array([p[1] for p in pairs], np.int64))


def activation_range(activation: str, scale: float, zero_point: int) -> tuple[int, int]:
    """CalculateActivationRangeQuantized for int8 outputs: zero_point + TfLiteRound(f / scale),
    the division in float32 and std::round's halves away from zero (float32 division lands on
    exact halves, e.g. 6 / 2.4f == 2.5f, where Python's round would go to even)."""
    lo, hi = -128, 127

    def q(v):
        x = float(np.float32(v) / np.float32(scale))
        return zero_point + int(math.copysign(math.floor(abs(x) + 0.5), x))
    if activation == "RELU":
        lo = max(lo, q(0.0))
    elif activation == "RELU6":
        lo, hi = max(lo, q(0.0)), min(hi, q(6.0))
    return lo, hi


@dataclass(frozen=True)
class Requant:
    """Everything the per-channel requantization stage needs (one entry per output channel).

    CONV_2D and DEPTHWISE use the fixed-point multiplier (double rounding). FULLY_CONNECTED
    under BUILTIN_REF scales in double precision instead: out = std::round(acc * scale[c]),
    with scale = double(in) * double(w[c]) / double(out); `float_scale` holds those doubles."""
    multiplier: np.ndarray
    shift: np.ndarray
    output_zp: int
    act_min: int
    act_max: int
    float_scale: np.ndarray | None = None

    def apply(self, acc: np.ndarray) -> np.ndarray:
        if self.float_scale is not None:
            raw = acc.astype(np.float64) * self.float_scale
            scaled = (np.sign(raw) * np.floor(np.abs(raw) + 0.5)).astype(np.int64)  # std::round
        else:
            scaled = fx.multiply_by_quantized_multiplier(acc, self.multiplier, self.shift)
        return np.clip(scaled + self.output_zp, self.act_min, self.act_max).astype(np.int8)


def requant_for(op: Op) -> Requant:
    x, w, y = op.inputs[0], op.inputs[1], op.outputs[0]
    m, s = per_channel_multipliers(x.scale[0], w.scale, y.scale[0])
    n_out = w.shape[0] if op.kind != "DEPTHWISE_CONV_2D" else w.shape[3]
    scales = effective_scales(x.scale[0], w.scale, y.scale[0])
    if m.size == 1:
        m, s, scales = np.repeat(m, n_out), np.repeat(s, n_out), np.repeat(scales, n_out)
    lo, hi = activation_range(op.options.get("activation", "NONE"), y.scale[0], y.zp)
    return Requant(m, s, y.zp, lo, hi, scales if op.kind == "FULLY_CONNECTED" else None)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """(output size, pad before, pad after) of TFLite SAME padding."""
    out = (size + stride - 1) // stride
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def _pad_spatial(x: np.ndarray, padding: str, kernel: tuple[int, int], stride: tuple[int, int],
                 value: int) -> np.ndarray:
    if padding == "VALID":
        return x
    (_, t, b), (_, l, r) = (same_padding(x.shape[1], kernel[0], stride[0]),
                            same_padding(x.shape[2], kernel[1], stride[1]))
    return np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), constant_values=value)


def _windows(xp: np.ndarray, kh: int, kw: int, sh: int, sw: int) -> np.ndarray:
    """(N, OH, OW, KH, KW, C) strided view of the padded input."""
    n, h, w, c = xp.shape
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    st = xp.strides
    return np.lib.stride_tricks.as_strided(
        xp, (n, oh, ow, kh, kw, c), (st[0], st[1] * sh, st[2] * sw, st[1], st[2], st[3]),
        writeable=False)

# ---------------------------------------------------------------------------- kernels


def conv2d_acc(x: np.ndarray, input_zp: int, w: np.ndarray, bias: np.ndarray | None,
               stride=(1, 1), padding="SAME") -> np.ndarray:
    """int32 accumulators of an int8 conv: sum((x - zp) * w) + bias. w is (Cout, KH, KW, Cin)."""
    cout, kh, kw, cin = w.shape
    xs = x.astype(np.int64) - input_zp
    win = _windows(_pad_spatial(xs, padding, (kh, kw), stride, 0), kh, kw, *stride)
    # Exact in float64: |sum| <= 255 * 128 * K < 2^53 for any K below 2^37, and BLAS is fast.
    acc = np.tensordot(win.astype(np.float64), w.astype(np.float64), axes=([3, 4, 5], [1, 2, 3]))
    acc = acc.astype(np.int64)
    return acc + bias.astype(np.int64) if bias is not None else acc


def depthwise_acc(x: np.ndarray, input_zp: int, w: np.ndarray, bias: np.ndarray | None,
                  stride=(1, 1), padding="SAME") -> np.ndarray:
    """Depthwise accumulators, depth multiplier 1. w is (1, KH, KW, C)."""
    _, kh, kw, c = w.shape
    if c != x.shape[3]:
        raise UnsupportedModelError(f"depthwise: depth multiplier {c // x.shape[3]} != 1")
    xs = x.astype(np.int64) - input_zp
    win = _windows(_pad_spatial(xs, padding, (kh, kw), stride, 0), kh, kw, *stride)
    acc = np.einsum("nhwijc,ijc->nhwc", win, w[0].astype(np.int64))
    return acc + bias.astype(np.int64) if bias is not None else acc


def fully_connected_acc(x: np.ndarray, input_zp: int, w: np.ndarray, bias: np.ndarray | None):
    """w is (Cout, Cin); x is (N, Cin)."""
    acc = (x.astype(np.int64) - input_zp) @ w.astype(np.int64).T
    return acc + bias.astype(np.int64) if bias is not None else acc


def pad(x: np.ndarray, paddings: np.ndarray, zero_point: int) -> np.ndarray:
    """PAD on int8 pads with the output zero point (equal to the input's)."""
    return np.pad(x, [tuple(int(v) for v in p) for p in paddings], constant_values=zero_point)


def mean_hw(x: np.ndarray, input_zp: int, input_scale: float, output_zp: int,
            output_scale: float) -> np.ndarray:
    """MEAN over H and W: QuantizedMeanOrSum with 1/count folded into the multiplier."""
    multiplier, shift = fx.quantize_multiplier(float(np.float32(input_scale)) /
                                               float(np.float32(output_scale)))
    count = x.shape[1] * x.shape[2]
    m, s = mean_multiplier(multiplier, shift, count)
    total = x.astype(np.int64).sum(axis=(1, 2)) - input_zp * count
    out = fx.multiply_by_quantized_multiplier(fx.wrap_int32(total), m, s) + output_zp
    return np.clip(out, -128, 127).astype(np.int8)


def mean_multiplier(multiplier: int, shift: int, count: int) -> tuple[int, int]:
    """Fold 1/count into (multiplier, shift) exactly as TFLite's reduce kernel does."""
    extra = min(count.bit_length() - 1, 32, 31 + shift)
    return int((multiplier << extra) // count), shift - extra


@dataclass(frozen=True)
class SoftmaxParams:
    input_multiplier: int
    input_left_shift: int
    diff_min: int


SCALED_DIFF_INTEGER_BITS = 5
ACCUMULATION_INTEGER_BITS = 12


def softmax_params(input_scale: float, beta: float = 1.0) -> SoftmaxParams:
    """PreprocessSoftmaxScaling + CalculateInputRadius for kScaledDiffIntegerBits = 5."""
    ib = SCALED_DIFF_INTEGER_BITS
    real = min(beta * float(np.float32(input_scale)) * (1 << (31 - ib)), (1 << 31) - 1.0)
    mult, left = fx.quantize_multiplier(real)
    if left < 0:
        raise UnsupportedModelError("softmax input scale too small for the fixed-point kernel")
    max_input_rescaled = 1.0 * ((1 << ib) - 1) * (1 << (31 - ib)) / (1 << left)
    return SoftmaxParams(mult, left, -int(np.floor(max_input_rescaled)))


def softmax(x: np.ndarray, p: SoftmaxParams) -> np.ndarray:
    """reference_ops::Softmax for int8 -> int8 (output scale 1/256, zero point -128)."""
    x = x.astype(np.int64)
    diff = x - x.max(axis=-1, keepdims=True)
    valid = diff >= p.diff_min
    rescaled = fx.saturating_rounding_doubling_high_mul(
        fx.wrap_int32(diff << p.input_left_shift), p.input_multiplier)
    exps = fx.exp_on_negative_values(rescaled, SCALED_DIFF_INTEGER_BITS)
    contrib = np.where(valid, fx.rescale(exps, 0, ACCUMULATION_INTEGER_BITS), 0)
    sum_of_exps = fx.wrap_int32(contrib.sum(axis=-1, keepdims=True))
    scale, bits_over_unit = fx.get_reciprocal(sum_of_exps, ACCUMULATION_INTEGER_BITS)
    unsat = fx.rounding_divide_by_pot(fx.fx_mul(scale, exps), bits_over_unit + 31 - 8)
    out = np.clip(unsat - 128, -128, 127)
    return np.where(valid, out, -128).astype(np.int8)

# ---------------------------------------------------------------------------- ADD

# Bits the int8 ADD shifts its inputs left by before rescaling them (add.cc: 20 for 8-bit).
ADD_LEFT_SHIFT = 20


@dataclass(frozen=True)
class AddParams:
    """TFLite's ArithmeticParams for an int8 ADD, as add.cc's Prepare derives them. The
    shifts are those of QuantizeMultiplierSmallerThanOneExp: <= 0, a right shift by -shift."""
    left_shift: int
    input1_offset: int
    input1_multiplier: int
    input1_shift: int
    input2_offset: int
    input2_multiplier: int
    input2_shift: int
    output_multiplier: int
    output_shift: int
    output_offset: int
    act_min: int
    act_max: int


def add_real_multipliers(input1_scale, input2_scale, output_scale,
                         left_shift: int = ADD_LEFT_SHIFT) -> tuple[float, float, float]:
    """(input 1, input 2, output) real multipliers of add.cc's Prepare, in its precision:
    twice_max_input_scale = 2 * std::max(float, float) and (1 << left_shift) * float are
    float32 products, the divisions double."""
    s1, s2, so = np.float32(input1_scale), np.float32(input2_scale), np.float32(output_scale)
    with np.errstate(over="ignore"):
        twice_max = float(np.float32(2) * max(s1, s2))
        out_denominator = float(np.float32(1 << left_shift) * so)
    with np.errstate(divide="ignore", invalid="ignore"):
        r1, r2 = (float(np.float64(s1) / twice_max), float(np.float64(s2) / twice_max))
        r_out = float(np.float64(twice_max) / out_denominator)
    return r1, r2, r_out


def quantize_multiplier_smaller_than_one(real: float) -> tuple[int, int] | None:
    """QuantizeMultiplierSmallerThanOneExp: (multiplier, shift <= 0), or None where TFLite
    CHECK-fails (abort()s): a multiplier outside (0, 1), or one so close to 1 that it rounds
    up to 2^31 and leaves shift 1. `tflite_graph` refuses such a model first."""
    if not 0 < real < 1:
        return None
    multiplier, shift = fx.quantize_multiplier(real)
    return (multiplier, shift) if shift <= 0 else None


def _quantize_smaller_than_one(real: float, what: str) -> tuple[int, int]:
    q = quantize_multiplier_smaller_than_one(real)
    if q is None:
        raise UnsupportedModelError(f"{what}: ADD multiplier {real:g} does not quantize to a "
                                    "multiplier below one (TFLite would abort)")
    return q


def add_params(op: Op) -> AddParams:
    """The ArithmeticParams TFLite's int8 ADD runs `op` with (add.cc Prepare)."""
    x1, x2, y = op.inputs[0], op.inputs[1], op.outputs[0]
    r1, r2, r_out = add_real_multipliers(x1.scale[0], x2.scale[0], y.scale[0])
    m1, s1 = _quantize_smaller_than_one(r1, op.describe())
    m2, s2 = _quantize_smaller_than_one(r2, op.describe())
    mo, so = _quantize_smaller_than_one(r_out, op.describe())
    lo, hi = activation_range(op.options.get("activation", "NONE"), y.scale[0], y.zp)
    return AddParams(ADD_LEFT_SHIFT, -x1.zp, m1, s1, -x2.zp, m2, s2, mo, so, y.zp, lo, hi)


def multiply_by_quantized_multiplier_smaller_than_one_exp(x, multiplier: int,
                                                         shift: int) -> np.ndarray:
    """MultiplyByQuantizedMultiplierSmallerThanOneExp: SRDHM, then a rounding right shift
    by -shift (shift <= 0)."""
    if shift > 0:
        raise ValueError(f"shift {shift} > 0: not a multiplier smaller than one")
    return fx.rounding_divide_by_pot(
        fx.saturating_rounding_doubling_high_mul(fx.wrap_int32(x), multiplier), -shift)


def add_scaled_input(x: np.ndarray, offset: int, multiplier: int, shift: int,
                     left_shift: int = ADD_LEFT_SHIFT) -> np.ndarray:
    """One input of the int8 ADD on the common fixed-point scale (int32 values in int64):
    MultiplyByQuantizedMultiplierSmallerThanOneExp((offset + x) * 2^left_shift, multiplier,
    shift). The hardware computes exactly this per input."""
    shifted = fx.wrap_int32((np.asarray(x).astype(np.int64) + offset) * (1 << left_shift))
    return multiply_by_quantized_multiplier_smaller_than_one_exp(shifted, multiplier, shift)


def add(x1: np.ndarray, x2: np.ndarray, p: AddParams) -> np.ndarray:
    """reference_integer_ops::Add for int8 without broadcasting (AddElementwise): both inputs
    rescaled (`add_scaled_input`), summed, requantized to the output, offset, clamped."""
    if np.shape(x1) != np.shape(x2):
        raise ValueError(f"ADD of shapes {np.shape(x1)} and {np.shape(x2)}: only equal shapes "
                         "(no broadcasting)")
    a = add_scaled_input(x1, p.input1_offset, p.input1_multiplier, p.input1_shift, p.left_shift)
    b = add_scaled_input(x2, p.input2_offset, p.input2_multiplier, p.input2_shift, p.left_shift)
    raw_sum = fx.wrap_int32(a + b)
    raw_out = multiply_by_quantized_multiplier_smaller_than_one_exp(
        raw_sum, p.output_multiplier, p.output_shift) + p.output_offset
    return np.clip(raw_out, p.act_min, p.act_max).astype(np.int8)

# ---------------------------------------------------------------------------- graph


def run_op(op: Op, x: np.ndarray, x2: np.ndarray | None = None) -> np.ndarray:
    """Run one op on its int8 activation input (any batch size); `x2` is ADD's second
    activation input (`tflite_graph.activation_inputs`), None for every other op."""
    i, y = op.inputs[0], op.outputs[0]
    out_shape = (x.shape[0],) + tuple(y.shape[1:])  # batch-aware: accuracy runs whole batches
    if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        w, b = op.inputs[1].data, op.inputs[2].data if len(op.inputs) > 2 and op.inputs[2] else None
        fn = conv2d_acc if op.kind == "CONV_2D" else depthwise_acc
        acc = fn(x, i.zp, w, b, op.options["stride"], op.options["padding"])
        return requant_for(op).apply(acc)
    if op.kind == "FULLY_CONNECTED":
        w, b = op.inputs[1].data, op.inputs[2].data if len(op.inputs) > 2 and op.inputs[2] else None
        acc = fully_connected_acc(x.reshape(-1, w.shape[1]), i.zp, w, b)
        return requant_for(op).apply(acc).reshape(out_shape)
    if op.kind == "PAD":
        return pad(x, op.inputs[1].data, y.zp)
    if op.kind == "MEAN":
        return mean_hw(x, i.zp, i.scale[0], y.zp, y.scale[0]).reshape(out_shape)
    if op.kind == "AVERAGE_POOL_2D":     # global only (`tflite_graph` refuses other windows)
        lo, hi = activation_range(op.options["activation"], y.scale[0], y.zp)
        return global_average_pool(x, lo, hi).reshape(out_shape)
    if op.kind == "SOFTMAX":
        return softmax(x, softmax_params(i.scale[0], op.options.get("beta", 1.0)))
    if op.kind in VIEW_OPS:
        return x.reshape(out_shape)
    if op.kind == "ADD":
        if x2 is None:
            raise ValueError(f"{op.describe()}: ADD needs its second input")
        return add(x, x2, add_params(op))
    raise UnsupportedModelError(f"{op.describe()}: no reference kernel")


def run_graph(graph: Graph, x: np.ndarray) -> dict[int, np.ndarray]:
    """Run the whole model on one int8 input; returns {tensor index: int8 array} for every
    activation tensor (the input included)."""
    if x.dtype != np.int8 or tuple(x.shape) != graph.input.shape:
        raise ValueError(f"input must be int8 of shape {graph.input.shape}, "
                         f"got {x.dtype} {tuple(x.shape)}")
    values = {graph.input.index: x}
    for op in graph.ops:
        values[op.outputs[0].index] = run_op(op, *(values[t.index] for t in activation_inputs(op)))
    return values
