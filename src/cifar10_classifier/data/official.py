"""The official CIFAR-10 python format: `cifar-10-python.tar.gz` or its extracted `cifar-10-batches-py/`.

The batches are Python pickles. They are read with a restricted unpickler that admits only the plain containers
and numpy's array reconstruction, so a tampered file cannot run code whether or not its checksum is known.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from cifar10_classifier.data.archive import check_member_safe
from cifar10_classifier.data.errors import DataError

OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
OFFICIAL_MD5 = "c58f30108f718f92721af3b95e74349a"
OFFICIAL_FILENAME = "cifar-10-python.tar.gz"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"

# The only globals an official batch needs: numpy's array reconstruction (old and new module paths) and the
# codec helper Python 3 uses to pickle bytes at protocol 2.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name} in a CIFAR-10 batch")
        return super().find_class(module, name)


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
    pixels = np.asarray(batch["data"])
    labels = np.asarray(batch["labels"], dtype=np.int64)
    if pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != 3072 or len(labels) != len(pixels):
        raise DataError(f"{name}: unexpected array shapes {pixels.shape}/{labels.shape}; re-download the dataset")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{name}: labels outside 0..9; re-download the dataset")
    # The official layout is (N, 3072) = (N, channel, row, column), channel-major.
    images = pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _assemble(read_member) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    train_parts = [_load_batch(read_member(name), name) for name in TRAIN_BATCHES]
    return {
        "train": (np.concatenate([p[0] for p in train_parts]), np.concatenate([p[1] for p in train_parts])),
        "test": _load_batch(read_member(TEST_BATCH), TEST_BATCH),
    }


def load_official_folder(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    def read_member(name: str) -> bytes:
        path = folder / name
        if not path.is_file():
            raise DataError(f"{path}: missing official batch; the folder must hold data_batch_1..5 and test_batch")
        return path.read_bytes()

    return _assemble(read_member)


def load_official_archive(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    try:
        with tarfile.open(path, "r:*") as archive:
            members = {}
            for member in archive.getmembers():
                check_member_safe(
                    path,
                    member.name,
                    is_link=member.issym() or member.islnk(),
                    is_special=not (member.isfile() or member.isdir()),
                )
                if member.isfile():
                    members[Path(member.name).name] = member

            def read_member(name: str) -> bytes:
                if name not in members:
                    raise DataError(f"{path}: archive lacks {name}; is this cifar-10-python.tar.gz? Re-download it")
                handle = archive.extractfile(members[name])
                assert handle is not None
                return handle.read()

            return _assemble(read_member)
    except (tarfile.TarError, EOFError, OSError, ValueError) as error:
        raise DataError(f"{path}: truncated or corrupt archive ({error}); download it again") from error


def is_official_archive(path: Path) -> bool:
    """True when a tar archive holds the official batch files (cheap: reads names only)."""
    try:
        with tarfile.open(path, "r:*") as archive:
            return any(Path(name).name == "data_batch_1" for name in archive.getnames())
    except (tarfile.TarError, EOFError, OSError):
        return False
