"""Per-layer description of an int8 graph: shapes, MACs, parameter bytes, quantization."""
from __future__ import annotations

import numpy as np

from .tflite_graph import Graph, Op

# One definition for every report (layers.md/json, MANIFEST.json, and the cycle report of
# sim.report from sim.perf_model): MEAN's additions, PAD and SOFTMAX count no MACs.
MAC_DEFINITION = ("MACs: multiply-accumulates of CONV_2D, DEPTHWISE_CONV_2D and "
                  "FULLY_CONNECTED layers (unpadded channels); MEAN's additions are not MACs.")


def op_macs(op: Op) -> int:
    """The op's multiply-accumulates (`MAC_DEFINITION`); 0 for an op without any."""
    out = op.outputs[0].shape
    if op.kind == "CONV_2D":
        cout, kh, kw, cin = op.inputs[1].shape
        return int(np.prod(out[:-1])) * cout * kh * kw * cin
    if op.kind == "DEPTHWISE_CONV_2D":
        _, kh, kw, c = op.inputs[1].shape
        return int(np.prod(out)) * kh * kw
    if op.kind == "FULLY_CONNECTED":
        cout, cin = op.inputs[1].shape
        return int(np.prod(out[:-1])) * cout * cin
    return 0


def layer_table(graph: Graph) -> list[dict]:
    rows = []
    for op in graph.ops:
        params = sum(t.data.nbytes for t in op.inputs[1:] if t is not None and t.data is not None
                     and op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"))
        rows.append({
            "index": op.index, "op": op.kind, "name": op.name,
            "input_shape": list(op.inputs[0].shape), "output_shape": list(op.outputs[0].shape),
            "stride": list(op.options.get("stride", (1, 1))),
            "activation": op.options.get("activation", "NONE"),
            "macs": op_macs(op), "param_bytes": int(params),
            "input_scale": float(op.inputs[0].scale[0]), "input_zp": op.inputs[0].zp,
            "output_scale": float(op.outputs[0].scale[0]), "output_zp": op.outputs[0].zp,
        })
    return rows


def layer_table_markdown(rows: list[dict]) -> str:
    lines = [MAC_DEFINITION, "",
             "| # | op | input | output | stride | MACs | param bytes |",
             "|---|----|-------|--------|--------|-----:|------------:|"]
    for r in rows:
        lines.append(f"| {r['index']} | {r['op']} | {'x'.join(map(str, r['input_shape']))} | "
                     f"{'x'.join(map(str, r['output_shape']))} | {r['stride'][0]} | "
                     f"{r['macs']:,} | {r['param_bytes']:,} |")
    total = sum(r["macs"] for r in rows)
    lines.append(f"| | **total** | | | | **{total:,}** | "
                 f"**{sum(r['param_bytes'] for r in rows):,}** |")
    return "\n".join(lines) + "\n"
