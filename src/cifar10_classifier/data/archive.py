"""Archive member checks shared by every archive reader: nothing outside the archive's own tree is touched."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from cifar10_classifier.data.errors import DataError


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
