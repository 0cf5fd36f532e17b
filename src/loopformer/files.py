"""Files of a run directory: atomic writes (a reader never sees a half-written file, even
after a kill), permissions that follow the user's umask, stale temporaries, and the lock that
keeps a second writer out."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

# Every temporary is named ".NAME.<random>.tmp" beside its final NAME.
TEMPORARY_SUFFIX = ".tmp"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def umask_mode(directory: bool = False) -> int:
    """The mode open() or mkdir() would give under the user's umask (tempfile uses 0600 and
    0700, which would leave a run directory with mixed permissions)."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


def temporary_dir(parent: Path, name: str) -> Path:
    path = Path(tempfile.mkdtemp(dir=parent, prefix=f".{name}.", suffix=TEMPORARY_SUFFIX))
    os.chmod(path, umask_mode(directory=True))
    return path


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, fsync it, then rename it into place."""
    path = Path(path)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.",
                                     suffix=TEMPORARY_SUFFIX, delete=False) as f:
        try:
            os.chmod(f.name, umask_mode())
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        except BaseException:
            os.unlink(f.name)
            raise
    os.replace(f.name, path)
    fsync_dir(path.parent)


def write_json_atomic(path: Path, data) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def remove_temporaries(directory: Path) -> list[str]:
    """Remove what a killed writer left behind (only a directory's sole writer may call
    this); returns the names removed."""
    removed = []
    for path in Path(directory).glob(f".*{TEMPORARY_SUFFIX}"):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        removed.append(path.name)
    return removed


class DirectoryInUse(Exception):
    """Another process holds the directory's lock."""


class DirectoryLock:
    """An exclusive lock on a directory for one writing process (flock on DIR/.lock).

    The operating system releases it when the process ends, however it ends, so a lock file
    left by a killed process is not a lock: no stale lock can block a run. The file holds the
    holder's pid, for the message a second writer gets."""

    def __init__(self, directory: Path):
        self.path = Path(directory) / ".lock"
        self.handle = None

    def __enter__(self) -> "DirectoryLock":
        import fcntl

        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise DirectoryInUse(f"{self.path.parent} is in use by another training process "
                               f"(pid {holder}); wait for it to finish or choose another "
                               "--out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self.handle = handle
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()  # closing releases the flock
