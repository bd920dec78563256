"""Write-then-rename: a failure never leaves half a file, nor a temporary one."""

from __future__ import annotations

import os
import stat

import pytest

from cifar10_classifier.atomic import atomic_path, atomic_write_bytes, atomic_write_text


def test_write_bytes_and_text(tmp_path):
    atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
    atomic_write_text(tmp_path / "b.txt", "héllo\n")
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.txt").read_bytes() == "héllo\n".encode()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.bin", "b.txt"]


def test_creates_missing_parent_folders(tmp_path):
    atomic_write_text(tmp_path / "deep" / "er" / "file.json", "{}")
    assert (tmp_path / "deep" / "er" / "file.json").read_text() == "{}"


def test_replaces_an_existing_file(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"


def test_temporary_path_is_a_hidden_sibling(tmp_path):
    target = tmp_path / "out.bin"
    with atomic_path(target) as temp_path:
        assert temp_path.parent == tmp_path and temp_path.name.startswith(".out.bin.")
        assert temp_path.exists() and not target.exists()
        temp_path.write_bytes(b"done")
    assert target.read_bytes() == b"done" and not temp_path.exists()


@pytest.mark.parametrize("failure", [RuntimeError, KeyboardInterrupt])
def test_failure_keeps_the_old_file_and_removes_the_temporary(tmp_path, failure):
    target = tmp_path / "results.json"
    target.write_text("good")
    with pytest.raises(failure), atomic_path(target) as temp_path:
        temp_path.write_text("half of a new fi")
        raise failure
    assert target.read_text() == "good"
    assert [path.name for path in tmp_path.iterdir()] == ["results.json"]


def test_failure_without_an_old_file_leaves_nothing(tmp_path):
    with pytest.raises(ValueError), atomic_path(tmp_path / "new.bin") as temp_path:
        temp_path.write_bytes(b"partial")
        raise ValueError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_body_that_removed_its_temporary_file(tmp_path):
    with pytest.raises(FileNotFoundError), atomic_path(tmp_path / "x") as temp_path:
        temp_path.unlink()
    assert list(tmp_path.iterdir()) == []


def test_new_files_get_the_usual_permissions(tmp_path):
    """mkstemp would make them 0600: an exported model or a results file must be readable like any other file."""
    old_umask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "card.json", "{}")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / "card.json").stat().st_mode) == 0o644


def test_concurrent_temporaries_do_not_collide(tmp_path):
    target = tmp_path / "same.txt"
    with atomic_path(target) as first, atomic_path(target) as second:
        assert first != second
        first.write_text("first")
        second.write_text("second")
    assert target.read_text() == "first"  # the outer block finishes last
    assert [path.name for path in tmp_path.iterdir()] == ["same.txt"]
