"""The decoded-dataset cache: keyed by the source's checksum, written whole or not at all, loaded memory-mapped."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest
from fake_sources import image_folder_files, write_files, write_official_archive, write_zip

import cifar10_classifier.data as data_module
from cifar10_classifier.data import DataError, load_dataset
from cifar10_classifier.data import cache as cache_module
from cifar10_classifier.data import checksum as checksum_module
from cifar10_classifier.data.cache import default_cache_dir, entry_dir, read_cached, write_cached


def entries(cache_dir):
    return sorted(path.name for path in cache_dir.iterdir() if path.is_dir())


def forbid_decoding(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the source was decoded again instead of read from the cache")

    monkeypatch.setattr(data_module, "_decode_source", fail)


def test_default_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR10_CACHE", str(tmp_path / "elsewhere"))
    assert default_cache_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("CIFAR10_CACHE")
    assert default_cache_dir().name == "cifar10-classifier"


@pytest.mark.parametrize("kind", ["official-archive", "image-folder", "image-zip"])
def test_second_load_reads_the_cache_memory_mapped(tmp_path, monkeypatch, kind):
    if kind == "official-archive":
        source = tmp_path / "cifar-10-python.tar.gz"
        write_official_archive(source)
    elif kind == "image-folder":
        source = write_files(tmp_path / "images", image_folder_files("png")[0])
    else:
        source = write_zip(tmp_path / "images.zip", image_folder_files("png")[0])
    first = load_dataset(source)
    forbid_decoding(monkeypatch)
    monkeypatch.setattr(checksum_module, "folder_digest", lambda root: pytest.fail("folder hashed again"))
    monkeypatch.setattr(checksum_module, "file_digest", lambda *args: pytest.fail("file hashed again"))
    second = load_dataset(source)
    assert second.checksum == first.checksum
    for split in ("train", "test"):
        assert isinstance(getattr(second, split).images_uint8, np.memmap)
        assert not getattr(second, split).images_uint8.flags.writeable
        np.testing.assert_array_equal(getattr(second, split).images_uint8, getattr(first, split).images_uint8)
        np.testing.assert_array_equal(getattr(second, split).labels, getattr(first, split).labels)
    meta = json.loads((entry_dir(default_cache_dir(), first.checksum) / "meta.json").read_text())
    assert meta["checksum"] == first.checksum and meta["kind"] == kind.replace("image-zip", "image-folder-archive")


def test_first_load_is_memory_mapped_too(tmp_path):
    dataset = load_dataset(write_files(tmp_path, image_folder_files("png")[0]))
    assert isinstance(dataset.train.images_uint8, np.memmap)


def test_checksum_is_the_source_sha256(tmp_path):
    source = tmp_path / "cifar-10-python.tar.gz"
    write_official_archive(source)
    assert load_dataset(source).checksum == hashlib.sha256(source.read_bytes()).hexdigest()


def test_a_changed_source_is_decoded_again(tmp_path):
    files, _ = image_folder_files("png")
    root = write_files(tmp_path / "images", files)
    first = load_dataset(root)
    (root / "train" / "cat" / "0.png").write_bytes(files["train/dog/0.png"])
    second = load_dataset(root)
    assert second.checksum != first.checksum
    assert len(entries(default_cache_dir())) == 2
    assert not np.array_equal(first.train.images_uint8, second.train.images_uint8)


def test_cache_dir_argument_wins_over_the_environment(tmp_path):
    source = write_files(tmp_path / "images", image_folder_files("png")[0])
    load_dataset(source, cache_dir=tmp_path / "mine")
    assert len(entries(tmp_path / "mine")) == 1
    assert not list(default_cache_dir().glob("v*"))


def test_damaged_entry_is_rebuilt(tmp_path):
    source = write_files(tmp_path / "images", image_folder_files("png")[0])
    first = load_dataset(source)
    expected_images = np.array(first.train.images_uint8)  # a copy: `first` maps the file damaged below
    images_file = entry_dir(default_cache_dir(), first.checksum) / "train_images.npy"
    damaged = images_file.read_bytes()[:1000]
    images_file.unlink()  # a new inode, so the mapping `first` holds stays valid
    images_file.write_bytes(damaged)
    rebuilt = load_dataset(source)
    np.testing.assert_array_equal(rebuilt.train.images_uint8, expected_images)
    np.testing.assert_array_equal(first.train.images_uint8, expected_images)


def test_entry_with_a_foreign_checksum_is_not_trusted(tmp_path):
    splits = {"train": (np.zeros((1, 32, 32, 3), np.uint8), [0]), "test": (np.zeros((1, 32, 32, 3), np.uint8), [1])}
    write_cached(tmp_path, "a" * 64, splits, {})
    assert read_cached(tmp_path, "a" * 64) is not None
    # Same 32-character folder prefix, different full checksum: a collision must not be served.
    assert read_cached(tmp_path, "a" * 32 + "b" * 32) is None


def test_failed_decode_leaves_no_entry(tmp_path):
    files, _ = image_folder_files("png")
    files["test/cat/0.png"] = b"broken"
    with pytest.raises(DataError):
        load_dataset(write_files(tmp_path, files))
    cache_dir = default_cache_dir()
    assert not list(cache_dir.glob("v*")) and not list(cache_dir.glob(".building-*"))


def test_failure_while_writing_leaves_no_half_entry(tmp_path, monkeypatch):
    source = write_files(tmp_path / "images", image_folder_files("png")[0])
    real_save = np.save
    calls = []

    def save_then_fill_the_disk(path, array):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real_save(path, array)

    monkeypatch.setattr(cache_module.np, "save", save_then_fill_the_disk)
    with pytest.raises(DataError, match=r"cannot write the dataset cache \(No space left on device\)") as caught:
        load_dataset(source)
    assert str(default_cache_dir()) in str(caught.value)
    assert entries(default_cache_dir()) == []
    monkeypatch.setattr(cache_module.np, "save", real_save)
    assert len(load_dataset(source).train) == 20


def test_interrupted_write_leaves_no_half_entry(tmp_path, monkeypatch):
    source = write_files(tmp_path / "images", image_folder_files("png")[0])

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_module.json, "dumps", interrupt)
    with pytest.raises(KeyboardInterrupt):
        load_dataset(source)
    assert entries(default_cache_dir()) == []


def test_entry_finished_by_another_process_is_kept(tmp_path):
    """Two processes decoding the same source: the second to finish keeps the first's entry, no error."""
    ones = {"train": (np.ones((2, 32, 32, 3), np.uint8), [0, 1]), "test": (np.ones((1, 32, 32, 3), np.uint8), [2])}
    twos = {"train": (np.full((2, 32, 32, 3), 2, np.uint8), [0, 1]), "test": (np.ones((1, 32, 32, 3), np.uint8), [2])}
    write_cached(tmp_path, "c" * 64, ones, {})
    held = read_cached(tmp_path, "c" * 64)
    write_cached(tmp_path, "c" * 64, twos, {})
    assert entries(tmp_path) == [entry_dir(tmp_path, "c" * 64).name]
    assert int(read_cached(tmp_path, "c" * 64)[0].images_uint8.max()) == 1
    assert int(held[0].images_uint8.max()) == 1


