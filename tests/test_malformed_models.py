"""Malformed .tflite files are refused with one line naming the problem and, where there is
one, the tensor or layer: bad names, indices out of range, buffers of the wrong size,
impossible shapes and quantization, appended or missing bytes. Each case is a small, real
int8 model with one field edited through the flatbuffer schema."""
from pathlib import Path

import numpy as np
import pytest
from keras_models import tiny_mobilenet_tflite
from tflite_edit import edited, pack, unpack

from quantize.reference import run_graph
from quantize.tflite_graph import UnsupportedModelError, load_graph

# The tiny model's layers: 0 stem 3x3/s2 conv, 1 depthwise, 2 pointwise, 3 mean, 4 dense,
# 5 softmax.


@pytest.fixture(scope="module")
def tiny():
    return tiny_mobilenet_tflite()


def _op(m, k):
    return m.subgraphs[0].operators[k]


def _tensor(m, index):
    return m.subgraphs[0].tensors[index]


def _output(m, k):
    return _tensor(m, _op(m, k).outputs[0])


def _weights(m, k):
    return _tensor(m, _op(m, k).inputs[1])


def _input(m):
    return _tensor(m, m.subgraphs[0].inputs[0])


def _set(target, **fields):
    """An edit that sets `fields` on whatever `target(model)` returns."""
    def edit(m):
        obj = target(m)
        for k, v in fields.items():
            setattr(obj, k, v)
    return edit


def _quant(target, **fields):
    return _set(lambda m: target(m).quantization, **fields)


def _shorten_weights(m):
    buf = m.buffers[_weights(m, 2).buffer]
    buf.data = buf.data[:-1]


