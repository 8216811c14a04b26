"""gen-accel never loses a user's data: its output folder replaces only a previous build of
its own, a symlink is followed rather than replaced, and bad output paths get one line."""
import json
import os

import pytest

from flow import cli
from flow.build_dir import MANIFEST, BuildDir, OutputError, output_folder


def fake_build(folder, files=("model.tflite", "rtl/mnet_accel.v", "report/layer_cycles.md")):
    """A previous build as BuildDir commits one (no TensorFlow needed)."""
    out = BuildDir(folder)
    for name in files:
        out.write_text(name, f"old {name}\n")
    out.commit({"tool": "gen-accel"})
    return folder


def snapshot(folder):
    """{relative path: bytes} of every file under `folder`."""
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def commit_new_build(out):
    b = BuildDir(out)
    b.write_text("model.tflite", "new\n")
    return b.commit({"tool": "gen-accel"})


def _cli(argv, capsys):
    code = cli.main(argv + ["-q"])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


# ---- the output folder rules, without running a build ------------------------------------------

def test_folder_of_user_files_is_refused_and_kept(tmp_path):
    user = tmp_path / "models"
    user.mkdir()
    (user / "m.tflite").write_bytes(b"precious")
    with pytest.raises(OutputError, match=r"models: exists, is not empty and is not a gen-accel "
                                          r"build .*refusing to replace it"):
        BuildDir(user)
    assert snapshot(user) == {"m.tflite": b"precious"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models"]    # no staging left


def test_home_like_folder_is_refused(tmp_path):
    home = tmp_path / "home"
    (home / ".config").mkdir(parents=True)
    (home / ".bashrc").write_text("x")
    with pytest.raises(OutputError, match="not a gen-accel build"):
        output_folder(home)
    assert (home / ".bashrc").read_text() == "x" and (home / ".config").is_dir()


def test_manifest_of_another_tool_is_not_ours(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / MANIFEST).write_text(json.dumps({"tool": "something-else", "files": {}}))
    with pytest.raises(OutputError, match="not a gen-accel build"):
        output_folder(other)


def test_empty_folder_is_used(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert commit_new_build(empty) == empty
    assert snapshot(empty)["model.tflite"] == b"new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_previous_build_is_replaced_entirely(tmp_path):
    old = fake_build(tmp_path / "build")
    commit_new_build(old)
    files = snapshot(old)
    assert set(files) == {"model.tflite", MANIFEST} and files["model.tflite"] == b"new\n"
    assert json.loads(files[MANIFEST])["tool"] == "gen-accel"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build"]


@pytest.mark.parametrize("extra", ["notes.txt", "rtl/my_patch.v", "data/"])
def test_previous_build_with_user_files_is_refused(tmp_path, extra):
    build = fake_build(tmp_path / "build")
    (build / extra.rstrip("/")).mkdir() if extra.endswith("/") else (build / extra).write_text("mine")
    before = snapshot(build)
    with pytest.raises(OutputError, match=rf"holds files gen-accel did not write \({extra}\)"):
        BuildDir(build)
    assert snapshot(build) == before


def test_user_file_added_during_the_run_stops_the_swap(tmp_path):
    """The check is repeated at the swap: a file put into the old build while gen-accel ran
    makes the commit fail, and both that file and the old build stay."""
    build = fake_build(tmp_path / "build")
    staged = BuildDir(build)
    staged.write_text("model.tflite", "new\n")
    (build / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"did not write \(notes.txt\)"), staged:
        staged.commit({"tool": "gen-accel"})
    assert snapshot(build)["notes.txt"] == b"mine"
    assert snapshot(build)["model.tflite"] == b"old model.tflite\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build"]


def test_symlink_is_followed_and_kept(tmp_path):
    real = fake_build(tmp_path / "real")
    link = tmp_path / "link"
    link.symlink_to(real)
    assert commit_new_build(link) == link
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert snapshot(real)["model.tflite"] == b"new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]


def test_symlink_to_user_folder_is_refused(tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    (user / "a.txt").write_text("mine")
    (tmp_path / "link").symlink_to(user)
    with pytest.raises(OutputError, match="not a gen-accel build"):
        output_folder(tmp_path / "link")
    assert (tmp_path / "link").is_symlink() and (user / "a.txt").read_text() == "mine"


def test_dangling_symlink_is_refused(tmp_path):
    (tmp_path / "link").symlink_to(tmp_path / "missing")
    with pytest.raises(OutputError, match=r"link: a symlink to .*missing, which does not exist"):
        output_folder(tmp_path / "link")


@pytest.mark.parametrize("out", ["", " ", "/", ".", "..", "a/b/.."])
def test_paths_that_name_no_folder_of_their_own(tmp_path, monkeypatch, out):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputError, match=r"--out is empty|not a folder a build can replace"):
        output_folder(out)
    assert list(tmp_path.iterdir()) == []


def test_output_under_a_file_creates_nothing(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match=r"f: cannot create the output folder under it"):
        output_folder(tmp_path / "f" / "sub" / "build")


def test_previous_build_keeps_files_it_never_listed(tmp_path):
    """Deleting a previous build removes exactly the files its manifest lists: a file that
    appears between the check and the delete survives (in the `.old` folder, with a warning)."""
    from flow.build_dir import remove_build
    build = fake_build(tmp_path / "build")
    (build / "rtl" / "late.v").write_text("mine")
    assert remove_build(build) is False
    assert snapshot(build) == {"rtl/late.v": b"mine"}


# ---- the command line ---------------------------------------------------------------------------

@pytest.mark.parametrize("out", ["", "/", "a/b/.."])
def test_cli_bad_output_path_is_one_line(tmp_path, monkeypatch, capsys, out):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a" / "b").mkdir(parents=True)
    code, err = _cli(["--out", out], capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("gen-accel: error: ")
    assert sorted(p.as_posix() for p in tmp_path.rglob("*")) == [f"{tmp_path}/a", f"{tmp_path}/a/b"]


def test_cli_model_inside_a_user_folder_is_never_lost(tmp_path, capsys):
    """The issue's case: `--model DIR/m.tflite --out DIR` used to empty DIR, model included."""
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "m.tflite").write_bytes(b"my model")
    code, err = _cli(["--model", str(folder / "m.tflite"), "--out", str(folder)], capsys)
    assert code == 2 and len(err) == 1
    assert err[0] == (f"gen-accel: error: {folder}: exists, is not empty and is not a gen-accel "
                      "build (no MANIFEST.json from gen-accel); refusing to replace it, choose "
                      "a new or empty folder")
    assert snapshot(folder) == {"m.tflite": b"my model"}


def test_cli_synthesis_logs_never_replace_a_user_folder(tmp_path):
    user = tmp_path / "b.synth-failed"
    user.mkdir()
    (user / "mine.txt").write_text("x")
    kept = cli.failed_synthesis_folder(tmp_path / "b")
    assert kept == tmp_path / "b.synth-failed-2" and (user / "mine.txt").read_text() == "x"
    ours = tmp_path / "c.synth-failed"
    ours.mkdir()
    (ours / cli.SYNTH_FAILED_MARKER).touch()
    assert cli.failed_synthesis_folder(tmp_path / "c") == ours and not ours.exists()


# ---- a real build ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_build(tmp_path_factory):
    """One cheap real gen-accel run (default network, one checked image)."""
    out = tmp_path_factory.mktemp("real") / "build"
    assert cli.main(["--out", str(out), "--check-images", "1", "-q"]) == 0
    return out


def test_cli_replaces_its_own_build_with_the_model_inside(real_build, tmp_path, capsys):
    """`--model build/model.tflite --out build`: the model is read before the swap and
    written again, so nothing is lost; the old build is gone, no sibling left behind."""
    build = tmp_path / "build"
    import shutil
    shutil.copytree(real_build, build)
    model = (build / "model.tflite").read_bytes()
    code, _ = _cli(["--model", str(build / "model.tflite"), "--check-images", "1",
                    "--out", str(build)], capsys)
    assert code == 0 and (build / "model.tflite").read_bytes() == model
    assert json.loads((build / MANIFEST).read_text())["model"]["source"] == str(build / "model.tflite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build"]


def test_cli_refuses_its_own_build_with_a_user_file(real_build, tmp_path, capsys):
    build = tmp_path / "build"
    import shutil
    shutil.copytree(real_build, build)
    (build / "my.weights.h5").write_bytes(b"weights")
    before = snapshot(build)
    code, err = _cli(["--out", str(build)], capsys)
    assert code == 2 and len(err) == 1
    assert err[0] == (f"gen-accel: error: {build}: a previous gen-accel build, but it holds files "
                      "gen-accel did not write (my.weights.h5); refusing to replace it, move "
                      "them out or choose another folder")
    assert snapshot(build) == before
    assert os.listdir(tmp_path) == ["build"]


# ---- signals, crashes and what a killed run leaves behind ---------------------------------------

def dead_pid():
    import subprocess
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_stale_staging_of_a_dead_run_is_removed(tmp_path):
    """Only staging folders marked as gen-accel's, of processes that are gone, are removed."""
    from flow.build_dir import STAGING_MARKER
    dead, alive = dead_pid(), os.getpid()
    stale = tmp_path / f".build.partial-{dead}-abc"
    running = tmp_path / f".build.partial-{alive}-def"
    unmarked = tmp_path / f".build.partial-{dead}-ghi"
    for p in (stale, running, unmarked):
        (p / "rtl").mkdir(parents=True)
    (stale / STAGING_MARKER).touch()
    (running / STAGING_MARKER).touch()
    commit_new_build(tmp_path / "build")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["build", running.name, unmarked.name])


