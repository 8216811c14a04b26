"""Whether a compiled program runs on the accelerator, answered in the model's terms.

`firmware.contract.check_fits` names the first descriptor the sequencer would stop on, by
its hardware step and padded channel counts. A user needs the layer of their model and the
reason in its terms, and every blocker at once, to decide what to change (the model or the
config): `model_blockers` gives one line per blocked layer, `check_model_fits` raises them.
"""
from __future__ import annotations

from quantize.tflite_graph import Graph, Op
from rtl_gen.config import AccelConfig
from firmware.contract import ErrorCode, Geometry, Limits, ProgramError, descriptor_error

from .compiler import Firmware
from .program import Opcode


def check_model_fits(fw: Firmware, graph: Graph, cfg: AccelConfig | None = None,
                     limits: Limits = Limits(), name: str | None = None) -> None:
    """Raise ProgramError listing every layer the accelerator for `cfg` would stop on; the
    message starts with `name` (the model file) when given."""
    blockers = model_blockers(fw, graph, cfg, limits)
    if blockers:
        raise ProgramError(f"{name}: " * (name is not None) + "; ".join(blockers))


def model_blockers(fw: Firmware, graph: Graph, cfg: AccelConfig | None = None,
                   limits: Limits = Limits()) -> list[str]:
    """'layer N 'name' (KIND): reason' for each model layer with a descriptor (or band)
    the sequencer would refuse; a layer split into bands is reported once."""
    cfg = cfg or fw.cfg
    seen, blockers = set(), []
    for d, op_index in zip(fw.descriptors, fw.layer_ops):
        code = descriptor_error(d, cfg, limits)
        if code is None or op_index in seen:
            continue
        seen.add(op_index)
        op = graph.op(op_index)
        blockers.append(f"{op.describe()}: {_reason(op, d, code, cfg, limits)}")
    return blockers


def _reason(op: Op, d, code: ErrorCode, cfg: AccelConfig, limits: Limits) -> str:
    """The first limit of `limits` / `cfg` the layer exceeds, in its own shapes; the
    sequencer's error code with the layer's shapes when no single limit explains it."""
    for reason in _limit_reasons(op, d, cfg, limits):
        if reason:
            return reason
    return (f"the accelerator would stop with {code.name} (input {_shape(op.inputs[0])} -> "
            f"output {_shape(op.outputs[0])})")


def _limit_reasons(op: Op, d, cfg: AccelConfig, limits: Limits):
    """Candidate explanations, each None unless that limit is exceeded."""
    g = Geometry(cfg)
    x, y = op.inputs[0], op.outputs[0]
    if d.opcode == Opcode.ADD and not cfg.with_add:
        yield ("the accelerator was built without the ADD unit (config with_add false): use "
               "a config with with_add true")
    if d.opcode == Opcode.SOFTMAX and y.shape[-1] > limits.max_classes:
        yield (f"softmax of {y.shape[-1]} classes exceeds {limits.max_classes}: raise "
               "Limits.max_classes")
    if d.opcode == Opcode.MEAN and x.shape[-1] > limits.max_channels:
        yield (f"global average of {x.shape[-1]} channels exceeds {limits.max_channels}: raise "
               "Limits.max_channels")
    if d.opcode == Opcode.DWCONV and max(x.shape[1:3]) > limits.max_width:
        yield (f"{x.shape[1]}x{x.shape[2]} feature map exceeds the depthwise line buffer's "
               f"{limits.max_width}: raise Limits.max_width")
    if d.opcode == Opcode.DWCONV and 9 * d.in_c > g.weight_capacity:
        yield (f"3x3 weights of {x.shape[-1]} channels need {9 * d.in_c} B, more than the "
               f"{g.weight_capacity} B weight buffer: raise weight_buffer_bytes")
    if d.opcode == Opcode.ADD and d.weight_bytes > g.weight_capacity:
        yield (f"the second input, {_shape(op.inputs[1])} ({d.weight_bytes} B), does not fit "
               f"the {g.weight_capacity} B weight buffer: raise weight_buffer_bytes")
    if d.opcode == Opcode.CONV and cfg.pw_out * d.in_c > g.weight_slot:
        yield (f"weights of {cfg.pw_out} output channels x {x.shape[-1]} inputs need "
               f"{cfg.pw_out * d.in_c} B, more than a {g.weight_slot} B tile slot (half the "
               "weight buffer): raise weight_buffer_bytes")
    if d.in_h * d.in_w * d.in_c > g.act_capacity or d.out_h * d.out_w * d.out_c > g.act_capacity:
        yield (f"input {_shape(x)} or output {_shape(y)} does not fit the {g.act_capacity} B "
               "activation buffer: raise act_buffer_bytes")


def _shape(t) -> str:
    return "x".join(map(str, t.shape))
