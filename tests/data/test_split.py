"""The seeded, stratified validation split."""

from __future__ import annotations

import numpy as np
import pytest

from cifar10_classifier.data import stratified_split


def balanced_labels(per_class: int = 50) -> np.ndarray:
    rng = np.random.default_rng(123)
    labels = np.repeat(np.arange(10), per_class)
    rng.shuffle(labels)
    return labels


def test_same_seed_same_indices_other_seed_other_indices():
    labels = balanced_labels()
    train_a, val_a = stratified_split(labels, 0.2, seed=7)
    train_b, val_b = stratified_split(labels.copy(), 0.2, seed=7)
    np.testing.assert_array_equal(train_a, train_b)
    np.testing.assert_array_equal(val_a, val_b)
    assert not np.array_equal(val_a, stratified_split(labels, 0.2, seed=8)[1])


def test_default_is_twenty_percent_of_every_class():
    labels = balanced_labels(per_class=50)
    train, val = stratified_split(labels)
    assert np.bincount(labels[val], minlength=10).tolist() == [10] * 10
    assert np.bincount(labels[train], minlength=10).tolist() == [40] * 10


def test_indices_are_sorted_disjoint_int64_and_cover_everything():
    labels = balanced_labels()
    train, val = stratified_split(labels, 0.3, seed=1)
    assert train.dtype == np.int64 and val.dtype == np.int64
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    assert np.intersect1d(train, val).size == 0
    np.testing.assert_array_equal(np.union1d(train, val), np.arange(len(labels)))


def test_zero_fraction_keeps_everything_for_training():
    labels = balanced_labels()
    train, val = stratified_split(labels, 0.0, seed=3)
    assert val.size == 0 and val.dtype == np.int64
    np.testing.assert_array_equal(train, np.arange(len(labels)))


def test_unbalanced_classes_round_per_class():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 1)
    train, val = stratified_split(labels, 0.2, seed=0)
    assert np.bincount(labels[val], minlength=3).tolist() == [2, 1, 0]
    assert len(train) + len(val) == len(labels)


def test_works_on_a_memory_mapped_split(tmp_path):
    path = tmp_path / "labels.npy"
    np.save(path, balanced_labels())
    train, val = stratified_split(np.load(path, mmap_mode="r"), 0.2, seed=0)
    assert len(val) == 100 and len(train) == 400


def test_empty_labels():
    train, val = stratified_split(np.zeros(0, dtype=np.int64))
    assert train.size == 0 and val.size == 0


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_fraction_out_of_range(fraction):
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split(balanced_labels(), fraction)