def test_previous_build_moved_aside_by_a_killed_swap_is_restored(tmp_path):
    """Killed between the swap's two renames: the next run puts the old build back first."""
    old = fake_build(tmp_path / "build")
    aside = tmp_path / f".build.old-{dead_pid()}"
    old.rename(aside)
    from flow.build_dir import remove_stale_staging
    remove_stale_staging(tmp_path / "build")
    assert snapshot(tmp_path / "build")["model.tflite"] == b"old model.tflite\n"
    assert not aside.exists()


def test_signal_during_the_swap_waits_for_it(tmp_path):
    """SIGTERM arriving mid-swap is held back until the new build is in place."""
    import signal

    from flow import build_dir
    old = fake_build(tmp_path / "build")
    staged = BuildDir(old)
    staged.write_text("model.tflite", "new\n")
    real_rename = BuildDir._rename

    def rename_then_signal(src, dst):
        real_rename(src, dst)
        os.kill(os.getpid(), signal.SIGTERM)      # handled at once: between the renames

    with build_dir.interrupts_unwind(), pytest.raises(build_dir.Interrupted) as e, staged:
        BuildDir._rename = staticmethod(rename_then_signal)
        try:
            staged.commit({"tool": "gen-accel"})
        finally:
            BuildDir._rename = staticmethod(real_rename)
    assert e.value.exit_status == 143
    assert snapshot(old)["model.tflite"] == b"new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build"]