def test_damaged_entry_in_the_way_is_replaced(tmp_path):
    splits = {"train": (np.ones((2, 32, 32, 3), np.uint8), [0, 1]), "test": (np.ones((1, 32, 32, 3), np.uint8), [2])}
    folder = entry_dir(tmp_path, "d" * 64)
    folder.mkdir(parents=True)
    (folder / "train_images.npy").write_bytes(b"half")
    write_cached(tmp_path, "d" * 64, splits, {})
    assert read_cached(tmp_path, "d" * 64) is not None
    assert entries(tmp_path) == [folder.name]


def test_entry_made_with_another_resize_filter_is_decoded_again(tmp_path, monkeypatch):
    source = write_files(tmp_path / "images", image_folder_files("png")[0])
    first = load_dataset(source)
    meta_path = entry_dir(default_cache_dir(), first.checksum) / "meta.json"
    assert json.loads(meta_path.read_text())["resize_filter"] == "box"
    forbid_decoding(monkeypatch)
    load_dataset(source)  # same filter: read from the cache
    monkeypatch.setattr(cache_module, "RESIZE_FILTER", "lanczos")
    with pytest.raises(AssertionError, match="decoded again"):
        load_dataset(source)


def test_temporary_entries_left_by_a_killed_process_are_swept(tmp_path):
    stale, running = tmp_path / ".building-stale", tmp_path / ".building-running"
    stale.mkdir()
    running.mkdir()
    hours_ago = os.path.getmtime(stale) - 2 * 3600
    os.utime(stale, (hours_ago, hours_ago))
    splits = {"train": (np.zeros((1, 32, 32, 3), np.uint8), [0]), "test": (np.zeros((1, 32, 32, 3), np.uint8), [1])}
    write_cached(tmp_path, "e" * 64, splits, {})
    assert not stale.exists() and running.exists()


def test_skip_bad_images_is_its_own_entry(tmp_path):
    """A load that skipped bad images must not answer a later strict load from the cache."""
    files, _ = image_folder_files("png")
    files["train/cat/9.png"] = b"broken"
    source = write_files(tmp_path, files)
    lenient = load_dataset(source, skip_bad_images=True)
    assert lenient.skipped_images == ["train/cat/9.png"]
    again = load_dataset(source, skip_bad_images=True)
    assert again.skipped_images == ["train/cat/9.png"]
    with pytest.raises(DataError, match=r"bad image train/cat/9\.png"):
        load_dataset(source)


def test_checksum_memo_survives_a_damaged_memo_file(tmp_path):
    source = write_files(tmp_path / "images", image_folder_files("png")[0])
    first = load_dataset(source)
    (default_cache_dir() / "checksums.json").write_text("{not json")
    assert load_dataset(source).checksum == first.checksum


def test_memo_notices_a_same_size_edit_inside_a_folder(tmp_path):
    files, _ = image_folder_files("png")
    root = write_files(tmp_path / "images", files)
    first = checksum_module.memoised_digest(root, tmp_path / "cache")
    target = root / "train" / "cat" / "0.png"
    stat = target.stat()
    target.write_bytes(files["train/dog/0.png"][: stat.st_size].ljust(stat.st_size, b"\0"))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert checksum_module.memoised_digest(root, tmp_path / "cache") != first


def test_unwritable_cache_is_a_data_error(tmp_path):
    source = write_files(tmp_path / "images", image_folder_files("png")[0])
    (tmp_path / "a-file").write_text("in the way")
    with pytest.raises(DataError, match=r"a-file.*CIFAR10_CACHE"):
        load_dataset(source, cache_dir=tmp_path / "a-file" / "cache")
