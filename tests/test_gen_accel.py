"""The main job on built-in defaults produces a complete, self-describing build folder."""
import json
import logging

import pytest
from keras_models import int8_tflite

from flow import cli


def test_gen_accel_defaults(tmp_path):
    out = tmp_path / "build"
    assert cli.main(["--out", str(out), "--check-images", "4", "-q"]) == 0
    manifest = json.loads((out / "MANIFEST.json").read_text())
    for name in ("model.tflite", "layers.json", "layers.md", "config.json", "tflite_check.json",
                 "firmware/program.bin", "firmware/ddr_image.bin", "firmware/memory_map.json",
                 "firmware/mnet_accel.h", "rtl/mnet_accel.v"):
        assert name in manifest["files"]
    check = json.loads((out / "tflite_check.json").read_text())
    assert check == {**check, "images": 4, "layers": 26, "bit_exact": True}
    layers = json.loads((out / "layers.json").read_text())
    assert layers[0]["op"] == "CONV_2D" and layers[-1]["op"] == "SOFTMAX"
    assert manifest["total_macs"] == sum(r["macs"] for r in layers)
    assert "module mnet_accel(" in (out / "rtl/mnet_accel.v").read_text()
    descriptors = json.loads((out / "firmware/memory_map.json").read_text())["descriptors"]
    assert [d["index"] for d in descriptors] == list(range(26))    # one per layer, untiled
    assert [d["graph_op"] for d in descriptors] == list(range(26))
    assert "#define MNET_LAYER_COUNT 26u" in (out / "firmware/mnet_accel.h").read_text()
    # Rerunning replaces the folder atomically and leaves no staging folders behind.
    assert cli.main(["--out", str(out), "--check-images", "1", "-q"]) == 0
    assert not list(tmp_path.glob(".build.*"))


def test_gen_accel_verify_in_verilator(tmp_path, caplog):
    """--verify runs real images through the Verilated RTL: bit-exact on every layer, and the
    cycle model's prediction equal to the measured LAYER_CYCLES per layer and overall."""
    from sim.verilator_runner import verilator_available
    why = verilator_available()
    if why:
        pytest.skip(why)
    out = tmp_path / "build"
    caplog.set_level(logging.INFO, logger="gen-accel")
    assert cli.main(["--out", str(out), "--check-images", "1", "--verify", "1"]) == 0
    cycles = json.loads((out / "rtl_verify.json").read_text())["per_image"][0]["cycles"]
    assert caplog.messages[-1].endswith(      # the final line says what the RTL run showed
        f"bit-exact vs TFLite on 1 images; RTL (Verilator) bit-exact on 1 images, {cycles:,} cycles)")
    verdict = json.loads((out / "rtl_verify.json").read_text())
    assert verdict["bit_exact"] and verdict["images"] == 1 and not verdict["failures"]
    rep = json.loads((out / "report" / "layer_cycles.json").read_text())
    assert len(rep["layers"]) == 26
    for row in rep["layers"]:
        assert row["measured"] > 0 and row["predicted_total"] == row["measured"], row
    run = rep["run"]
    assert run["predicted"] == run["measured"]
    assert (out / "report" / "layer_cycles.png").is_file()


@pytest.mark.slow
def test_gen_accel_synth_ulx3s(tmp_path):
    """The full accelerator, out of context on the ULX3S 85F at the board's default config."""
    out = tmp_path / "build"
    code = cli.main(["--out", str(out), "--check-images", "1", "--synth", "ulx3s-85f", "-q"])
    report = json.loads((out / "synth" / "synth_report.json").read_text()) if code == 0 else None
    assert code == 0, "synthesis failed or missed timing (see the log above)"
    assert report["fmax_mhz"] >= report["target_mhz"] > 0
    assert json.loads((out / "MANIFEST.json").read_text())["synthesis"]["fmax_mhz"] == report["fmax_mhz"]


def _small_mobilenet(x):
    """Conv s2, depthwise, pointwise, mean, dense, softmax: every engine of the accelerator."""
    from keras import layers
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = layers.Conv2D(16, 1, activation="relu")(x)
    return layers.Softmax()(layers.Dense(10)(layers.GlobalAveragePooling2D()(x)))


@pytest.mark.parametrize("shape,inputs", [
    ((20, 28, 3), "real CIFAR-10 test images"),            # non-square: images cropped to 20x28
    ((12, 16, 1), "seeded random int8 tensors (the model input is not an RGB image)"),
])
def test_gen_accel_any_input_shape_is_checked(tmp_path, shape, inputs):
    """A --model whose input is not a square RGB image is still checked bit-exact against
    TFLite, in the functional model and in the Verilated RTL, never skipped."""
    from sim.verilator_runner import verilator_available
    why = verilator_available()
    if why:
        pytest.skip(why)
    model = tmp_path / "small.tflite"
    model.write_bytes(int8_tflite(_small_mobilenet, shape))
    out = tmp_path / "build"
    assert cli.main(["--model", str(model), "--check-images", "3", "--verify", "2",
                     "--out", str(out), "-q"]) == 0
    check = json.loads((out / "tflite_check.json").read_text())
    assert check == {**check, "images": 3, "inputs": inputs, "layers": 6, "bit_exact": True}
    assert (check["top1_on_sample"] is None) == (shape[2] != 3)
    rtl = json.loads((out / "rtl_verify.json").read_text())
    assert rtl == {**rtl, "images": 2, "inputs": inputs, "bit_exact": True, "failures": []}