def _spawn(tmp_path, code):
    """gen-accel in a subprocess running `code` (with `out` bound)."""
    import subprocess
    import sys
    out = tmp_path / "build"
    return subprocess.Popen([sys.executable, "-c", f"out = {str(out)!r}\n{code}"],
                            stderr=subprocess.PIPE, text=True)


def _start(tmp_path, code):
    """`_spawn`, and its staging folder once it exists."""
    import time
    proc = _spawn(tmp_path, code)
    deadline = time.monotonic() + 600    # a hang guard only: a busy machine may take minutes
    while not list(tmp_path.glob(".build.partial-*")):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "no staging folder appeared"
        time.sleep(0.05)
    return proc, next(tmp_path.glob(".build.partial-*"))


SUPERVISED = ("import sys\nfrom flow import cli\n"
              "sys.exit(cli.main(['--out', out, '--check-images', '1', '-q'], isolate={}))")


@pytest.mark.parametrize("isolate", [True, False])
@pytest.mark.parametrize("signame,status", [("SIGINT", 130), ("SIGTERM", 143)])
def test_interrupted_run_says_so_and_leaves_nothing(tmp_path, signame, status, isolate):
    import signal
    proc, _ = _start(tmp_path, SUPERVISED.format(isolate))
    proc.send_signal(getattr(signal, signame))
    err = proc.communicate(timeout=600)[1].strip().splitlines()
    assert proc.returncode == status and err == ["gen-accel: interrupted"], "\n".join(err)
    assert list(tmp_path.iterdir()) == []


def test_killed_build_is_reported_and_cleaned_by_its_supervisor(tmp_path):
    """SIGKILL (what the out-of-memory killer sends) to the process doing the build."""
    import signal
    proc, staging = _start(tmp_path, SUPERVISED.format(True))
    os.kill(int(staging.name.split("-")[1]), signal.SIGKILL)
    err = proc.communicate(timeout=600)[1].strip().splitlines()
    assert proc.returncode == 1 and err == [
        "gen-accel: failed: the build was killed (SIGKILL), most likely by the system for "
        f"running out of memory; no build was written to {tmp_path / 'build'}"]
    assert list(tmp_path.iterdir()) == []


