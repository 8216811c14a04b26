"""Read an int8 .tflite flatbuffer into a small, typed graph, and reject what the flow
cannot map with an error that names the layer.

Only the parts the accelerator needs are kept: tensors (shape, int8 data, per-tensor or
per-channel scale / zero point) and a topologically ordered list of ops with their options.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SUPPORTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "PAD", "MEAN", "FULLY_CONNECTED", "SOFTMAX",
                 "RESHAPE")
_ACTIVATIONS = {0: "NONE", 1: "RELU", 3: "RELU6"}


class UnsupportedModelError(ValueError):
    """The model holds something the accelerator flow cannot map; the message names it."""


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
    tensors: list[Tensor]
    ops: list[Op]
    input: Tensor
    output: Tensor


_DTYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 7: "int16", 9: "int8"}
_NP = {"float32": np.float32, "float16": np.float16, "int32": np.int32, "uint8": np.uint8,
       "int64": np.int64, "int16": np.int16, "int8": np.int8}


def _builtin_names(s) -> dict[int, str]:
    return {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}


def _padding(code: int) -> str:
    return {0: "SAME", 1: "VALID"}.get(code, f"unknown({code})")


def _options(kind: str, opt) -> dict:
    if opt is None:
        return {}
    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        d = {"padding": _padding(opt.padding), "stride": (opt.strideH, opt.strideW),
             "dilation": (opt.dilationHFactor, opt.dilationWFactor),
             "activation": _ACTIVATIONS.get(opt.fusedActivationFunction,
                                            f"code {opt.fusedActivationFunction}")}
        if kind == "DEPTHWISE_CONV_2D":
            d["depth_multiplier"] = opt.depthMultiplier
        return d
    if kind == "FULLY_CONNECTED":
        return {"activation": _ACTIVATIONS.get(opt.fusedActivationFunction,
                                               f"code {opt.fusedActivationFunction}"),
                "keep_num_dims": bool(opt.keepNumDims)}
    if kind == "MEAN":
        return {"keep_dims": bool(opt.keepDims)}
    if kind == "SOFTMAX":
        return {"beta": float(opt.beta)}
    return {}


def load_graph(source: str | Path | bytes) -> Graph:
    """Parse a .tflite file (path or bytes). Raises UnsupportedModelError on anything unmappable."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise UnsupportedModelError(f"{path}: no such model file")
        buf = path.read_bytes()
    else:
        buf = bytes(source)
    s = _schema()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise UnsupportedModelError("not a TFLite flatbuffer (missing 'TFL3' identifier)")
    try:
        model = s.ModelT.InitFromObj(s.Model.GetRootAs(buf, 0))
    except Exception as e:  # noqa: BLE001 - flatbuffers raises assorted errors on corrupt input
        raise UnsupportedModelError(f"corrupt TFLite flatbuffer ({type(e).__name__}: {e})") from e
    if not model.subgraphs or len(model.subgraphs) != 1:
        raise UnsupportedModelError("expected exactly one subgraph")
    sg = model.subgraphs[0]
    names = _builtin_names(s)

    tensors = []
    for i, t in enumerate(sg.tensors):
        dtype = _DTYPES.get(t.type, f"type{t.type}")
        q = t.quantization
        scale = np.asarray(q.scale if q is not None and q.scale is not None else [], np.float32)
        zp = np.asarray(q.zeroPoint if q is not None and q.zeroPoint is not None else [], np.int64)
        data = None
        buffer = model.buffers[t.buffer] if t.buffer < len(model.buffers) else None
        if buffer is not None and buffer.data is not None and len(buffer.data):
            if dtype not in _NP:
                raise UnsupportedModelError(f"tensor '{t.name.decode()}' has unsupported type {dtype}")
            data = np.frombuffer(bytes(buffer.data), _NP[dtype]).reshape(tuple(t.shape))
        tensors.append(Tensor(i, t.name.decode(), tuple(int(d) for d in t.shape), dtype, scale,
                              zp, int(q.quantizedDimension) if q is not None else 0, data))

    ops = []
    for i, o in enumerate(sg.operators):
        code = model.operatorCodes[o.opcodeIndex]
        op_id = max(code.builtinCode, code.deprecatedBuiltinCode)
        kind = names.get(op_id, f"builtin {op_id}")
        if op_id == s.BuiltinOperator.CUSTOM:
            kind = f"CUSTOM {code.customCode.decode() if code.customCode else '?'}"
        op = Op(i, kind, [tensors[j] if j >= 0 else None for j in o.inputs],
                [tensors[j] for j in o.outputs], _options(kind, o.builtinOptions))
        ops.append(op)
    if len(sg.inputs) != 1 or len(sg.outputs) != 1:
        raise UnsupportedModelError(f"expected one input and one output, got "
                                    f"{len(sg.inputs)} and {len(sg.outputs)}")
    graph = Graph(tensors, ops, tensors[sg.inputs[0]], tensors[sg.outputs[0]])
    validate(graph)
    return graph


