"""Image folders `<root>/<split>/<class>/*.{png,jpg,jpeg,webp,bmp}`, as a directory or a .tar.gz/.zip of one.

A single wrapping folder inside an archive (`cifar10/train/cat/...`) is allowed. Every image goes through the
shared preprocessing's decoder, so tiles that are not 32x32 are resized exactly as photos are at serving time.
"""

from __future__ import annotations

import functools
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from cifar10_classifier import CLASSES
from cifar10_classifier.data.archive import (
    ARCHIVE_ERRORS,
    check_member_safe,
    check_tar_member_safe,
    open_tar,
    read_to_end,
)
from cifar10_classifier.data.errors import DataError
from cifar10_classifier.preprocess import ImageDecodeError, decode_image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
SPLITS = ("train", "test")

# (relative path inside the source, a function returning the file's bytes)
Entry = tuple[str, Callable[[], bytes]]


def _folder_entries(root: Path) -> Iterator[Entry]:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            yield str(path.relative_to(root).as_posix()), path.read_bytes


def _tar_entries(path: Path) -> Iterator[Entry]:
    with open_tar(path) as archive:
        # Streaming order: a .tar.gz is read once, front to back.
        for member in archive:
            check_tar_member_safe(path, member)
            if member.isfile():
                handle = archive.extractfile(member)
                assert handle is not None
                data = handle.read()
                yield member.name, functools.partial(bytes, data)
        read_to_end(archive)


def _zip_entries(path: Path) -> Iterator[Entry]:
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            # Zip stores symlinks as files with the S_IFLNK bit in the upper external attributes.
            is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
            check_member_safe(path, info.filename, is_link=is_link)
            if not info.is_dir():
                # Some Windows tools write 'train\\cat\\0.png' although the zip format says '/'.
                yield info.filename.replace("\\", "/"), functools.partial(archive.read, info)


def _classify(source: Path, name: str) -> tuple[str, str] | None:
    """'[wrapper/]split/class/file.ext' -> (split, class), or None for files that are not images."""
    parts = PurePosixPath(name).parts
    if not name.lower().endswith(IMAGE_EXTENSIONS) or any(part.startswith(".") for part in parts):
        return None
    if len(parts) < 3:
        raise DataError(
            f"{source}: image {name} is outside <split>/<class>/; lay the folder out as <root>/<split>/<class>/"
        )
    return parts[-3], parts[-2]


def load_image_folder(source: Path, *, skip_bad_images: bool = False) -> tuple[dict[str, Any], list[str]]:
    """-> ({split: (images uint8 (N,32,32,3), labels int64 (N,))}, skipped image names)."""
    if source.is_dir():
        entries = _folder_entries(source)
    elif zipfile.is_zipfile(source):
        entries = _zip_entries(source)
    else:
        entries = _tar_entries(source)

    images: dict[str, list[np.ndarray]] = {split: [] for split in SPLITS}
    labels: dict[str, list[int]] = {split: [] for split in SPLITS}
    skipped: list[str] = []
    try:
        for name, read in entries:
            where = _classify(source, name)
            if where is None:
                continue
            split, class_name = where
            if split not in SPLITS:
                raise DataError(f"{source}: unknown split folder {split!r} in {name}; use {' and '.join(SPLITS)}")
            if class_name not in CLASSES:
                raise DataError(
                    f"{source}: unknown class folder {class_name!r} in {name}; class folders must be "
                    f"{', '.join(CLASSES)}"
                )
            try:
                image = decode_image(read())
            except ImageDecodeError as error:
                if skip_bad_images:
                    skipped.append(name)
                    continue
                raise DataError(f"{source}: bad image {name}: {error}; remove it or pass --skip-bad-images") from error
            images[split].append(image)
            labels[split].append(CLASSES.index(class_name))
    except ARCHIVE_ERRORS as error:
        if source.is_dir():
            raise DataError(f"{source}: cannot read the image folder ({error}); check its permissions") from error
        raise DataError(f"{source}: truncated or corrupt archive ({error}); rebuild or re-download it") from error

    result = {}
    for split in SPLITS:
        if not labels[split]:
            raise DataError(f"{source}: split {split!r} is empty or missing; add {split}/<class>/ images")
        present = set(labels[split])
        missing = [CLASSES[i] for i in range(len(CLASSES)) if i not in present]
        if missing:
            raise DataError(f"{source}: split {split!r} lacks class folders {', '.join(missing)}")
        result[split] = (np.stack(images[split]), np.asarray(labels[split], dtype=np.int64))
    return result, skipped
