"""Mute what native libraries write straight to file descriptor 2.

TensorFlow 2.21 logs start-up notes (oneDNN, CUDA probe, CPU features) through absl before
absl is initialised, ignoring TF_CPP_MIN_LOG_LEVEL, and the TFLite converter prints its
settings with C stdio; neither goes through Python's `sys.stderr`, so only the descriptor
itself can be muted. Exceptions still propagate, after stderr is back.
"""
from __future__ import annotations

import contextlib
import os
import sys


@contextlib.contextmanager
def muted():
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def load_tensorflow_quietly() -> None:
    """Import TensorFlow and run its device probe with its start-up logging muted."""
    with muted():
        import tensorflow as tf
        tf.config.list_physical_devices()
