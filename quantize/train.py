"""The seed's training recipe: standardize, random horizontal flip, random 32->28 crop,
RMSProp, cross-entropy, 60 epochs by default (cosine learning rate per epoch). Resumable
(Keras BackupAndRestore), with a progress bar, a history JSON and a PNG of the training
curves. Any Keras backend: KERAS_BACKEND=jax trains on a GPU machine, and the weights file
is the same for every backend.

    mobilenet-train --alpha 0.25 --data ../shared/datasets/cifar10-jpeg --out runs/a0.25
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from . import native_stderr
from .data import DatasetError, center_crop, default_dataset_path, load_cifar10, normalize
from .model import ModelSpec, build_mobilenet

WEIGHTS_NAME = "model.weights.h5"


class AugmentedBatches:
    """The seed's augmentation as numpy batches (random horizontal flip, random crop, per-channel
    standardization), so one pipeline feeds every Keras backend: TensorFlow on a CPU here, JAX
    or PyTorch on a GPU machine. Each batch's randomness is a function of (seed, epoch, batch)
    alone, so batches prepared ahead by worker threads are reproducible."""

    def __init__(self, x, y, size: int, batch_size: int, seed: int):
        self.x, self.y, self.size, self.batch_size, self.seed = x, y, size, batch_size, seed
        self.epoch = 0
        self.order = np.random.default_rng([seed, 0]).permutation(len(x))

    def __len__(self) -> int:
        return int(math.ceil(len(self.x) / self.batch_size))

    def batch(self, i: int):
        idx = self.order[i * self.batch_size:(i + 1) * self.batch_size]
        x = self.x[idx]
        rng = np.random.default_rng([self.seed, self.epoch, i])
        n, h, w = x.shape[:3]
        s = self.size
        top = rng.integers(0, h - s + 1, n)
        left = rng.integers(0, w - s + 1, n)
        crop = np.empty((n, s, s, x.shape[3]), x.dtype)
        for t in np.unique(top):                  # plain slices per offset: ~10x fancy indexing
            for l in np.unique(left[top == t]):
                m = (top == t) & (left == l)
                crop[m] = x[m, t:t + s, l:l + s]
        flip = rng.random(n) < 0.5
        crop[flip] = crop[flip, :, ::-1]
        return normalize(crop), self.y[idx]

    def next_epoch(self) -> None:
        self.epoch += 1
        self.order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.x))


def make_datasets(data, spec: ModelSpec, batch_size: int, seed: int = 0):
    """(training PyDataset, (test images, labels)) for model.fit."""
    import keras
    xtr, ytr = data["train"]
    xte, yte = data["test"]
    size = spec.input_size
    if xtr.shape[1] < size:
        raise DatasetError(f"images are {xtr.shape[1]}px, smaller than input size {size}")
    batches = AugmentedBatches(xtr, ytr, size, batch_size, seed)

    class Train(keras.utils.PyDataset):
        def __init__(self):
            # Two threads prepare batches while the accelerator runs the previous step.
            super().__init__(workers=2, use_multiprocessing=False, max_queue_size=8)

        def __len__(self):
            return len(batches)

        def __getitem__(self, i):
            return batches.batch(i)

        def on_epoch_end(self):
            batches.next_epoch()

    return Train(), (normalize(center_crop(xte, size)), yte)


def cosine_lr(lr: float, epoch: int, epochs: int) -> float:
    """Cosine decay per epoch, from lr at epoch 0 towards 0 at `epochs`."""
    return 0.5 * lr * (1 + math.cos(math.pi * min(epoch, epochs) / epochs))


def epochs_within(budget_s: float, epoch_s: float, epochs: int) -> int:
    """Epochs of `epoch_s` seconds that fit a time budget: at least 1, at most `epochs`."""
    return max(1, min(epochs, int(budget_s // max(epoch_s, 1e-9))))


def train(spec: ModelSpec, data, out_dir: Path, epochs: int = 60, batch_size: int = 128,
          lr: float = 1e-3, seed: int = 0, verbose: int = 1,
          time_budget_s: float | None = None) -> dict:
    import keras
    keras.utils.set_random_seed(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_ds, test_data = make_datasets(data, spec, batch_size, seed)
    model = build_mobilenet(spec)
    model.compile(
        optimizer=keras.optimizers.RMSprop(lr),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )
    history_path = out_dir / "history.json"
    history = json.loads(history_path.read_text()) if history_path.exists() else []
    plan = {"epochs": epochs}

    class Schedule(keras.callbacks.Callback):
        """Per-epoch cosine learning rate over plan["epochs"]; with a time budget, the plan is
        cut on this run's second epoch to the epochs that fit, and the cosine follows."""
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.time()
            self.model.optimizer.learning_rate.assign(cosine_lr(lr, epoch, plan["epochs"]))

        def on_epoch_end(self, epoch, logs=None):
            plan["run_epochs"] = plan.get("run_epochs", 0) + 1
            # Cut on this run's second epoch: the first one includes the compilation.
            elapsed = time.time() - t_start
            if time_budget_s is not None and "cut" not in plan and (
                    plan["run_epochs"] == 2 or elapsed >= time_budget_s):
                took = time.time() - self.t0
                plan["epochs"] = epoch + epochs_within(time_budget_s - elapsed + took, took,
                                                       epochs - epoch)
                plan["cut"] = True
                print(f"time budget {time_budget_s:.0f} s: training {plan['epochs']} epochs",
                      flush=True)
            history.append({"epoch": epoch + 1, "lr": cosine_lr(lr, epoch, plan["epochs"]),
                            **{k: float(v) for k, v in (logs or {}).items()}})
            history_path.write_text(json.dumps(history, indent=1))
            self.model.save_weights(out_dir / WEIGHTS_NAME)
            if epoch + 1 >= plan["epochs"]:
                self.model.stop_training = True

    t_start = time.time()
    model.fit(train_ds, validation_data=test_data, validation_batch_size=512, epochs=epochs,
              verbose=verbose,
              callbacks=[keras.callbacks.BackupAndRestore(str(out_dir / "backup")), Schedule()])
    loss, acc = model.evaluate(*test_data, batch_size=512, verbose=0)
    result = {"alpha": spec.alpha, "input_size": spec.input_size,
              "epochs": len(history), "batch_size": batch_size, "lr": lr,
              "schedule": f"RMSProp, cosine per epoch over {plan['epochs']} epochs",
              "backend": keras.backend.backend(),
              "float_test_accuracy": float(acc), "float_test_loss": float(loss),
              "test_images": int(len(data["test"][0])), "train_seconds_this_run": time.time() - t_start}
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
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="stop after the epochs that fit this many seconds (measured on the "
                        "second epoch: the first one compiles), the cosine schedule fitted "
                        "to them (default: none)")
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
    if args.time_budget is not None and not (math.isfinite(args.time_budget)
                                             and args.time_budget > 0):
        raise ValueError(f"time budget must be a finite number of seconds > 0, got {args.time_budget}")
    if args.seed < 0:
        raise ValueError(f"seed must be >= 0, got {args.seed}")
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"{args.out}: output path exists and is not a directory")
    return spec


def keras_backend() -> str:
    """The backend Keras will load (KERAS_BACKEND, else Keras' config file, else tensorflow),
    read without importing Keras."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    cfg = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "keras.json"
    try:
        return json.loads(cfg.read_text()).get("backend", "tensorflow")
    except (OSError, ValueError):
        return "tensorflow"


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        spec = check_args(args)
        if keras_backend() == "tensorflow":
            native_stderr.load_tensorflow_quietly()
        data = load_cifar10(args.data or default_dataset_path())
        result = train(spec, data, args.out, args.epochs, args.batch_size, args.lr, args.seed,
                       time_budget_s=args.time_budget)
    except (ValueError, DatasetError, OSError) as e:
        print(f"mobilenet-train: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1))
    return 0

if __name__ == "__main__":
    sys.exit(main())
