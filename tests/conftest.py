import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import yowasp_warm  # noqa: E402  (tests/ is on sys.path: this conftest's folder)


@pytest.fixture(scope="session")
def yowasp_tools():
    """Compiles YoWASP tools once per session (and, through the cache folder's lock, once per
    machine): call it with the tools a test needs; returns the seconds each warm-up took."""
    took: dict[str, float] = {}

    def ensure(tools) -> dict[str, float]:
        took.update(yowasp_warm.warm(tools))
        return took
    return ensure


@pytest.fixture(autouse=True)
def _yowasp_tools_compiled(request):
    """Tests that run YoWASP tools (`yowasp_warm.TOOLS_BY_TEST`) find them compiled, so no
    test spends its own time limit on the one-off WebAssembly compile."""
    tools = yowasp_warm.tools_for(request.path.name, getattr(request.node, "originalname", ""))
    if tools:
        request.getfixturevalue("yowasp_tools")(tools)


class SeedNetwork:
    """One converted seed network with its parsed graph and golden interpreter."""

    def __init__(self, alpha: float):
        from quantize.convert import golden_interpreter
        from quantize.model import ModelSpec
        from quantize.pipeline import build_int8_model
        from quantize.tflite_graph import load_graph
        self.model = build_int8_model(ModelSpec(alpha))
        self.graph = load_graph(self.model.tflite)
        self.interpreter = golden_interpreter(self.model.tflite)

    def int8_inputs(self, n: int) -> np.ndarray:
        from quantize.pipeline import sample_inputs
        return sample_inputs(self.graph, n)[0]


_networks: dict[float, SeedNetwork] = {}


def seed_network(alpha: float) -> SeedNetwork:
    if alpha not in _networks:
        _networks[alpha] = SeedNetwork(alpha)
    return _networks[alpha]


@pytest.fixture(scope="session")
def net_025():
    return seed_network(0.25)


@pytest.fixture(scope="session")
def net_100():
    return seed_network(1.0)


# ---- a gen-accel build for the host-driver tests (test_driver.py, test_soc.py) --------------

SMALLEST = dict(pw_out=2, pw_in=2, dw_lanes=1, bus_bytes=4, max_burst=8, max_outstanding=2,
                act_buffer_bytes=4096, weight_buffer_bytes=2048, clock_mhz=70)


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory):
    """gen-accel --model <six-op miniature> --config <smallest> --out build/."""
    from keras_models import tiny_mobilenet_tflite
    from flow import cli
    root = tmp_path_factory.mktemp("driver")
    model, config = root / "tiny.tflite", root / "smallest.json"
    model.write_bytes(tiny_mobilenet_tflite())
    config.write_text(json.dumps(SMALLEST))
    out = root / "build"
    assert cli.main(["--model", str(model), "--config", str(config), "--check-images", "1",
                     "--out", str(out), "-q"], isolate=False) == 0
    return out


@pytest.fixture(scope="session")
def images(tmp_path_factory):
    """Two real CIFAR-10 test images of different classes as PNG files."""
    from PIL import Image

    from quantize import assets
    ims, labels = assets.sample_test_images()
    second = int(np.flatnonzero(labels != labels[0])[0])
    root = tmp_path_factory.mktemp("images")
    paths = []
    for i in (0, second):
        paths.append(root / f"test{i}.png")
        Image.fromarray(ims[i]).save(paths[-1])
    return paths
