"""Archive member checks shared by every archive reader: nothing outside the archive's own tree is touched."""

from __future__ import annotations

import lzma
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Literal

from cifar10_classifier.data.errors import DataError

# What a damaged archive can raise while it is read: gzip raises EOFError when truncated and zlib.error (not an
# OSError) when a byte in the middle is flipped; zip raises RuntimeError (NotImplementedError is one) for
# encrypted or unsupported members.
ARCHIVE_ERRORS = (
    tarfile.TarError,
    zipfile.BadZipFile,
    EOFError,
    OSError,
    zlib.error,
    lzma.LZMAError,
    RuntimeError,
)


def check_member_safe(archive: Path, name: str, *, is_link: bool = False, is_special: bool = False) -> None:
    """Refuse absolute paths, '..' components, links and device files inside an archive."""
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise DataError(f"{archive}: unsafe member path {name!r} (absolute); refusing to read this archive")
    if ".." in pure.parts:
        raise DataError(f"{archive}: unsafe member path {name!r} ('..'); refusing to read this archive")
    if is_link:
        raise DataError(f"{archive}: member {name!r} is a link; refusing to read this archive")
    if is_special:
        raise DataError(f"{archive}: member {name!r} is a device or pipe; refusing to read this archive")


def check_tar_member_safe(archive: Path, member: tarfile.TarInfo) -> None:
    check_member_safe(
        archive,
        member.name,
        is_link=member.issym() or member.islnk(),
        is_special=not (member.isfile() or member.isdir()),
    )


def read_to_end(archive: tarfile.TarFile) -> None:
    """Read a compressed tar to its last byte, so the compressor's own check (gzip's CRC-32) runs.

    tarfile stops at the end-of-archive marker and never reaches gzip's trailer: without this, bytes damaged
    inside a stored deflate block (random pixels compress to stored blocks) would load as wrong pixels.
    """
    assert archive.fileobj is not None
    while archive.fileobj.read(1 << 20):
        pass


_COMPRESSION_MAGIC = {b"\x1f\x8b": "gz", b"BZh": "bz2", b"\xfd7zXZ\x00": "xz"}


def open_tar(path: Path) -> tarfile.TarFile:
    """Open a tar, compressed or not, by its magic bytes: the error then names the one format it is in."""
    with open(path, "rb") as handle:
        head = handle.read(6)
    compression = next((name for magic, name in _COMPRESSION_MAGIC.items() if head.startswith(magic)), "")
    mode: Literal["r:", "r:gz", "r:bz2", "r:xz"] = f"r:{compression}"  # type: ignore[assignment]
    return tarfile.open(path, mode)
