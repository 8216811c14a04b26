"""Small data shipped inside the package so the default flow needs no network and no data
set: trained weights per alpha, real CIFAR-10 calibration images and a sample of real test
images with labels. `python -m quantize.assets --data PATH` regenerates the image sets."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ASSETS = Path(__file__).resolve().parent / "assets"
IMAGES = ASSETS / "cifar10_sample.npz"
CALIBRATION_COUNT = 200
TEST_SAMPLE_COUNT = 100


def weights_path(alpha: float, input_size: int = 28) -> Path:
    return ASSETS / f"mobilenet_a{alpha:g}_r{input_size}.weights.h5"


def has_trained_weights(alpha: float, input_size: int = 28) -> bool:
    return weights_path(alpha, input_size).is_file()


def trained_accuracy(alpha: float, input_size: int = 28) -> dict | None:
    path = ASSETS / f"mobilenet_a{alpha:g}_r{input_size}.accuracy.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _images() -> dict[str, np.ndarray]:
    with np.load(IMAGES) as z:
        return {k: z[k] for k in z.files}


def calibration_images() -> np.ndarray:
    """uint8 (200, 32, 32, 3) real CIFAR-10 training images, 20 per class."""
    return _images()["calibration"]


def sample_test_images() -> tuple[np.ndarray, np.ndarray]:
    """uint8 (100, 32, 32, 3) real CIFAR-10 test images (10 per class) and their labels."""
    z = _images()
    return z["test_images"], z["test_labels"]


def export_images(data: dict, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)

    def per_class(x, y, n):
        idx = np.concatenate([rng.choice(np.flatnonzero(y == c), n // 10, replace=False)
                              for c in range(10)])
        return x[idx], y[idx]

    calib, _ = per_class(*data["train"], CALIBRATION_COUNT)
    test_x, test_y = per_class(*data["test"], TEST_SAMPLE_COUNT)
    ASSETS.mkdir(exist_ok=True)
    np.savez_compressed(IMAGES, calibration=calib, test_images=test_x, test_labels=test_y)
    return IMAGES


def main(argv=None) -> int:
    from .data import default_dataset_path, load_cifar10
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=None)
    args = p.parse_args(argv)
    print(export_images(load_cifar10(args.data or default_dataset_path())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
