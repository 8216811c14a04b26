"""mobilenet-train and quantize.evaluate refuse bad options and data sets with one line and
exit 2, before TensorFlow loads or a long run starts; the decoded-data cache follows changes
to the data set."""
import os
import pickle

import numpy as np
import pytest

from quantize import data, evaluate, train
from quantize.data import CLASSES, DatasetError


@pytest.fixture
def no_tensorflow(monkeypatch):
    """Fail the test if a command gets as far as loading TensorFlow."""
    def forbidden():
        raise AssertionError("TensorFlow loaded before the arguments were checked")
    monkeypatch.setattr(train.native_stderr, "load_tensorflow_quietly", forbidden)


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    return err[0]


@pytest.mark.parametrize("args,msg", [
    (["--batch-size", "0"], "batch size must be >= 1, got 0"),
    (["--lr", "nan"], "learning rate must be a finite number > 0, got nan"),
    (["--lr", "inf"], "learning rate must be a finite number > 0, got inf"),
    (["--lr", "0"], "learning rate must be a finite number > 0, got 0.0"),
    (["--epochs", "0"], "epochs must be >= 1, got 0"),
    (["--epochs", "-1"], "epochs must be >= 1, got -1"),
    (["--seed", "-1"], "seed must be >= 0, got -1"),
    (["--alpha", "nan"], "alpha must be > 0 and <= 4, got nan"),
])
def test_train_bad_option_before_tensorflow(tmp_path, capsys, no_tensorflow, args, msg):
    assert train.main(args + ["--out", str(tmp_path / "run")]) == 2
    assert _error_line(capsys) == f"mobilenet-train: error: {msg}"
    assert not (tmp_path / "run").exists()


def test_every_train_option_has_help(capsys):
    with pytest.raises(SystemExit):
        train.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option, help_words in (("--alpha ALPHA", "width multiplier"),
                               ("--input-size INPUT_SIZE", "side of the square input"),
                               ("--epochs EPOCHS", "epochs to train"),
                               ("--batch-size BATCH_SIZE", "images per step"),
                               ("--lr LR", "initial RMSProp learning rate"), ("--seed SEED", "seed of the"),
                               ("--data DATA", "CIFAR-10 image folder"),
                               ("--out OUT", "run folder")):
        assert f"{option} {help_words}" in text


def _batch_folder(tmp_path, first_batch: bytes):
    root = tmp_path / "cifar"
    root.mkdir()
    (root / "data_batch_1").write_bytes(first_batch)
    return root


@pytest.mark.parametrize("content,msg", [
    (b"", "empty file, not a CIFAR-10 python batch"),
    (b"this is not a pickle", "not a CIFAR-10 python batch (UnpicklingError)"),
    (pickle.dumps([1, 2, 3]), "not a CIFAR-10 python batch (no 'data' and 'labels')"),
    (pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}),
     "'data' must be uint8 rows of 3072 pixels, got uint8 (2, 100)"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 12]}),
     "'labels' must be 2 class numbers 0..9"),
])
def test_bad_python_batch(tmp_path, content, msg):
    root = _batch_folder(tmp_path, content)
    with pytest.raises(DatasetError) as e:
        data.load_cifar10(root)
    assert str(e.value) == f"{root / 'data_batch_1'}: {msg}"


def test_train_empty_batch_file_one_line(tmp_path, capsys):
    root = _batch_folder(tmp_path, b"")
    assert train.main(["--data", str(root), "--out", str(tmp_path / "run")]) == 2
    assert _error_line(capsys) == (f"mobilenet-train: error: {root / 'data_batch_1'}: empty "
                                   "file, not a CIFAR-10 python batch")


def _image_tree(root, value: int):
    from PIL import Image
    for split in ("train", "test"):
        for cls in CLASSES:
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (32, 32), (value, 0, 0)).save(root / split / cls / "0.png")


def test_cache_follows_changes_to_the_data_set(tmp_path, monkeypatch):
    """The decoded arrays are cached; editing, adding or removing an image decodes again."""
    monkeypatch.setenv("MOBILENET_ACCEL_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "tree"
    _image_tree(root, 10)
    assert data.load_cifar10(root, progress=False)["train"][0][0, 0, 0, 0] == 10
    assert data.load_cifar10(root, progress=False)["train"][0][0, 0, 0, 0] == 10   # cached

    edited = root / "train" / "airplane" / "0.png"
    stamp = edited.stat().st_mtime_ns
    _image_tree(root, 200)
    os.utime(edited, ns=(stamp + 10**9, stamp + 10**9))   # a later edit, whatever the clock
    assert data.load_cifar10(root, progress=False)["train"][0][0, 0, 0, 0] == 200

    from PIL import Image
    Image.new("RGB", (32, 32)).save(root / "train" / "cat" / "1.png")
    assert len(data.load_cifar10(root, progress=False)["train"][0]) == 11
    (root / "train" / "cat" / "1.png").unlink()
    assert len(data.load_cifar10(root, progress=False)["train"][0]) == 10


@pytest.mark.parametrize("content,msg", [
    (None, "no such training result file"),
    ("{", "not a JSON training result (Expecting property name enclosed in double quotes: "
          "line 1 column 2 (char 1))"),
    ("[1, 2]", "a training result is a JSON object, got list"),
])
def test_evaluate_bad_training_result_before_evaluating(tmp_path, capsys, monkeypatch, content,
                                                        msg):
    def forbidden(*args, **kwargs):
        raise AssertionError("evaluation started before --training-result was checked")
    monkeypatch.setattr(evaluate, "evaluate", forbidden)
    monkeypatch.setattr(evaluate.native_stderr, "load_tensorflow_quietly", forbidden)
    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(b"x")
    result = tmp_path / "result.json"
    if content is not None:
        result.write_text(content)
    code = evaluate.main(["--alpha", "0.25", "--weights", str(weights),
                          "--training-result", str(result)])
    assert code == 2
    assert _error_line(capsys) == f"python -m quantize.evaluate: error: {result}: {msg}"
