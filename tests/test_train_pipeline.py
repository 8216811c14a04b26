"""The training input pipeline (numpy, any Keras backend) and the time-budget schedule."""
import math

import numpy as np

from quantize.data import normalize
from quantize.train import AugmentedBatches, cosine_lr, epochs_within


def _windows(img, size):
    h, w = img.shape[:2]
    for t in range(h - size + 1):
        for l in range(w - size + 1):
            win = img[t:t + size, l:l + size]
            yield win
            yield win[:, ::-1]


def test_batches_are_flipped_crops_of_their_own_images():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    y = np.arange(40)
    b = AugmentedBatches(x, y, 6, 16, seed=3)
    seen = []
    for i in range(len(b)):
        xb, yb = b.batch(i)
        assert xb.dtype == np.float32 and xb.shape == (len(yb), 6, 6, 3)
        for img, label in zip(xb, yb):
            assert any(np.array_equal(img, normalize(win[None])[0])
                       for win in _windows(x[label], 6))
        seen += list(yb)
    assert sorted(seen) == list(range(40))          # an epoch visits every image once


def test_batches_depend_on_seed_epoch_and_index_only():
    x = np.random.default_rng(2).integers(0, 256, (64, 8, 8, 3), dtype=np.uint8)
    y = np.arange(64)
    a, b = AugmentedBatches(x, y, 6, 16, seed=5), AugmentedBatches(x, y, 6, 16, seed=5)
    first = [a.batch(i) for i in (3, 0)]
    assert all(np.array_equal(u[0], v[0]) for u, v in zip(first, [b.batch(3), b.batch(0)]))
    a.next_epoch()
    assert not np.array_equal(a.batch(0)[1], first[1][1])   # reshuffled
    b.next_epoch()
    assert np.array_equal(a.batch(1)[0], b.batch(1)[0])


def test_cosine_schedule_and_budget():
    assert cosine_lr(1e-3, 0, 10) == 1e-3
    assert math.isclose(cosine_lr(1e-3, 5, 10), 5e-4)
    assert cosine_lr(1e-3, 12, 10) == 0.0
    assert epochs_within(100, 9.9, 60) == 10
    assert epochs_within(100, 200, 60) == 1     # always at least the epoch done
    assert epochs_within(1e6, 1, 60) == 60


def test_export_ships_weights_accuracy_history_and_curves(tmp_path, monkeypatch):
    import json

    from quantize import assets, evaluate
    from quantize.model import ModelSpec
    monkeypatch.setattr(assets, "ASSETS", tmp_path / "assets")
    (tmp_path / "assets").mkdir()
    run = tmp_path / "run"
    run.mkdir()
    files = {"model.weights.h5": b"weights", "result.json": b"{}",
             "history.json": b'[{"epoch": 1}]', "training_curves.png": b"png"}
    for name, content in files.items():
        (run / name).write_bytes(content)
    dst = evaluate.export(ModelSpec(0.5), run / "model.weights.h5", {"int8_accuracy": 0.5},
                          run / "result.json")
    out = tmp_path / "assets"
    assert dst == out / "mobilenet_a0.5_r28.weights.h5" and dst.read_bytes() == b"weights"
    assert json.loads((out / "mobilenet_a0.5_r28.accuracy.json").read_text()) == \
        {"int8_accuracy": 0.5}
    assert (out / "mobilenet_a0.5_r28.history.json").read_bytes() == files["history.json"]
    assert (out / "mobilenet_a0.5_r28.training_curves.png").read_bytes() == b"png"
