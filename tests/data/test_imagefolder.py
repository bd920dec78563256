"""Image folders <root>/<split>/<class>/*: as a directory, a .tar.gz and a .zip, in every supported format."""

from __future__ import annotations

import io
import tarfile
import zipfile

import numpy as np
import pytest
from fake_sources import add_tar_member, encode, image_folder_files, tree, write_files, write_tar, write_zip
from PIL import Image
from support import shared_archive_or_skip

import cifar10_classifier.data as data_module
from cifar10_classifier import CLASSES
from cifar10_classifier.data import DataError, load_dataset
from cifar10_classifier.data.cache import default_cache_dir
from cifar10_classifier.preprocess import decode_image

FORMATS = ["png", "jpg", "jpeg", "webp", "bmp"]
LOSSY = {"jpg", "jpeg", "webp"}


def write_source(tmp_path, container: str, files: dict[str, bytes]):
    if container == "dir":
        return write_files(tmp_path / "images", files)
    if container == "tar.gz":
        return write_tar(tmp_path / "images.tar.gz", files)
    return write_zip(tmp_path / "images.zip", files)


def assert_loaded(dataset, expected, *, lossy: bool) -> None:
    for split_name in ("train", "test"):
        split = getattr(dataset, split_name)
        images, labels = expected[split_name]
        assert split.images_uint8.shape == (len(labels), 32, 32, 3)
        assert split.images_uint8.dtype == np.uint8
        np.testing.assert_array_equal(split.labels, labels)
        difference = np.abs(split.images_uint8.astype(np.int16) - images.astype(np.int16))
        assert difference.max() <= (8 if lossy else 0)


