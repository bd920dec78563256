"""Write-then-rename helpers: a crash or Ctrl-C never leaves half a file where a good one was."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


def _create_temp_beside(target: Path) -> Path:
    """An empty, new file next to `target`, created with the user's umask (mkstemp would make it 0600)."""
    while True:
        temp_path = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
        try:
            handle = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(handle)
        return temp_path


def _fsync_file(path: Path) -> None:
    # Flush the data before the rename: otherwise a power cut can leave the new name pointing at an empty file.
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it is renamed over `target`, on error removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp_path = _create_temp_beside(target)
    try:
        yield temp_path
        _fsync_file(temp_path)
        os.replace(temp_path, target)
    finally:
        if temp_path.exists():
            temp_path.unlink()


def atomic_write_bytes(target: Path, data: bytes) -> None:
    with atomic_path(target) as temp_path:
        temp_path.write_bytes(data)


def atomic_write_text(target: Path, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))
