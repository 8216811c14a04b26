"""Write a build folder all-or-nothing: everything goes into a sibling staging folder that
replaces the target only when complete, so a failed run never leaves a `build/` that looks
good. A finished folder carries MANIFEST.json, written last."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path


class OutputError(OSError):
    """The output path cannot be used."""


class BuildDir:
    def __init__(self, target: Path):
        self.target = Path(target)
        if self.target.exists() and not self.target.is_dir():
            raise OutputError(f"{self.target}: output path exists and is not a directory")
        parent = self.target.resolve().parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"{parent}: cannot create output parent ({e.strerror})") from e
        if not os.access(parent, os.W_OK):
            raise OutputError(f"{parent}: not writable")
        if self.target.is_dir() and not os.access(self.target, os.W_OK):
            raise OutputError(f"{self.target}: not writable")
        try:
            self.staging = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.partial-",
                                                 dir=parent))
        except OSError as e:
            raise OutputError(f"{parent}: cannot write there ({e.strerror})") from e
        umask = os.umask(0)
        os.umask(umask)
        self.staging.chmod(0o777 & ~umask)  # mkdtemp makes it 0700
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
        for name in sorted(set(self.files)):
            data = (self.staging / name).read_bytes()
            files[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        (self.staging / "MANIFEST.json").write_text(json.dumps({**meta, "files": files}, indent=1))
        if self.target.exists():
            old = self.target.with_name(f".{self.target.name}.old-{os.getpid()}")
            self.target.rename(old)
            self.staging.rename(self.target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            self.staging.rename(self.target)
        return self.target

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
        return False
