"""Every bad data source through the CLI: one line naming the file and what to do, exit code 2, nothing cached."""

from __future__ import annotations

import pickle
import tarfile

import pytest
from fake_sources import (
    add_tar_member,
    image_folder_files,
    write_files,
    write_official_archive,
    write_official_folder,
    write_tar,
    write_zip,
)

import cifar10_classifier.data as data_module
from cifar10_classifier import CLASSES
from cifar10_classifier.cli import main
from cifar10_classifier.data.cache import default_cache_dir


class _Shell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def missing_path(tmp_path):
    return tmp_path / "nowhere" / "cifar-10-python.tar.gz", "no such file or folder"


def truncated_archive(tmp_path):
    write_official_archive(tmp_path / "cifar-10-python.tar.gz")
    data = (tmp_path / "cifar-10-python.tar.gz").read_bytes()
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(data[: len(data) // 2])
    return tmp_path / "cifar-10-python.tar.gz", "truncated or corrupt archive"


def not_an_archive(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    return tmp_path / "notes.txt", "truncated or corrupt archive"


def tampered_pickle(tmp_path):
    tampered = pickle.dumps({b"data": _Shell(tmp_path / "pwned"), b"labels": []}, protocol=2)
    write_official_folder(tmp_path / "cifar-10-batches-py", replace={"data_batch_1": tampered})
    return tmp_path / "cifar-10-batches-py", "forbidden global"


def unsafe_member(tmp_path):
    files, _ = image_folder_files("png")
    with tarfile.open(tmp_path / "images.tar.gz", "w:gz") as archive:
        add_tar_member(archive, "../../outside.png", files["train/cat/0.png"])
    return tmp_path / "images.tar.gz", "unsafe member path"


def symlink_member(tmp_path):
    files, _ = image_folder_files("png")
    with tarfile.open(tmp_path / "images.tar.gz", "w:gz") as archive:
        for name, data in files.items():
            add_tar_member(archive, name, data)
        add_tar_member(archive, "train/cat/link.png", type=tarfile.SYMTYPE, linkname="/etc/passwd")
    return tmp_path / "images.tar.gz", "is a link"


def unknown_class(tmp_path):
    files, _ = image_folder_files("png")
    files["train/kangaroo/0.png"] = files["train/cat/0.png"]
    return write_zip(tmp_path / "images.zip", files), "unknown class folder 'kangaroo'"


def missing_class(tmp_path):
    files, _ = image_folder_files("png")
    files = {name: data for name, data in files.items() if "/horse/" not in name}
    return write_tar(tmp_path / "images.tar.gz", files), "lacks class folders horse"


def empty_split(tmp_path):
    files, _ = image_folder_files("png", per_class={"test": 1})
    return write_files(tmp_path / "images", files), "split 'train' is empty"


def corrupt_image(tmp_path):
    files, _ = image_folder_files("png")
    files["test/bird/0.png"] = b"\x89PNG\r\n\x1a\n" + b"\0" * 20
    return write_files(tmp_path / "images", files), "bad image test/bird/0.png"


BAD_SOURCES = [
    missing_path,
    truncated_archive,
    not_an_archive,
    tampered_pickle,
    unsafe_member,
    symlink_member,
    unknown_class,
    missing_class,
    empty_split,
    corrupt_image,
]


@pytest.mark.parametrize("make_source", BAD_SOURCES, ids=[make.__name__ for make in BAD_SOURCES])
def test_bad_source_is_one_line_exit_2(tmp_path, capsys, make_source):
    source, message = make_source(tmp_path)
    code = main(["data", "info", str(source)])
    captured = capsys.readouterr()
    error = captured.err.strip()
    assert code == 2
    assert len(error.splitlines()) == 1, error
    assert error.startswith("error: ") and "Traceback" not in error
    assert str(source) in error and message in error
    assert captured.out == ""
    cache_dir = default_cache_dir()
    assert not list(cache_dir.glob("v*")) and not list(cache_dir.glob(".building-*"))
    assert not (tmp_path / "pwned").exists()
    assert not (tmp_path.parent / "outside.png").exists()


def test_wrong_download_checksum_through_the_cli(tmp_path, capsys, monkeypatch):
    write_official_archive(tmp_path / "served.tar.gz")
    real = data_module.download_official

    def with_local_url(cache_dir=None, url=None, md5=None):
        return real(cache_dir, url=(tmp_path / "served.tar.gz").as_uri())  # the published MD5: a mismatch

    monkeypatch.setattr(data_module, "download_official", with_local_url)
    assert main(["data", "info", "--download"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "served.tar.gz" in error and "does not match the published" in error
    assert not list((default_cache_dir() / "downloads").iterdir())


def test_no_source_through_the_cli(capsys):
    assert main(["data", "info"]) == 2
    assert "no data source given" in capsys.readouterr().err


def test_skip_bad_images_flag_skips_and_counts(tmp_path, capsys):
    files, _ = image_folder_files("png")
    files["train/ship/7.png"] = b"garbage"
    files["test/frog/7.webp"] = b"RIFF\0\0\0\0WEBP"
    source = write_files(tmp_path / "images", files)
    assert main(["data", "info", str(source)]) == 2
    capsys.readouterr()
    assert main(["data", "info", str(source), "--skip-bad-images"]) == 0
    out = capsys.readouterr().out
    assert "skipped 2 bad images" in out
    assert "total" in out


def test_data_info_prints_counts_per_class_and_split(tmp_path, capsys):
    source = write_zip(tmp_path / "images.zip", image_folder_files("png", per_class={"train": 3, "test": 2})[0])
    assert main(["data", "info", str(source), "--cache-dir", str(tmp_path / "cache")]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in lines if line.split() and line.split()[0] in CLASSES}
    assert list(rows) == list(CLASSES)
    assert all(row == ["3", "2"] for row in rows.values())
    assert any(line.split() == ["total", "30", "20"] for line in lines)
    assert len(list((tmp_path / "cache").glob("v*"))) == 1
