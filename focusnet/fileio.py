"""Atomic file writes: a file appears under its final name complete, or not at all.

Everything FocusNet writes for a user (checkpoints, metrics, logs, reports) goes through
`atomic_path`: the content is written to a temporary file in the same folder, flushed to disk,
and renamed onto the final name. A crash, a full disk or a kill leaves the previous version (or
nothing) in place, never a half-written file that looks valid.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Iterator

from .errors import FocusNetError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path to write; on success it replaces `path`, on failure it is removed."""
    path = os.fspath(path)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise write_error(path, e) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def write_error(path: str, e: OSError) -> FocusNetError:
    """One-line message for a failed write, with the fix for the usual causes."""
    if e.errno == errno.ENOSPC:
        hint = "the disk is full; free space or choose another --output-dir"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "the folder is not writable; choose another --output-dir"
    else:
        hint = "check the folder exists and is writable"
    return FocusNetError(f"cannot write {path}: {e.strerror or e} ({hint})")


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def write_json(path: str | os.PathLike, value) -> None:
    write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def check_writable_parent(path: str | os.PathLike) -> None:
    """One-line FocusNetError, before any work, if `path` is a folder or the folder that is to
    hold it is missing or not writable (so an export, evaluation or prediction run is not done
    only to be lost)."""
    if os.path.isdir(path):
        raise FocusNetError(f"cannot write {os.fspath(path)}: it is a folder; give a file name")
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    if not os.path.isdir(folder):
        raise FocusNetError(f"cannot write {os.fspath(path)}: the folder {folder} does not exist (create it or choose another path)")
    if not os.access(folder, os.W_OK):
        raise FocusNetError(f"cannot write {os.fspath(path)}: the folder {folder} is not writable (choose another path)")


def ensure_dir(path: str | os.PathLike) -> str:
    """Create `path` (and parents) or raise a one-line FocusNetError saying why not."""
    path = os.fspath(path)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise write_error(path, e) from None
    if not os.access(path, os.W_OK):
        raise FocusNetError(f"cannot write to {path}: permission denied (choose another --output-dir)")
    return path


def link_latest(target: str, link: str) -> None:
    """Point the symlink `link` at `target` (relative when they share a folder), replacing it atomically."""
    rel = os.path.relpath(target, os.path.dirname(os.path.abspath(link)))
    tmp = f"{link}.{os.getpid()}.tmp"
    try:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        os.symlink(rel, tmp)
        os.replace(tmp, link)
    except OSError as e:
        raise write_error(link, e) from None