def test_native_abort_is_one_line(tmp_path):
    """A native abort() in the build (as TFLite's checks do) is reported, not silent. (Not
    `_start`: the staging folder may come and go between two of its polls.)"""
    proc = _spawn(tmp_path, (
        "import os, sys\nfrom flow import cli\n"
        "def aborting(args):\n"
        "    from flow.build_dir import BuildDir\n"
        "    BuildDir(args.out)\n"
        "    os.abort()\n"
        "cli.run = aborting\n"
        "sys.exit(cli.main(['--out', out, '-q'], isolate=True))"))
    err = proc.communicate(timeout=600)[1].strip().splitlines()
    assert proc.returncode == 1 and err == [
        "gen-accel: failed: the build aborted (SIGABRT) inside a native library, most likely "
        "TensorFlow Lite failing a check on the model; its message, if any, is above; no build "
        f"was written to {tmp_path / 'build'}"]
    assert list(tmp_path.iterdir()) == []


# ---- bad arguments are answered before TensorFlow is imported ----------------------------------

def _cli_subprocess(argv, cwd):
    """gen-accel's main() in a fresh interpreter: (exit code, stderr lines, heavy modules it
    imported). The heavy imports, not the wall clock, are what the test can rely on."""
    import subprocess
    import sys
    code = ("import sys\nfrom flow import cli\n"
            f"try:\n    code = cli.main({argv!r} + ['-q'], isolate=False)\n"
            "except SystemExit as e:\n    code = e.code\n"
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n"
            "sys.exit(code)")
    p = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                       timeout=600)
    return p.returncode, p.stderr.strip().splitlines(), p.stdout.strip()


def _bad_files(tmp_path):
    (tmp_path / "dir.tflite").mkdir()
    (tmp_path / "binary.json").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "odd_pw.json").write_text('{"pw_out": 12}')
    (tmp_path / "id.json").write_text('{"id_width": 100000}')
    (tmp_path / "clock.json").write_text('{"clock_mhz": 1000}')
    (tmp_path / "clock450.json").write_text('{"clock_mhz": 450}')
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "data.txt").write_text("mine")


@pytest.mark.parametrize("argv,msg", [
    (["--alpha", "0"], "alpha must be > 0 and <= 4, got 0.0"),
    (["--alpha", "abc"], "argument --alpha: invalid float value: 'abc' (see --help)"),
    (["--input-size", "4"], "input size must be in 8..512, got 4"),
    (["--check-images", "-1"], "--check-images must be >= 0, got -1"),
    (["--verify", "-1"], "--verify must be >= 0, got -1"),
    (["--model", "missing.tflite"], "missing.tflite: no such model file"),
    (["--model", "dir.tflite"], "dir.tflite: not a model file (a directory or a device)"),
    (["--model", "dir.tflite", "--alpha", "1"], "--model fixes the network and its input shape; "
     "--alpha only apply to the seed network"),
    (["--weights", "missing.h5"], "missing.h5: no such weights file"),
    (["--config", "missing.json"], "missing.json: no such config file"),
    (["--config", "dir.tflite"], "dir.tflite: a directory, not a config file"),
    (["--config", "binary.json"], "binary.json: not a valid config JSON (not text)"),
    (["--config", "list.json"], "list.json: a config is a JSON object of AccelConfig fields, got list"),
    (["--config", "odd_pw.json"], "odd_pw.json: pw_out must be a power of two, got 12"),
    (["--synth", "nope"], "unknown board 'nope'; known: ulx3s-85f, ulx3s-45f, ulx3s-25f"),
    (["--alpha", "1", "--input-size", "96"], "layer 9 'block_4_depthwise' (DEPTHWISE_CONV_2D): "
     "even a band of one output row needs more than the 65536 B activation buffer (input rows "
     "of 24576 B, output rows of 24576 B); use larger activation buffers (act_buffer_bytes) or "
     "a smaller input"),
    (["--alpha", "2", "--input-size", "224"], "layer 5 'block_2_depthwise' (DEPTHWISE_CONV_2D): "
     "even a band of one output row needs more"),
    (["--check-images", "0"], "--check-images 0 without --verify checks nothing; give "
     "--check-images N >= 1 (or --verify N)"),
    (["--check-images", "101"], "--check-images must be <= 100 (the test images shipped"),
    (["--verify", "1000"], "--verify must be <= 100"),
    (["--config", "id.json"], "id.json: id_width must be 1..16, got 100000"),
    (["--config", "clock.json"], "clock.json: clock_mhz must be > 0 and <= 500, got 1000"),
    (["--config", "clock450.json", "--synth", "ulx3s-85f"], "clock450.json: clock_mhz 450 is "
     "beyond what the ulx3s-85f's ECP5 can clock at all (its clock network tops out at 400 MHz)"),
    (["--out", ""], "--out is empty: name an output folder, e.g. --out build/"),
    (["--out", "/"], "/: not a folder a build can replace"),
    (["--out", "user"], "user: exists, is not empty and is not a gen-accel build"),
])
def test_bad_argument_is_answered_without_tensorflow(tmp_path, argv, msg):
    _bad_files(tmp_path)
    code, err, heavy = _cli_subprocess(argv + (["--out", "b"] if "--out" not in argv else []),
                                       tmp_path)
    assert code == 2 and len(err) == 1 and err[0].startswith("gen-accel: error: "), err
    assert msg in err[0]
    assert heavy == "[]", f"{heavy} imported before answering"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["dir.tflite", "binary.json", "list.json", "odd_pw.json", "id.json", "clock.json",
         "clock450.json", "user"])