# (edit of the unpacked model, pattern the whole message must match)
CASES = {
    "name not UTF-8": (_set(lambda m: _output(m, 0), name=b"stem\xff\xfe"),
                       r"tensor \d+: name is not valid UTF-8 \(byte 4: b'\\xff'\)"),
    "name missing": (_set(lambda m: _output(m, 0), name=None), r"tensor \d+ has no name"),
    "name with a newline": (_set(lambda m: _output(m, 0), name=b"a\nb"),
                            r"tensor \d+ 'a\?b': name holds control characters"),
    "input tensor index": (lambda m: _op(m, 1).inputs.__setitem__(0, 999),
                           r"layer 1 '.*dw.*' \(DEPTHWISE_CONV_2D\): input tensor index 999 out of "
                           r"range \(the model has 15 tensors\)"),
    "negative tensor index": (lambda m: _op(m, 2).inputs.__setitem__(1, -7),
                              r"layer 2 '.*pw.*' \(CONV_2D\): input tensor index -7 out of "
                              r"range.*"),
    "output tensor index": (lambda m: _op(m, 1).outputs.__setitem__(0, 999),
                            r"layer 1: output tensor index 999 out of range \(the model has 15 "
                            r"tensors\)"),
    "opcode index": (_set(lambda m: _op(m, 2), opcodeIndex=50),
                     r"layer 2 '.*pw.*': operator code index 50 out of range \(the model has "
                     r"\d+ operator codes\)"),
    "buffer index": (_set(lambda m: _weights(m, 2), buffer=999),
                     r"tensor \d+ '.*pw.*': buffer index 999 out of range \(the model has \d+ "
                     r"buffers\)"),
    "weights buffer one byte short": (_shorten_weights,
                                      r"tensor \d+ '.*pw.*': int8 \(8, 1, 1, 4\) needs 32 bytes, "
                                      r"its buffer \d+ holds 31"),
    "zero dimension": (lambda m: _input(m).shape.__setitem__(1, 0),
                       r"tensor 0 '.*': shape \(1, 0, 8, 3\) has a dimension < 1"),
    "negative dimension": (lambda m: _input(m).shape.__setitem__(1, -3),
                           r"tensor 0 '.*': shape \(1, -3, 8, 3\) has a dimension < 1"),
    "absurd dimension": (lambda m: _input(m).shape.__setitem__(1, 1 << 30),
                         r"tensor 0 '.*': shape \(1, 1073741824, 8, 3\) has 25,769,803,776 "
                         r"elements, more than the 67,108,864 the flow handles"),
    "input scale 0": (_quant(_input, scale=[0.0]),
                      r"layer 0 '.*stem.*' \(CONV_2D\): activation '.*': scale 0 is not a "
                      r"finite number > 0"),
    "negative activation scale": (_quant(lambda m: _output(m, 1), scale=[-0.0036]),
                                  r"layer 1 .*: activation '.*dw.*': scale -0.0036 is not a "
                                  r"finite number > 0"),
    "NaN activation scale": (_quant(lambda m: _output(m, 2), scale=[float("nan")]),
                             r"layer 2 .*: activation '.*pw.*': scale nan is not a finite "
                             r"number > 0"),
    "infinite weight scale": (lambda m: _weights(m, 2).quantization.scale.__setitem__(3, np.inf),
                              r"layer 2 .*: weights '.*pw.*': scale inf is not a finite "
                              r"number > 0"),
    "weights without quantization": (_set(lambda m: _weights(m, 2), quantization=None),
                                     r"layer 2 '.*pw.*' \(CONV_2D\): weights '.*' have no "
                                     r"quantization parameters"),
    "zero point above int8": (_quant(lambda m: _output(m, 2), zeroPoint=[300]),
                              r"tensor \d+ '.*pw.*': zero point 300 is outside the int8 range"),
    "scale / zero point counts": (_quant(lambda m: _output(m, 2), zeroPoint=[0, 0]),
                                  r"tensor \d+ '.*pw.*': 1 scales but 2 zero points"),
    "per-channel scales along the wrong axis": (
        _quant(lambda m: _weights(m, 2), quantizedDimension=3),
        r"tensor \d+ '.*pw.*': 8 per-channel scales do not match dimension 3 of shape "
        r"\(8, 1, 1, 4\)"),
    "per-channel activation": (_quant(lambda m: _output(m, 3), scale=[0.1] * 8, zeroPoint=[0] * 8,
                                      quantizedDimension=1),
                               r"layer 3 .*: activation '.*gap.*' needs one scale and one zero "
                               r"point, has 8 and 8"),
    "conv output shape": (lambda m: _output(m, 0).shape.__setitem__(3, 5),
                          r"layer 0 .*: output shape \(1, 4, 4, 5\) does not follow from input "
                          r"\(1, 8, 8, 3\) and weights \(4, 3, 3, 3\) \(\(1, 4, 4, 4\)\)"),
    "conv options missing": (_set(lambda m: _op(m, 0), builtinOptions=None, builtinOptionsType=0),
                             r"layer 0 '.*stem.*' \(CONV_2D\): has no Conv2DOptions"),
    "padding code": (_set(lambda m: _op(m, 1).builtinOptions, padding=7),
                     r"layer 1 .*: padding unknown\(7\) is not supported"),
    "stride 0": (_set(lambda m: _op(m, 1).builtinOptions, strideH=0, strideW=0),
                 r"layer 1 .*: stride 0x0 is not supported"),
    "activation reads a constant": (lambda m: _op(m, 2).inputs.__setitem__(0, _op(m, 2).inputs[1]),
                                    r"layer 2 .*: input '.*' is neither the model input nor "
                                    r"produced by an earlier op"),
    "weights not constant": (lambda m: _op(m, 2).inputs.__setitem__(1, _op(m, 1).outputs[0]),
                             r"layer 2 .*: input 1 '.*dw.*' must be a constant"),
    "op without inputs": (_set(lambda m: _op(m, 4), inputs=[]),
                          r"layer 4 .*\(FULLY_CONNECTED\): expected 2..3 inputs, got 0"),
    "model input index": (_set(lambda m: m.subgraphs[0], inputs=[77]),
                          r"model input: input tensor index 77 out of range \(the model has 15 "
                          r"tensors\)"),
    "two subgraphs": (lambda m: m.subgraphs.append(m.subgraphs[0]),
                      r"expected exactly one subgraph, the model has 2"),
    "softmax beta NaN": (_set(lambda m: _op(m, 5).builtinOptions, beta=float("nan")),
                         r"layer 5 .*\(SOFTMAX\): beta nan must be finite and > 0"),
    "softmax output scale": (_quant(lambda m: _output(m, 5), scale=[0.5]),
                             r"layer 5 .*\(SOFTMAX\): int8 softmax output must have scale 1/256, "
                             r"got 0.5"),
}


@pytest.mark.parametrize("case", CASES)
def test_malformed_model_refused_on_one_line(tiny, case):
    edit, pattern = CASES[case]
    with pytest.raises(UnsupportedModelError) as e:
        load_graph(edited(tiny, edit))
    assert "\n" not in str(e.value)
    assert e.match(f"^{pattern}$")


def test_unedited_repack_is_accepted(tiny):
    """The edits are the only change: packing the unpacked model again gives a model that
    loads and runs."""
    g = load_graph(pack(unpack(tiny)))
    assert [op.kind for op in g.ops] == ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "MEAN",
                                         "FULLY_CONNECTED", "SOFTMAX"]
    out = run_graph(g, np.zeros(g.input.shape, np.int8))[g.output.index]
    assert out.shape == (1, 5)


