"""The main job on built-in defaults produces a complete, self-describing build folder."""
import json

from rtl_gen import cli


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
    # Rerunning replaces the folder atomically and leaves no staging folders behind.
    assert cli.main(["--out", str(out), "--check-images", "1", "-q"]) == 0
    assert not list(tmp_path.glob(".build.*"))
