"""Write a build folder all-or-nothing, and never lose anything gen-accel did not write.

Everything goes into a sibling staging folder that replaces the target only when complete,
so a failed run never leaves a `build/` that looks good. A finished folder carries
MANIFEST.json, written last, with "tool": "gen-accel" and the list of its files.

The target may be a new folder, an empty one, or a previous gen-accel build holding nothing
but the files its manifest lists; anything else (a home folder, a folder of models, a build
a user has put notes into) is refused, never replaced. A symlink is followed: the folder it
points to is swapped, the link stays.

SIGINT and SIGTERM unwind as `Interrupted` (`interrupts_unwind`), so the staging folder is
removed on the way out, except during the swap, which they cannot tear. Staging folders are
named `.NAME.partial-PID-*` and marked as gen-accel's: those of a run that was killed
outright (SIGKILL, out of memory) are removed by the next run for the same folder.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import signal
import tempfile
from contextlib import contextmanager
from pathlib import Path

MANIFEST = "MANIFEST.json"
TOOL = "gen-accel"
# Folders gen-accel writes; an empty one inside a previous build is still its own.
GENERATED_FOLDERS = ("firmware", "rtl", "report", "synth")
# Marks a staging folder as gen-accel's, so a stale one may be deleted.
STAGING_MARKER = ".gen-accel-staging"

log = logging.getLogger(TOOL)


class OutputError(OSError):
    """The output path cannot be used."""


def output_folder(out: str | os.PathLike) -> Path:
    """The folder `--out out` writes: `out` itself, or the folder a symlink `out` points to.
    Raises `OutputError` unless it is new, empty or a previous build gen-accel may replace."""
    text = os.fspath(out)
    if not text.strip():
        raise OutputError("--out is empty: name an output folder, e.g. --out build/")
    path = Path(text)
    if path.name in ("", ".", ".."):
        raise OutputError(f"{text}: not a folder a build can replace (the current folder, a "
                          "parent or the root); name a folder, e.g. build/")
    if path.is_symlink():
        path = _link_target(path)
        if not path.is_dir():
            raise OutputError(f"{text}: a symlink to {path}, which is not a directory")
    if path.exists():
        if not path.is_dir():
            raise OutputError(f"{path}: output path exists and is not a directory")
        check_replaceable(path)
    _check_parent(path.parent)
    return path


def target_path(out: str | os.PathLike) -> Path:
    """Where `--out out` builds, unchecked: `out`, or the folder a symlink `out` points to."""
    path = Path(out)
    return path.resolve() if path.is_symlink() else path


def _link_target(link: Path) -> Path:
    real = link.resolve()
    if not real.exists():
        raise OutputError(f"{link}: a symlink to {real}, which does not exist")
    if real == Path(real.anchor):
        raise OutputError(f"{link}: a symlink to the root folder; name a build folder")
    return real


def _check_parent(parent: Path) -> None:
    """The nearest existing ancestor of `parent` must be a writable folder (the missing
    ones are created only once all arguments are known good)."""
    existing = parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{existing}: cannot create the output folder under it "
                          "(not a directory)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{existing}: cannot create the output folder there (not writable)")


def read_manifest(folder: Path) -> dict | None:
    """The MANIFEST.json gen-accel wrote into `folder`, or None if there is none of ours."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if (isinstance(manifest, dict) and manifest.get("tool") == TOOL
            and isinstance(manifest.get("files"), dict)):
        return manifest
    return None


def check_replaceable(folder: Path) -> None:
    """Raise `OutputError` unless `folder` is empty or a gen-accel build with nothing in it
    that its manifest does not list."""
    if not any(folder.iterdir()):
        return
    manifest = read_manifest(folder)
    if manifest is None:
        raise OutputError(f"{folder}: exists, is not empty and is not a gen-accel build (no "
                          f"{MANIFEST} from gen-accel); refusing to replace it, choose a new "
                          "or empty folder")
    unknown = foreign_entries(folder, manifest)
    if unknown:
        shown = ", ".join(unknown[:3]) + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else "")
        raise OutputError(f"{folder}: a previous gen-accel build, but it holds files gen-accel "
                          f"did not write ({shown}); refusing to replace it, move them out or "
                          "choose another folder")


def foreign_entries(folder: Path, manifest: dict) -> list[str]:
    """Paths under `folder` (relative, sorted) that the build described by `manifest` did
    not write: unlisted files and links, and unlisted empty folders outside
    GENERATED_FOLDERS."""
    known = set(manifest["files"]) | {MANIFEST}
    foreign = []

    def unreadable(e: OSError):
        raise OutputError(f"{e.filename}: cannot read it to check the previous build "
                          f"({e.strerror})")

    for dirpath, dirnames, filenames in os.walk(folder, onerror=unreadable):
        here = Path(dirpath)
        rel = here.relative_to(folder)
        links = [d for d in dirnames if (here / d).is_symlink()]  # walk does not enter them
        for name in filenames + links:
            if (rel / name).as_posix() not in known:
                foreign.append((rel / name).as_posix())
        if (not dirnames and not filenames and rel.parts
                and rel.parts[0] not in GENERATED_FOLDERS):
            foreign.append(rel.as_posix() + "/")
    return sorted(foreign)


