"""Housekeeping of the Verilator build cache (no simulator needed)."""
import os
import time

from sim import verilator_runner as vr


def test_prune_keeps_recent_and_runtime_builds(tmp_path, monkeypatch):
    """Builds beyond the most recently used `keep` go, unless used within the grace period;
    the shared runtime objects always stay."""
    monkeypatch.setattr(vr, "BUILD_ROOT", tmp_path)
    long_ago = time.time() - 2 * vr.PRUNE_AFTER_S
    for i in range(5):
        ok = tmp_path / f"old{i}" / "build.ok"
        ok.parent.mkdir()
        ok.touch()
        os.utime(ok, (long_ago + i, long_ago + i))
    for name in ("runtime-abc", "recent"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "build.ok").touch()
    vr._prune_builds(keep=2)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["old4", "recent",
                                                                        "runtime-abc"]
    vr._prune_builds(keep=0)   # the recently used one survives the grace period
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["recent", "runtime-abc"]
