"""Models the flow cannot map are rejected with a message naming the layer; bad input to the
CLI gives a one-line error, a non-zero exit, and no build folder that looks complete."""
import pytest
from keras_models import int8_tflite

from quantize.tflite_graph import UnsupportedModelError, load_graph
from flow import cli


@pytest.fixture(scope="module")
def residual_tflite():
    from keras import layers

    def net(x):
        y = layers.Conv2D(4, 1, name="proj")(x)
        z = layers.Conv2D(4, 3, padding="same")(y)
        pooled = layers.GlobalAveragePooling2D(keepdims=True)(z)
        y = layers.Add(name="broadcast_add")([y, pooled])     # (1, 6, 6, 4) + (1, 1, 1, 4)
        return layers.Conv2D(2, 1)(y)
    return int8_tflite(net, (6, 6, 3))


def test_broadcasting_add_rejected_naming_layer(residual_tflite):
    """A residual ADD of two equal shapes maps (`tests/test_residual_add.py`); a broadcasting
    one does not."""
    with pytest.raises(UnsupportedModelError, match=r"layer 3 '.*broadcast_add.*'.*"
                       r"broadcasting ADD of shapes \(1, 6, 6, 4\) and \(1, 1, 1, 4\)"):
        load_graph(residual_tflite)


def test_5x5_depthwise_rejected():
    from keras import layers
    tfl = int8_tflite(lambda x: layers.Conv2D(2, 1)(
        layers.DepthwiseConv2D(5, padding="same", name="dw5")(x)), (8, 8, 4))
    with pytest.raises(UnsupportedModelError, match=r"'.*dw5.*'.*depthwise kernel 5x5"):
        load_graph(tfl)


def test_float_model_rejected():
    import keras
    import tensorflow as tf
    from keras import layers
    inp = keras.Input((4, 4, 3))
    model = keras.Model(inp, layers.Conv2D(2, 1)(inp))
    tfl = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    with pytest.raises(UnsupportedModelError, match="float32; only full-int8"):
        load_graph(tfl)


@pytest.mark.parametrize("data,msg", [
    (b"", "not a TFLite flatbuffer"),
    (b"garbage that is long enough", "not a TFLite flatbuffer"),
])
def test_corrupt_bytes_rejected(data, msg):
    with pytest.raises(UnsupportedModelError, match=msg):
        load_graph(data)


