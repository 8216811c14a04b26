"""Layer-by-layer bit-exact comparison of two runs of the same int8 graph."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .tflite_graph import Graph


class MismatchError(AssertionError):
    """Two runs that should be bit-identical are not; the message names the first layer."""


@dataclass
class LayerDiff:
    op_index: int
    kind: str
    name: str
    mismatches: int
    max_abs_diff: int
    first_index: tuple | None


def compare_layers(graph: Graph, ours: dict[int, np.ndarray], golden: dict[int, np.ndarray],
                   folded=frozenset()) -> list[LayerDiff]:
    """One LayerDiff per op, in order (mismatches == 0 means bit-exact), except the ops whose
    output tensor is in `folded`: ops the compiler folded into their consumer (a PAD into a
    convolution's padding, `Firmware.folded`), whose output no run of it holds."""
    diffs = []
    for op in graph.ops:
        t = op.outputs[0]
        if t.index in folded:
            continue
        if t.index not in ours or t.index not in golden:
            raise MismatchError(f"{op.describe()}: output tensor missing from a run")
        a = np.asarray(ours[t.index])
        b = np.asarray(golden[t.index])
        if a.size != b.size:
            raise MismatchError(f"{op.describe()}: shape {a.shape} vs {b.shape}")
        a = a.reshape(t.shape).astype(np.int64)
        b = b.reshape(t.shape).astype(np.int64)
        bad = np.argwhere(a != b)
        diffs.append(LayerDiff(op.index, op.kind, op.name, len(bad),
                               int(np.abs(a - b).max()) if a.size else 0,
                               tuple(int(i) for i in bad[0]) if len(bad) else None))
    return diffs


def assert_bit_exact(graph: Graph, ours: dict[int, np.ndarray], golden: dict[int, np.ndarray],
                     folded=frozenset()) -> int:
    """Raise MismatchError at the first differing layer; return the number of layers checked."""
    diffs = compare_layers(graph, ours, golden, folded)
    for d in diffs:
        if d.mismatches:
            raise MismatchError(f"layer {d.op_index} '{d.name}' ({d.kind}): {d.mismatches} values "
                                f"differ (max |diff| {d.max_abs_diff}, first at {d.first_index})")
    return len(diffs)