@pytest.mark.parametrize("container", ["dir", "tar.gz", "zip"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_in_every_container(tmp_path, container, fmt):
    files, expected = image_folder_files(fmt)
    dataset = load_dataset(write_source(tmp_path, container, files))
    assert_loaded(dataset, expected, lossy=fmt in LOSSY)
    assert dataset.train.counts_per_class() == {name: 2 for name in CLASSES}
    assert dataset.test.counts_per_class() == {name: 1 for name in CLASSES}
    assert dataset.skipped_images == []


@pytest.mark.parametrize("size", [7, 50, 96])
def test_images_that_are_not_32x32_are_resized(tmp_path, size):
    files, expected = image_folder_files("png", size=size)
    assert_loaded(load_dataset(write_files(tmp_path, files)), expected, lossy=False)


def test_resizing_is_the_shared_preprocessing(tmp_path):
    """A non-uniform, non-square photo lands in the cache exactly as decode_image (the server's path) makes it."""
    files, _ = image_folder_files("png")
    gradient = np.zeros((48, 64, 3), dtype=np.uint8)
    gradient[..., 0] = np.arange(64, dtype=np.uint8)[None, :] * 4
    gradient[..., 1] = np.arange(48, dtype=np.uint8)[:, None] * 5
    photo = encode(gradient, "jpg")
    files["test/ship/zz-photo.jpg"] = photo
    dataset = load_dataset(write_files(tmp_path, files))
    ships = dataset.test.images_uint8[dataset.test.labels == CLASSES.index("ship")]
    assert len(ships) == 2
    np.testing.assert_array_equal(ships[-1], decode_image(photo))  # 'zz-photo.jpg' sorts after '0.png'


@pytest.mark.parametrize("container", ["tar.gz", "zip"])
def test_one_wrapping_folder_and_junk_files_are_fine(tmp_path, container):
    files, expected = image_folder_files("png", prefix="cifar10/")
    files["cifar10/README.txt"] = b"not an image"
    files["cifar10/train/cat/.DS_Store"] = b"\0\0\0\1Bud1"
    files["__MACOSX/cifar10/train/cat/._0.png"] = b"AppleDouble resource fork"
    files["cifar10/train/cat/notes.md"] = b"# cats"
    assert_loaded(load_dataset(write_source(tmp_path, container, files)), expected, lossy=False)


def test_dot_slash_tar_and_backslash_zip_member_names(tmp_path):
    """`tar -C root -czf x.tar.gz .` writes './train/...'; some Windows zip tools write 'train\\cat\\0.png'."""
    files, expected = image_folder_files("png")
    with tarfile.open(tmp_path / "images.tar.gz", "w:gz") as archive:
        add_tar_member(archive, ".", type=tarfile.DIRTYPE, mode=0o755)
        for name, data in files.items():
            add_tar_member(archive, f"./{name}", data)
    assert_loaded(load_dataset(tmp_path / "images.tar.gz"), expected, lossy=False)
    windows_files = {name.replace("/", "\\"): data for name, data in files.items()}
    assert_loaded(load_dataset(write_zip(tmp_path / "images.zip", windows_files)), expected, lossy=False)


def test_upper_case_extensions(tmp_path):
    files, expected = image_folder_files("png")
    files = {name.replace(".png", ".PNG"): data for name, data in files.items()}
    assert_loaded(load_dataset(write_files(tmp_path, files)), expected, lossy=False)


def test_images_in_mixed_formats_and_modes(tmp_path):
    files, _ = image_folder_files("png")
    gray = Image.fromarray(np.full((40, 40), 77, dtype=np.uint8), mode="L")
    rgba = Image.fromarray(np.zeros((32, 32, 4), dtype=np.uint8), mode="RGBA")  # fully transparent -> white
    for name, image, fmt in [("gray.png", gray, "PNG"), ("clear.png", rgba, "PNG"), ("gray.bmp", gray, "BMP")]:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        files[f"train/frog/zz-{name}"] = buffer.getvalue()
    dataset = load_dataset(write_files(tmp_path, files))
    frogs = dataset.train.images_uint8[dataset.train.labels == CLASSES.index("frog")]
    assert len(frogs) == 5
    assert (frogs[-3] == 255).all()  # zz-clear.png
    assert (frogs[-2] == 77).all() and (frogs[-1] == 77).all()  # zz-gray.bmp, zz-gray.png


# --- bad folders -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("container", ["dir", "tar.gz", "zip"])
def test_unknown_class_folder(tmp_path, container):
    files, _ = image_folder_files("png")
    files["train/unicorn/0.png"] = files["train/cat/0.png"]
    with pytest.raises(DataError, match=r"unknown class folder 'unicorn' in train/unicorn/0\.png"):
        load_dataset(write_source(tmp_path, container, files))


def test_unknown_split_folder(tmp_path):
    files, _ = image_folder_files("png")
    files["val/cat/0.png"] = files["train/cat/0.png"]
    with pytest.raises(DataError, match=r"unknown split folder 'val'"):
        load_dataset(write_files(tmp_path, files))


@pytest.mark.parametrize("container", ["dir", "tar.gz", "zip"])
def test_missing_class_folder(tmp_path, container):
    files, _ = image_folder_files("png")
    files = {name: data for name, data in files.items() if not name.startswith(("test/deer/", "test/truck/"))}
    with pytest.raises(DataError, match=r"split 'test' lacks class folders deer, truck"):
        load_dataset(write_source(tmp_path, container, files))


@pytest.mark.parametrize("container", ["dir", "tar.gz", "zip"])
def test_empty_split(tmp_path, container):
    files, _ = image_folder_files("png", per_class={"train": 1})
    with pytest.raises(DataError, match=r"split 'test' is empty or missing"):
        load_dataset(write_source(tmp_path, container, files))


def test_folder_without_images(tmp_path):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "test" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match=r"split 'train' is empty or missing"):
        load_dataset(tmp_path)


def test_image_outside_split_and_class(tmp_path):
    files, _ = image_folder_files("png")
    files["stray.png"] = files["train/cat/0.png"]
    with pytest.raises(DataError, match=r"image stray\.png is outside <split>/<class>/"):
        load_dataset(write_files(tmp_path, files))


CORRUPTIONS = {
    "garbage": lambda good: b"this is not an image",
    "empty": lambda good: b"",
    "truncated": lambda good: good[: len(good) // 2],
}


@pytest.mark.parametrize("container", ["dir", "tar.gz", "zip"])
@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupt_image_is_named(tmp_path, container, corruption):
    files, _ = image_folder_files("png")
    files["train/dog/1.png"] = CORRUPTIONS[corruption](files["train/dog/1.png"])
    with pytest.raises(DataError, match=r"bad image train/dog/1\.png: .*--skip-bad-images") as caught:
        load_dataset(write_source(tmp_path, container, files))
    assert "\n" not in str(caught.value)
    assert not list(default_cache_dir().glob("v*")) and not list(default_cache_dir().glob(".building-*"))


@pytest.mark.parametrize("container", ["dir", "zip"])
def test_skip_bad_images_skips_and_counts(tmp_path, container):
    files, expected = image_folder_files("jpg")
    files["train/dog/9.jpg"] = b"garbage"
    files["test/cat/9.jpg"] = encode(np.zeros((32, 32, 3), np.uint8), "jpg")[:100]
    dataset = load_dataset(write_source(tmp_path, container, files), skip_bad_images=True)
    assert sorted(dataset.skipped_images) == ["test/cat/9.jpg", "train/dog/9.jpg"]
    assert_loaded(dataset, expected, lossy=True)


# --- damaged and unsafe archives -------------------------------------------------------------------------------


@pytest.mark.parametrize("container", ["tar.gz", "zip"])
@pytest.mark.parametrize("keep_fraction", [0.1, 0.5, 0.9])
def test_truncated_archive(tmp_path, container, keep_fraction):
    files, _ = image_folder_files("png")
    source = write_source(tmp_path, container, files)
    source.write_bytes(source.read_bytes()[: int(source.stat().st_size * keep_fraction)])
    with pytest.raises(DataError, match=rf"images\.{container.replace('.', '[.]')}: truncated or corrupt archive"):
        load_dataset(source)


def test_zip_member_with_bad_crc(tmp_path):
    files, _ = image_folder_files("bmp")  # stored uncompressed below, so the member's bytes are easy to find
    with zipfile.ZipFile(tmp_path / "images.zip", "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    raw = bytearray((tmp_path / "images.zip").read_bytes())
    offset = raw.find(files["train/bird/1.bmp"]) + 100
    raw[offset] ^= 0xFF
    (tmp_path / "images.zip").write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"images\.zip: truncated or corrupt archive \(Bad CRC-32"):
        load_dataset(tmp_path / "images.zip")


TAR_ATTACKS = {
    "absolute": ("/tmp/train/cat/evil.png", {}, "absolute"),
    "dotdot": ("train/cat/../../../evil.png", {}, r"'\.\.'"),
    "symlink": ("train/cat/evil.png", {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}, "is a link"),
    "hardlink": ("train/cat/evil.png", {"type": tarfile.LNKTYPE, "linkname": "/etc/passwd"}, "is a link"),
    "device": ("train/cat/evil.png", {"type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3}, "device or pipe"),
}


@pytest.mark.parametrize("first", [True, False], ids=["first-member", "last-member"])
@pytest.mark.parametrize("attack", sorted(TAR_ATTACKS))
def test_unsafe_tar_members_refused(tmp_path, attack, first):
    name, attributes, message = TAR_ATTACKS[attack]
    files, _ = image_folder_files("png")
    payload = b"" if attributes else files["train/cat/0.png"]
    with tarfile.open(tmp_path / "evil.tar.gz", "w:gz") as archive:
        if first:
            add_tar_member(archive, name, payload, **attributes)
        for member_name, data in files.items():
            add_tar_member(archive, member_name, data)
        if not first:
            add_tar_member(archive, name, payload, **attributes)
    before = tree(tmp_path)
    with pytest.raises(DataError, match=rf"evil\.tar\.gz: .*{message}.*refusing"):
        load_dataset(tmp_path / "evil.tar.gz")
    assert tree(tmp_path) == before
    assert not list(default_cache_dir().glob("v*"))


def _zip_symlink(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (0o120777 << 16) | 0x20
    return info


ZIP_ATTACKS = {
    "absolute": (zipfile.ZipInfo("/tmp/train/cat/evil.png"), "absolute"),
    "dotdot": (zipfile.ZipInfo("train/../../evil.png"), r"'\.\.'"),
    "windows-drive": (zipfile.ZipInfo("C:/train/cat/evil.png"), "absolute"),
    "symlink": (_zip_symlink("train/cat/evil.png"), "is a link"),
}


@pytest.mark.parametrize("attack", sorted(ZIP_ATTACKS))
def test_unsafe_zip_members_refused(tmp_path, attack):
    info, message = ZIP_ATTACKS[attack]
    files, _ = image_folder_files("png")
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as archive:
        for member_name, data in files.items():
            archive.writestr(member_name, data)
        archive.writestr(info, b"/etc/passwd" if attack == "symlink" else files["train/cat/0.png"])
    before = tree(tmp_path)
    with pytest.raises(DataError, match=rf"evil\.zip: .*{message}.*refusing"):
        load_dataset(tmp_path / "evil.zip")
    assert tree(tmp_path) == before
    assert not list(default_cache_dir().glob("v*"))


# --- the real data -----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_shared_jpeg_archive_has_the_official_counts(monkeypatch):
    source = shared_archive_or_skip()
    load_dataset(source)
    # The second load comes from the cache, memory-mapped, without decoding a single image.
    monkeypatch.setattr(data_module, "_decode_source", lambda *args: pytest.fail("decoded again"))
    dataset = load_dataset(source)
    assert isinstance(dataset.train.images_uint8, np.memmap)
    assert (len(dataset.train), len(dataset.test)) == (50_000, 10_000)
    assert dataset.train.counts_per_class() == {name: 5_000 for name in CLASSES}
    assert dataset.test.counts_per_class() == {name: 1_000 for name in CLASSES}
    assert dataset.train.images_uint8.shape == (50_000, 32, 32, 3)
    assert dataset.test.images_uint8.dtype == np.uint8
    assert dataset.skipped_images == []
