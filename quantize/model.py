"""The seed paper's CIFAR-10 MobileNet (Table 1) as a Keras model, for any width multiplier
and input size.

conv 3x3/s2 -> 11 depthwise-separable blocks -> global average pool -> dense -> softmax,
each convolution followed by batch norm and ReLU (folded into the conv by the TFLite converter).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# (depthwise stride, pointwise output channels) for the 11 blocks of Table 1, at alpha = 1.
BLOCKS: tuple[tuple[int, int], ...] = (
    (1, 64), (1, 128), (1, 256), (1, 512),
    (1, 512), (1, 512), (1, 512), (1, 512), (1, 512),
    (1, 1024), (2, 1024),
)
STEM_CHANNELS = 32
NUM_CLASSES = 10
DEFAULT_INPUT_SIZE = 28
# Widest network the tools build: 4 x 1024 channels still fits the descriptors' 16-bit
# channel fields, and anything wider is a typo rather than a MobileNet.
MAX_ALPHA = 4.0


@dataclass(frozen=True)
class ModelSpec:
    """What identifies one network of the family."""
    alpha: float = 0.25
    input_size: int = DEFAULT_INPUT_SIZE
    num_classes: int = NUM_CLASSES

    def __post_init__(self):
        if not 0 < self.alpha <= MAX_ALPHA:   # also rejects nan
            raise ValueError(f"alpha must be > 0 and <= {MAX_ALPHA:g}, got {self.alpha}")
        if not 8 <= self.input_size <= 512:
            raise ValueError(f"input size must be in 8..512, got {self.input_size}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")

    def channels(self, base: int) -> int:
        # Keras applications' rule: int(filters * alpha), at least 1.
        return max(1, int(base * self.alpha))

    @property
    def name(self) -> str:
        return f"mobilenet_a{self.alpha:g}_r{self.input_size}"


def build_mobilenet(spec: ModelSpec = ModelSpec()):
    """Return an (uncompiled) Keras model of the seed network."""
    import keras
    from keras import layers

    def bn_relu(x, name):
        # momentum 0.9: moving statistics settle within an epoch (short CPU runs).
        x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
        return layers.ReLU(name=f"{name}_relu")(x)

    inputs = keras.Input((spec.input_size, spec.input_size, 3), name="input_image")
    x = layers.Conv2D(spec.channels(STEM_CHANNELS), 3, strides=2, padding="same",
                      use_bias=False, name="conv1")(inputs)
    x = bn_relu(x, "conv1")
    for i, (stride, out_ch) in enumerate(BLOCKS):
        x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False,
                                   name=f"block_{i}_depthwise")(x)
        x = bn_relu(x, f"block_{i}_depthwise")
        x = layers.Conv2D(spec.channels(out_ch), 1, use_bias=False, name=f"block_{i}_project")(x)
        x = bn_relu(x, f"block_{i}_pointwise")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dense(spec.num_classes, name="logits")(x)
    outputs = layers.Softmax(name="softmax")(x)
    return keras.Model(inputs, outputs, name=spec.name)


def calibrate_batchnorm(model, images, seed: int = 0) -> None:
    """Data-dependent init of an untrained model: set every BatchNorm's moving statistics to
    the statistics of its input on `images` (float, preprocessed), layer by layer, and give
    it a random affine. Activations then stay well-scaled through all 23 layers, so an
    untrained network quantizes to a non-degenerate int8 model (TFLite's softmax kernel
    rejects the ~1e-8 logit scales a plain random init collapses to)."""
    import keras
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        # model.input, not model.inputs: a one-element list is a different input structure
        # from the single array the probe is called with, and Keras warns on every call.
        probe = keras.Model(model.input, layer.input)
        x = np.asarray(probe(images, training=False))
        mean = x.reshape(-1, x.shape[-1]).mean(0)
        var = x.reshape(-1, x.shape[-1]).var(0) + 1e-3
        gamma = rng.uniform(0.5, 1.5, mean.shape).astype(np.float32)
        beta = rng.uniform(-0.5, 1.0, mean.shape).astype(np.float32)
        layer.set_weights([gamma, beta, mean.astype(np.float32), var.astype(np.float32)])
