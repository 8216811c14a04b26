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


def to_int8_tflite_from_float(model, calib: np.ndarray, io_dtype: str = "int8") -> bytes:
    """Full-int8 conversion calibrated on float inputs exactly as the model sees them.
    `io_dtype` "float32" or "uint8" keeps that type at the model's input and output (the
    converter adds QUANTIZE / DEQUANTIZE there), as many exported models have."""
    import tensorflow as tf

    def representative():
        for img in calib:
            yield [img[None]]

    # The converter narrates on stdout, through absl and with C stdio on descriptor 2; a CLI's
    # output should stay readable (a failed conversion still raises with its message).
    tf.get_logger().setLevel("ERROR")
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), native_stderr.muted():
        warnings.simplefilter("ignore")
        return _convert(tf, model, representative, getattr(tf, io_dtype))


def _convert(tf, model, representative, io_dtype) -> bytes:
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = io_dtype
    conv.inference_output_type = io_dtype
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
    """Run one int8 input; return {tensor index: array} for every tensor the interpreter holds.
    A float32 / uint8 model gets the value its input QUANTIZE turns into exactly `x_int8`."""
    inp = interp.get_input_details()[0]
    interp.set_tensor(inp["index"], model_input_value(interp, inp, x_int8))
    interp.invoke()
    out = {}
    for d in interp.get_tensor_details():
        try:
            out[d["index"]] = interp.get_tensor(d["index"])
        except ValueError:
            pass  # tensors without data (e.g. optional inputs)
    return out


def model_input_value(interp, inp: dict, x_int8: np.ndarray) -> np.ndarray:
    """`x_int8` in the model's own input type: as is for int8; for a uint8 input (the same
    scale, zero point 128 higher) shifted by 128; for float32 dequantized with the int8
    tensor's scale, which the QUANTIZE's round(x / scale) maps back to the same integers."""
    if inp["dtype"] == np.int8:
        return x_int8
    if inp["dtype"] == np.uint8:
        return (x_int8.astype(np.int16) + 128).astype(np.uint8)
    scale, zero_point = _quantized_by(interp, inp["index"])
    return ((x_int8.astype(np.float32) - np.float32(zero_point)) * np.float32(scale))


def _quantized_by(interp, tensor: int) -> tuple[float, int]:
    """(scale, zero point) of the int8 tensor the QUANTIZE reading `tensor` writes."""
    for op in interp._get_ops_details():     # noqa: SLF001 - the only per-op view it offers
        if op["op_name"] == "QUANTIZE" and tensor in op["inputs"]:
            detail = interp._get_tensor_details(op["outputs"][0], 0)  # noqa: SLF001
            return detail["quantization"]
    raise UnsupportedModelError("the model's float input is not quantized by a QUANTIZE op")


def quantize_input(images_u8: np.ndarray, scale: float, zero_point: int, size: int) -> np.ndarray:
    """Host-side preprocessing: center crop, standardize, quantize to the model's int8 input."""
    return quantize_images(center_crop(images_u8, size), scale, zero_point)


def quantize_images(images_u8: np.ndarray, scale: float, zero_point: int,
                    norm: str = "cifar") -> np.ndarray:
    """uint8 images already fitted to the input, preprocessed as `norm` (the seed's CIFAR
    standardization by default; `input_norm`), quantized to int8."""
    from .input_norm import quantize_pixels
    return quantize_pixels(images_u8, scale, zero_point, norm)


def keras_application_int8(kind: str, side: int, alpha: float, classes: int) -> bytes:
    """keras.applications.`kind` (e.g. "MobileNet", "MobileNetV2") at side x side x 3, untrained
    but with its BatchNorm statistics calibrated on random images in the preprocessed range
    [-1, 1] (`model.calibrate_batchnorm`: a plain random init collapses the logits), converted
    to full int8 as the TF docs show. Deterministic (seeded); about a minute at 224x224."""
    import keras

    from .model import calibrate_batchnorm
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, kind)(alpha=alpha, input_shape=(side, side, 3),
                                              weights=None, classes=classes)
    images = np.random.default_rng(1).uniform(-1, 1, (12, side, side, 3)).astype(np.float32)
    calibrate_batchnorm(model, images[:4])
    return to_int8_tflite_from_float(model, images[4:])
