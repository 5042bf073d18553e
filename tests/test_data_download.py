"""Downloads against a local HTTP server on 127.0.0.1: good, truncated, corrupted, 404, refused, slow."""

import hashlib
import io
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from focusnet.data import download_file, load_dataset, registry
from focusnet.data.fakes import fake_arrays, fake_info
from focusnet.errors import FocusNetError


def npz_bytes(info, size=28) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **fake_arrays(info, size))
    return buf.getvalue()


INFO = fake_info("fakedl", n_samples=(12, 4, 4), sizes=(28,))
GOOD = npz_bytes(INFO)
GOOD_MD5 = hashlib.md5(GOOD).hexdigest()


class Handler(BaseHTTPRequestHandler):
    """/good/<name>: the file; /truncated/<name>: half of it with the full Content-Length;
    /corrupt/<name>: one byte changed; /slow/<name>: waits before answering; anything else: 404."""

    def do_GET(self):
        kind = self.path.strip("/").split("/")[0]
        if kind == "slow":
            time.sleep(1.5)
        if kind not in ("good", "truncated", "corrupt", "slow"):
            self.send_error(404, "Not Found")
            return
        body = bytearray(GOOD)
        if kind == "corrupt":
            body[len(body) // 2] ^= 0xFF
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body[: len(body) // 2] if kind == "truncated" else body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass
        self.close_connection = True

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_failed_cleanly(excinfo, url, folder, *parts):
    msg = str(excinfo.value)
    assert isinstance(excinfo.value, FocusNetError) and "\n" not in msg
    assert url in msg and GOOD_MD5 in msg and f"{folder}/" in msg
    for p in parts:
        assert p in msg, msg
    assert os.listdir(folder) == []  # no partial or final file left behind


def test_good_download(server, tmp_path):
    dest = tmp_path / "fakedl.npz"
    assert download_file(f"{server}/good/fakedl.npz", str(dest), GOOD_MD5, quiet=True) == str(dest)
    assert dest.read_bytes() == GOOD and os.listdir(tmp_path) == ["fakedl.npz"]
    mask = os.umask(0o022)  # readable by others, as a file made by open() is (the temporary file was 0600)
    try:
        download_file(f"{server}/good/fakedl.npz", str(tmp_path / "shared.npz"), GOOD_MD5, quiet=True)
    finally:
        os.umask(mask)
    assert (tmp_path / "shared.npz").stat().st_mode & 0o777 == 0o644


def test_download_without_md5(server, tmp_path):
    download_file(f"{server}/corrupt/x.npz", str(tmp_path / "x.npz"), None, quiet=True)
    assert (tmp_path / "x.npz").stat().st_size == len(GOOD)


@pytest.mark.parametrize(
    "kind,reason",
    [("truncated", "incomplete download"), ("corrupt", "its MD5 is"), ("missing", "HTTP 404")],
)
def test_failed_downloads(server, tmp_path, kind, reason):
    url = f"{server}/{kind}/fakedl.npz"
    with pytest.raises(FocusNetError) as e:
        download_file(url, str(tmp_path / "fakedl.npz"), GOOD_MD5, quiet=True)
    assert_failed_cleanly(e, url, str(tmp_path), reason, "fakedl.npz")


def test_corrupt_download_says_expected_and_got(server, tmp_path):
    with pytest.raises(FocusNetError, match=f"expected {GOOD_MD5}"):
        download_file(f"{server}/corrupt/f.npz", str(tmp_path / "f.npz"), GOOD_MD5, quiet=True)


def test_connection_refused(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/fakedl.npz"
    with pytest.raises(FocusNetError) as e:
        download_file(url, str(tmp_path / "fakedl.npz"), GOOD_MD5, quiet=True)
    assert_failed_cleanly(e, url, str(tmp_path), "connection failed")


def test_timeout(server, tmp_path):
    url = f"{server}/slow/fakedl.npz"
    with pytest.raises(FocusNetError) as e:
        download_file(url, str(tmp_path / "fakedl.npz"), GOOD_MD5, timeout=0.3, quiet=True)
    assert_failed_cleanly(e, url, str(tmp_path), "timed out")


def test_existing_file_not_replaced_on_failure(server, tmp_path):
    dest = tmp_path / "fakedl.npz"
    dest.write_bytes(b"old")
    with pytest.raises(FocusNetError):
        download_file(f"{server}/truncated/fakedl.npz", str(dest), GOOD_MD5, quiet=True)
    assert dest.read_bytes() == b"old" and os.listdir(tmp_path) == ["fakedl.npz"]


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._registry()))
    registry.register_dataset(fake_info("fakedl", n_samples=(12, 4, 4), sizes=(28,), md5s={28: GOOD_MD5}))


def test_load_dataset_downloads_from_mirror(server, tmp_path, monkeypatch, registered):
    monkeypatch.setenv(registry.URL_ENV, f"{server}/good/")
    data = load_dataset("fakedl", data_dir=str(tmp_path))
    assert os.listdir(tmp_path) == ["fakedl.npz"] and data.splits["train"].images.shape == (12, 1, 28, 28)


def test_load_dataset_failed_download_message(server, tmp_path, monkeypatch, registered):
    monkeypatch.setenv(registry.URL_ENV, f"{server}/truncated")
    with pytest.raises(FocusNetError) as e:
        load_dataset("fakedl", data_dir=str(tmp_path))
    assert_failed_cleanly(e, f"{server}/truncated/fakedl.npz", str(tmp_path), "incomplete download")


def test_a_mirror_without_a_scheme_is_one_clear_line(tmp_path, monkeypatch, registered):
    monkeypatch.setenv(registry.URL_ENV, "mirror.example.org/medmnist/")  # was a raw ValueError traceback
    with pytest.raises(FocusNetError, match=rf"not a valid URL .*{registry.URL_ENV} must start with http:// or https://") as e:
        load_dataset("fakedl", data_dir=str(tmp_path))
    assert "\n" not in str(e.value) and os.listdir(tmp_path) == []


def test_a_full_disk_is_not_reported_as_a_connection_problem(server, tmp_path, monkeypatch):
    import errno

    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, block):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: FullDisk(real_fdopen(fd, mode)))
    with pytest.raises(FocusNetError) as e:
        download_file(f"{server}/good/fakedl.npz", str(tmp_path / "fakedl.npz"), GOOD_MD5, quiet=True)
    msg = str(e.value)
    assert "No space left on device" in msg and "free space or pass a writable --data-dir" in msg and "connection" not in msg
    assert os.listdir(tmp_path) == []
