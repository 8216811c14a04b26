"""Models as people export them: `keras.applications.MobileNet` converted with
TFLiteConverter.from_keras_model (dynamic batch, and fixed batch 1), Keras' Flatten / Reshape
on a dynamic batch (SHAPE -> STRIDED_SLICE -> PACK -> RESHAPE), SQUEEZE, float32 and uint8
I/O. The reader folds what is static, the graph reduces to the accelerator's layer kinds,
and the numpy reference is bit-exact against TFLite's BUILTIN_REF kernels on every layer."""
import numpy as np
import pytest
from keras_models import int8_tflite, mobilenet_tflite
from tflite_edit import edited, schema

from firmware.compiler import compile_graph
from firmware.executor import run_image
from firmware.fit_check import model_blockers
from quantize.convert import golden_interpreter, golden_run, to_int8_tflite_from_float
from quantize.reference import run_graph
from quantize.static_fold import STATIC_OPS, fold_static_ops
from quantize.tflite_graph import Op, Tensor, load_graph
from quantize.verify import assert_bit_exact

@pytest.fixture(scope="module", params=["dynamic batch", "batch 1"])
def mobilenet(request):
    tflite = mobilenet_tflite(fixed_batch=request.param == "batch 1")
    return request.param, tflite, load_graph(tflite)


def _random_inputs(graph, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(-128, 128, graph.input.shape, dtype=np.int8) for _ in range(n)]


def _assert_bit_exact_vs_tflite(tflite: bytes, graph, n: int = 2) -> None:
    """Every layer of the numpy reference equals TFLite's, on n random inputs, and the
    output is not constant (the comparison is not vacuous)."""
    interp = golden_interpreter(tflite)
    for x in _random_inputs(graph, n):
        ours = run_graph(graph, x)
        assert assert_bit_exact(graph, ours, golden_run(interp, x)) == len(graph.ops)
        assert np.unique(ours[graph.output.index]).size > 1


def test_keras_mobilenet_reduces_to_the_accelerators_layers(mobilenet):
    """After folding: the seed network's layer kinds plus one RESHAPE before the softmax;
    the dynamic-batch export's shape arithmetic is gone, its RESHAPE reads a constant."""
    batch, tflite, g = mobilenet
    kinds = [op.kind for op in g.ops]
    assert kinds == (["CONV_2D"] + ["DEPTHWISE_CONV_2D", "CONV_2D"] * 13 +
                     ["MEAN", "CONV_2D", "RESHAPE", "SOFTMAX"])
    assert g.input.dynamic_batch == (batch == "dynamic batch")
    folded = [op.kind for op in g.folded]
    assert folded == ([] if batch == "batch 1" else ["SHAPE", "STRIDED_SLICE", "PACK"])
    reshape = g.ops[-2]
    assert reshape.inputs[1].data.tolist() == list(reshape.outputs[0].shape)
    # Ops keep their model index: the folded ones leave a gap before the RESHAPE.
    assert reshape.index == len(g.ops) - 2 + len(folded)


def test_keras_mobilenet_bit_exact_vs_tflite(mobilenet):
    _, tflite, g = mobilenet
    _assert_bit_exact_vs_tflite(tflite, g)


def test_keras_mobilenet_compiles_and_fits(mobilenet):
    _, _, g = mobilenet
    fw = compile_graph(g)
    assert model_blockers(fw, g) == []
    assert {g.op(i).kind for i in fw.layer_ops} == {op.kind for op in g.ops} - {"RESHAPE"}


def test_imagenet_head_of_1000_classes_runs_bit_exact():
    """keras.applications.MobileNet with its 1000 ImageNet classes: the dense layer and the
    softmax of 1000 logits compile for the default config, and every layer of the program
    run from DDR (the functional model) equals TFLite BUILTIN_REF's."""
    tflite = mobilenet_tflite(fixed_batch=False, classes=1000)
    g = load_graph(tflite)
    assert g.output.shape[-1] == 1000
    fw = compile_graph(g)
    assert model_blockers(fw, g) == []
    interp = golden_interpreter(tflite)
    for x in _random_inputs(g, 2):
        golden = golden_run(interp, x)
        assert assert_bit_exact(g, run_graph(g, x), golden) == len(g.ops)
        assert assert_bit_exact(g, run_image(fw, x), golden) == len(g.ops)
        assert np.unique(golden[g.output.index]).size > 1

# ---------------------------------------------------------------------------- small exports


def _flatten_net(x):
    from keras import layers
    y = layers.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="stem")(x)
    y = layers.Flatten(name="flat")(y)
    return layers.Softmax(name="softmax")(layers.Dense(5, name="fc")(y))


@pytest.fixture(scope="module")
def flatten_tflite():
    return int8_tflite(_flatten_net, (8, 8, 3))


def test_flatten_on_a_dynamic_batch_folds_and_is_bit_exact(flatten_tflite):
    g = load_graph(flatten_tflite)
    assert [op.kind for op in g.ops] == ["CONV_2D", "RESHAPE", "FULLY_CONNECTED", "SOFTMAX"]
    assert [op.kind for op in g.folded] == ["SHAPE", "STRIDED_SLICE", "PACK"]
    _assert_bit_exact_vs_tflite(flatten_tflite, g)


