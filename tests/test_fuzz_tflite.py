"""Fuzzing the .tflite reader and the config parser: whatever the file holds, the outcome is a
graph or one UnsupportedModelError line, never another exception. A mutant the reader accepts
must also run through the numpy reference (or be refused there, in one line).

Mutants of a real 6-op int8 model: flipped bytes, truncation, appended garbage, and single
field edits through the flatbuffer schema (shapes, buffer / tensor / opcode indices, types,
scales, zero points, names, options). TFLite's interpreter is never run on a mutant: its
reference kernels can abort() the process on what the reader exists to refuse.
"""
import copy
import json
import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from keras_models import tiny_mobilenet_tflite
from tflite_edit import pack, schema, unpack

from quantize.reference import run_graph
from quantize.tflite_graph import UnsupportedModelError, load_graph

def fuzz_settings(examples: int) -> settings:
    """Bounded and reproducible: the same mutants on every run, no example database."""
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def tiny():
    return tiny_mobilenet_tflite()


@pytest.fixture(scope="module")
def template(tiny):
    return unpack(tiny)


def outcome(model: bytes) -> str:
    """'refused' or 'ran'; any exception but a one-line UnsupportedModelError fails the test."""
    try:
        graph = load_graph(model)
        x = np.random.default_rng(0).integers(-128, 128, graph.input.shape).astype(np.int8)
        run_graph(graph, x)
    except UnsupportedModelError as e:
        assert "\n" not in str(e), str(e)
        return "refused"
    return "ran"


def fuzz(strategy, make_model, examples: int) -> Counter:
    """Run `examples` mutants drawn from `strategy` and return how many were refused / ran."""
    seen = Counter()

    @fuzz_settings(examples)
    @given(strategy)
    def one(mutation):
        seen[outcome(make_model(mutation))] += 1

    one()
    print(f"{examples} mutants: {dict(seen)}")
    return seen

# ---------------------------------------------------------------------------- raw bytes


def test_byte_flips(tiny):
    flips = st.lists(st.tuples(st.integers(0, len(tiny) - 1), st.integers(0, 255)),
                     min_size=1, max_size=8)

    def flipped(changes):
        b = bytearray(tiny)
        for pos, value in changes:
            b[pos] = value
        return bytes(b)
    seen = fuzz(flips, flipped, 150)
    assert seen["refused"] and seen["ran"]   # both sides of the reader are reached


def test_truncation(tiny):
    seen = fuzz(st.integers(0, len(tiny) - 1), lambda n: tiny[:n], 40)
    assert seen == Counter(refused=40)


def test_appended_garbage(tiny):
    seen = fuzz(st.binary(min_size=32, max_size=4096), lambda extra: tiny + extra, 30)
    assert seen == Counter(refused=30)

# ---------------------------------------------------------------------------- schema edits


INTS = st.one_of(st.integers(-3, 20), st.sampled_from([-(1 << 31), (1 << 31) - 1, 1 << 20, 255]))
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                   st.sampled_from([0.0, -0.0, 1e-9, 2.0 ** -26, 1 / 256, 1e30]))


@st.composite
def field_edits(draw, n_tensors: int, n_ops: int, n_buffers: int):
    """One (target, index, field, value) edit of the unpacked model."""
    t = draw(st.integers(0, n_tensors - 1))
    o = draw(st.integers(0, n_ops - 1))
    return draw(st.sampled_from([
        ("tensor", t, "shape", (draw(st.integers(0, 3)), draw(INTS))),
        ("tensor", t, "buffer", draw(st.one_of(st.integers(0, n_buffers + 2), INTS))),
        ("tensor", t, "type", draw(st.integers(-1, 20))),
        ("tensor", t, "name", draw(st.binary(max_size=12))),
        ("tensor", t, "name", None),
        ("tensor", t, "quantization", None),
        ("quant", t, "scale", [draw(FLOATS)]),
        ("quant", t, "zeroPoint", [draw(INTS)]),
        ("quant", t, "quantizedDimension", draw(INTS)),
        ("op", o, "opcodeIndex", draw(INTS)),
        ("op", o, "inputs", draw(st.lists(st.integers(-2, n_tensors + 1), max_size=4))),
        ("op", o, "outputs", draw(st.lists(st.integers(-2, n_tensors + 1), max_size=2))),
        ("op", o, "builtinOptions", None),
        ("options", o, draw(st.sampled_from(["strideH", "strideW", "padding", "beta",
                                             "fusedActivationFunction", "keepDims",
                                             "depthMultiplier", "dilationHFactor"])),
         draw(st.one_of(INTS, FLOATS))),
        ("buffer", draw(st.integers(0, n_buffers - 1)), "data", draw(st.integers(-3, 3))),
        ("graph", 0, draw(st.sampled_from(["inputs", "outputs"])),
         draw(st.lists(st.integers(-1, n_tensors + 1), max_size=2))),
    ]))