def validate(graph: Graph) -> None:
    """Raise UnsupportedModelError naming the first op the flow cannot map."""
    for t in (graph.input, graph.output):
        if t.dtype != "int8":
            raise UnsupportedModelError(
                f"model {'input' if t is graph.input else 'output'} '{t.name}' is {t.dtype}; "
                "only full-int8 models (int8 input and output) are supported")
    produced = {graph.input.index}
    for op in graph.ops:
        if op.kind not in SUPPORTED_OPS:
            raise UnsupportedModelError(f"{op.describe()}: op {op.kind} is not supported "
                                        f"(supported: {', '.join(SUPPORTED_OPS)})")
        for t in op.inputs:
            if t is not None and t.data is None and t.index not in produced:
                raise UnsupportedModelError(f"{op.describe()}: input '{t.name}' is neither "
                                            "constant nor produced by an earlier op")
        if len(op.outputs) != 1:
            raise UnsupportedModelError(f"{op.describe()}: expected one output")
        out = op.outputs[0]
        act = op.inputs[0]
        if out.dtype != "int8" or act.dtype != "int8":
            raise UnsupportedModelError(f"{op.describe()}: activations must be int8, "
                                        f"got {act.dtype} -> {out.dtype}")
        if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            _validate_weighted(op)
        if op.kind == "MEAN":
            axes = op.inputs[1].data
            if axes is None or sorted(int(a) for a in np.ravel(axes)) != [1, 2]:
                raise UnsupportedModelError(f"{op.describe()}: only a global average over "
                                            "height and width (axes 1, 2) is supported")
        if op.kind == "PAD":
            pads = op.inputs[1].data
            if pads is None or np.any(pads[0] != 0) or np.any(pads[3] != 0):
                raise UnsupportedModelError(f"{op.describe()}: only spatial padding is supported")
        if op.kind == "SOFTMAX" and op.outputs[0].zp != -128:
            raise UnsupportedModelError(f"{op.describe()}: int8 softmax output must have zero "
                                        f"point -128, got {op.outputs[0].zp}")
        produced.add(out.index)


def _validate_weighted(op: Op) -> None:
    w, b = op.inputs[1], op.inputs[2] if len(op.inputs) > 2 else None
    if w.data is None or w.dtype != "int8":
        raise UnsupportedModelError(f"{op.describe()}: weights must be constant int8, got {w.dtype}")
    if np.any(w.zero_point != 0):
        raise UnsupportedModelError(f"{op.describe()}: weights must be symmetric (zero point 0)")
    if b is not None and (b.data is None or b.dtype != "int32"):
        raise UnsupportedModelError(f"{op.describe()}: bias must be constant int32")
    act = op.options.get("activation", "NONE")
    if act not in ("NONE", "RELU", "RELU6"):
        raise UnsupportedModelError(f"{op.describe()}: fused activation {act} is not supported")
    if op.kind == "FULLY_CONNECTED":
        return
    if op.options.get("dilation", (1, 1)) != (1, 1):
        raise UnsupportedModelError(f"{op.describe()}: dilated convolution is not supported")
    kh, kw = w.shape[1:3]
    sh, sw = op.options["stride"]
    if op.kind == "DEPTHWISE_CONV_2D":
        if (kh, kw) != (3, 3):
            raise UnsupportedModelError(f"{op.describe()}: depthwise kernel {kh}x{kw} is not "
                                        "supported (the depthwise engine is 3x3)")
        if op.options.get("depth_multiplier", 1) != 1 and w.shape[3] != op.inputs[0].shape[3]:
            raise UnsupportedModelError(f"{op.describe()}: depth multiplier != 1 is not supported")
    elif (kh, kw) not in ((1, 1), (3, 3)):
        raise UnsupportedModelError(f"{op.describe()}: convolution kernel {kh}x{kw} is not "
                                    "supported (1x1 and 3x3 only)")
    if (sh, sw) not in ((1, 1), (2, 2)):
        raise UnsupportedModelError(f"{op.describe()}: stride {sh}x{sw} is not supported")