def remove_build(folder: Path) -> bool:
    """Delete a previous build's own files and the folders they leave empty, nothing else.
    True if `folder` is gone; False if something gen-accel did not write kept it."""
    manifest = read_manifest(folder)
    if manifest is None:
        return False
    known = set(manifest["files"]) | {MANIFEST}
    for dirpath, dirnames, filenames in os.walk(folder, topdown=False):
        here = Path(dirpath)
        rel = here.relative_to(folder)
        for name in filenames + [d for d in dirnames if (here / d).is_symlink()]:
            if (rel / name).as_posix() in known:
                (here / name).unlink()
        try:
            here.rmdir()        # only succeeds when empty
        except OSError:
            pass
    return not folder.exists()


class Interrupted(BaseException):
    """SIGINT or SIGTERM, raised like KeyboardInterrupt so that every `with BuildDir`
    removes its staging folder on the way out."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum        # the shell's convention: 130 SIGINT, 143 SIGTERM


_swapping = False                       # a signal now would tear the build folder
_deferred: list[int] = []


def _raise_interrupted(signum, frame):
    # Later signals are ignored: they would cut short the cleanup the first one starts.
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
    if _swapping:
        _deferred.append(signum)
        return
    raise Interrupted(signum)


@contextmanager
def interrupts_unwind():
    """While active (main thread only), SIGINT and SIGTERM raise `Interrupted`."""
    saved = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


@contextmanager
def _uninterrupted():
    """Hold SIGINT/SIGTERM back until the block is done, then raise `Interrupted`."""
    global _swapping
    _swapping = True
    try:
        yield
    finally:
        _swapping = False
    if _deferred:
        raise Interrupted(_deferred.pop())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True                     # someone else's process
    return True


def remove_stale_staging(target: Path, pid: int | None = None) -> list[Path]:
    """Delete the staging folders for `target` left by runs that died without cleaning up
    (only gen-accel's own, by their marker, and only of processes no longer alive; `pid`:
    only that one's). Also put back a previous build that a killed run had moved aside.
    Returns the folders removed."""
    removed = []
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(partial|old)-(\d+)(-.*)?")
    for p in sorted(target.parent.glob(f".{target.name}.*-*")):
        m = pattern.fullmatch(p.name)
        if (not m or p.is_symlink() or not p.is_dir() or pid_alive(int(m[2]))
                or (pid is not None and int(m[2]) != pid)):
            continue
        if m[1] == "partial" and (p / STAGING_MARKER).is_file():
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
        elif m[1] == "old" and not target.exists() and read_manifest(p) is not None:
            p.rename(target)            # killed between the swap's two renames
        elif m[1] == "old" and remove_build(p):
            removed.append(p)
    return removed


class BuildDir:
    def __init__(self, out: str | os.PathLike):
        self.target = output_folder(out)
        self.shown = Path(out)          # the name the user gave (maybe a symlink)
        parent = self.target.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            remove_stale_staging(self.target)
            self.staging = Path(tempfile.mkdtemp(
                prefix=f".{self.target.name}.partial-{os.getpid()}-", dir=parent))
        except OSError as e:
            raise OutputError(f"{parent}: cannot write there ({e.strerror})") from e
        try:                            # `with` does not clean up after its constructor
            (self.staging / STAGING_MARKER).touch()
            umask = os.umask(0)
            os.umask(umask)
            self.staging.chmod(0o777 & ~umask)  # mkdtemp makes it 0700
        except BaseException:
            self.abort()
            raise
        self.files: list[str] = []

    def path(self, name: str) -> Path:
        p = self.staging / name
        p.parent.mkdir(parents=True, exist_ok=True)
        self.files.append(name)
        return p

    def write_text(self, name: str, text: str) -> Path:
        p = self.path(name)
        p.write_text(text)
        return p

    def write_bytes(self, name: str, data: bytes) -> Path:
        p = self.path(name)
        p.write_bytes(data)
        return p

    def write_json(self, name: str, obj) -> Path:
        return self.write_text(name, json.dumps(obj, indent=1) + "\n")

    def commit(self, meta: dict) -> Path:
        """Write the manifest (with file hashes) and swap the staging folder into place."""
        files = {}
        for name in self._staged_files():
            data = (self.staging / name).read_bytes()
            files[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        (self.staging / MANIFEST).write_text(json.dumps({**meta, "tool": TOOL, "files": files},
                                                        indent=1))
        with _uninterrupted():
            (self.staging / STAGING_MARKER).unlink()
            self._swap()
        return self.shown

    def _staged_files(self) -> list[str]:
        """Every file in the staging folder, so the manifest lists all that a later run
        may delete (a file written without `path`, e.g. by the synthesis tools, included)."""
        found = {p.relative_to(self.staging).as_posix() for p in self.staging.rglob("*")
                 if (p.is_file() or p.is_symlink()) and p.name != STAGING_MARKER}
        return sorted(found | set(self.files))

    def _swap(self) -> None:
        """Put the staging folder in the target's place; the previous build, checked again
        (files may have appeared in it during the run), loses only its own files."""
        if not self.target.exists():
            self._rename(self.staging, self.target)
            return
        check_replaceable(self.target)
        old = self.target.with_name(f".{self.target.name}.old-{os.getpid()}")
        self._rename(self.target, old)
        try:
            self._rename(self.staging, self.target)
        except OutputError:
            old.rename(self.target)
            raise
        if old.exists() and not any(old.iterdir()):
            old.rmdir()                 # the target was an empty folder
        elif not remove_build(old):
            log.warning("kept %s: the previous build there holds files gen-accel did not "
                        "write", old)

    @staticmethod
    def _rename(src: Path, dst: Path) -> None:
        try:
            src.rename(dst)
        except OSError as e:
            raise OutputError(f"{dst}: cannot move the build there ({e.strerror})") from e

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
        return False