@pytest.mark.parametrize("extra", [100_000, 40])
def test_trailing_data_refused(tiny, extra):
    garbage = np.random.default_rng(0).integers(0, 256, extra, dtype=np.uint8).tobytes()
    with pytest.raises(UnsupportedModelError) as e:
        load_graph(tiny + garbage)
    assert str(e.value) == (f"{extra} bytes of trailing data after the end of the model's "
                            f"flatbuffer (at byte {len(tiny)} of {len(tiny) + extra})")


def test_alignment_padding_is_not_trailing_data(tiny):
    """Fewer unread bytes than the builder's alignment could leave are tolerated."""
    assert load_graph(tiny + bytes(8)).ops


@pytest.mark.parametrize("keep", [0.98, 0.9, 0.5, 0.1])
def test_truncated_file_refused(tiny, keep):
    n = int(len(tiny) * keep)
    with pytest.raises(UnsupportedModelError) as e:
        load_graph(tiny[:n])
    assert str(e.value) == (f"truncated or corrupt TFLite flatbuffer: it refers to data "
                            f"outside the {n}-byte file")


def test_one_byte_short_refused(tiny):
    """The converter's last byte belongs to the model: losing it is noticed too."""
    with pytest.raises(UnsupportedModelError, match="truncated or corrupt"):
        load_graph(tiny[:-1])


def test_message_names_the_file(tmp_path, tiny):
    path = tmp_path / "bad.tflite"
    path.write_bytes(tiny[: len(tiny) // 2])
    with pytest.raises(UnsupportedModelError) as e:
        load_graph(path)
    assert str(e.value).startswith(f"{path}: truncated or corrupt TFLite flatbuffer")


def test_cli_refuses_malformed_model(tmp_path, tiny, capsys):
    from flow import cli
    path = tmp_path / "m.tflite"
    path.write_bytes(edited(tiny, _quant(_input, scale=[0.0])))
    code = cli.main(["--model", str(path), "--out", str(tmp_path / "b"), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("gen-accel: error: ")
    assert "scale 0 is not a finite number > 0" in err[0]
    assert not (tmp_path / "b").exists()


# TFLite's int8 softmax Prepare() CHECK-fails, abort()ing the process, unless
# beta * input scale * 2^26 > 1 (QuantizeMultiplierGreaterThanOne): the reader draws the line
# exactly there, so the golden interpreter never sees a model that would kill it.
AT_LIMIT = 2.0 ** -26
ABOVE_LIMIT = float(np.nextafter(np.float32(AT_LIMIT), np.float32(1)))


def _softmax_input_scale(scale):
    return _quant(lambda m: _output(m, 4), scale=[scale])


def test_softmax_scale_at_the_abort_limit_refused(tiny):
    with pytest.raises(UnsupportedModelError, match=r"^layer 5 .*\(SOFTMAX\): input scale "
                       r"1.49012e-08 x beta 1 must be above 2\^-26 for TFLite's fixed-point "
                       r"softmax"):
        load_graph(edited(tiny, _softmax_input_scale(AT_LIMIT)))


def test_softmax_scale_just_above_the_limit_runs_in_tflite(tiny):
    from quantize.convert import golden_interpreter, golden_run
    model = edited(tiny, _softmax_input_scale(ABOVE_LIMIT))
    g = load_graph(model)
    x = np.zeros(g.input.shape, np.int8)
    golden = golden_run(golden_interpreter(model), x)[g.output.index]
    assert np.array_equal(golden, run_graph(g, x)[g.output.index])


def test_tflite_really_aborts_at_the_limit(tiny, tmp_path):
    """Why the rule exists: the refused model kills a process that builds its interpreter."""
    import subprocess
    import sys
    path = tmp_path / "m.tflite"
    path.write_bytes(edited(tiny, _softmax_input_scale(AT_LIMIT)))
    code = ("import sys; from quantize.convert import golden_interpreter; "
            "golden_interpreter(open(sys.argv[1], 'rb').read())")
    run = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                         cwd=str(Path(__file__).resolve().parent.parent), timeout=300)
    assert run.returncode == -6   # SIGABRT


def test_golden_interpreter_refusal_is_one_line(tiny):
    """A Prepare() failure the reader does not repeat comes back as one line."""
    from quantize.convert import golden_interpreter
    with pytest.raises(UnsupportedModelError) as e:
        golden_interpreter(edited(tiny, _quant(lambda m: _output(m, 5), scale=[0.5])))
    assert "\n" not in str(e.value)
    assert e.match(r"^TFLite's reference interpreter refuses the model: .*output->params.scale "
                   r"not near 1.f / 256.*; node number 5 \(SOFTMAX\) failed to prepare")
