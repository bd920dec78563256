"""The official python format: cifar-10-python.tar.gz and the extracted cifar-10-batches-py/ folder."""

from __future__ import annotations

import pickle
import tarfile

import numpy as np
import pytest
from fake_sources import (
    add_tar_member,
    official_batch,
    python2_pickle,
    tree,
    write_official_archive,
    write_official_folder,
)

from cifar10_classifier import CLASSES
from cifar10_classifier.data import DataError, load_dataset
from cifar10_classifier.data.cache import default_cache_dir
from cifar10_classifier.data.official import is_official_archive


def assert_matches(dataset, expected) -> None:
    for split_name in ("train", "test"):
        split = getattr(dataset, split_name)
        images, labels = expected[split_name]
        assert split.images_uint8.shape == (len(labels), 32, 32, 3)
        assert split.images_uint8.dtype == np.uint8
        assert split.labels.dtype == np.int64
        np.testing.assert_array_equal(split.labels, labels)
        np.testing.assert_array_equal(split.images_uint8, images)


def test_official_class_order():
    assert CLASSES == (
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    )


def test_archive_loads_labels_shapes_and_pixels(tmp_path):
    expected = write_official_archive(tmp_path / "cifar-10-python.tar.gz")
    dataset = load_dataset(tmp_path / "cifar-10-python.tar.gz")
    assert_matches(dataset, expected)
    assert len(dataset.train) == 50 and len(dataset.test) == 10
    assert dataset.train.counts_per_class() == {name: 5 for name in CLASSES}
    assert dataset.test.counts_per_class() == {name: 1 for name in CLASSES}


@pytest.mark.parametrize("layout", ["batches-folder", "parent-folder"])
@pytest.mark.parametrize("python2", [True, False], ids=["python2-pickle", "python3-pickle"])
def test_extracted_folder_loads(tmp_path, layout, python2):
    expected = write_official_folder(tmp_path / "cifar-10-batches-py", python2=python2)
    source = tmp_path / "cifar-10-batches-py" if layout == "batches-folder" else tmp_path
    assert_matches(load_dataset(source), expected)


def test_channel_major_rows_become_height_width_channel(tmp_path):
    """Official row = 1024 red, then 1024 green, then 1024 blue values, each row-major over 32x32."""
    pixels = np.zeros((10, 3072), dtype=np.uint8)
    pixels[0, 0] = 11  # red at (row 0, col 0)
    pixels[0, 1024 + 1] = 22  # green at (row 0, col 1)
    pixels[0, 2048 + 32 * 2 + 3] = 33  # blue at (row 2, col 3)
    hwc = pixels.reshape(10, 3, 32, 32).transpose(0, 2, 3, 1)
    labels = np.arange(10)
    folder = tmp_path / "cifar-10-batches-py"
    write_official_folder(folder, replace={"test_batch": official_batch(hwc, labels, "testing batch 1 of 1")})
    image = load_dataset(folder).test.images_uint8[0]
    assert image[0, 0, 0] == 11 and image[0, 1, 1] == 22 and image[2, 3, 2] == 33
    assert int(image.astype(np.int64).sum()) == 11 + 22 + 33


def test_is_official_archive_tells_image_folders_apart(tmp_path):
    write_official_archive(tmp_path / "official.tar.gz")
    with tarfile.open(tmp_path / "images.tar.gz", "w:gz") as archive:
        for index in range(100):
            add_tar_member(archive, f"train/cat/{index}.png", b"x")
    assert is_official_archive(tmp_path / "official.tar.gz")
    assert not is_official_archive(tmp_path / "images.tar.gz")
    (tmp_path / "garbage.tar.gz").write_bytes(b"\x1f\x8b" + b"garbage" * 100)
    assert not is_official_archive(tmp_path / "garbage.tar.gz")


class _RunsShell:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        import os

        return (os.system, (self.command,))


class _Evals:
    def __reduce__(self):
        return (eval, ("__import__('os').system('true')",))


@pytest.mark.parametrize("protocol", [0, 2, 4])
@pytest.mark.parametrize("where", ["folder", "archive"])
def test_tampered_pickle_is_refused_without_running(tmp_path, protocol, where):
    marker = tmp_path / "pwned"
    tampered = pickle.dumps({b"data": _RunsShell(f"touch {marker}"), b"labels": []}, protocol=protocol)
    if where == "folder":
        write_official_folder(tmp_path / "batches", replace={"data_batch_3": tampered})
        source = tmp_path / "batches"
    else:
        write_official_archive(tmp_path / "cifar.tar.gz", replace={"data_batch_3": tampered})
        source = tmp_path / "cifar.tar.gz"
    with pytest.raises(DataError, match=r"data_batch_3.*forbidden global (posix|os)\.system") as caught:
        load_dataset(source)
    assert not marker.exists()
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps({b"data": _Evals(), b"labels": []}, protocol=2),
        # Even a module on the allow-list's path may not lend another of its names.
        b"cnumpy\nload\n(S'/etc/passwd'\ntR.",
        b"c_codecs\ndecode\n(S'x'\ntR.",
        b"cbuiltins\ngetattr\n(cnumpy\nndarray\nS'tofile'\ntR.",
    ],
    ids=["eval", "numpy.load", "_codecs.decode", "getattr"],
)
def test_forbidden_globals(tmp_path, payload):
    write_official_folder(tmp_path, replace={"test_batch": payload})
    with pytest.raises(DataError, match=r"test_batch.*forbidden global"):
        load_dataset(tmp_path)


