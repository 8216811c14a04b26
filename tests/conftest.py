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
