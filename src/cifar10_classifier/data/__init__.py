"""Data sources -> cache -> uint8 arrays. `load_dataset(source)` accepts every supported form of CIFAR-10.

Sources: the official `cifar-10-python.tar.gz` (local, or downloaded with `download=True`), an extracted
`cifar-10-batches-py/` folder, or an image folder `<root>/<split>/<class>/*` (a directory, .tar.gz or .zip).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from cifar10_classifier.data.cache import default_cache_dir, read_cached, write_cached
from cifar10_classifier.data.checksum import memoised_digest
from cifar10_classifier.data.dataset import Dataset, Split
from cifar10_classifier.data.download import download
from cifar10_classifier.data.errors import DataError
from cifar10_classifier.data.imagefolder import load_image_folder
from cifar10_classifier.data.official import (
    OFFICIAL_FILENAME,
    OFFICIAL_MD5,
    OFFICIAL_URL,
    is_official_archive,
    load_official_archive,
    load_official_folder,
)
from cifar10_classifier.data.split import stratified_split

_CACHE_HINT = "check permissions and free space, or point $CIFAR10_CACHE / --cache-dir at a writable folder"

__all__ = ["DataError", "Dataset", "Split", "download_official", "load_dataset", "stratified_split"]


def download_official(cache_dir: Path | None = None, url: str = OFFICIAL_URL, md5: str = OFFICIAL_MD5) -> Path:
    """Fetch the official archive into the cache (once) and return its path."""
    cache_dir = cache_dir or default_cache_dir()
    return download(url, cache_dir / "downloads" / OFFICIAL_FILENAME, md5)


def _decode_source(path: Path, skip_bad_images: bool) -> tuple[dict[str, Any], list[str], str]:
    if path.is_dir():
        if (path / "data_batch_1").is_file():
            return load_official_folder(path), [], "official-batches"
        if (path / "cifar-10-batches-py" / "data_batch_1").is_file():
            return load_official_folder(path / "cifar-10-batches-py"), [], "official-batches"
        splits, skipped = load_image_folder(path, skip_bad_images=skip_bad_images)
        return splits, skipped, "image-folder"
    if is_official_archive(path):
        return load_official_archive(path), [], "official-archive"
    splits, skipped = load_image_folder(path, skip_bad_images=skip_bad_images)
    return splits, skipped, "image-folder-archive"


def load_dataset(
    source: str | Path | None = None,
    *,
    cache_dir: Path | None = None,
    download: bool = False,
    skip_bad_images: bool = False,
) -> Dataset:
    """Load CIFAR-10 from `source` through the cache. With `download=True` and no source, fetch the official file."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    if source is None:
        if not download:
            raise DataError("no data source given; pass a path or --download")
        source = download_official(cache_dir)
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; pass the dataset's path or use --download")
    try:
        checksum = memoised_digest(path, cache_dir)
    except OSError as error:
        raise DataError(f"{error.filename or path}: cannot read or cache ({error.strerror}); {_CACHE_HINT}") from error
    # Skipping bad images changes the decoded content, so it is its own cache entry.
    cache_key = hashlib.sha256(f"{checksum}:skip-bad".encode()).hexdigest() if skip_bad_images else checksum
    cached = read_cached(cache_dir, cache_key)
    if cached is not None:
        train, test, meta = cached
        return Dataset(train, test, str(source), checksum, list(meta.get("skipped_images", [])), skip_bad_images)
    started = time.perf_counter()
    splits, skipped, kind = _decode_source(path, skip_bad_images)
    meta = {
        "source": str(source),
        "kind": kind,
        "skipped_images": skipped,
        "decode_seconds": round(time.perf_counter() - started, 3),
    }
    try:
        write_cached(cache_dir, cache_key, splits, meta)
    except OSError as error:
        raise DataError(f"{cache_dir}: cannot write the dataset cache ({error.strerror}); {_CACHE_HINT}") from error
    cached = read_cached(cache_dir, cache_key)
    assert cached is not None
    train, test, _ = cached
    return Dataset(train, test, str(source), checksum, skipped, skip_bad_images)
