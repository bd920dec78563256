"""Checksums of sources. A file's sha256 is memoised by (path, size, mtime) so a cached load stays sub-second."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from cifar10_classifier.atomic import atomic_write_text


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def folder_digest(root: Path) -> str:
    """A folder's checksum: every file's relative path and content, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def memoised_digest(path: Path, cache_dir: Path) -> str:
    """sha256 of a file or folder, reusing the last value while the path's size and mtime are unchanged."""
    stat = path.stat()
    if path.is_dir():
        # A folder's mtime changes when entries are added or removed; contents changes need a deep stamp.
        stamps = [
            (str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(path.rglob("*"))
            if p.is_file()
        ]
        stamp = hashlib.sha256(json.dumps(stamps).encode()).hexdigest()
    else:
        stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
    memo_path = cache_dir / "checksums.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    key = os.path.abspath(path)
    entry = memo.get(key)
    if entry and entry.get("stamp") == stamp:
        return str(entry["sha256"])
    value = folder_digest(path) if path.is_dir() else file_digest(path)
    memo[key] = {"stamp": stamp, "sha256": value}
    cache_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(memo_path, json.dumps(memo, indent=1))
    return value
