"""Calibrated probabilities and the off-distribution score, in numpy (torch-free: the served half uses it too).

- Temperature scaling: one T > 0 that minimises the NLL of softmax(logits / T) on held-out images.
- Expected calibration error: 15 equal-width confidence bins, |accuracy - confidence| weighted by bin share.
- Off-distribution scores, higher = more off-distribution: max softmax probability (as 1 - MSP), energy
  (-logsumexp of the calibrated logits), minus the norm of the penultimate features, the Mahalanobis distance
  of those features to the nearest class mean under one shared covariance, and the distance of any vector (the
  layer statistics) to one Gaussian fitted on training images. The threshold keeps a chosen share (95%) of
  held-out images.
"""

from __future__ import annotations

import numpy as np

ECE_BINS = 15
KEEP_RATE = 0.95  # the share of held-out in-distribution images the threshold keeps (TPR)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    log_probabilities = log_softmax(np.asarray(logits, np.float64) / temperature)
    return float(-log_probabilities[np.arange(len(labels)), np.asarray(labels)].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, low: float = 0.05, high: float = 20.0) -> float:
    """The T in [low, high] minimising NLL(softmax(logits / T)): a golden-section search on log T (the NLL is
    convex in 1/T, so unimodal in log T). Deterministic; 80 steps narrow the bracket far below float precision."""
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels)
    a, b = np.log(low), np.log(high)
    ratio = (np.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = nll(logits, labels, np.exp(c)), nll(logits, labels, np.exp(d))
    for _ in range(80):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = nll(logits, labels, np.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = nll(logits, labels, np.exp(d))
    return float(np.exp((a + b) / 2))


def reliability_bins(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> dict:
    """Per equal-width confidence bin: count, mean confidence and accuracy (NaN where a bin is empty)."""
    probabilities, labels = np.asarray(probabilities), np.asarray(labels)
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == labels).astype(np.float64)
    # Bin i holds confidences in (i/bins, (i+1)/bins]; a confidence of exactly 0 joins the first bin.
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, confidence, minlength=bins) / counts
        accuracy = np.bincount(index, correct, minlength=bins) / counts
    return {"counts": counts, "confidence": mean_confidence, "accuracy": accuracy}


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    table = reliability_bins(probabilities, labels, bins)
    filled = table["counts"] > 0
    gaps = np.abs(table["accuracy"][filled] - table["confidence"][filled])
    return float((gaps * table["counts"][filled]).sum() / table["counts"].sum())


def softmax(logits: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(np.asarray(logits, np.float64)))


# Off-distribution scores (higher = more off-distribution)


def msp_score(logits: np.ndarray) -> np.ndarray:
    """1 - the max softmax probability (of logits already divided by T)."""
    return 1.0 - softmax(logits).max(axis=1)


def energy_score(logits: np.ndarray) -> np.ndarray:
    """-logsumexp of the logits (already divided by T): the free energy, low for confident in-distribution."""
    logits = np.asarray(logits, np.float64)
    top = logits.max(axis=1)
    return -(top + np.log(np.exp(logits - top[:, None]).sum(axis=1)))


def feature_norm_score(features: np.ndarray) -> np.ndarray:
    """Minus the L2 norm of the penultimate features: images of no class excite few max-pooled channels."""
    return -np.linalg.norm(np.asarray(features, np.float64), axis=1)


def fit_mahalanobis(features: np.ndarray, labels: np.ndarray, shrinkage: float = 1e-3) -> dict:
    """Class means and one shared covariance of penultimate features -> the matrices the graph multiplies by:
    `whiten` (D, D) with whiten @ whiten.T = inverse covariance, and the whitened class means (C, D)."""
    features, labels = np.asarray(features, np.float64), np.asarray(labels)
    classes = np.unique(labels)
    means = np.stack([features[labels == c].mean(axis=0) for c in classes])  # (C, D)
    centred = features - means[np.searchsorted(classes, labels)]
    covariance = centred.T @ centred / len(features)  # (D, D)
    # A little shrinkage towards the mean variance: dead ReLU channels give zero variance otherwise.
    covariance += shrinkage * np.trace(covariance) / len(covariance) * np.eye(len(covariance)) + 1e-12 * np.eye(
        len(covariance)
    )
    precision = np.linalg.inv(covariance)
    whiten = np.linalg.cholesky((precision + precision.T) / 2)  # precision = whiten @ whiten.T
    return {"whiten": whiten, "means": means @ whiten}


def mahalanobis_score(features: np.ndarray, whiten: np.ndarray, whitened_means: np.ndarray) -> np.ndarray:
    """min over classes of (f - mu_c)^T Sigma^-1 (f - mu_c), as ||z||^2 - 2 z.m_c + ||m_c||^2 with z = f @ whiten:
    the same two matmuls the exported graph runs."""
    z = np.asarray(features, np.float64) @ whiten  # (N, D)
    distances = (z * z).sum(axis=1, keepdims=True) - 2 * z @ whitened_means.T + (whitened_means**2).sum(axis=1)
    return distances.min(axis=1)


def fit_gaussian(features: np.ndarray) -> dict:
    """One Gaussian over all of `features` (no classes): fit_mahalanobis's matrices with a single mean."""
    return fit_mahalanobis(features, np.zeros(len(features), np.int64))


def gaussian_distance_score(features: np.ndarray, gaussian: dict) -> np.ndarray:
    """The Mahalanobis distance (not squared) of each row to fit_gaussian's Gaussian, as the exported graph computes
    it (whiten, subtract the whitened mean, norm): never the root of a rounding-negative expanded square."""
    centred = np.asarray(features, np.float64) @ gaussian["whiten"] - gaussian["means"][0]
    return np.sqrt((centred * centred).sum(axis=1))


def threshold_at_keep_rate(in_distribution_scores: np.ndarray, keep_rate: float = KEEP_RATE) -> float:
    """The score at or below which `keep_rate` of these (held-out, in-distribution) images fall: a score above it
    is flagged off-distribution."""
    return float(np.quantile(np.asarray(in_distribution_scores, np.float64), keep_rate, method="higher"))


def auroc(in_distribution_scores: np.ndarray, off_distribution_scores: np.ndarray) -> float:
    """P(an off-distribution score > an in-distribution one), ties counting half: the rank-sum statistic."""
    inside, outside = np.asarray(in_distribution_scores, np.float64), np.asarray(off_distribution_scores, np.float64)
    both = np.concatenate([inside, outside])
    order = np.argsort(both, kind="mergesort")
    ranks = np.empty(len(both))
    ranks[order] = np.arange(1, len(both) + 1)
    # Average the ranks of ties.
    _, inverse, counts = np.unique(both, return_inverse=True, return_counts=True)
    ranks = (np.bincount(inverse, ranks) / counts)[inverse]
    rank_sum = ranks[len(inside) :].sum()
    return float((rank_sum - len(outside) * (len(outside) + 1) / 2) / (len(inside) * len(outside)))


def held_out_for_calibration(
    train_labels: np.ndarray, val_fraction: float, seed: int, fallback_count: int = 2000
) -> tuple[np.ndarray, str]:
    """-> (indices into the training split, what they are, for the card). The run's own validation split when it
    held images out (the same split training used); otherwise a seeded class-balanced draw of training images the
    model trained on, said so."""
    from cifar10_classifier.data import stratified_split

    labels = np.asarray(train_labels)
    if val_fraction > 0:
        _, held_out = stratified_split(labels, val_fraction, seed)
        return held_out, f"{len(held_out)} held-out training images (the run's validation split, never trained on)"
    fraction = min(0.5, fallback_count / len(labels))
    _, drawn = stratified_split(labels, fraction, seed + 1)
    return drawn, f"{len(drawn)} training images the model trained on (the run held none out)"


def draw_outside(train_labels: np.ndarray, held_out: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Indices of a seeded, class-balanced draw of about `count` training images outside `held_out`: what a
    detector is fitted on, so the threshold set on the held-out images is set on images it has not seen."""
    from cifar10_classifier.data import stratified_split

    labels = np.asarray(train_labels)
    rest = np.setdiff1d(np.arange(len(labels)), held_out)
    _, drawn = stratified_split(labels[rest], min(0.99, count / max(1, len(rest))), seed)
    return rest[drawn]
