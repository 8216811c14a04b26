"""Float and int8 accuracy of a trained seed network on the CIFAR-10 test set, and export of
the checkpoint into the package assets.

    python -m quantize.evaluate --alpha 0.25 --weights runs/a0.25/model.weights.h5 --export

int8 accuracy comes from the bit-exact numpy reference run on whole batches (fast); a sample
of images is cross-checked against TFLite's BUILTIN_REF interpreter on every layer.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import assets, native_stderr
from .convert import golden_interpreter, golden_run, quantize_input
from .data import DatasetError, center_crop, default_dataset_path, load_cifar10, normalize
from .model import ModelSpec
from .pipeline import build_int8_model
from .reference import run_graph, run_op
from .tflite_graph import load_graph
from .verify import assert_bit_exact

PROG = "python -m quantize.evaluate"


def int8_predictions(graph, x_int8: np.ndarray, batch: int = 250) -> np.ndarray:
    preds = []
    for i in tqdm(range(0, len(x_int8), batch), desc="int8 reference", unit="batch"):
        v = x_int8[i: i + batch]
        for op in graph.ops:
            v = run_op(op, v)
        preds.append(np.argmax(v.reshape(len(v), -1), axis=1))
    return np.concatenate(preds)


def evaluate(spec: ModelSpec, weights: Path, data, crosscheck: int = 20) -> dict:
    m = build_int8_model(spec, str(weights))
    xte, yte = data["test"]
    crop = center_crop(xte, spec.input_size)
    float_pred = np.argmax(m.keras_model.predict(normalize(crop), batch_size=500, verbose=0), axis=1)
    graph = load_graph(m.tflite)
    x8 = quantize_input(xte, graph.input.scale[0], graph.input.zp, spec.input_size)
    int8_pred = int8_predictions(graph, x8)
    interp = golden_interpreter(m.tflite)
    for x in x8[:crosscheck]:
        assert_bit_exact(graph, run_graph(graph, x[None]), golden_run(interp, x[None]))
    return {"alpha": spec.alpha, "input_size": spec.input_size, "test_images": int(len(yte)),
            "float_accuracy": float(np.mean(float_pred == yte)),
            "int8_accuracy": float(np.mean(int8_pred == yte)),
            "int8_float_agreement": float(np.mean(int8_pred == float_pred)),
            "tflite_crosschecked_images": crosscheck}


def read_training_result(path: Path) -> dict:
    """A training run's result.json, checked before the (long) evaluation starts."""
    if not path.is_file():
        raise ValueError(f"{path}: no such training result file")
    try:
        result = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a JSON training result ({e})") from None
    if not isinstance(result, dict):
        raise ValueError(f"{path}: a training result is a JSON object, got "
                         f"{type(result).__name__}")
    return result


def export(spec: ModelSpec, weights: Path, result: dict,
           training_result: Path | None = None) -> Path:
    """Ship a run in the package assets: its weights, its accuracy JSON and, from beside its
    training result.json, the history and curves mobilenet-train wrote there."""
    dst = assets.weights_path(spec.alpha, spec.input_size)
    shutil.copyfile(weights, dst)
    dst.with_name(dst.name.replace("weights.h5", "accuracy.json")).write_text(
        json.dumps(result, indent=1) + "\n")
    for name in ("history.json", "training_curves.png") if training_result else ():
        src = training_result.with_name(name)
        if src.is_file():
            shutil.copyfile(src, dst.with_name(dst.name.replace("weights.h5", name)))
    return dst


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--alpha", type=float, required=True)
    p.add_argument("--input-size", type=int, default=28)
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--data", type=Path, default=None)
    p.add_argument("--export", action="store_true",
                   help="copy weights + accuracy (and the training run's history and curves) "
                        "into assets/")
    p.add_argument("--training-result", type=Path, help="training result.json to record")
    args = p.parse_args(argv)
    try:
        spec = ModelSpec(args.alpha, args.input_size)
        if not args.weights.is_file():
            raise ValueError(f"{args.weights}: no such weights file")
        training = read_training_result(args.training_result) if args.training_result else None
        native_stderr.load_tensorflow_quietly()
        result = evaluate(spec, args.weights, load_cifar10(args.data or default_dataset_path()))
    except (ValueError, DatasetError, OSError) as e:   # WeightsError is a ValueError
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    if training is not None:
        result["training"] = training
    print(json.dumps(result, indent=1))
    if args.export:
        print(f"exported {export(spec, args.weights, result, args.training_result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
