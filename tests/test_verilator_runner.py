"""Housekeeping of the Verilator build cache: where it lives, pruning, concurrent builds of the
same design (no C++ compile: the Verilator step is stubbed)."""
import os
import threading
import time
from pathlib import Path

import pytest

from sim import verilator_runner as vr

VERILOG = "module sim_top(input clk); endmodule\n"


def make_build(root: Path, name: str, mtime: float, size: int = 0) -> Path:
    ok = root / name / "build.ok"
    ok.parent.mkdir(parents=True)
    ok.touch()
    (ok.parent / "Vtop").write_bytes(b"\0" * size)
    os.utime(ok, (mtime, mtime))
    return ok.parent


def dirs(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir())


def test_cache_folder_is_per_user_never_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(vr.CACHE_ENV, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert vr.build_root() == Path.home() / ".cache" / "mobilenet-accel" / "verilator"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert vr.build_root() == tmp_path / "xdg" / "mobilenet-accel" / "verilator"
    monkeypatch.setenv(vr.CACHE_ENV, str(tmp_path / "mine"))
    assert vr.build_root() == tmp_path / "mine" / "verilator"


def test_prune_keeps_recent_and_runtime_builds(tmp_path):
    """Builds beyond the most recently used `keep` go, unless used within the grace period;
    the shared runtime objects always stay."""
    long_ago = time.time() - 2 * vr.PRUNE_AFTER_S
    for i in range(5):
        make_build(tmp_path, f"old{i}", long_ago + i)
    make_build(tmp_path, "recent", time.time())
    make_build(tmp_path, "runtime-abc", long_ago)
    vr._prune_builds(tmp_path, keep=2)
    assert dirs(tmp_path) == ["old4", "recent", "runtime-abc"]
    vr._prune_builds(tmp_path, keep=0)   # the recently used one survives the grace period
    assert dirs(tmp_path) == ["recent", "runtime-abc"]


def test_prune_caps_the_cache_size(tmp_path):
    """Newest first, builds are kept while they fit `max_mb`; older ones go even within the
    count, a recently used one never."""
    long_ago = time.time() - 2 * vr.PRUNE_AFTER_S
    mb = 2**20
    for i in range(4):
        make_build(tmp_path, f"b{i}", long_ago + i, size=mb)     # b3 is the newest
    vr._prune_builds(tmp_path, keep=8, max_mb=2.5)
    assert dirs(tmp_path) == ["b2", "b3"]
    make_build(tmp_path, "big-recent", time.time(), size=3 * mb)
    vr._prune_builds(tmp_path, keep=8, max_mb=2.5)
    assert dirs(tmp_path) == ["big-recent"]


def test_prune_spares_a_build_being_made_and_prunes_verilog_texts(tmp_path):
    long_ago = time.time() - 2 * vr.PRUNE_AFTER_S
    busy = make_build(tmp_path, "busy", long_ago - 1)
    make_build(tmp_path, "idle", long_ago)
    texts = tmp_path / vr.VERILOG_DIR
    texts.mkdir()
    for i in range(3):
        (texts / f"accel_ddr-{i}.v").write_text(VERILOG)
        os.utime(texts / f"accel_ddr-{i}.v", (long_ago + i, long_ago + i))
    with vr._locked(busy):
        vr._prune_builds(tmp_path, keep=1)
    assert dirs(tmp_path) == ["busy", "idle", vr.VERILOG_DIR]
    vr._prune_builds(tmp_path, keep=1)
    assert dirs(tmp_path) == ["idle", vr.VERILOG_DIR]
    assert sorted(p.name for p in texts.iterdir()) == ["accel_ddr-2.v"]


@pytest.fixture
def stub_verilator(monkeypatch, tmp_path):
    """`build` with the C++ step replaced: counts the builds, each taking a moment."""
    if vr.verilator_available() is not None:
        pytest.skip(vr.verilator_available())
    made = []

    def fake_verilate(directory, sources, toplevel, args, trace, runtime):
        made.append(directory)
        directory.mkdir(parents=True, exist_ok=True)
        time.sleep(0.5)
        (directory / "build.ok").write_text(" ".join(args))
    monkeypatch.setattr(vr, "_verilate", fake_verilate)
    monkeypatch.setenv(vr.CACHE_ENV, str(tmp_path / "cache"))
    source = tmp_path / "top.v"
    source.write_text(VERILOG)
    return source, made


def test_build_goes_to_the_cache_and_is_reused(stub_verilator, tmp_path, monkeypatch):
    source, made = stub_verilator
    monkeypatch.chdir(tmp_path)
    first = vr.build(source, name="top")
    again = vr.build(source, name="top")
    assert (first.cached, again.cached) == (False, True) and len(made) == 1
    assert first.directory == again.directory
    assert first.directory.parent == tmp_path / "cache" / "verilator"
    assert not (tmp_path / "sim_build").exists()


def test_concurrent_builds_of_one_design_build_it_once(stub_verilator):
    """Two workers (threads here; flock locks separate opens alike) asking for the same build
    at once: one builds, the other waits for it and reuses it."""
    source, made = stub_verilator
    start = threading.Barrier(2)
    results = []

    def worker():
        start.wait()
        results.append(vr.build(source, name="top"))
    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 1
    assert sorted(b.cached for b in results) == [False, True]
    assert results[0].directory == results[1].directory
