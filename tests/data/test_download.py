"""Downloading the official archive, against a local HTTP server this test starts and a file:// URL."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading

import pytest
from fake_sources import write_official_archive

import cifar10_classifier.data as data_module
from cifar10_classifier.cli import main
from cifar10_classifier.data import DataError, download_official, load_dataset
from cifar10_classifier.data.download import download
from cifar10_classifier.data.official import OFFICIAL_FILENAME, OFFICIAL_MD5


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.requests.append(self.path)
        if self.path == "/cut-short":
            # Promise 100 kB, send 10 bytes, hang up: the client sees an incomplete body.
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"0123456789")
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    """Serves tmp_path/'served' on 127.0.0.1; yields (base URL, list of requested paths)."""
    served = tmp_path / "served"
    served.mkdir()
    requests: list[str] = []
    handler = type("Handler", (_QuietHandler,), {"requests": requests})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", requests, served
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def md5_of(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def leftovers(folder) -> list[str]:
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def test_download_with_the_right_md5(server, tmp_path):
    base, requests, served = server
    write_official_archive(served / OFFICIAL_FILENAME)
    target = tmp_path / "cache" / "downloads" / OFFICIAL_FILENAME
    result = download(f"{base}/{OFFICIAL_FILENAME}", target, md5_of(served / OFFICIAL_FILENAME), show_progress=False)
    assert result == target
    assert target.read_bytes() == (served / OFFICIAL_FILENAME).read_bytes()
    assert leftovers(target.parent) == [OFFICIAL_FILENAME]
    # A second call finds the verified file and does not fetch it again.
    download(f"{base}/{OFFICIAL_FILENAME}", target, md5_of(served / OFFICIAL_FILENAME), show_progress=False)
    assert requests == [f"/{OFFICIAL_FILENAME}"]


def test_download_with_a_wrong_md5_keeps_nothing(server, tmp_path):
    base, _, served = server
    write_official_archive(served / OFFICIAL_FILENAME)
    target = tmp_path / "downloads" / OFFICIAL_FILENAME
    url = f"{base}/{OFFICIAL_FILENAME}"
    with pytest.raises(DataError, match=r"MD5 [0-9a-f]{32} does not match the published c58f3010.*nothing was kept"):
        download(url, target, OFFICIAL_MD5, show_progress=False)
    assert leftovers(target.parent) == []


def test_a_damaged_earlier_download_is_fetched_again(server, tmp_path):
    base, requests, served = server
    (served / "file.bin").write_bytes(b"the real content")
    target = tmp_path / "file.bin"
    target.write_bytes(b"half of the real")
    download(f"{base}/file.bin", target, md5_of(served / "file.bin"), show_progress=False)
    assert target.read_bytes() == b"the real content"
    assert requests == ["/file.bin"]


@pytest.mark.parametrize(
    ("path", "message"), [("/missing.tar.gz", "404"), ("/cut-short", "cut short after 10 of 100,000 bytes")]
)
def test_http_failures_keep_nothing(server, tmp_path, path, message):
    base, _, _ = server
    with pytest.raises(DataError, match=rf"{path}: .*{message}.*"):
        download(f"{base}{path}", tmp_path / "out" / "file", "0" * 32, show_progress=False)
    assert leftovers(tmp_path / "out") == []


def test_unreachable_server(tmp_path):
    with pytest.raises(DataError, match=r"download failed.*check the network"):
        download("http://127.0.0.1:9/nothing", tmp_path / "file", "0" * 32, show_progress=False)


@pytest.mark.parametrize("url", ["not a url", "gopherz://example/x"])
def test_unusable_url(tmp_path, url):
    with pytest.raises(DataError):
        download(url, tmp_path / "file", "0" * 32, show_progress=False)
    assert leftovers(tmp_path) == []


def test_file_url(tmp_path):
    source = tmp_path / "here.bin"
    source.write_bytes(b"local bytes")
    target = download(source.as_uri(), tmp_path / "copy.bin", md5_of(source), show_progress=False)
    assert target.read_bytes() == b"local bytes"
    with pytest.raises(DataError, match="does not match"):
        download(source.as_uri(), tmp_path / "other.bin", "0" * 32, show_progress=False)
    assert not (tmp_path / "other.bin").exists()


def test_download_official_into_the_cache_then_load(server, tmp_path):
    base, _, served = server
    expected = write_official_archive(served / OFFICIAL_FILENAME)
    cache_dir = tmp_path / "cache"
    path = download_official(cache_dir, url=f"{base}/{OFFICIAL_FILENAME}", md5=md5_of(served / OFFICIAL_FILENAME))
    assert path == cache_dir / "downloads" / OFFICIAL_FILENAME
    dataset = load_dataset(path, cache_dir=cache_dir)
    assert len(dataset.train) == len(expected["train"][1]) and len(dataset.test) == len(expected["test"][1])


def test_download_official_with_a_wrong_md5(server, tmp_path):
    base, _, served = server
    write_official_archive(served / OFFICIAL_FILENAME)
    with pytest.raises(DataError, match="does not match"):
        download_official(tmp_path / "cache", url=f"{base}/{OFFICIAL_FILENAME}")
    assert leftovers(tmp_path / "cache" / "downloads") == []


@pytest.fixture
def local_official(server, monkeypatch):
    """--download points at the local server instead of the official address."""
    base, requests, served = server
    write_official_archive(served / OFFICIAL_FILENAME)
    md5 = md5_of(served / OFFICIAL_FILENAME)
    real = data_module.download_official

    def local(cache_dir=None, url=None, md5_sum=None):
        return real(cache_dir, url=f"{base}/{OFFICIAL_FILENAME}", md5=md5)

    monkeypatch.setattr(data_module, "download_official", local)
    return requests


def test_load_dataset_with_download(local_official):
    dataset = load_dataset(download=True)
    assert len(dataset.train) == 50 and dataset.source.endswith(OFFICIAL_FILENAME)
    load_dataset(download=True)
    assert len(local_official) == 1


def test_cli_data_info_with_download(local_official, capsys):
    assert main(["data", "info", "--download"]) == 0
    out = capsys.readouterr().out
    assert "airplane" in out and "total" in out and "50" in out


def test_no_source_and_no_download():
    with pytest.raises(DataError, match="no data source given"):
        load_dataset()
