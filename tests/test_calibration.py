"""Temperature scaling, expected calibration error and the off-distribution scores, on synthetic numbers."""

import numpy as np
import pytest

from cifar10_classifier import calibration as cal


def test_fit_temperature_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(20000, 10)) * 3
    probabilities = cal.softmax(true_logits)
    labels = np.array([rng.choice(10, p=row) for row in probabilities])
    # A model that reports its calibrated logits times 2.5: the fit must find T = 2.5.
    fitted = cal.fit_temperature(true_logits * 2.5, labels)
    assert fitted == pytest.approx(2.5, rel=0.03)
    assert cal.fit_temperature(true_logits * 2.5, labels) == fitted  # deterministic
    assert cal.nll(true_logits * 2.5, labels, fitted) < cal.nll(true_logits * 2.5, labels, 1.0)


def test_ece_on_a_constructed_case():
    # Bin (0.6, 0.667]: 4 images at confidence 0.65, 2 right -> gap 0.15. Bin (0.933, 1]: 6 at 0.95, all right
    # -> gap 0.05. ECE = (4 * 0.15 + 6 * 0.05) / 10 = 0.09.
    rows = [[0.65, 0.35]] * 4 + [[0.95, 0.05]] * 6
    probabilities = np.array(rows)
    labels = np.array([0, 0, 1, 1] + [0] * 6)
    assert cal.expected_calibration_error(probabilities, labels, bins=15) == pytest.approx(0.09)
    table = cal.reliability_bins(probabilities, labels, 15)
    assert table["counts"].sum() == 10 and table["counts"][9] == 4 and table["counts"][14] == 6
    perfect = np.array([[1.0, 0.0]] * 5)
    assert cal.expected_calibration_error(perfect, np.zeros(5, int)) == 0.0


def test_mahalanobis_score_matches_the_direct_formula():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), 200)
    features = rng.normal(size=(600, 4)) @ rng.normal(size=(4, 4)) + labels[:, None] * 2.0
    fitted = cal.fit_mahalanobis(features, labels, shrinkage=0.0)
    means = np.stack([features[labels == c].mean(0) for c in range(3)])
    centred = features - means[labels]
    precision = np.linalg.inv(centred.T @ centred / len(features))
    queries = rng.normal(size=(7, 4)) * 3
    direct = np.min([np.einsum("nd,de,ne->n", queries - m, precision, queries - m) for m in means], axis=0)
    np.testing.assert_allclose(cal.mahalanobis_score(queries, fitted["whiten"], fitted["means"]), direct, rtol=1e-6)


def test_energy_and_msp_rank_confident_logits_as_in_distribution():
    confident, flat = np.array([[10.0, 0, 0]]), np.array([[0.1, 0, 0]])
    assert cal.energy_score(confident)[0] < cal.energy_score(flat)[0]
    assert cal.msp_score(confident)[0] < cal.msp_score(flat)[0]
    assert cal.energy_score(np.zeros((1, 3)))[0] == pytest.approx(-np.log(3))


def test_threshold_keeps_95_percent_of_held_out_scores():
    scores = np.random.default_rng(2).normal(size=2000)
    threshold = cal.threshold_at_keep_rate(scores, 0.95)
    assert (scores <= threshold).mean() == pytest.approx(0.95, abs=0.001)
    assert threshold in scores


def test_auroc():
    assert cal.auroc(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 1.0
    assert cal.auroc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 0.0
    assert cal.auroc(np.ones(4), np.ones(3)) == 0.5
    assert cal.auroc(np.array([0.0, 2.0]), np.array([1.0, 3.0])) == 0.75


def test_held_out_images_are_the_validation_split_or_an_honest_fallback():
    from cifar10_classifier.data import stratified_split

    labels = np.repeat(np.arange(10), 100)
    held_out, description = cal.held_out_for_calibration(labels, 0.1, 3)
    np.testing.assert_array_equal(held_out, stratified_split(labels, 0.1, 3)[1])
    assert "held-out" in description and "never trained on" in description
    drawn, description = cal.held_out_for_calibration(labels, 0.0, 3, fallback_count=200)
    assert len(drawn) == 200 and np.bincount(labels[drawn]).tolist() == [20] * 10
    assert "trained on" in description and "held none out" in description


def test_draw_outside_is_seeded_balanced_and_never_touches_the_held_out_images():
    labels = np.repeat(np.arange(10), 100)
    held_out = np.arange(0, 1000, 10)
    drawn = cal.draw_outside(labels, held_out, 200, seed=3)
    assert not set(drawn) & set(held_out) and len(drawn) == 200
    assert np.bincount(labels[drawn], minlength=10).tolist() == [20] * 10
    np.testing.assert_array_equal(drawn, cal.draw_outside(labels, held_out, 200, seed=3))


def test_gaussian_distance_is_zero_at_the_mean_and_grows_away_from_it():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(500, 4)) * [1.0, 2.0, 3.0, 4.0]
    gaussian = cal.fit_gaussian(features)
    mean = features.mean(0)
    near, far = cal.gaussian_distance_score(np.stack([mean, mean + np.array([0.0, 0.0, 0.0, 40.0])]), gaussian)
    assert near < 1e-3 and 9 < far < 11  # 40 along an axis whose std is ~4: ~10 standard deviations
