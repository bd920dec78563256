"""Tiny fake CIFAR-10 sources built in a temporary folder: official pickled batches and image folders.

Each builder returns the arrays a correct loader must produce, so tests compare pixels and labels exactly.
"""

from __future__ import annotations

import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from cifar10_classifier import CLASSES

# Expected content of a source: {split: (images uint8 (N, 32, 32, 3), labels int64 (N,))}
Expected = dict[str, tuple[np.ndarray, np.ndarray]]

TRAIN_BATCH_NAMES = [f"data_batch_{i}" for i in range(1, 6)]
ALL_BATCH_NAMES = [*TRAIN_BATCH_NAMES, "test_batch"]


class _Python2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2 strings (BINSTRING), the way the official cPickle files were written.

    Read back with encoding='bytes' they become bytes: the official keys are b'data', b'labels', ...
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def save_python2_string(self, obj: str | bytes) -> None:
        raw = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + len(raw).to_bytes(4, "little") + raw)
        self.memoize(obj)

    dispatch[str] = save_python2_string
    dispatch[bytes] = save_python2_string


def python2_pickle(obj) -> bytes:
    """Protocol 2 bytes as Python 2's cPickle wrote them, numpy's `_reconstruct` under its old module path."""
    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def official_batch(images_hwc: np.ndarray, labels: np.ndarray, batch_label: str, *, python2: bool = True) -> bytes:
    """One batch in the official layout: b'data' (N, 3072) uint8 channel-major, b'labels' a list of ints."""
    data = np.ascontiguousarray(images_hwc.transpose(0, 3, 1, 2).reshape(len(images_hwc), 3072))  # (N, C*H*W)
    batch = {
        b"batch_label": batch_label.encode(),
        b"labels": [int(label) for label in labels],
        b"data": data,
        b"filenames": [f"image_{index}.png".encode() for index in range(len(labels))],
    }
    return python2_pickle(batch) if python2 else pickle.dumps(batch, protocol=2)


def _random_split(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.tile(np.arange(len(CLASSES), dtype=np.int64), per_class)
    rng.shuffle(labels)
    images = rng.integers(0, 256, size=(len(labels), 32, 32, 3), dtype=np.uint8)
    return images, labels


def official_members(per_class_per_batch: int = 1, *, python2: bool = True) -> tuple[dict[str, bytes], Expected]:
    """{batch file name: pickled bytes} for data_batch_1..5, test_batch, batches.meta, and the expected arrays."""
    members: dict[str, bytes] = {}
    train_parts = []
    for index, name in enumerate(TRAIN_BATCH_NAMES):
        images, labels = _random_split(per_class_per_batch, seed=index)
        members[name] = official_batch(images, labels, f"training batch {index + 1} of 5", python2=python2)
        train_parts.append((images, labels))
    test_images, test_labels = _random_split(per_class_per_batch, seed=99)
    members["test_batch"] = official_batch(test_images, test_labels, "testing batch 1 of 1", python2=python2)
    meta = {b"label_names": [name.encode() for name in CLASSES], b"num_cases_per_batch": 10 * per_class_per_batch}
    members["batches.meta"] = python2_pickle(meta)
    expected = {
        "train": (np.concatenate([p[0] for p in train_parts]), np.concatenate([p[1] for p in train_parts])),
        "test": (test_images, test_labels),
    }
    return members, expected


def write_official_folder(folder: Path, *, python2: bool = True, replace: dict[str, bytes] | None = None) -> Expected:
    """An extracted `cifar-10-batches-py/` folder; `replace` swaps a member's bytes (a tampered batch)."""
    members, expected = official_members(python2=python2)
    members.update(replace or {})
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in members.items():
        (folder / name).write_bytes(data)
    return expected


def add_tar_member(archive: tarfile.TarFile, name: str, data: bytes = b"", **attributes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in attributes.items():
        setattr(info, key, value)
    archive.addfile(info, io.BytesIO(data) if data else None)


def write_official_archive(path: Path, *, replace: dict[str, bytes] | None = None) -> Expected:
    """`cifar-10-python.tar.gz`: the batches under `cifar-10-batches-py/`, as the official file has them."""
    members, expected = official_members()
    members.update(replace or {})
    with tarfile.open(path, "w:gz") as archive:
        add_tar_member(archive, "cifar-10-batches-py", type=tarfile.DIRTYPE, mode=0o755)
        for name, data in members.items():
            add_tar_member(archive, f"cifar-10-batches-py/{name}", data)
    return expected


def tile(class_index: int, image_index: int, size: int = 32) -> np.ndarray:
    """A solid tile whose colour is unique per (class, image) and survives JPEG/WebP almost unchanged."""
    color = np.array([20 + 22 * class_index, 40 + 50 * image_index, 230 - 20 * class_index], dtype=np.uint8)
    return np.broadcast_to(color, (size, size, 3)).copy()


def encode(array_uint8: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array_uint8).save(buffer, format={"jpg": "JPEG", "jpeg": "JPEG"}.get(fmt, fmt.upper()))
    return buffer.getvalue()


def image_folder_files(
    fmt: str = "png", *, size: int = 32, per_class: dict[str, int] | None = None, prefix: str = ""
) -> tuple[dict[str, bytes], Expected]:
    """{relative path: image bytes} for `<prefix><split>/<class>/<n>.<fmt>` and the expected (32x32) content.

    Expected images are listed in the loader's order: sorted by path.
    """
    per_class = per_class or {"train": 2, "test": 1}
    files: dict[str, bytes] = {}
    expected: Expected = {}
    for split, count in per_class.items():
        content = {}  # path -> (tile, label), sorted below as the loader reads them
        for class_index, class_name in enumerate(CLASSES):
            for image_index in range(count):
                name = f"{prefix}{split}/{class_name}/{image_index}.{fmt}"
                files[name] = encode(tile(class_index, image_index, size), fmt)
                content[name] = (tile(class_index, image_index), class_index)
        ordered = [content[name] for name in sorted(content)]
        expected[split] = (np.stack([t for t, _ in ordered]), np.array([c for _, c in ordered], dtype=np.int64))
    return files, expected


def write_files(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def write_tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            add_tar_member(archive, name, data)
    return path


def write_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def tree(root: Path) -> set[str]:
    """Every path under `root`, relative: to show that a refused archive wrote nothing."""
    return {str(path.relative_to(root)) for path in root.rglob("*")}