def _reshape_to_squeeze(model):
    """The model's RESHAPE of a (1, 1, 1, C) tensor to (1, C), rewritten as the SQUEEZE of
    axes 1 and 2 other exporters write for it."""
    s = schema()
    sg = model.subgraphs[0]
    model.operatorCodes.append(s.OperatorCodeT())
    model.operatorCodes[-1].builtinCode = model.operatorCodes[-1].deprecatedBuiltinCode = \
        s.BuiltinOperator.SQUEEZE
    op = next(o for o in sg.operators
              if model.operatorCodes[o.opcodeIndex].builtinCode == s.BuiltinOperator.RESHAPE)
    op.opcodeIndex = len(model.operatorCodes) - 1
    op.inputs = op.inputs[:1]
    op.builtinOptionsType = s.BuiltinOptions.SqueezeOptions
    op.builtinOptions = s.SqueezeOptionsT()
    op.builtinOptions.squeezeDims = [1, 2]


def test_squeeze_is_a_view_and_bit_exact():
    """A SQUEEZE of the global average's (1, 1, 1, C) before the classifier."""
    from keras import layers

    def net(x):
        y = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
        y = layers.Reshape((8,))(layers.GlobalAveragePooling2D(keepdims=True)(y))
        return layers.Softmax()(layers.Dense(4)(y))
    base = int8_tflite(net, (8, 8, 3))
    tflite = edited(base, _reshape_to_squeeze)
    g = load_graph(tflite)
    assert [op.kind for op in g.ops] == ["CONV_2D", "MEAN", "SQUEEZE", "FULLY_CONNECTED",
                                         "SOFTMAX"]
    _assert_bit_exact_vs_tflite(tflite, g)
    compile_graph(g)


@pytest.mark.parametrize("io_dtype", ["float32", "uint8"])
def test_float_and_uint8_io_edges_are_removed_and_recorded(io_dtype):
    """The converter's QUANTIZE at the input and DEQUANTIZE (uint8: QUANTIZE) at the output
    go; the graph runs int8 to int8 and records how to get there from the model's I/O."""
    import keras
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    model = keras.Model(inp, _flatten_net(inp))
    calib = np.random.default_rng(0).normal(0, 1, (8, 8, 8, 3)).astype(np.float32)
    tflite = to_int8_tflite_from_float(model, calib, io_dtype=io_dtype)
    g = load_graph(tflite)
    assert [op.kind for op in g.ops] == ["CONV_2D", "RESHAPE", "FULLY_CONNECTED", "SOFTMAX"]
    assert g.input.dtype == g.output.dtype == "int8"
    for edge, inner in ((g.input_edge, g.input), (g.output_edge, g.output)):
        assert edge.dtype == io_dtype and g.tensors[edge.tensor].dtype == io_dtype
        assert (edge.scale, edge.zero_point) == (float(inner.scale[0]), inner.zp)
    _assert_bit_exact_vs_tflite(tflite, g)

# ---------------------------------------------------------------------------- the folder


def _const(index: int, values, dtype=np.int32) -> Tensor:
    data = np.asarray(values, dtype)
    return Tensor(index, f"c{index}", data.shape, np.dtype(dtype).name, np.zeros(0, np.float32),
                  np.zeros(0, np.int64), data=data)


def _out(index: int, shape) -> Tensor:
    return Tensor(index, f"t{index}", tuple(shape), "int32", np.zeros(0, np.float32),
                  np.zeros(0, np.int64))


def test_concatenation_of_constants_folds_like_numpy():
    a, b = _const(0, [1, 2]), _const(1, [7])
    op = Op(3, "CONCATENATION", [a, b], [_out(2, (3,))], {"axis": 0, "activation": "NONE"})
    kept, folded = fold_static_ops([op])
    assert kept == [] and folded == [op]
    assert np.array_equal(op.outputs[0].data, np.concatenate([a.data, b.data]))


def test_static_op_with_a_run_time_input_is_left_for_the_reader_to_refuse():
    run_time = _out(0, ())          # no data: computed by an op that is not folded
    op = Op(0, "PACK", [run_time, _const(1, 3)], [_out(2, (2,))], {"axis": 0})
    assert fold_static_ops([op]) == ([op], []) and "PACK" in STATIC_OPS

# ---------------------------------------------------------------------------- gen-accel


def test_gen_accel_builds_the_dynamic_batch_export(tmp_path):
    """The whole flow on the Keras export: folded graph compiled, the reference and the
    program run from the DDR image bit-exact with TFLite on real test images (~30 s)."""
    import json

    from flow import cli
    model = tmp_path / "mobilenet.tflite"
    model.write_bytes(mobilenet_tflite(fixed_batch=False))
    out = tmp_path / "build"
    assert cli.main(["--model", str(model), "--check-images", "2", "--out", str(out), "-q"],
                    isolate=False) == 0
    g = load_graph(model)
    check = json.loads((out / "tflite_check.json").read_text())
    assert check["images"] == 2 and check["bit_exact"] and check["layers"] == len(g.ops)
    memory_map = json.loads((out / "firmware" / "memory_map.json").read_text())
    names = {d["graph_op"]: d["layer_name"] for d in memory_map["descriptors"]}
    assert names == {op.index: op.name for op in g.ops if op.kind != "RESHAPE"}
