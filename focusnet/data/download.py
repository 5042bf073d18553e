"""Download official MedMNIST files: MD5-verified, atomic (no partial file under the final name)."""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import socket
import sys
import tempfile
import urllib.error
import urllib.request

from ..errors import FocusNetError
from .registry import URL_ENV

_CHUNK = 1 << 20
_LOCAL_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def md5sum(path: str) -> str:
    """MD5 hex digest of a file, read in 1 MiB chunks (bounded memory)."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def check_md5(path: str, expected: str) -> None:
    """Raise FocusNetError when an existing file's MD5 differs from the registry's."""
    got = md5sum(path)
    if got != expected:
        raise FocusNetError(
            f"{path} has MD5 {got}, expected {expected}: the file is corrupt or not the official "
            f"release; delete it and run again to re-download it."
        )


def download_file(url: str, dest_path: str, md5: str | None, timeout: float = 60.0, quiet: bool | None = None) -> str:
    """Fetch `url` to `dest_path`, verifying `md5` (skipped when None).

    The body goes to a temporary `.part` file beside the destination, is checked (length, MD5)
    and only then renamed onto `dest_path` with `os.replace`. On any failure the partial file is
    removed and FocusNetError names the URL, the expected MD5 and the folder to put the file in.
    The progress bar is shown only on a terminal (`quiet=None`).
    """
    folder = os.path.dirname(os.path.abspath(dest_path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, part = tempfile.mkstemp(prefix=os.path.basename(dest_path) + ".", suffix=".part", dir=folder)
    except OSError as e:
        raise FocusNetError(f"Cannot write to {folder} ({e.strerror}); pass a writable --data-dir.") from None
    try:
        with os.fdopen(fd, "wb") as out:
            got = _fetch(url, out, timeout, quiet)
        if md5 is not None and got != md5:
            raise FocusNetError(
                f"Downloaded {url} but its MD5 is {got}, expected {md5} (corrupt or changed file); "
                f"nothing was saved. Run again, or download it yourself into {folder}/ as "
                f"{os.path.basename(dest_path)}."
            )
        os.chmod(part, _default_file_mode())  # mkstemp made it private (0600); a shared data folder needs it readable
        os.replace(part, dest_path)
        return dest_path
    except FocusNetError:
        raise
    except ValueError as e:  # urllib's "unknown url type": e.g. a mirror address without http://
        raise FocusNetError(f"Cannot download {url!r}: not a valid URL ({e}); a mirror given in {URL_ENV} must start with http:// or https://") from None
    except (OSError, http.client.HTTPException) as e:  # OSError covers URLError and timeouts
        if getattr(e, "errno", None) in _LOCAL_WRITE_ERRORS:  # this machine, not the network (a URLError's errno is None)
            raise FocusNetError(f"Cannot write {part} while downloading {url} ({e.strerror}); nothing was saved: free space or pass a writable --data-dir.") from None
        raise FocusNetError(_failure_message(url, md5, dest_path, _reason(e))) from None
    finally:
        if os.path.exists(part):
            os.remove(part)


def _default_file_mode() -> int:
    """The mode a file created with open() gets: 0o666 less the process's umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _fetch(url: str, out, timeout: float, quiet: bool | None) -> str:
    """Stream the response body into `out`; return its MD5. Raises on short reads."""
    from tqdm import tqdm

    h = hashlib.md5()
    req = urllib.request.Request(url, headers={"User-Agent": "focusnet"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        total = int(resp.headers.get("Content-Length") or 0) or None
        disable = (not sys.stderr.isatty()) if quiet is None else quiet
        n = 0
        with tqdm(total=total, unit="B", unit_scale=True, desc=os.path.basename(url.split("?")[0]), disable=disable) as bar:
            for block in iter(lambda: resp.read(_CHUNK), b""):
                out.write(block)
                h.update(block)
                n += len(block)
                bar.update(len(block))
    if total is not None and n != total:  # a server that closes early without an error
        raise http.client.IncompleteRead(b"", total - n)
    return h.hexdigest()


def _reason(e: BaseException) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        return f"connection failed: {e.reason}"
    if isinstance(e, http.client.IncompleteRead):
        return f"incomplete download, {e.expected} bytes missing"
    if isinstance(e, socket.timeout):
        return "timed out"
    return f"{type(e).__name__}: {e}"


def _failure_message(url: str, md5: str | None, dest_path: str, reason: str) -> str:
    folder = os.path.dirname(os.path.abspath(dest_path))
    check = f" (MD5 {md5})" if md5 else ""
    return (
        f"Could not download {url} ({reason}). Check your connection and run again, or download "
        f"the file yourself{check} and put it in {folder}/ as {os.path.basename(dest_path)}."
    )
