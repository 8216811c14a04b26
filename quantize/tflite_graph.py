"""Read an int8 .tflite flatbuffer into a small, typed graph, and reject what the flow
cannot map with an error that names the layer.

Only the parts the accelerator needs are kept: tensors (shape, int8 data, per-tensor or
per-channel scale / zero point) and a topologically ordered list of ops with their options.

Nothing from the file is used before it is checked: indices, buffer sizes, shapes, names and
quantization parameters are validated explicitly, so a malformed model is refused with one
line naming the tensor or layer (`UnsupportedModelError`), never a traceback, and the numpy
reference and TFLite's reference kernels only ever see a model that is consistent.
"""
from __future__ import annotations

import importlib
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .average_pool import MAX_PIXELS as MAX_POOL_PIXELS, average_pool_multiplier

SUPPORTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "PAD", "MEAN", "AVERAGE_POOL_2D",
                 "FULLY_CONNECTED", "SOFTMAX", "RESHAPE", "SQUEEZE", "ADD")
# Ops that only reinterpret the shape of an int8 tensor (same bytes, same quantization).
VIEW_OPS = ("RESHAPE", "SQUEEZE")
_ACTIVATIONS = {0: "NONE", 1: "RELU", 3: "RELU6"}
# A tensor larger than this is a corrupt shape, not a network: alpha 4 at 512x512 input peaks
# at 8.4 M elements, and the numpy reference must not be asked to allocate terabytes.
MAX_TENSOR_ELEMENTS = 1 << 26
MAX_RANK = 6
# The flatbuffer builder pads to at most 16-byte alignment; more unread bytes than this at the
# end of a file are data that is not part of the model (e.g. something appended to it).
TRAILING_SLACK = 32


class UnsupportedModelError(ValueError):
    """The model holds something the accelerator flow cannot map; the message names it.
    `blockers` lists every problem found (the message joins them with '; ')."""

    def __init__(self, message: str, blockers: list[str] | None = None):
        super().__init__(message)
        self.blockers = blockers if blockers is not None else [message]


class UnmappableOpError(UnsupportedModelError):
    """A well-formed op the accelerator has no mapping for (an op kind, kernel, stride,
    ...). Its output is still a well-defined tensor, so the ops after it are checked too."""


def _schema():
    # Shipped inside the tensorflow wheel; not exposed through tf.lite's public namespace.
    return importlib.import_module("tensorflow.lite.python.schema_py_generated")


@dataclass
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: np.ndarray            # float32, one value (per-tensor) or one per channel
    zero_point: np.ndarray       # int64, same length as scale
    quantized_dimension: int = 0
    data: np.ndarray | None = None  # constant contents (weights, bias, shapes)
    dynamic_batch: bool = False     # shape_signature says -1 for dimension 0

    @property
    def per_channel(self) -> bool:
        return self.scale.size > 1

    @property
    def zp(self) -> int:
        return int(self.zero_point[0]) if self.zero_point.size else 0


@dataclass
class Op:
    index: int
    kind: str
    inputs: list[Tensor | None]
    outputs: list[Tensor]
    options: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.outputs[0].name

    def describe(self) -> str:
        # The converter names a fused op after every tensor folded into it, ';'-joined; the
        # first is the op's own output and enough to find the layer.
        return f"layer {self.index} '{self.name.split(';')[0]}' ({self.kind})"


@dataclass
class Graph:
    """`input` / `output` are the int8 tensors the accelerator reads and writes; for a
    float or uint8 model `input_edge` / `output_edge` say how the model's own I/O relates
    to them (`static_fold.IoEdge`). `folded` are the shape-computing ops evaluated at load
    time; `ops` keep their index in the model."""
    tensors: list[Tensor]
    ops: list[Op]
    input: Tensor
    output: Tensor
    input_edge: object = None
    output_edge: object = None
    folded: list[Op] = field(default_factory=list)

    def op(self, index: int) -> Op:
        """The op with model index `index` (folded ops leave gaps in `ops`)."""
        return next(op for op in self.ops if op.index == index)


_DTYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 7: "int16", 9: "int8"}
_NP = {"float32": np.float32, "float16": np.float16, "int32": np.int32, "uint8": np.uint8,
       "int64": np.int64, "int16": np.int16, "int8": np.int8}

# ---------------------------------------------------------------------------- the file


class _BoundsCheckedBytes(bytes):
    """The model file for the flatbuffer parser. Its numeric and vector reads fail past the
    end of the buffer, but strings are read by slicing, which would quietly cut a name short
    in a truncated file; this makes those slices fail too."""

    def __getitem__(self, key):
        if isinstance(key, slice) and key.stop is not None and key.stop > len(self):
            raise IndexError(f"slice up to byte {key.stop} of a {len(self)}-byte buffer")
        return super().__getitem__(key)


# What the flatbuffer parser raises when an offset or length points outside the file:
# struct.error (scalars), ValueError (numpy vectors), IndexError (strings, see above).
_READ_PAST_END = (struct.error, ValueError, IndexError)


def _read_model(s, buf: bytes):
    """The object-API model, or UnsupportedModelError when the flatbuffer does not parse."""
    try:
        return s.ModelT.InitFromObj(s.Model.GetRootAs(_BoundsCheckedBytes(buf), 0))
    except _READ_PAST_END as e:
        raise UnsupportedModelError(
            f"truncated or corrupt TFLite flatbuffer: it refers to data outside the "
            f"{len(buf)}-byte file") from e
    except Exception as e:  # noqa: BLE001 - last resort: the parser trusts its input
        raise UnsupportedModelError(
            f"corrupt TFLite flatbuffer ({type(e).__name__}: {_one_line(str(e))})") from e


def _parses(s, buf: bytes) -> bool:
    try:
        s.ModelT.InitFromObj(s.Model.GetRootAs(_BoundsCheckedBytes(buf), 0))
    except Exception:  # noqa: BLE001 - any failure means the prefix is not the whole model
        return False
    return True