@pytest.mark.parametrize(
    ("member", "payload", "message"),
    [
        ("data_batch_2", b"", "data_batch_2: not a valid CIFAR-10 batch"),
        ("data_batch_2", b"\x80\x02}q\x00(U\x04data", "data_batch_2: not a valid CIFAR-10 batch"),
        ("data_batch_2", b"not a pickle at all", "data_batch_2: not a valid CIFAR-10 batch"),
        ("data_batch_2", python2_pickle([1, 2, 3]), "expected a dict"),
        ("test_batch", python2_pickle({b"data": np.zeros((2, 3072), np.uint8)}), "lacks 'data' or 'labels'"),
        ("test_batch", python2_pickle({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}), "not uint8"),
        ("test_batch", python2_pickle({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}), "not uint8"),
        ("test_batch", python2_pickle({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}), "not 2 integers"),
        ("test_batch", python2_pickle({b"data": np.zeros((2, 3072), np.uint8), b"labels": [b"x", b"y"]}), "integers"),
        ("test_batch", python2_pickle({b"data": np.zeros((2, 3072), np.uint8), b"labels": [[0], 1]}), "malformed"),
        ("test_batch", python2_pickle({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}), "outside 0..9"),
        ("test_batch", python2_pickle({b"data": np.zeros((2, 3072), np.uint8), b"labels": [-1, 0]}), "outside 0..9"),
    ],
    ids=[
        "empty",
        "truncated",
        "garbage",
        "not-dict",
        "no-labels",
        "float-pixels",
        "short-rows",
        "label-count",
        "label-type",
        "ragged-labels",
        "label-10",
        "label-negative",
    ],
)
def test_malformed_batches(tmp_path, member, payload, message):
    write_official_folder(tmp_path, replace={member: payload})
    with pytest.raises(DataError, match=message):
        load_dataset(tmp_path)


def test_missing_batch_in_folder_names_it(tmp_path):
    write_official_folder(tmp_path)
    (tmp_path / "data_batch_4").unlink()
    with pytest.raises(DataError, match=r"data_batch_4: missing official batch"):
        load_dataset(tmp_path)


def test_missing_batch_in_archive_names_it(tmp_path):
    write_official_archive(tmp_path / "full.tar.gz")
    with tarfile.open(tmp_path / "full.tar.gz") as full, tarfile.open(tmp_path / "cut.tar.gz", "w:gz") as cut:
        for member in full.getmembers():
            if not member.name.endswith("test_batch"):
                cut.addfile(member, full.extractfile(member) if member.isfile() else None)
    with pytest.raises(DataError, match=r"cut\.tar\.gz: archive lacks test_batch"):
        load_dataset(tmp_path / "cut.tar.gz")


@pytest.mark.parametrize("keep_fraction", [0.3, 0.6, 0.95])
def test_truncated_archive(tmp_path, keep_fraction):
    write_official_archive(tmp_path / "full.tar.gz")
    data = (tmp_path / "full.tar.gz").read_bytes()
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(data[: int(len(data) * keep_fraction)])
    with pytest.raises(DataError, match=r"cifar-10-python\.tar\.gz: truncated or corrupt archive"):
        load_dataset(tmp_path / "cifar-10-python.tar.gz")


@pytest.mark.parametrize("where", [0.0002, 1 / 3, 0.99995], ids=["tar-headers", "pixels", "gzip-trailer"])
def test_bytes_flipped_inside_the_gzip_stream(tmp_path, where):
    """Damage anywhere is caught: zlib errors in compressed headers, gzip's CRC-32 in stored pixel blocks."""
    write_official_archive(tmp_path / "full.tar.gz")
    data = bytearray((tmp_path / "full.tar.gz").read_bytes())
    start = max(12, int(len(data) * where))
    for offset in range(start, min(start + 4, len(data))):
        data[offset] ^= 0xFF
    (tmp_path / "damaged.tar.gz").write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"damaged\.tar\.gz: truncated or corrupt archive") as caught:
        load_dataset(tmp_path / "damaged.tar.gz")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("content", [b"", b"hello", b"\x1f\x8b\x08" + bytes(40)], ids=["empty", "text", "gzip-garbage"])
def test_not_an_archive(tmp_path, content):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(content)
    with pytest.raises(DataError, match=r"cifar-10-python\.tar\.gz: truncated or corrupt archive"):
        load_dataset(tmp_path / "cifar-10-python.tar.gz")


@pytest.mark.parametrize(
    ("name", "attributes", "message"),
    [
        ("/etc/cifar-10-batches-py/data_batch_1", {}, "absolute"),
        ("cifar-10-batches-py/../../data_batch_1", {}, r"'\.\.'"),
        ("cifar-10-batches-py/data_batch_1", {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}, "is a link"),
        ("cifar-10-batches-py/data_batch_1", {"type": tarfile.LNKTYPE, "linkname": "/etc/passwd"}, "is a link"),
        ("cifar-10-batches-py/fifo", {"type": tarfile.FIFOTYPE}, "device or pipe"),
    ],
    ids=["absolute", "dotdot", "symlink", "hardlink", "fifo"],
)
def test_unsafe_members_refused_and_nothing_extracted(tmp_path, name, attributes, message):
    write_official_archive(tmp_path / "good.tar.gz")
    with tarfile.open(tmp_path / "good.tar.gz") as good, tarfile.open(tmp_path / "evil.tar.gz", "w:gz") as evil:
        for member in good.getmembers():
            evil.addfile(member, good.extractfile(member) if member.isfile() else None)
        add_tar_member(evil, name, b"payload" if not attributes else b"", **attributes)
    before = tree(tmp_path)
    with pytest.raises(DataError, match=rf"evil\.tar\.gz: .*{message}"):
        load_dataset(tmp_path / "evil.tar.gz")
    assert tree(tmp_path) == before
    assert not list(default_cache_dir().glob("v*"))
