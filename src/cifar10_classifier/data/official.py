"""The official CIFAR-10 python format: `cifar-10-python.tar.gz` or its extracted `cifar-10-batches-py/`.

The batches are Python pickles. They are read with a restricted unpickler that admits only the plain containers
and numpy's array reconstruction, so a tampered file cannot run code whether or not its checksum is known.
"""

from __future__ import annotations

import codecs
import io
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cifar10_classifier.data.archive import ARCHIVE_ERRORS, check_tar_member_safe, open_tar, read_to_end
from cifar10_classifier.data.errors import DataError

OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
OFFICIAL_MD5 = "c58f30108f718f92721af3b95e74349a"
OFFICIAL_FILENAME = "cifar-10-python.tar.gz"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
_OFFICIAL_MEMBERS_SCANNED = 64

# The only globals an official batch needs: numpy's array reconstruction (Python 2's `numpy.core` path in the
# official files, `numpy._core` when numpy 2 pickles) and the codec helper Python 3 uses to pickle bytes at
# protocol 2. They resolve to the objects below, never through an import the file chooses.
_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(0))[0]
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name} in a CIFAR-10 batch") from None


def _load_batch(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch -> uint8 images (N, 32, 32, 3) and int64 labels (N,)."""
    try:
        batch = _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as error:
        raise DataError(f"{name}: not a valid CIFAR-10 batch ({error}); re-download the dataset") from error
    if not isinstance(batch, dict):
        raise DataError(f"{name}: not a valid CIFAR-10 batch (expected a dict); re-download the dataset")
    batch = {key.decode() if isinstance(key, bytes) else key: value for key, value in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise DataError(f"{name}: batch lacks 'data' or 'labels'; re-download the dataset")
    try:
        pixels = np.asarray(batch["data"])
        labels = np.asarray(batch["labels"])
        if labels.size == 0:
            labels = labels.astype(np.int64)  # np.asarray([]) is float64
    except (TypeError, ValueError) as error:
        raise DataError(f"{name}: malformed 'data' or 'labels' ({error}); re-download the dataset") from error
    if pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != 3072:
        raise DataError(f"{name}: 'data' is {pixels.dtype} {pixels.shape}, not uint8 (N, 3072); re-download it")
    if labels.shape != (len(pixels),) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{name}: 'labels' is not {len(pixels)} integers; re-download the dataset")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{name}: labels outside 0..9; re-download the dataset")
    # The official layout is (N, 3072) = (N, channel, row, column), channel-major.
    images = pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (N, 32, 32, 3)
    return np.ascontiguousarray(images), labels.astype(np.int64)


def _assemble(
    read_member: Callable[[str], bytes], describe: Callable[[str], str]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """`read_member(batch)` -> its bytes; `describe(batch)` -> where it is, for error messages."""
    train_parts = [_load_batch(read_member(name), describe(name)) for name in TRAIN_BATCHES]
    return {
        "train": (np.concatenate([p[0] for p in train_parts]), np.concatenate([p[1] for p in train_parts])),
        "test": _load_batch(read_member(TEST_BATCH), describe(TEST_BATCH)),
    }


def load_official_folder(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    def read_member(name: str) -> bytes:
        path = folder / name
        if not path.is_file():
            raise DataError(f"{path}: missing official batch; the folder must hold data_batch_1..5 and test_batch")
        try:
            return path.read_bytes()
        except OSError as error:
            raise DataError(f"{path}: cannot read ({error.strerror}); check its permissions") from error

    return _assemble(read_member, lambda name: str(folder / name))


def load_official_archive(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    wanted = {*TRAIN_BATCHES, TEST_BATCH}
    contents: dict[str, bytes] = {}
    member_names: dict[str, str] = {}
    try:
        with open_tar(path) as archive:
            # One pass in archive order: seeking back in a .tar.gz would decompress it again from the start.
            for member in archive:
                check_tar_member_safe(path, member)
                batch = Path(member.name).name
                if member.isfile() and batch in wanted:
                    handle = archive.extractfile(member)
                    assert handle is not None
                    contents[batch], member_names[batch] = handle.read(), member.name
            read_to_end(archive)
    except (*ARCHIVE_ERRORS, ValueError) as error:
        raise DataError(f"{path}: truncated or corrupt archive ({error}); download it again") from error

    def read_member(name: str) -> bytes:
        if name not in contents:
            raise DataError(f"{path}: archive lacks {name}; is this cifar-10-python.tar.gz? Re-download it")
        return contents[name]

    return _assemble(read_member, lambda name: f"{path} member {member_names[name]}")


def is_official_archive(path: Path) -> bool:
    """True when a tar archive holds the official batch files (cheap: reads the first few headers only)."""
    try:
        with open_tar(path) as archive:
            # The official archive has 9 members; an image folder has thousands, and reading all their
            # headers would decompress the whole file once more just to say no.
            for index, member in enumerate(archive):
                if Path(member.name).name == "data_batch_1":
                    return True
                if index >= _OFFICIAL_MEMBERS_SCANNED:
                    return False
    except ARCHIVE_ERRORS:
        return False
    return False