def _check_no_trailing_data(s, buf: bytes) -> None:
    """Refuse bytes after the end of the model. A flatbuffer records no length, so the end is
    measured: a valid file read without its last TRAILING_SLACK bytes fails to parse (the
    converter's files are read up to their very last byte); one that still parses carries
    data the model never refers to."""
    if len(buf) <= TRAILING_SLACK or not _parses(s, buf[:len(buf) - TRAILING_SLACK]):
        return
    lo, hi = 8, len(buf) - TRAILING_SLACK   # the shortest prefix that parses lies in (lo, hi]
    while lo + 1 < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if _parses(s, buf[:mid]) else (mid, hi)
    raise UnsupportedModelError(f"{len(buf) - hi} bytes of trailing data after the end of the "
                                f"model's flatbuffer (at byte {hi} of {len(buf)})")


def _one_line(text: str, limit: int = 200) -> str:
    """A name or message from the file, safe to print on one line of an error."""
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[:limit] + "..."

# ---------------------------------------------------------------------------- tensors


def _buffer_bytes(index: int, b) -> bytes | None:
    """A buffer's contents (None when empty). Data stored after the flatbuffer (the offset /
    size form of models over 2 GB) is refused: nothing that large fits the accelerator."""
    if b is None:
        return None
    if b.offset > 1 or b.size:
        raise UnsupportedModelError(f"buffer {index} keeps its data outside the flatbuffer "
                                    "(offset/size form for models over 2 GB); not supported")
    return bytes(b.data) if b.data is not None and len(b.data) else None


def _tensor_name(index: int, raw) -> str:
    if raw is None:
        raise UnsupportedModelError(f"tensor {index} has no name")
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UnsupportedModelError(f"tensor {index}: name is not valid UTF-8 "
                                    f"(byte {e.start}: {raw[e.start:e.start + 1]!r})") from None
    if not name.isprintable():
        raise UnsupportedModelError(f"tensor {index} '{_one_line(name)}': name holds control "
                                    "characters")
    return name


def _tensor_shape(where: str, raw) -> tuple[int, ...]:
    shape = tuple(int(d) for d in raw) if raw is not None else ()
    if len(shape) > MAX_RANK:
        raise UnsupportedModelError(f"{where}: rank {len(shape)} is more than {MAX_RANK}")
    if any(d < 1 for d in shape):
        raise UnsupportedModelError(f"{where}: shape {shape} has a dimension < 1")
    if math.prod(shape) > MAX_TENSOR_ELEMENTS:
        raise UnsupportedModelError(f"{where}: shape {shape} has {math.prod(shape):,} elements, "
                                    f"more than the {MAX_TENSOR_ELEMENTS:,} the flow handles")
    return shape


def _tensor_data(where: str, t, shape, dtype: str, buffers: list) -> np.ndarray | None:
    if not 0 <= t.buffer < len(buffers):
        raise UnsupportedModelError(f"{where}: buffer index {t.buffer} out of range "
                                    f"(the model has {len(buffers)} buffers)")
    raw = buffers[t.buffer]
    if raw is None:
        return None
    if dtype not in _NP:
        raise UnsupportedModelError(f"{where}: constant of unsupported type {dtype}")
    need = math.prod(shape) * np.dtype(_NP[dtype]).itemsize
    if len(raw) != need:
        raise UnsupportedModelError(f"{where}: {dtype} {shape} needs {need} bytes, its buffer "
                                    f"{t.buffer} holds {len(raw)}")
    return np.frombuffer(raw, _NP[dtype]).reshape(shape)