def test_truncated_model_rejected(residual_tflite):
    with pytest.raises(UnsupportedModelError, match="corrupt TFLite flatbuffer|not supported"):
        load_graph(residual_tflite[: len(residual_tflite) // 3])


def _cli(argv, capsys):
    code = cli.main(argv + ["-q"])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


def test_cli_rejects_unsupported_model(tmp_path, residual_tflite, capsys):
    model = tmp_path / "res.tflite"
    model.write_bytes(residual_tflite)
    code, err = _cli(["--model", str(model), "--out", str(tmp_path / "build")], capsys)
    assert code == 2
    # Every blocker at once, in model order: the 3x3 conv inside the network, then the ADD.
    assert err.startswith(f"gen-accel: error: {model}: layer 1") and "3x3" in err
    assert "; layer 3 " in err and "broadcasting ADD" in err
    assert not (tmp_path / "build").exists()
    assert not list(tmp_path.glob(".build.partial-*"))


@pytest.mark.parametrize("args,msg", [
    (["--model", "/nonexistent/m.tflite"], "no such model file"),
    (["--alpha", "0"], "alpha must be > 0"),
    (["--alpha", "-1"], "alpha must be > 0"),
    (["--alpha", "nan"], "alpha must be > 0 and <= 4, got nan"),
    (["--alpha", "inf"], "alpha must be > 0 and <= 4, got inf"),
    (["--alpha", "5"], "alpha must be > 0 and <= 4, got 5.0"),
    (["--input-size", "4"], "input size must be in 8..512, got 4"),
    (["--check-images", "-1"], "--check-images must be >= 0"),
    (["--verify", "-1"], "--verify must be >= 0"),
    (["--weights", "/nonexistent/w.weights.h5"], "no such weights file"),
    (["--config", "/nonexistent/hw.json"], "no such config file"),
    (["--model", "/nonexistent/m.tflite", "--alpha", "0.5", "--input-size", "32"],
     "--model fixes the network and its input shape; --alpha, --input-size only apply to "
     "the seed network"),
])
def test_cli_bad_arguments(tmp_path, capsys, args, msg):
    code, err = _cli(args + ["--out", str(tmp_path / "b")], capsys)
    assert code == 2 and msg in err and err.startswith("gen-accel: error:")
    assert not (tmp_path / "b").exists()


def test_cli_output_is_a_file(tmp_path, capsys):
    f = tmp_path / "build"
    f.write_text("not a dir")
    code, err = _cli(["--out", str(f)], capsys)
    assert code == 2 and "not a directory" in err
    assert f.read_text() == "not a dir"


@pytest.mark.parametrize("parent", ["a_file", "/proc"])
def test_cli_output_cannot_be_created(tmp_path, capsys, parent):
    """An output folder whose parent is a file, or lies where nothing can be created."""
    if parent == "a_file":
        parent = tmp_path / "a_file"
        parent.write_text("x")
    code, err = _cli(["--check-images", "1", "--out", f"{parent}/build"], capsys)
    assert code == 2 and err.startswith(f"gen-accel: error: {parent}")
    assert "cannot" in err


def test_cli_weights_for_another_network(tmp_path, capsys):
    """The shipped alpha-0.25 checkpoint does not fit the alpha-0.5 network: one line that
    names the file, the network and the first mismatching shape, not Keras' layer list."""
    from quantize import assets
    w = assets.weights_path(0.25)
    code, err = _cli(["--alpha", "0.5", "--weights", str(w), "--out", str(tmp_path / "b")], capsys)
    assert code == 2 and err.startswith(f"gen-accel: error: {w}: cannot load weights for "
                                        f"mobilenet_a0.5_r28")
    assert "variable.shape=(3, 3, 3, 16), Received: value.shape=(3, 3, 3, 8)" in err
    assert len(err) < 600 and not (tmp_path / "b").exists()


def test_cli_corrupt_weights_file(tmp_path, capsys):
    w = tmp_path / "bad.weights.h5"
    w.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
    code, err = _cli(["--weights", str(w), "--out", str(tmp_path / "b")], capsys)
    assert code == 2 and err.startswith(f"gen-accel: error: {w}: cannot load weights for "
                                        f"mobilenet_a0.25_r28 (")
    assert not (tmp_path / "b").exists()


def test_cli_corrupt_model_file(tmp_path, capsys):
    m = tmp_path / "bad.tflite"
    m.write_bytes(b"\x00" * 100)
    code, err = _cli(["--model", str(m), "--out", str(tmp_path / "b")], capsys)
    assert code == 2 and "not a TFLite flatbuffer" in err


def test_cli_program_too_large_for_buffers(tmp_path, capsys):
    cfg = tmp_path / "hw.json"
    cfg.write_text('{"act_buffer_bytes": 2048}')
    code, err = _cli(["--config", str(cfg), "--out", str(tmp_path / "b")], capsys)
    assert code == 2 and err.startswith("gen-accel: error: layer")
    assert "even a band of one output row needs more than the 2048 B activation buffer" in err
    assert not (tmp_path / "b").exists()


def test_cli_memory_map_beyond_the_address_width(tmp_path, capsys):
    """A 16-bit AXI address cannot reach the seed network's DDR image: refused, not built
    with aliasing addresses."""
    cfg = tmp_path / "hw.json"
    cfg.write_text('{"addr_width": 16}')
    code, err = _cli(["--config", str(cfg), "--check-images", "1", "--out", str(tmp_path / "b")],
                     capsys)
    assert code == 2 and err.startswith(f"gen-accel: error: {cfg}: the memory map needs "
                                        "addresses up to 0x")
    assert "beyond the 16-bit address space of addr_width=16; set addr_width to at least 20" in err
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b.*"))


@pytest.mark.parametrize("text,msg", [
    ("{", "not a valid config JSON"),
    ("[1, 2]", "a config is a JSON object of AccelConfig fields, got list"),
    ('{"pw_out": 12}', "pw_out must be a power of two"),
    ('{"pw_out": "8"}', "pw_out must be an integer, got '8'"),
    ('{"pw_in": true}', "pw_in must be an integer, got True"),
    ('{"dw_lanes": 1024}', "dw_lanes must be <= 64, got 1024"),
    ('{"act_buffer_bytes": 1000000000}', "act_buffer_bytes must be 1 KiB .. 1 MiB"),
    ('{"weight_buffer_bytes": 512}', "weight_buffer_bytes must be 1 KiB .. 1 MiB"),
    ('{"clock_mhz": "fast"}', "clock_mhz must be a number, got 'fast'"),
    ('{"clock_mhz": 0}', "clock_mhz must be > 0 and <= 500"),
    ('{"clock_mhz": 1000}', "clock_mhz must be > 0 and <= 500, got 1000"),
    ('{"id_width": -1}', "id_width must be 1..16, got -1"),
    ('{"id_width": 100000}', "id_width must be 1..16, got 100000"),
    ('{"lanes": 4}', "unknown config keys: lanes")])
def test_cli_bad_config(tmp_path, capsys, text, msg):
    cfg = tmp_path / "hw.json"
    cfg.write_text(text)
    code, err = _cli(["--config", str(cfg), "--out", str(tmp_path / "b")], capsys)
    assert code == 2 and msg in err and err.startswith(f"gen-accel: error: {cfg}: ")
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("board,msg", [("nope", "unknown board 'nope'")])
def test_cli_bad_synth_board(tmp_path, capsys, board, msg):
    code, err = _cli(["--synth", board, "--out", str(tmp_path / "b")], capsys)
    assert code == 2 and msg in err and err.startswith("gen-accel: error:")
    assert not (tmp_path / "b").exists()


def test_cli_failed_synthesis_keeps_its_logs_not_a_build(tmp_path, capsys, monkeypatch):
    """A synthesis that fails (here: stubbed to miss timing after writing its log) exits 1,
    commits no build folder, and keeps the tools' output beside it for diagnosis."""
    from boards import synth

    def missed_clock(component, board, clock_mhz, build_dir, **kwargs):
        build_dir.mkdir(parents=True)
        (build_dir / "nextpnr.log").write_text("Max frequency for clock 'clk': 12.00 MHz\n")
        raise synth.SynthError(f"Fmax 12.00 MHz is below the target; see {build_dir / 'x.md'}")

    monkeypatch.setattr(synth, "synthesize", missed_clock)
    out = tmp_path / "b"
    code, err = _cli(["--synth", "ulx3s-85f", "--check-images", "1", "--out", str(out)], capsys)
    kept = tmp_path / "b.synth-failed"
    assert code == 1 and err.startswith("gen-accel: failed: synthesis for ulx3s-85f: Fmax 12.00")
    assert f"see {kept / 'x.md'}" in err and f"kept in {kept}" in err
    assert not out.exists() and (kept / "nextpnr.log").exists()
    assert not list(tmp_path.glob(".b.partial-*"))


@pytest.mark.parametrize("args,msg", [
    (["--alpha", "0"], "alpha must be > 0"),
    (["--epochs", "0"], "epochs must be >= 1"),
    (["--data", "/nonexistent/cifar"], "no such data set path"),
])
def test_train_bad_arguments(tmp_path, capsys, args, msg):
    from quantize import train
    assert train.main(args + ["--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("mobilenet-train: error:") and msg in err


def test_train_output_is_a_file(tmp_path, capsys):
    from quantize import train
    f = tmp_path / "run"
    f.write_text("x")
    assert train.main(["--data", str(tmp_path), "--out", str(f)]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_train_corrupt_image(tmp_path, capsys):
    """A data set tree with every class folder but an image that is not one."""
    from quantize import train
    from quantize.data import CLASSES
    for split in ("train", "test"):
        for cls in CLASSES:
            (tmp_path / "data" / split / cls).mkdir(parents=True)
            (tmp_path / "data" / split / cls / "0001.jpg").write_bytes(b"not a jpeg")
    code = train.main(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and err.startswith("mobilenet-train: error:") and "0001.jpg" in err


@pytest.mark.parametrize("args,msg", [
    (["--alpha", "0", "--weights", "w.h5"], "alpha must be > 0"),
    (["--alpha", "0.25", "--weights", "/nonexistent/w.weights.h5"], "no such weights file"),
])
def test_evaluate_bad_arguments(capsys, args, msg):
    from quantize import evaluate
    assert evaluate.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("python -m quantize.evaluate: error:") and msg in err


# ---- every blocker at once, in the model's terms ------------------------------------------

def test_every_unmappable_layer_is_reported_at_once():
    """Two layers the accelerator cannot run, one after the other: both named, in model
    order, on one line (a user fixes them in one go, not one per run)."""
    from keras import layers

    def net(x):
        y = layers.Conv2D(4, 3, strides=2, padding="same", name="stem")(x)
        y = layers.DepthwiseConv2D(5, padding="same", name="dw5")(y)
        y = layers.Conv2D(8, 1, name="pw")(y)
        y = layers.Conv2D(4, 5, padding="same", name="conv5")(y)
        return layers.Conv2D(2, 1)(y)       # the model output: its name is the signature's
    with pytest.raises(UnsupportedModelError) as e:
        load_graph(int8_tflite(net, (16, 16, 3)))
    assert len(e.value.blockers) == 2 and str(e.value) == "; ".join(e.value.blockers)
    assert "\n" not in str(e.value)
    first, second = e.value.blockers
    assert first.startswith("layer 1 '") and "dw5" in first and "depthwise kernel 5x5" in first
    assert second.startswith("layer 3 '") and "conv5" in second
    assert "convolution kernel 5x5 at stride 1x1 is only supported as the first layer" in second


def _tiny_input_edit(**fields):
    from keras_models import tiny_mobilenet_tflite
    from tflite_edit import edited

    def edit(m):
        t = m.subgraphs[0].tensors[m.subgraphs[0].inputs[0]]
        for k, v in fields.items():
            setattr(t, k, v)
    return edited(tiny_mobilenet_tflite(), edit)


def test_batch_above_one_refused():
    with pytest.raises(UnsupportedModelError, match=r"^model input '.*' has batch 2 \(shape "
                       r"\(2, 8, 8, 3\)\); the accelerator runs one input at a time"):
        load_graph(_tiny_input_edit(shape=[2, 8, 8, 3]))


def test_dynamic_batch_accepted_other_dynamic_dimensions_refused():
    assert load_graph(_tiny_input_edit(shapeSignature=[-1, 8, 8, 3])).input.dynamic_batch
    with pytest.raises(UnsupportedModelError, match=r"shape signature \(-1, -1, 8, 3\) leaves "
                       r"a dimension other than the batch open"):
        load_graph(_tiny_input_edit(shapeSignature=[-1, -1, 8, 3]))


def test_cli_names_the_softmax_the_accelerator_cannot_hold(tmp_path, capsys):
    """keras.applications.MobileNet with 1100 classes maps layer for layer, but the
    SoftmaxUnit holds 1024 logits: the error names the model's op and the limit to raise,
    not a descriptor number or padded channel count."""
    from keras_models import mobilenet_tflite
    model = tmp_path / "mobilenet_1100.tflite"
    model.write_bytes(mobilenet_tflite(fixed_batch=False, classes=1100))
    softmax = load_graph(model).ops[-1]
    code, err = _cli(["--model", str(model), "--check-images", "1",
                      "--out", str(tmp_path / "build")], capsys)
    assert code == 2
    assert err == (f"gen-accel: error: {model}: layer {softmax.index} "
                   f"'{softmax.name.split(';')[0]}' (SOFTMAX): softmax of 1100 classes exceeds "
                   "1024: raise Limits.max_classes")
    assert not (tmp_path / "build").exists() and not list(tmp_path.glob(".build.*"))


def test_cli_tflite_abort_on_a_model_is_one_line_naming_it(tmp_path, capsys, monkeypatch):
    """TFLite abort()s inside its softmax setup on a model the reader would refuse; with
    that rule switched off (standing for any abort the reader cannot foresee) the build,
    even run in-process, still ends in one error line naming the model file, and leaves
    nothing behind."""
    from keras_models import tiny_mobilenet_tflite
    from tflite_edit import edited

    from quantize import tflite_graph

    def collapse_logits(m):
        sg = m.subgraphs[0]
        sg.tensors[sg.operators[4].outputs[0]].quantization.scale = [2.0 ** -26]
    model = tmp_path / "collapsed.tflite"
    model.write_bytes(edited(tiny_mobilenet_tflite(), collapse_logits))
    monkeypatch.setattr(tflite_graph, "_validate_softmax", lambda op: None)
    code, err = _cli(["--model", str(model), "--check-images", "1",
                      "--out", str(tmp_path / "build")], capsys)
    assert code == 2
    assert err.startswith(f"gen-accel: error: {model}: TFLite's reference interpreter crashed "
                          "(SIGABRT) preparing or running the model")
    assert err.endswith("its quantization is degenerate or unsupported")
    assert not (tmp_path / "build").exists() and not list(tmp_path.glob(".build.*"))
