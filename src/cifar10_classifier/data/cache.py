"""Decoded datasets cached once as .npy arrays, keyed by the source's checksum, loaded memory-mapped."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from platformdirs import user_cache_dir

from cifar10_classifier.data.dataset import Split
from cifar10_classifier.preprocess import RESIZE_FILTER

CACHE_FORMAT_VERSION = 1
ARRAY_NAMES = ("train_images", "train_labels", "test_images", "test_labels")
# A temporary entry older than this was left by a killed process (a build takes a minute or two): removed.
STALE_BUILD_SECONDS = 3600


def default_cache_dir() -> Path:
    """$CIFAR10_CACHE, else the user's cache folder."""
    return Path(os.environ.get("CIFAR10_CACHE") or user_cache_dir("cifar10-classifier"))


def entry_dir(cache_dir: Path, checksum: str) -> Path:
    return cache_dir / f"v{CACHE_FORMAT_VERSION}-{checksum[:32]}"


def read_cached(cache_dir: Path, checksum: str) -> tuple[Split, Split, dict[str, Any]] | None:
    """The cached splits (memory-mapped), or None when there is no complete entry."""
    folder = entry_dir(cache_dir, checksum)
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in ARRAY_NAMES}
    except (OSError, ValueError):
        return None  # a damaged entry is rebuilt, not trusted
    if meta.get("checksum") != checksum:
        return None
    # Images that are not 32x32 were resized when decoded: an entry made with another filter is decoded again.
    # (Entries from before the filter was recorded were all made with "box".)
    if meta.get("resize_filter", "box") != RESIZE_FILTER:
        return None
    return (
        Split(arrays["train_images"], arrays["train_labels"]),
        Split(arrays["test_images"], arrays["test_labels"]),
        meta,
    )


def write_cached(cache_dir: Path, checksum: str, splits: dict[str, Any], meta: dict[str, Any]) -> None:
    """Write a whole entry into a temporary folder, then rename it into place: never half an entry."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    final = entry_dir(cache_dir, checksum)
    remove_stale_builds(cache_dir)
    temp = Path(tempfile.mkdtemp(prefix=".building-", dir=cache_dir))
    try:
        for split_name, (images, labels) in splits.items():
            np.save(temp / f"{split_name}_images.npy", np.ascontiguousarray(images, dtype=np.uint8))
            np.save(temp / f"{split_name}_labels.npy", np.asarray(labels, dtype=np.int64))
        entry_meta = {**meta, "checksum": checksum, "resize_filter": RESIZE_FILTER}
        (temp / "meta.json").write_text(json.dumps(entry_meta, indent=1))
        try:
            os.replace(temp, final)
        except OSError:
            # `final` exists: another process finished the same entry first (keep it), or a damaged entry
            # is in the way (replace it; readers holding its files memory-mapped keep their copies).
            if read_cached(cache_dir, checksum) is None:
                shutil.rmtree(final, ignore_errors=True)
                os.replace(temp, final)
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)


def remove_stale_builds(cache_dir: Path, max_age_seconds: float = STALE_BUILD_SECONDS) -> None:
    """Delete temporary entries that a killed process left behind; a build still running is younger."""
    now = time.time()
    for folder in cache_dir.glob(".building-*"):
        try:
            if now - folder.stat().st_mtime > max_age_seconds:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue  # another process removed it first