def _quantization(where: str, q, shape, dtype: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(scale, zero point, quantized dimension), checked against each other and the shape."""
    if q is None:
        return np.zeros(0, np.float32), np.zeros(0, np.int64), 0
    scale = np.asarray(q.scale if q.scale is not None else [], np.float32)
    zp = np.asarray(q.zeroPoint if q.zeroPoint is not None else [], np.int64)
    axis = int(q.quantizedDimension)
    if zp.size not in (0, scale.size):
        raise UnsupportedModelError(f"{where}: {scale.size} scales but {zp.size} zero points")
    if scale.size > 1 and not (0 <= axis < len(shape) and shape[axis] == scale.size):
        raise UnsupportedModelError(f"{where}: {scale.size} per-channel scales do not match "
                                    f"dimension {axis} of shape {shape}")
    if dtype == "int8" and np.any((zp < -128) | (zp > 127)):
        raise UnsupportedModelError(f"{where}: zero point {int(zp[(zp < -128) | (zp > 127)][0])} "
                                    "is outside the int8 range")
    return scale, zp, axis


def _tensor(index: int, t, buffers: list) -> Tensor:
    name = _tensor_name(index, t.name)
    where = f"tensor {index} '{_one_line(name.split(';')[0])}'"
    if t.sparsity is not None:
        raise UnsupportedModelError(f"{where}: sparse tensors are not supported")
    if getattr(t, "externalBuffer", 0):
        raise UnsupportedModelError(f"{where}: data in an external buffer is not supported")
    dtype = _DTYPES.get(t.type, f"type {t.type}")
    shape = _tensor_shape(where, t.shape)
    data = _tensor_data(where, t, shape, dtype, buffers)
    scale, zp, axis = _quantization(where, t.quantization, shape, dtype)
    dynamic_batch = _dynamic_batch(where, shape, t.shapeSignature)
    return Tensor(index, name, shape, dtype, scale, zp, axis, data, dynamic_batch)


def _dynamic_batch(where: str, shape: tuple[int, ...], signature) -> bool:
    """Whether the shape signature leaves the batch open (-1). The stored shape then holds
    batch 1, which is what the accelerator runs; any other open dimension is refused. Only
    its open dimensions matter: the interpreter allocates by the shape."""
    if signature is None or len(signature) == 0:
        return False
    sig = tuple(int(d) for d in signature)
    if -1 in sig[1:]:
        raise UnsupportedModelError(f"{where}: shape signature {sig} leaves a dimension other "
                                    "than the batch open; only a dynamic batch is supported")
    return sig[:1] == (-1,)

# ---------------------------------------------------------------------------- ops


def _builtin_names(s) -> dict[int, str]:
    return {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}


def _op_kind(s, names: dict[int, str], code) -> str:
    op_id = max(code.builtinCode, code.deprecatedBuiltinCode)
    if op_id == s.BuiltinOperator.CUSTOM:
        custom = code.customCode.decode("utf-8", "replace") if code.customCode else "?"
        return f"CUSTOM {_one_line(custom, 60)}"
    return names.get(op_id, f"builtin {op_id}")


def _tensor_refs(where: str, role: str, indices, tensors: list[Tensor], optional: bool
                 ) -> list[Tensor | None]:
    """Tensors by index; -1 marks an omitted optional input."""
    refs = []
    for j in (indices if indices is not None else []):
        j = int(j)
        if optional and j == -1:
            refs.append(None)
        elif 0 <= j < len(tensors):
            refs.append(tensors[j])
        else:
            raise UnsupportedModelError(f"{where}: {role} tensor index {j} out of range "
                                        f"(the model has {len(tensors)} tensors)")
    return refs


def _op(index: int, o, tensors: list[Tensor], kinds: list[str], s) -> Op:
    outputs = _tensor_refs(f"layer {index}", "output", o.outputs, tensors, optional=False)
    if not outputs:
        raise UnsupportedModelError(f"layer {index}: has no output")
    where = f"layer {index} '{outputs[0].name.split(';')[0]}'"
    if not 0 <= o.opcodeIndex < len(kinds):
        raise UnsupportedModelError(f"{where}: operator code index {o.opcodeIndex} out of range "
                                    f"(the model has {len(kinds)} operator codes)")
    kind = kinds[o.opcodeIndex]
    where = f"{where} ({kind})"
    inputs = _tensor_refs(where, "input", o.inputs, tensors, optional=True)
    return Op(index, kind, inputs, outputs, _checked_options(s, where, kind, o.builtinOptions))


# Option tables the reader interprets; an op of these kinds carrying another table (or, for
# the first three, none: TFLite would run them on zeroed parameters) is refused.
_OPTION_TABLES = {"CONV_2D": "Conv2DOptions", "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions",
                  "SOFTMAX": "SoftmaxOptions", "FULLY_CONNECTED": "FullyConnectedOptions",
                  "MEAN": "ReducerOptions", "STRIDED_SLICE": "StridedSliceOptions",
                  "PACK": "PackOptions", "CONCATENATION": "ConcatenationOptions",
                  "AVERAGE_POOL_2D": "Pool2DOptions", "ADD": "AddOptions"}
_OPTIONS_REQUIRED = ("CONV_2D", "DEPTHWISE_CONV_2D", "SOFTMAX", "PACK", "CONCATENATION",
                     "AVERAGE_POOL_2D")
_SLICE_DEFAULTS = {"begin_mask": 0, "end_mask": 0, "ellipsis_mask": 0, "new_axis_mask": 0,
                   "shrink_axis_mask": 0, "offset": False}
# What TFLite runs an op without its (optional) table on: its zeroed parameters.
_OPTION_DEFAULTS = {"STRIDED_SLICE": _SLICE_DEFAULTS, "ADD": {"activation": "NONE"}}


def _checked_options(s, where: str, kind: str, opt) -> dict:
    table = _OPTION_TABLES.get(kind)
    if table is None:
        return {}
    if opt is None:
        if kind in _OPTIONS_REQUIRED:
            raise UnsupportedModelError(f"{where}: has no {table}")
        return dict(_OPTION_DEFAULTS.get(kind, {}))
    if not isinstance(opt, getattr(s, f"{table}T")):
        raise UnsupportedModelError(f"{where}: carries {type(opt).__name__.removesuffix('T')} "
                                    f"instead of {table}")
    return _options(kind, opt)


def _padding(code: int) -> str:
    return {0: "SAME", 1: "VALID"}.get(code, f"unknown({code})")


def _activation(code: int) -> str:
    return _ACTIVATIONS.get(code, f"code {code}")


def _options(kind: str, opt) -> dict:
    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        d = {"padding": _padding(opt.padding), "stride": (opt.strideH, opt.strideW),
             "dilation": (opt.dilationHFactor, opt.dilationWFactor),
             "activation": _activation(opt.fusedActivationFunction)}
        if kind == "DEPTHWISE_CONV_2D":
            d["depth_multiplier"] = opt.depthMultiplier
        return d
    if kind == "FULLY_CONNECTED":
        return {"activation": _activation(opt.fusedActivationFunction),
                "keep_num_dims": bool(opt.keepNumDims), "weights_format": int(opt.weightsFormat)}
    if kind == "MEAN":
        return {"keep_dims": bool(opt.keepDims)}
    if kind == "AVERAGE_POOL_2D":
        return {"padding": _padding(opt.padding), "stride": (opt.strideH, opt.strideW),
                "filter": (opt.filterHeight, opt.filterWidth),
                "activation": _activation(opt.fusedActivationFunction)}
    if kind == "SOFTMAX":
        return {"beta": float(opt.beta)}
    if kind == "STRIDED_SLICE":
        return {"begin_mask": opt.beginMask, "end_mask": opt.endMask,
                "ellipsis_mask": opt.ellipsisMask, "new_axis_mask": opt.newAxisMask,
                "shrink_axis_mask": opt.shrinkAxisMask, "offset": bool(opt.offset)}
    if kind == "PACK":
        return {"axis": int(opt.axis)}
    if kind == "CONCATENATION":
        return {"axis": int(opt.axis), "activation": _activation(opt.fusedActivationFunction)}
    if kind == "ADD":
        return {"activation": _activation(opt.fusedActivationFunction)}
    return {}

# ---------------------------------------------------------------------------- model


def _model_bytes(source: str | Path | bytes) -> tuple[bytes, str | None]:
    """(file contents, the file's name for messages; None for bytes)."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise UnsupportedModelError(f"{path}: no such model file")
        return path.read_bytes(), str(path)
    return bytes(source), None


def _io_tensor(role: str, indices, tensors: list[Tensor]) -> Tensor:
    refs = _tensor_refs(f"model {role}", role, indices, tensors, optional=False)
    if len(refs) != 1:
        raise UnsupportedModelError(f"expected one {role}, the model has {len(refs)}")
    return refs[0]


def _parse_graph(buf: bytes) -> Graph:
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise UnsupportedModelError("not a TFLite flatbuffer (missing 'TFL3' identifier)")
    s = _schema()
    model = _read_model(s, buf)
    _check_no_trailing_data(s, buf)
    if not model.subgraphs or len(model.subgraphs) != 1:
        raise UnsupportedModelError(f"expected exactly one subgraph, the model has "
                                    f"{len(model.subgraphs or [])}")
    sg = model.subgraphs[0]
    buffers = [_buffer_bytes(i, b) for i, b in enumerate(model.buffers or [])]
    tensors = [_tensor(i, t, buffers) for i, t in enumerate(sg.tensors or [])]
    names = _builtin_names(s)
    kinds = [_op_kind(s, names, c) for c in (model.operatorCodes or [])]
    ops = [_op(i, o, tensors, kinds, s) for i, o in enumerate(sg.operators or [])]
    graph = _folded_graph(tensors, ops, _io_tensor("input", sg.inputs, tensors),
                          _io_tensor("output", sg.outputs, tensors))
    validate(graph)
    return graph


def _folded_graph(tensors: list[Tensor], ops: list[Op], model_input: Tensor,
                  model_output: Tensor) -> Graph:
    """The graph the accelerator runs: I/O quantization edges removed, static shape
    arithmetic evaluated (`static_fold`)."""
    from . import static_fold as sf
    ops, x, input_edge = sf.strip_input_edge(ops, model_input)
    ops, y, output_edge = sf.strip_output_edge(ops, model_output)
    ops, folded = sf.fold_static_ops(ops)
    return Graph(tensors, ops, x, y, input_edge, output_edge, folded)


def load_graph(source: str | Path | bytes, name: str | None = None) -> Graph:
    """Parse a .tflite file (path or bytes). Raises UnsupportedModelError on anything
    unmappable or malformed; messages start with the file's path (or `name`) when known."""
    buf, path = _model_bytes(source)
    name = name or path
    try:
        return _parse_graph(buf)
    except UnsupportedModelError as e:
        if name is None:
            raise
        raise UnsupportedModelError(f"{name}: {e}") from e

# ---------------------------------------------------------------------------- what maps


# Inputs per kind: (fewest, most); input 0 is the activation (inputs 0 and 1 for the kinds in
# _ACTIVATION_INPUTS, see `activation_inputs`), the rest constants.
_ARITY = {"CONV_2D": (2, 3), "DEPTHWISE_CONV_2D": (2, 3), "FULLY_CONNECTED": (2, 3),
          "PAD": (2, 2), "MEAN": (2, 2), "AVERAGE_POOL_2D": (1, 1), "SOFTMAX": (1, 1),
          "RESHAPE": (1, 2), "SQUEEZE": (1, 1), "ADD": (2, 2)}
# Kinds that read more than one activation: how many (their first inputs).
_ACTIVATION_INPUTS = {"ADD": 2}
# Softmax output quantization TFLite's int8 kernel insists on (TF_LITE_ENSURE_NEAR).
SOFTMAX_OUTPUT_SCALE = 1.0 / 256


def activation_inputs(op: Op) -> list[Tensor]:
    """The int8 activations `op` reads, in input order: input 0, and for ADD input 1 too
    (the two branches of a residual connection). Its other inputs are constants."""
    return op.inputs[:_ACTIVATION_INPUTS.get(op.kind, 1)]


def validate(graph: Graph) -> None:
    """Raise UnsupportedModelError listing every op the flow cannot map (its `blockers`,
    one per op, joined with '; ' in the message)."""
    _validate_io(graph)
    blockers = _op_blockers(graph)
    if blockers:
        raise UnsupportedModelError("; ".join(blockers), blockers)
    if graph.output.index not in {op.outputs[0].index for op in graph.ops}:
        raise UnsupportedModelError(f"model output '{graph.output.name}' is not produced by "
                                    "any op")


def _validate_io(graph: Graph) -> None:
    for t in (graph.input, graph.output):
        if t.dtype != "int8":
            raise UnsupportedModelError(
                f"model {'input' if t is graph.input else 'output'} '{t.name}' is {t.dtype}; "
                "only full-int8 models (int8 input and output, or float32 / uint8 I/O "
                "quantized to int8 right at the input and back right at the output) are "
                "supported")
    if graph.input.data is not None:
        raise UnsupportedModelError(f"model input '{graph.input.name}' is a constant")
    if graph.input.shape[:1] != (1,):
        raise UnsupportedModelError(
            f"model input '{graph.input.name}' has batch {graph.input.shape[0]} "
            f"(shape {graph.input.shape}); the accelerator runs one input at a time: export "
            "with batch 1 or a dynamic batch")
    if not graph.ops:
        raise UnsupportedModelError("the model has no ops")


def _op_blockers(graph: Graph) -> list[str]:
    """One message per op that cannot be mapped. An op fed by a malformed one (bad shapes,
    wiring or quantization, not merely unmappable) is not checked itself: its problems would
    only echo the first one."""
    blockers, produced, malformed = [], {graph.input.index}, set()
    for op in graph.ops:
        out = op.outputs[0].index
        if any(t is not None and t.index in malformed for t in op.inputs):
            malformed.add(out)
        else:
            try:
                _validate_op(op, produced)
                _validate_conv_place(op, graph)
            except UnmappableOpError as e:
                blockers.append(str(e))
            except UnsupportedModelError as e:
                blockers.append(str(e))
                malformed.add(out)
        produced.add(out)
    return blockers


def needs_host_im2col(op: Op) -> bool:
    """A CONV_2D the MAC array (1x1, stride 1) cannot run directly: as the first layer the
    host turns it into one by making its input's patches (`firmware.compiler`)."""
    return (op.kind == "CONV_2D" and
            (tuple(op.inputs[1].shape[1:3]) != (1, 1) or tuple(op.options["stride"]) != (1, 1)))


def is_subsampling_conv(op: Op) -> bool:
    """A 1x1 CONV_2D at stride 2: output pixel (i, j) is input pixel (2i, 2j) under either
    padding. Inside the network the firmware runs it as a depthwise pass that picks those
    pixels (an identity 3x3 kernel at stride 2) and a 1x1 stride-1 convolution."""
    return (op.kind == "CONV_2D" and tuple(op.inputs[1].shape[1:3]) == (1, 1)
            and tuple(op.options["stride"]) == (2, 2))


def inner_conv_error(op: Op) -> UnmappableOpError:
    """The refusal of a `needs_host_im2col` convolution that is not on the model input."""
    (kh, kw), (sh, sw) = op.inputs[1].shape[1:3], op.options["stride"]
    return UnmappableOpError(
        f"{op.describe()}: convolution kernel {kh}x{kw} at stride {sh}x{sw} is only "
        "supported as the first layer (the host makes its input's patches); inside the "
        "network the MAC array runs 1x1 convolutions at stride 1 or 2")


def _validate_conv_place(op: Op, graph: Graph) -> None:
    """Any kernel or stride but 1x1 stride 1 only on the model input (directly or through a
    PAD, which folds into the patches); 1x1 at stride 2 anywhere (`is_subsampling_conv`)."""
    if not needs_host_im2col(op) or is_subsampling_conv(op):
        return
    source = op.inputs[0].index
    pads = [p for p in graph.ops if p.kind == "PAD" and p.outputs[0].index == source]
    if pads:
        source = pads[0].inputs[0].index
    if source != graph.input.index:
        raise inner_conv_error(op)


def _validate_op(op: Op, produced: set[int]) -> None:
    from .static_fold import STATIC_OPS
    if op.kind in STATIC_OPS:
        raise UnmappableOpError(f"{op.describe()}: computes from values only known at run "
                                "time, so it cannot be folded into a constant (folded "
                                f"when its inputs are constants or static shapes)")
    if op.kind not in SUPPORTED_OPS:
        # Its consumers are checked on only if it writes an int8 tensor they could read.
        error = UnmappableOpError if op.outputs[0].dtype == "int8" else UnsupportedModelError
        raise error(f"{op.describe()}: op {op.kind} is not supported "
                    f"(supported: {', '.join(SUPPORTED_OPS)})")
    _validate_wiring(op, produced)
    acts, out = activation_inputs(op), op.outputs[0]
    if out.dtype != "int8" or any(t.dtype != "int8" for t in acts):
        raise UnsupportedModelError(f"{op.describe()}: activations must be int8, "
                                    f"got {' + '.join(t.dtype for t in acts)} -> {out.dtype}")
    for t in acts:
        _validate_activation_quantization(op, t)
    _validate_activation_quantization(op, out)
    if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        _validate_weighted(op)
        _validate_conv_shapes(op)
    elif op.kind == "FULLY_CONNECTED":
        _validate_weighted(op)
        _validate_dense_shapes(op)
    elif op.kind == "MEAN":
        _validate_mean(op)
    elif op.kind == "AVERAGE_POOL_2D":
        _validate_average_pool(op)
    elif op.kind == "PAD":
        _validate_pad(op)
    elif op.kind == "SOFTMAX":
        _validate_softmax(op)
    elif op.kind in VIEW_OPS:
        _validate_reshape(op)
    elif op.kind == "ADD":
        _validate_add(op)


def _validate_wiring(op: Op, produced: set[int]) -> None:
    """Input count, the activations (`activation_inputs`) produced by earlier ops, the rest
    constant; one output, written once."""
    lo, hi = _ARITY[op.kind]
    if not lo <= len(op.inputs) <= hi:
        raise UnsupportedModelError(f"{op.describe()}: expected {lo}..{hi} inputs, "
                                    f"got {len(op.inputs)}")
    acts = activation_inputs(op)
    if len(acts) > 1:
        # A sum with a constant (a bias-like ADD) is a well-formed op the flow has no unit
        # for; its output is still a tensor the ops after it can be checked on.
        for k, t in enumerate(acts):
            if t is not None and t.data is not None:
                raise UnmappableOpError(f"{op.describe()}: input {k} '{t.name}' is a constant; "
                                        f"only {op.kind} of two activations computed by the "
                                        "network (a residual connection) is supported")
    for act in acts:
        if act is None or act.data is not None or act.index not in produced:
            raise UnsupportedModelError(f"{op.describe()}: input "
                                        f"'{act.name if act else '-'}' is neither the model "
                                        "input nor produced by an earlier op")
    for k, t in enumerate(op.inputs[len(acts):], len(acts)):
        if t is None and k < lo:
            raise UnsupportedModelError(f"{op.describe()}: input {k} is missing")
        if t is not None and t.data is None:
            raise UnsupportedModelError(f"{op.describe()}: input {k} '{t.name}' must be a "
                                        "constant")
    if len(op.outputs) != 1:
        raise UnsupportedModelError(f"{op.describe()}: expected one output")
    out = op.outputs[0]
    if out.data is not None or out.index in produced:
        raise UnsupportedModelError(f"{op.describe()}: output '{out.name}' is a constant or "
                                    "written by an earlier op")


def _validate_scales(what: str, scale: np.ndarray) -> None:
    bad = scale[~(np.isfinite(scale) & (scale > 0))]
    if bad.size:
        raise UnsupportedModelError(f"{what}: scale {float(bad[0]):g} is not a finite number "
                                    "> 0")


def _validate_activation_quantization(op: Op, t: Tensor) -> None:
    what = f"{op.describe()}: activation '{t.name.split(';')[0]}'"
    if t.scale.size != 1 or t.zero_point.size != 1:
        raise UnsupportedModelError(f"{what} needs one scale and one zero point, has "
                                    f"{t.scale.size} and {t.zero_point.size}")
    _validate_scales(what, t.scale)


def _validate_weighted(op: Op) -> None:
    w, b = op.inputs[1], op.inputs[2] if len(op.inputs) > 2 else None
    if w.data is None or w.dtype != "int8":
        raise UnsupportedModelError(f"{op.describe()}: weights must be constant int8, got {w.dtype}")
    _validate_weight_quantization(op, w)
    if b is not None and (b.data is None or b.dtype != "int32"):
        raise UnsupportedModelError(f"{op.describe()}: bias must be constant int32")
    act = op.options.get("activation", "NONE")
    if act not in ("NONE", "RELU", "RELU6"):
        raise UnmappableOpError(f"{op.describe()}: fused activation {act} is not supported")
    if op.kind == "FULLY_CONNECTED":
        if op.options.get("weights_format", 0) != 0:
            raise UnmappableOpError(f"{op.describe()}: shuffled weights format is not "
                                    "supported")
        return
    if op.options["padding"] not in ("SAME", "VALID"):
        raise UnsupportedModelError(f"{op.describe()}: padding {op.options['padding']} is not "
                                    "supported")
    if op.options.get("dilation", (1, 1)) != (1, 1):
        raise UnmappableOpError(f"{op.describe()}: dilated convolution is not supported")
    if len(w.shape) != 4 or len(op.inputs[0].shape) != 4:
        raise UnsupportedModelError(f"{op.describe()}: input and weights must be 4-D, got "
                                    f"{op.inputs[0].shape} and {w.shape}")
    kh, kw = w.shape[1:3]
    sh, sw = op.options["stride"]
    if sh < 1 or sw < 1:
        raise UnsupportedModelError(f"{op.describe()}: stride {sh}x{sw} is not supported")
    if op.kind == "DEPTHWISE_CONV_2D":
        if (kh, kw) != (3, 3):
            raise UnmappableOpError(f"{op.describe()}: depthwise kernel {kh}x{kw} is not "
                                    "supported (the depthwise engine is 3x3)")
        if w.shape[0] != 1 or w.shape[3] != op.inputs[0].shape[-1]:
            raise UnmappableOpError(f"{op.describe()}: depth multiplier != 1 is not supported")
        if (sh, sw) not in ((1, 1), (2, 2)):
            raise UnmappableOpError(f"{op.describe()}: stride {sh}x{sw} is not supported "
                                    "(depthwise: 1 or 2)")
    # CONV_2D: any kernel and stride is consistent; the compiler maps a first convolution
    # through host im2col and refuses one inside the network that is not 1x1 stride 1.


def _output_channel_axis(op: Op) -> int:
    return 3 if op.kind == "DEPTHWISE_CONV_2D" else 0


def _validate_weight_quantization(op: Op, w: Tensor) -> None:
    what = f"{op.describe()}: weights '{w.name.split(';')[0]}'"
    if w.scale.size == 0:
        raise UnsupportedModelError(f"{what} have no quantization parameters")
    if w.zero_point.size != w.scale.size:
        raise UnsupportedModelError(f"{what} have {w.scale.size} scales but "
                                    f"{w.zero_point.size} zero points")
    if np.any(w.zero_point != 0):
        raise UnmappableOpError(f"{op.describe()}: weights must be symmetric (zero point 0)")
    axis = _output_channel_axis(op)
    if w.per_channel and w.quantized_dimension != axis:
        raise UnsupportedModelError(f"{what} are quantized along dimension "
                                    f"{w.quantized_dimension}, not the output channels ({axis})")
    _validate_scales(what, w.scale)


def _conv_output_hw(size: int, kernel: int, stride: int, padding: str) -> int:
    """TFLite's output size for SAME / VALID padding (0 when the kernel does not fit)."""
    if padding == "SAME":
        return (size + stride - 1) // stride
    return max((size - kernel) // stride + 1, 0)


def _validate_conv_shapes(op: Op) -> None:
    x, w, y = op.inputs[0], op.inputs[1], op.outputs[0]
    n, h, wd, c = x.shape
    if op.kind == "CONV_2D" and w.shape[3] != c:
        raise UnsupportedModelError(f"{op.describe()}: weights {w.shape} do not match the "
                                    f"input's {c} channels")
    cout = w.shape[3] if op.kind == "DEPTHWISE_CONV_2D" else w.shape[0]
    (sh, sw), pad = op.options["stride"], op.options["padding"]
    expect = (n, _conv_output_hw(h, w.shape[1], sh, pad), _conv_output_hw(wd, w.shape[2], sw, pad),
              cout)
    if y.shape != expect:
        raise UnsupportedModelError(f"{op.describe()}: output shape {y.shape} does not follow "
                                    f"from input {x.shape} and weights {w.shape} ({expect})")
    _validate_bias_shape(op, cout)


def _validate_bias_shape(op: Op, channels: int) -> None:
    b = op.inputs[2] if len(op.inputs) > 2 else None
    if b is not None and b.shape != (channels,):
        raise UnsupportedModelError(f"{op.describe()}: bias shape {b.shape} does not match "
                                    f"{channels} output channels")


def _validate_dense_shapes(op: Op) -> None:
    x, w, y = op.inputs[0], op.inputs[1], op.outputs[0]
    if len(w.shape) != 2:
        raise UnsupportedModelError(f"{op.describe()}: weights must be 2-D, got {w.shape}")
    cout, cin = w.shape
    size = math.prod(x.shape)
    rows = size // cin
    if size % cin or y.shape[-1:] != (cout,) or math.prod(y.shape) != rows * cout \
            or y.shape[:1] != x.shape[:1]:
        raise UnsupportedModelError(f"{op.describe()}: input {x.shape}, weights {w.shape} and "
                                    f"output {y.shape} do not fit together")
    _validate_bias_shape(op, cout)


def _validate_mean(op: Op) -> None:
    x, axes, y = op.inputs[0], op.inputs[1], op.outputs[0]
    axis_list = sorted(int(a) for a in np.ravel(axes.data))
    if axes.dtype not in ("int32", "int64") or axis_list != [1, 2]:
        raise UnmappableOpError(f"{op.describe()}: only a global average over "
                                "height and width (axes 1, 2) is supported")
    if len(x.shape) != 4:
        raise UnsupportedModelError(f"{op.describe()}: input must be NHWC, got shape {x.shape}")
    n, c = x.shape[0], x.shape[3]
    if y.shape[:1] != (n,) or y.shape[-1:] != (c,) or math.prod(y.shape) != n * c:
        raise UnsupportedModelError(f"{op.describe()}: output shape {y.shape} is not the mean "
                                    f"of {x.shape} over height and width")


def _validate_average_pool(op: Op) -> None:
    """AVERAGE_POOL_2D as the MEAN unit runs it (`average_pool`): one window over the whole
    map, a fused activation that clamps nothing, and a verified (multiplier, shift) for the
    map's pixel count."""
    _validate_pool_shapes(op)
    _validate_pool_quantization(op)
    x, y = op.inputs[0], op.outputs[0]
    (fh, fw), (h, w) = op.options["filter"], x.shape[1:3]
    if (fh, fw) != (h, w):
        raise UnmappableOpError(
            f"{op.describe()}: only a global average pool is supported (a window over the "
            f"whole map); this {fh}x{fw} window over a {h}x{w} map gives {y.shape[1]}x"
            f"{y.shape[2]} outputs")
    _validate_pool_activation(op)
    if h * w > MAX_POOL_PIXELS:
        raise UnmappableOpError(f"{op.describe()}: an average over {h}x{w} = {h * w:,} pixels "
                                f"is more than the {MAX_POOL_PIXELS:,} whose rounding the flow "
                                "verifies")
    if average_pool_multiplier(h * w) is None:
        raise UnmappableOpError(
            f"{op.describe()}: no multiplier and shift make the MEAN unit round a sum over "
            f"{h}x{w} = {h * w} pixels as TFLite's average pool does")


def _validate_pool_shapes(op: Op) -> None:
    """What TFLite's Prepare insists on (4-D, positive strides and window), and the output
    shape that follows from them. A window equal to the map then leaves a 1x1 output and
    pads nothing, under SAME as under VALID."""
    x, y = op.inputs[0], op.outputs[0]
    if len(x.shape) != 4 or len(y.shape) != 4:
        raise UnsupportedModelError(f"{op.describe()}: input and output must be NHWC, got "
                                    f"{x.shape} and {y.shape}")
    (sh, sw), (fh, fw), pad = op.options["stride"], op.options["filter"], op.options["padding"]
    if min(sh, sw, fh, fw) < 1:
        raise UnsupportedModelError(f"{op.describe()}: stride {sh}x{sw} and window {fh}x{fw} "
                                    "must be positive")
    if pad not in ("SAME", "VALID"):
        raise UnsupportedModelError(f"{op.describe()}: padding {pad} is not supported")
    n, h, w, c = x.shape
    expect = (n, _conv_output_hw(h, fh, sh, pad), _conv_output_hw(w, fw, sw, pad), c)
    if y.shape != expect:
        raise UnsupportedModelError(f"{op.describe()}: output shape {y.shape} does not follow "
                                    f"from input {x.shape} and a {fh}x{fw} window ({expect})")


def _validate_pool_quantization(op: Op) -> None:
    """TFLite's int8 average pool averages the raw values and never rescales: its Prepare
    (debug builds only) wants one scale, within 1e-6, and one zero point in and out, as the
    converter writes. Other values would mean something TFLite does not compute."""
    x, y = op.inputs[0], op.outputs[0]
    if abs(float(x.scale[0]) - float(y.scale[0])) > 1e-6 or x.zp != y.zp:
        raise UnsupportedModelError(f"{op.describe()}: output quantization (scale "
                                    f"{float(y.scale[0]):g}, zero point {y.zp}) differs from the "
                                    f"input's ({float(x.scale[0]):g}, {x.zp}); TFLite's int8 "
                                    "average pool cannot requantize")


def _validate_pool_activation(op: Op) -> None:
    """The MEAN unit clamps to [-128, 127] only: the fused activation must clamp nothing
    more once quantized (e.g. RELU on an output whose zero point is -128)."""
    from .reference import activation_range
    act, y = op.options["activation"], op.outputs[0]
    if act not in ("NONE", "RELU", "RELU6"):
        raise UnmappableOpError(f"{op.describe()}: fused activation {act} is not supported")
    lo, hi = activation_range(act, y.scale[0], y.zp)
    if (lo, hi) != (-128, 127):
        raise UnmappableOpError(f"{op.describe()}: its fused {act} clamps the average to "
                                f"[{lo}, {hi}]; the MEAN unit that runs it clamps to "
                                "[-128, 127] only")


def _validate_pad(op: Op) -> None:
    x, pads, y = op.inputs[0], op.inputs[1], op.outputs[0]
    if pads.dtype not in ("int32", "int64") or pads.shape != (len(x.shape), 2) or len(x.shape) != 4:
        raise UnsupportedModelError(f"{op.describe()}: paddings must be a (4, 2) integer "
                                    f"constant for an NHWC input, got {pads.dtype} {pads.shape}")
    p = pads.data.astype(np.int64)
    if np.any(p[0] != 0) or np.any(p[3] != 0):
        raise UnmappableOpError(f"{op.describe()}: only spatial padding is supported")
    if np.any(p < 0):
        raise UnsupportedModelError(f"{op.describe()}: negative padding {p.tolist()}")
    expect = tuple(int(d + a + b) for d, (a, b) in zip(x.shape, p))
    if y.shape != expect:
        raise UnsupportedModelError(f"{op.describe()}: output shape {y.shape} does not follow "
                                    f"from input {x.shape} and paddings ({expect})")


def softmax_input_multiplier(beta: float, input_scale: float) -> float:
    """beta * input scale in TFLite's fixed point (PreprocessSoftmaxScaling, 5 integer bits),
    in the double precision TFLite computes it in."""
    return float(np.float32(beta)) * float(np.float32(input_scale)) * (1 << 26)


def _validate_softmax(op: Op) -> None:
    x, y = op.inputs[0], op.outputs[0]
    if y.shape != x.shape:
        raise UnsupportedModelError(f"{op.describe()}: output shape {y.shape} differs from "
                                    f"input shape {x.shape}")
    if y.zp != -128:
        raise UnsupportedModelError(f"{op.describe()}: int8 softmax output must have zero "
                                    f"point -128, got {y.zp}")
    if abs(float(y.scale[0]) - SOFTMAX_OUTPUT_SCALE) > 0.001 * SOFTMAX_OUTPUT_SCALE:
        raise UnsupportedModelError(f"{op.describe()}: int8 softmax output must have scale "
                                    f"1/256, got {float(y.scale[0]):g}")
    beta = op.options["beta"]
    if not (math.isfinite(beta) and beta > 0):
        raise UnsupportedModelError(f"{op.describe()}: beta {beta} must be finite and > 0")
    # TFLite's QuantizeMultiplierGreaterThanOne CHECK-fails (abort()s the whole process) on a
    # multiplier <= 1: refuse such a model here rather than let the golden check crash.
    if softmax_input_multiplier(beta, x.scale[0]) <= 1.0:
        raise UnmappableOpError(
            f"{op.describe()}: input scale {float(x.scale[0]):g} x beta {beta:g} must be above "
            "2^-26 for TFLite's fixed-point softmax (the logits collapsed to one value)")


def _validate_add(op: Op) -> None:
    """ADD of two int8 activations of one shape (a residual connection), as TFLite's
    reference_integer_ops::Add computes it: each input rescaled to a common fixed point, the
    sum requantized, clamped by the fused activation. Broadcasting is not mapped."""
    from .reference import (ADD_LEFT_SHIFT, add_real_multipliers,
                            quantize_multiplier_smaller_than_one as below_one)
    a, b, y = op.inputs[0], op.inputs[1], op.outputs[0]
    if a.shape != b.shape:
        try:
            shape = tuple(np.broadcast_shapes(a.shape, b.shape))
        except ValueError:
            raise UnsupportedModelError(f"{op.describe()}: input shapes {a.shape} and {b.shape} "
                                        "do not broadcast") from None
        if y.shape != shape:
            raise UnsupportedModelError(f"{op.describe()}: output shape {y.shape} does not "
                                        f"follow from input shapes {a.shape} and {b.shape} "
                                        f"({shape})")
        raise UnmappableOpError(f"{op.describe()}: broadcasting ADD of shapes {a.shape} and "
                                f"{b.shape} is not supported (only an elementwise sum of two "
                                "tensors of one shape)")
    if y.shape != a.shape:
        raise UnsupportedModelError(f"{op.describe()}: output shape {y.shape} differs from "
                                    f"input shape {a.shape}")
    act = op.options.get("activation", "NONE")
    if act not in ("NONE", "RELU", "RELU6"):
        raise UnmappableOpError(f"{op.describe()}: fused activation {act} is not supported")
    # TFLite's QuantizeMultiplierSmallerThanOneExp CHECK-fails (abort()s the process) on a
    # multiplier outside (0, 1): refuse such a model here rather than let the golden check
    # crash.
    r1, r2, r_out = add_real_multipliers(a.scale[0], b.scale[0], y.scale[0])
    if below_one(r_out) is None:
        raise UnmappableOpError(
            f"{op.describe()}: output scale {float(y.scale[0]):g} must be above 2^-"
            f"{ADD_LEFT_SHIFT - 1} x the larger input scale "
            f"{max(float(a.scale[0]), float(b.scale[0])):g} for TFLite's fixed-point ADD")
    if below_one(r1) is None or below_one(r2) is None:
        raise UnmappableOpError(
            f"{op.describe()}: input scales {float(a.scale[0]):g} and {float(b.scale[0]):g} "
            "are out of the range TFLite's fixed-point ADD handles")


def _validate_reshape(op: Op) -> None:
    """RESHAPE / SQUEEZE: the same bytes under another shape, so the same quantization."""
    x, y = op.inputs[0], op.outputs[0]
    if math.prod(y.shape) != math.prod(x.shape) or y.shape[:1] != x.shape[:1]:
        raise UnsupportedModelError(f"{op.describe()}: cannot reshape {x.shape} to {y.shape} "
                                    "(same batch and element count needed)")
    if float(x.scale[0]) != float(y.scale[0]) or x.zp != y.zp:
        raise UnsupportedModelError(f"{op.describe()}: output quantization (scale "
                                    f"{float(y.scale[0]):g}, zero point {y.zp}) differs from the "
                                    f"input's ({float(x.scale[0]):g}, {x.zp}); a reshape cannot "
                                    "requantize")
