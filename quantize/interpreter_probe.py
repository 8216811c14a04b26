"""Try a user's model in TFLite's reference interpreter in a child process first.

TFLite's kernels abort() on some quantization they cannot handle (a CHECK in a kernel's
Prepare, e.g. the softmax's multiplier setup) instead of returning an error, and an abort
ends the whole process without running any Python: no error line, no cleanup. The reader
refuses every such case it knows of; this catches the ones it does not. The child builds
the interpreter and runs one input of zeros; if a signal ends it, the caller gets one
UnsupportedModelError naming the model file and TFLite's last words.

    python -m quantize.interpreter_probe MODEL.tflite    (the child's side)
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from .tflite_graph import UnsupportedModelError

PROBE_TIMEOUT_S = 600
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def probe(path: str | os.PathLike) -> None:
    """Raise UnsupportedModelError if the interpreter kills a process on `path`'s model.
    Any other failure is left for the caller's own run, which reports it as an error."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join([str(_PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-m", __name__, os.fspath(path)], env=env,
                         capture_output=True, text=True, errors="replace", timeout=PROBE_TIMEOUT_S)
    if run.returncode < 0:
        raise UnsupportedModelError(f"{path}: {death_message(-run.returncode, run.stderr)}")


def death_message(signum: int, stderr: str) -> str:
    """One line: which signal ended TFLite's reference interpreter, and its last message."""
    name = signal.Signals(signum).name if signum in signal.Signals._value2member_map_ else signum
    said = last_message(stderr)
    return (f"TFLite's reference interpreter crashed ({name}) preparing or running the model"
            f"{f' ({said})' if said else ''}; its quantization is degenerate or unsupported")


# absl's info / warning / error lines (start-up notes such as the CUDA probe), not the
# fatal ones ('F...') a failed CHECK prints.
_NOT_FATAL = re.compile(r"^([IWE]\d{4} |WARNING: All log messages)")


def last_message(stderr: str, limit: int = 300) -> str:
    """The last line TFLite printed that is not a start-up note, e.g. its failed CHECK."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not _NOT_FATAL.match(ln)]
    return lines[-1][:limit] if lines else ""


def _run_once(path: str) -> None:
    import numpy as np

    from .native_stderr import load_tensorflow_quietly
    load_tensorflow_quietly()       # its start-up notes would bury TFLite's last words
    from .convert import golden_interpreter, golden_run
    interp = golden_interpreter(Path(path).read_bytes())
    inp = interp.get_input_details()[0]
    golden_run(interp, np.zeros(inp["shape"], np.int8))


if __name__ == "__main__":
    try:
        _run_once(sys.argv[1])
    except Exception as e:  # noqa: BLE001 - only a signal death matters to the parent
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
