"""Fold away what exporters put around the layers the accelerator runs.

Keras' `Reshape` on a dynamic batch converts to SHAPE -> STRIDED_SLICE -> PACK -> RESHAPE:
the target shape is computed at run time from the activation's shape, but every input of
that computation is static (the accelerator runs one image, batch 1). Such ops are evaluated
here, once, and their outputs become constants, so the RESHAPE reads a constant target like
the one a fixed-batch export has. A float or uint8 model wraps its int8 network in a
QUANTIZE at the input and a DEQUANTIZE (or QUANTIZE to uint8) at the output; those edges are
removed and recorded (`IoEdge`) so callers know how to quantize the model's inputs.

After folding the graph must consist of the layer kinds the accelerator maps; anything left
over is refused by `tflite_graph.validate`, naming the op.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .tflite_graph import Op, Tensor, UnsupportedModelError

# Ops that compute shapes or small integer constants and fold when their inputs are static.
STATIC_OPS = ("SHAPE", "STRIDED_SLICE", "PACK", "CONCATENATION")
_INDEX_DTYPES = ("int32", "int64")


@dataclass(frozen=True)
class IoEdge:
    """How the model's own input (or output) relates to the int8 tensor the accelerator
    reads (or writes): `dtype` is the model's, scale / zero point those of the int8 tensor
    (for uint8 I/O: uint8 value = int8 value + 128, same scale)."""
    dtype: str
    tensor: int          # the model's own input / output tensor
    op_index: int        # the QUANTIZE / DEQUANTIZE op that was removed
    scale: float
    zero_point: int

# ---------------------------------------------------------------------------- constants


def fold_static_ops(ops: list[Op]) -> tuple[list[Op], list[Op]]:
    """(ops left, ops folded): every STATIC_OPS op whose inputs are static is evaluated and
    its output tensor turned into a constant, in graph order, so chains fold."""
    kept, folded = [], []
    for op in ops:
        if op.kind in STATIC_OPS and _inputs_static(op):
            _set_constant(op, _evaluate(op))
            folded.append(op)
        else:
            kept.append(op)
    return kept, folded


def _inputs_static(op: Op) -> bool:
    if op.kind == "SHAPE":      # only the shape of its input is read, never its values
        return len(op.inputs) == 1 and op.inputs[0] is not None
    return bool(op.inputs) and all(t is not None and t.data is not None for t in op.inputs)


def _evaluate(op: Op) -> np.ndarray:
    if op.kind == "SHAPE":
        return np.array(op.inputs[0].shape, np.int64)
    values = [_index_values(op, t) for t in op.inputs]
    if op.kind == "STRIDED_SLICE":
        return _strided_slice(op, *values)
    if op.kind == "PACK":
        return _pack(op, values)
    return _concatenate(op, values)


def _index_values(op: Op, t: Tensor) -> np.ndarray:
    if t.dtype not in _INDEX_DTYPES:
        raise UnsupportedModelError(f"{op.describe()}: input '{t.name}' is {t.dtype}; only "
                                    "int32/int64 shape arithmetic is folded")
    return t.data.astype(np.int64)


def _set_constant(op: Op, value: np.ndarray) -> None:
    out = op.outputs[0]
    if len(op.outputs) != 1 or out.dtype not in _INDEX_DTYPES:
        raise UnsupportedModelError(f"{op.describe()}: expected one int32/int64 output")
    if value.shape != out.shape:
        raise UnsupportedModelError(f"{op.describe()}: computes shape {value.shape}, its output "
                                    f"'{out.name}' is declared {out.shape}")
    out.data = value.astype(np.int32 if out.dtype == "int32" else np.int64)


def _strided_slice(op: Op, x, begin, end, strides) -> np.ndarray:
    o = op.options
    if o["ellipsis_mask"] or o["new_axis_mask"]:
        raise UnsupportedModelError(f"{op.describe()}: ellipsis / new-axis masks are not folded")
    if not begin.shape == end.shape == strides.shape == (x.ndim,) or np.any(strides == 0):
        raise UnsupportedModelError(f"{op.describe()}: begin/end/strides {begin.tolist()}, "
                                    f"{end.tolist()}, {strides.tolist()} do not slice a "
                                    f"rank-{x.ndim} input")
    index = []
    for axis in range(x.ndim):
        b, e, s = int(begin[axis]), int(end[axis]), int(strides[axis])
        if o["shrink_axis_mask"] >> axis & 1:
            index.append(_shrunk_index(op, b, x.shape[axis]))
            continue
        if o["offset"]:
            e += b
        index.append(slice(None if o["begin_mask"] >> axis & 1 else b,
                           None if o["end_mask"] >> axis & 1 else e, s))
    return np.asarray(x[tuple(index)])


def _shrunk_index(op: Op, b: int, size: int) -> int:
    i = b + size if b < 0 else b
    if not 0 <= i < size:
        raise UnsupportedModelError(f"{op.describe()}: index {b} is outside a dimension of "
                                    f"{size}")
    return i


def _pack(op: Op, values: list[np.ndarray]) -> np.ndarray:
    axis = op.options["axis"]
    if len({v.shape for v in values}) != 1 or not -values[0].ndim - 1 <= axis <= values[0].ndim:
        raise UnsupportedModelError(f"{op.describe()}: cannot stack shapes "
                                    f"{[v.shape for v in values]} along axis {axis}")
    return np.stack(values, axis)


def _concatenate(op: Op, values: list[np.ndarray]) -> np.ndarray:
    axis = op.options["axis"]
    if op.options["activation"] != "NONE":
        raise UnsupportedModelError(f"{op.describe()}: fused activation on a folded constant")
    try:
        return np.concatenate(values, axis)
    except ValueError as e:      # numpy's AxisError is one too
        raise UnsupportedModelError(f"{op.describe()}: cannot concatenate shapes "
                                    f"{[v.shape for v in values]} along axis {axis}") from e

# ---------------------------------------------------------------------------- I/O edges


def strip_input_edge(ops: list[Op], model_input: Tensor) -> tuple[list[Op], Tensor, IoEdge | None]:
    """A float32 / uint8 input quantized to int8 by its only consumer: the accelerator reads
    that int8 tensor, the QUANTIZE is removed. (ops, int8 input, edge or None)."""
    if model_input.dtype not in ("float32", "uint8"):
        return ops, model_input, None
    users = [op for op in ops if any(t is model_input for t in op.inputs)]
    if len(users) != 1 or users[0].kind != "QUANTIZE" or users[0].outputs[0].dtype != "int8":
        return ops, model_input, None      # validate() refuses the non-int8 input
    q = users[0]
    inner = q.outputs[0]
    _check_uint8_shift(q, model_input, inner)
    edge = IoEdge(model_input.dtype, model_input.index, q.index, *_scale_zp(q, inner))
    return [op for op in ops if op is not q], inner, edge


def strip_output_edge(ops: list[Op], model_output: Tensor) -> tuple[list[Op], Tensor, IoEdge | None]:
    """The int8 result dequantized to float32 (DEQUANTIZE) or shifted to uint8 (QUANTIZE)
    by the model's last op: the accelerator's output is the int8 tensor, the op is removed."""
    if model_output.dtype not in ("float32", "uint8"):
        return ops, model_output, None
    last = next((op for op in ops if op.outputs and op.outputs[0] is model_output), None)
    kind = "DEQUANTIZE" if model_output.dtype == "float32" else "QUANTIZE"
    if last is None or last.kind != kind or not last.inputs or last.inputs[0] is None \
            or last.inputs[0].dtype != "int8":
        return ops, model_output, None
    inner = last.inputs[0]
    if any(t is inner for op in ops if op is not last for t in op.inputs):
        return ops, model_output, None     # the int8 result also feeds another op
    _check_uint8_shift(last, model_output, inner)
    edge = IoEdge(model_output.dtype, model_output.index, last.index, *_scale_zp(last, inner))
    return [op for op in ops if op is not last], inner, edge


def _scale_zp(op: Op, inner: Tensor) -> tuple[float, int]:
    if inner.scale.size != 1 or inner.zero_point.size != 1:
        raise UnsupportedModelError(f"{op.describe()}: the int8 side '{inner.name}' needs one "
                                    "scale and one zero point")
    return float(inner.scale[0]), inner.zp


def _check_uint8_shift(op: Op, outer: Tensor, inner: Tensor) -> None:
    """uint8 <-> int8 edges are exact only as a shift by 128 at the same scale; any other
    requantization at the edge would need its own layer."""
    if outer.dtype != "uint8":
        return
    same_scale = outer.scale.size == inner.scale.size == 1 and outer.scale[0] == inner.scale[0]
    if not same_scale or outer.zp - inner.zp != 128:
        raise UnsupportedModelError(
            f"{op.describe()}: uint8 '{outer.name}' (scale {_first(outer.scale)}, zero point "
            f"{outer.zp}) and int8 '{inner.name}' (scale {_first(inner.scale)}, zero point "
            f"{inner.zp}) differ by more than the shift of 128; only that is supported")


def _first(scale: np.ndarray) -> str:
    return f"{float(scale[0]):g}" if scale.size else "none"
