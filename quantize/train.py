"""The seed's training recipe: standardize, random horizontal flip, random 32->28 crop,
RMSProp, cross-entropy, 60 epochs by default. Resumable (Keras BackupAndRestore), with a
progress bar, a history JSON and a PNG of the training curves.

    mobilenet-train --alpha 0.25 --data ../shared/datasets/cifar10-jpeg --out runs/a0.25
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from . import native_stderr
from .data import DatasetError, center_crop, default_dataset_path, load_cifar10, normalize
from .model import ModelSpec, build_mobilenet

WEIGHTS_NAME = "model.weights.h5"


def make_datasets(data, spec: ModelSpec, batch_size: int, seed: int = 0):
    import tensorflow as tf
    xtr, ytr = data["train"]
    xte, yte = data["test"]
    size = spec.input_size
    if xtr.shape[1] < size:
        raise DatasetError(f"images are {xtr.shape[1]}px, smaller than input size {size}")

    def augment(img, label):
        img = tf.image.random_flip_left_right(img, seed=seed)
        img = tf.image.random_crop(img, (size, size, 3), seed=seed)
        return img, label

    def to_float(img, label):
        img = tf.numpy_function(lambda a: normalize(a), [img], tf.float32)
        img.set_shape((None, size, size, 3))
        return img, label

    train = (tf.data.Dataset.from_tensor_slices((xtr, ytr))
             .shuffle(len(xtr), seed=seed, reshuffle_each_iteration=True)
             .map(augment, num_parallel_calls=tf.data.AUTOTUNE)
             .batch(batch_size).map(to_float).prefetch(tf.data.AUTOTUNE))
    test = (tf.data.Dataset.from_tensor_slices((normalize(center_crop(xte, size)), yte))
            .batch(512).prefetch(tf.data.AUTOTUNE))
    return train, test


def train(spec: ModelSpec, data, out_dir: Path, epochs: int = 60, batch_size: int = 128,
          lr: float = 1e-3, seed: int = 0, verbose: int = 1) -> dict:
    import keras
    keras.utils.set_random_seed(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_ds, test_ds = make_datasets(data, spec, batch_size, seed)
    steps = int(np.ceil(len(data["train"][0]) / batch_size)) * epochs
    model = build_mobilenet(spec)
    model.compile(
        optimizer=keras.optimizers.RMSprop(keras.optimizers.schedules.CosineDecay(lr, steps)),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )
    history_path = out_dir / "history.json"
    history = json.loads(history_path.read_text()) if history_path.exists() else []

    class SaveProgress(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            history.append({"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}})
            history_path.write_text(json.dumps(history, indent=1))
            self.model.save_weights(out_dir / WEIGHTS_NAME)

    t0 = time.time()
    model.fit(train_ds, validation_data=test_ds, epochs=epochs, verbose=verbose,
              callbacks=[keras.callbacks.BackupAndRestore(str(out_dir / "backup")), SaveProgress()])
    loss, acc = model.evaluate(test_ds, verbose=0)
    result = {"alpha": spec.alpha, "input_size": spec.input_size, "epochs": epochs,
              "float_test_accuracy": float(acc), "float_test_loss": float(loss),
              "test_images": int(len(data["test"][0])), "train_seconds_this_run": time.time() - t0}
    (out_dir / "result.json").write_text(json.dumps(result, indent=1))
    plot_history(history, out_dir / "training_curves.png")
    return result


def plot_history(history: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    if not history:
        return
    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for key, ax in (("accuracy", a), ("loss", b)):
        ax.plot(ep, [h[key] for h in history], label="train")
        ax.plot(ep, [h[f"val_{key}"] for h in history], label="test")
        ax.set_xlabel("epoch"), ax.set_ylabel(key), ax.legend(), ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="mobilenet-train", description=__doc__.split("\n\n")[0])
    p.add_argument("--alpha", type=float, default=0.25,
                   help="width multiplier: channels = int(base channels x alpha); 0 < alpha "
                        "<= 4 (default 0.25)")
    p.add_argument("--input-size", type=int, default=28,
                   help="side of the square input, random crops of the 32x32 images when "
                        "smaller (8..512, default 28)")
    p.add_argument("--epochs", type=int, default=60,
                   help="epochs to train, counting those a resumed run already did (default 60)")
    p.add_argument("--batch-size", type=int, default=128, help="images per step (default 128)")
    p.add_argument("--lr", type=float, default=1e-3,
                   help="initial RMSProp learning rate, cosine-decayed to 0 (default 1e-3)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the weight init, shuffling and augmentation (default 0)")
    p.add_argument("--data", type=Path, default=None,
                   help="CIFAR-10 image folder or python batches (default: $CIFAR10_PATH, "
                        "../shared/datasets/cifar10-jpeg, else Keras' downloader)")
    p.add_argument("--out", type=Path, required=True,
                   help="run folder: weights, history.json, result.json, training_curves.png "
                        "and the resume backup; an existing run there is resumed")
    return p.parse_args(argv)


def check_args(args) -> ModelSpec:
    """Refuse bad options before TensorFlow loads (seconds) or data decodes (minutes)."""
    spec = ModelSpec(args.alpha, args.input_size)
    if args.epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {args.epochs}")
    if args.batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {args.batch_size}")
    if not (math.isfinite(args.lr) and args.lr > 0):   # nan would train to a nan loss
        raise ValueError(f"learning rate must be a finite number > 0, got {args.lr}")
    if args.seed < 0:
        raise ValueError(f"seed must be >= 0, got {args.seed}")
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"{args.out}: output path exists and is not a directory")
    return spec


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        spec = check_args(args)
        native_stderr.load_tensorflow_quietly()
        data = load_cifar10(args.data or default_dataset_path())
        result = train(spec, data, args.out, args.epochs, args.batch_size, args.lr, args.seed)
    except (ValueError, DatasetError, OSError) as e:
        print(f"mobilenet-train: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1))
    return 0

if __name__ == "__main__":
    sys.exit(main())
