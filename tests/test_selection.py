"""Choosing the ridge from one eigendecomposition: GCV and held-out scores against direct float64 refits."""

import numpy as np
import pytest

import analytic
from conftest import make_classification, one_hot_columns

RIDGES = np.geomspace(1e-3, 1e4, 15)


def direct_gcv(features, targets, ridge):
    """GCV(γ) = n‖Y − XW‖² / (n − tr H)² from the data: W by a float64 solve, tr H = tr(X (XᵀX + γI)⁻¹ Xᵀ)."""
    x = np.asarray(features, np.float64)
    n, d = x.shape
    inverse = np.linalg.inv(x.T @ x + ridge * np.eye(d))
    residual = targets - x @ (inverse @ (x.T @ targets))
    return n * np.sum(residual**2) / (n - np.trace(x @ inverse @ x.T)) ** 2


@pytest.mark.parametrize("precision", ["float64", "float64 with shift", "fixed"])
def test_gcv_scores_equal_a_direct_computation_from_the_data(precision):
    features, labels = make_classification(n=500, d=16)
    shift = features[:100].mean(axis=0) if precision == "float64 with shift" else None
    stats = analytic.init_statistics(16, precision=precision.split()[0], shift=shift)
    stats = analytic.accumulate(stats, features, labels)
    seen = np.ldexp(np.rint(features * 2.0**12), -12) if precision == "fixed" else features
    targets = one_hot_columns(labels, stats.class_ids)
    choice = analytic.select_ridge(stats, RIDGES)
    expected = np.array([direct_gcv(seen, targets, ridge) for ridge in RIDGES])
    np.testing.assert_allclose(choice.scores, expected, rtol=1e-9)
    assert choice.criterion == "gcv"
    assert choice.ridge == RIDGES[np.argmin(expected)]


def test_default_candidates_span_the_spectrum_and_gcv_picks_an_interior_ridge():
    features, labels = make_classification(n=400, d=24)
    stats = analytic.accumulate(analytic.init_statistics(24), features, labels)
    choice = analytic.select_ridge(stats)
    mean_eigenvalue = np.trace(features.T @ features) / 24
    assert choice.ridges.size == 100
    np.testing.assert_allclose(choice.ridges[[0, -1]], [1e-6 * mean_eigenvalue, 1e2 * mean_eigenvalue], rtol=1e-12)
    assert choice.ridges[0] < choice.ridge < choice.ridges[-1]


def test_held_out_accuracy_equals_refitting_every_candidate():
    features, labels = make_classification(n=600, d=20)
    stats = analytic.accumulate(analytic.init_statistics(20), features, labels)
    held = slice(0, 150)
    choice = analytic.select_ridge(stats, RIDGES, held_out=(features[held], labels[held]))
    training = analytic.accumulate(analytic.init_statistics(20, class_ids=stats.class_ids), features[150:],
                                   labels[150:])
    refit = [100 * np.mean(analytic.predict_labels(analytic.solve(training, ridge), features[held]) == labels[held])
             for ridge in RIDGES]
    np.testing.assert_allclose(choice.scores, refit, atol=1e-12)
    assert choice.criterion == "held-out accuracy"
    assert choice.ridge == RIDGES[int(np.argmax(refit))]


def test_held_out_mean_squared_error_of_a_regression_equals_refitting():
    rng = np.random.default_rng(3)
    features = rng.normal(size=(400, 12)) + 1.0
    targets = features @ rng.normal(size=(12, 2)) + rng.normal(size=(400, 2))
    stats = analytic.accumulate(analytic.init_statistics(12, n_targets=2), features, targets)
    choice = analytic.select_ridge(stats, RIDGES, held_out=(features[:80], targets[:80]))
    training = analytic.accumulate(analytic.init_statistics(12, n_targets=2), features[80:], targets[80:])
    refit = [np.mean((analytic.predict(analytic.solve(training, ridge), features[:80]) - targets[:80]) ** 2)
             for ridge in RIDGES]
    np.testing.assert_allclose(choice.scores, refit, rtol=1e-9)
    assert choice.criterion == "held-out mse"
    assert choice.ridge == RIDGES[int(np.argmin(refit))]


def test_bad_requests_are_refused_and_change_nothing():
    features, labels = make_classification(n=200, d=8)
    stats = analytic.accumulate(analytic.init_statistics(8), features, labels)
    before = analytic.state_hash(stats)
    with pytest.raises(analytic.InputError, match="ridges must be finite positive"):
        analytic.select_ridge(stats, [1.0, -1.0])
    with pytest.raises(analytic.InputError, match="ridges must be finite positive"):
        analytic.select_ridge(stats, [np.nan])
    with pytest.raises(analytic.InputError, match="pair"):
        analytic.select_ridge(stats, held_out=features[:10])
    with pytest.raises(analytic.IntegrityError, match="never learned"):
        analytic.select_ridge(stats, held_out=(features[:10], np.full(10, 99)))
    with pytest.raises(analytic.InputError, match="all the samples"):
        analytic.select_ridge(stats, held_out=(features, labels))
    with pytest.raises(analytic.InputError, match="at least one sample"):
        analytic.select_ridge(analytic.init_statistics(8))
    regression = analytic.accumulate(analytic.init_statistics(8, n_targets=1), features, features[:, :1])
    with pytest.raises(analytic.InputError, match="held_out"):
        analytic.select_ridge(regression)
    assert analytic.state_hash(stats) == before
