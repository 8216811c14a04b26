import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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