def test_bad_flag_as_a_command(tmp_path):
    """`python -m flow.cli` with a bad flag: one line, exit 2."""
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-m", "flow.cli", "--alpha", "9", "--out",
                        str(tmp_path / "b")], capture_output=True, text=True, timeout=600)
    assert p.returncode == 2
    assert p.stderr.splitlines() == ["gen-accel: error: alpha must be > 0 and <= 4, got 9.0"]
    assert list(tmp_path.iterdir()) == []


# ---- the seed network's fit and memory, decided from its shapes ----------------------------------

def test_network_too_large_for_memory_is_refused_before_building(tmp_path, capsys, monkeypatch):
    """A network that fits the buffers but whose float build would exhaust the machine's
    memory (here pretended to be 4 GB) is refused without building anything."""
    from quantize import pipeline
    from flow import preflight

    def never(*args, **kwargs):
        raise AssertionError("the network was built")
    monkeypatch.setattr(pipeline, "build_int8_model", never)
    monkeypatch.setattr(preflight, "physical_memory_bytes", lambda: 4e9)
    code, err = _cli(["--alpha", "0.25", "--input-size", "160", "--out", str(tmp_path / "b")],
                     capsys)
    assert code == 2 and err == [
        "gen-accel: error: mobilenet_a0.25_r160 would need about 7 GB of memory to build, "
        "calibrate and convert in float (1.5 GB + 100 x the 55 MB of float activations of one "
        "image), more than 80% of this machine's 4 GB; use a smaller alpha or input size"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("config", [{}, {"act_buffer_bytes": 16384, "pw_out": 8}])
def test_seed_descriptors_are_the_compilers(real_build, config):
    """The shapes the fit check derives from (alpha, input size) are those of the program
    the compiler makes from the real int8 model, band for band (the second config tiles)."""
    from firmware.compiler import compile_graph
    from firmware.program import Flags
    from firmware.tiling import split_layer
    from quantize.model import ModelSpec
    from quantize.tflite_graph import load_graph
    from rtl_gen.config import AccelConfig
    from flow.preflight import seed_descriptors
    from rtl_gen.sequencer import Geometry
    cfg = AccelConfig(**config)
    fw = compile_graph(load_graph((real_build / "model.tflite").read_bytes()), cfg)
    shape = ("opcode", "in_h", "in_w", "in_c", "out_h", "out_w", "out_c", "stride",
             "kernel", "pad_top", "pad_left", "pad_bottom", "pad_right", "weight_bytes")
    derived = [part for _, d in seed_descriptors(ModelSpec(0.25, 28), cfg)
               for part in split_layer(d, Geometry(cfg).act_capacity, cfg)]
    compiled = fw.descriptors[:-1]                   # without END
    assert len(derived) == len(compiled) > 26 * bool(config)
    for a, b in zip(derived, compiled):
        assert [getattr(a, f) for f in shape] == [getattr(b, f) for f in shape], b.layer
        assert a.flags == b.flags & ~Flags.FLOAT_REQUANT, b.layer   # a dense layer's own


def test_help_lists_boards_and_ranges(capsys):
    with pytest.raises(SystemExit) as e:
        cli.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert e.value.code == 0
    assert "0 < alpha <= 4 (default 0.25)" in text and "8..512 pixels square (default 28)" in text
    assert "(one of ulx3s-85f, ulx3s-45f, ulx3s-25f)" in text