def apply_edit(model, edit) -> None:
    target, i, name, value = edit
    sg = model.subgraphs[0]
    if target == "tensor" and name == "shape":
        dim, size = value
        shape = list(sg.tensors[i].shape if sg.tensors[i].shape is not None else [])
        shape[dim:dim + 1] = [size]
        sg.tensors[i].shape = shape
    elif target == "tensor":
        setattr(sg.tensors[i], name, value)
    elif target == "quant":
        q = sg.tensors[i].quantization
        if q is None:
            q = sg.tensors[i].quantization = schema().QuantizationParametersT()
        setattr(q, name, value)
    elif target == "op":
        setattr(sg.operators[i], name, value)
    elif target == "options":
        opts = sg.operators[i].builtinOptions
        if opts is not None and hasattr(opts, name):
            setattr(opts, name, value if name == "beta" or isinstance(value, int)
                    else _int_of(value))
    elif target == "buffer":
        data = model.buffers[i].data
        if data is not None and len(data):
            model.buffers[i].data = np.resize(data, max(len(data) + value, 0)).astype(np.uint8)
    elif target == "graph":
        setattr(sg, name, value)


def _int_of(x: float) -> int:
    return int(x) if math.isfinite(x) and abs(x) < 1 << 31 else -1


def test_schema_field_edits(tiny, template):
    sg = template.subgraphs[0]
    edits = field_edits(len(sg.tensors), len(sg.operators), len(template.buffers))

    def mutant(edit):
        model = copy.deepcopy(template)
        apply_edit(model, edit)
        try:
            return pack(model)
        except (OverflowError, ValueError, TypeError, AttributeError, IndexError):
            return tiny   # a value the schema cannot hold (e.g. -3 into an unsigned field)
    seen = fuzz(edits, mutant, 200)
    assert seen["refused"] > 20 and seen["ran"] > 20

# ---------------------------------------------------------------------------- config JSON


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(1 << 70), 1 << 70),
              st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=6)


def test_config_from_random_json():
    from rtl_gen.config import AccelConfig, ConfigError
    names = [f for f in AccelConfig.__dataclass_fields__]
    keys = st.one_of(st.sampled_from(names),
                     st.text(st.characters(categories=["L", "N", "P", "Zs"]), max_size=8))
    powers = st.sampled_from([1, 2, 4, 8, 16, 64, 256, 1024, 1 << 20])
    configs = st.one_of(st.dictionaries(keys, st.one_of(JSON_VALUES, powers), max_size=6),
                        JSON_VALUES)
    seen = Counter()

    @fuzz_settings(200)
    @given(configs)
    def one(d):
        d = json.loads(json.dumps(d))   # exactly what a config file can hold
        try:
            assert isinstance(AccelConfig.from_dict(d), AccelConfig)
            seen["accepted"] += 1
        except ConfigError as e:
            assert "\n" not in str(e)
            seen["refused"] += 1
    one()
    assert seen["refused"] and seen["accepted"]


def test_config_unknown_key_with_newline_is_one_line():
    from rtl_gen.config import AccelConfig, ConfigError
    with pytest.raises(ConfigError) as e:
        AccelConfig.from_dict({"pw_out": 1, "\n": 2})
    assert "\n" not in str(e.value)
