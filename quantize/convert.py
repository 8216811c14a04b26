"""Full-int8 TFLite conversion and the golden interpreter (BUILTIN_REF reference kernels)."""
from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np

from . import native_stderr
from .data import center_crop, normalize
from .tflite_graph import UnsupportedModelError


def to_int8_tflite(model, calibration_u8: np.ndarray) -> bytes:
    """Convert a Keras model to a full-int8 .tflite (int8 in/out), calibrated on uint8 images
    (N, H, W, 3); images larger than the model input are center-cropped."""
    return to_int8_tflite_from_float(
        model, normalize(center_crop(calibration_u8, model.input_shape[1])))


def to_int8_tflite_from_float(model, calib: np.ndarray) -> bytes:
    """Full-int8 conversion calibrated on float inputs exactly as the model sees them."""
    import tensorflow as tf

    def representative():
        for img in calib:
            yield [img[None]]

    # The converter narrates on stdout, through absl and with C stdio on descriptor 2; a CLI's
    # output should stay readable (a failed conversion still raises with its message).
    tf.get_logger().setLevel("ERROR")
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), native_stderr.muted():
        warnings.simplefilter("ignore")
        return _convert(tf, model, representative)


def _convert(tf, model, representative) -> bytes:
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


def golden_interpreter(tflite: bytes):
    """A tf.lite.Interpreter on the reference kernels that keeps every intermediate tensor.

    Only for models `load_graph` accepted: TFLite's kernels abort() the whole process on some
    degenerate quantization (see tflite_graph's softmax rule), which the reader refuses first.
    A Prepare() check the reader does not repeat comes back as UnsupportedModelError."""
    import tensorflow as tf
    try:
        with warnings.catch_warnings():  # tf.lite.Interpreter's deprecation notice
            warnings.simplefilter("ignore")
            interp = tf.lite.Interpreter(
                model_content=tflite,
                experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF,
                experimental_preserve_all_tensors=True)
        interp.allocate_tensors()
    except (RuntimeError, ValueError) as e:
        raise UnsupportedModelError(f"TFLite's reference interpreter refuses the model: "
                                    f"{_tflite_reason(e)}") from e
    return interp


def _tflite_reason(error: Exception) -> str:
    """TFLite's error on one line: it glues 'file.cc:line check' and 'Node number N (OP)
    failed to prepare.' together, sometimes over several lines."""
    text = " ".join(str(error).split())
    return text.replace("Node number", "; node number")[:400]


def golden_run(interp, x_int8: np.ndarray) -> dict[int, np.ndarray]:
    """Run one int8 input; return {tensor index: array} for every tensor the interpreter holds."""
    inp = interp.get_input_details()[0]
    interp.set_tensor(inp["index"], x_int8)
    interp.invoke()
    out = {}
    for d in interp.get_tensor_details():
        try:
            out[d["index"]] = interp.get_tensor(d["index"])
        except ValueError:
            pass  # tensors without data (e.g. optional inputs)
    return out


def quantize_input(images_u8: np.ndarray, scale: float, zero_point: int, size: int) -> np.ndarray:
    """Host-side preprocessing: center crop, standardize, quantize to the model's int8 input."""
    return quantize_images(center_crop(images_u8, size), scale, zero_point)


def quantize_images(images_u8: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Standardize uint8 images already fitted to the input, quantize to int8."""
    return np.clip(np.round(normalize(images_u8) / scale) + zero_point, -128, 127).astype(np.int8)
