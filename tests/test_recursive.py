"""The recursive (Woodbury) form against the statistics form and against retraining."""

import numpy as np
import pytest
from conftest import make_classification, one_hot_columns, relative_error, ridge_oracle

import analytic
from analytic import InputError, IntegrityError

RIDGE = 0.1


def test_recursive_equals_statistics_after_1000_batches():
    features, labels = make_classification(n=8000, d=32, classes=range(10), seed=6)
    rec = analytic.init_recursive(32, RIDGE)
    stats = analytic.init_statistics(32)
    for x, y in zip(np.array_split(features, 1000), np.array_split(labels, 1000)):
        rec = analytic.recursive_learn(rec, x, y)
        stats = analytic.accumulate(stats, x, y)
    assert rec.count == 8000
    np.testing.assert_array_equal(rec.class_ids, stats.class_ids)
    assert relative_error(rec.weights, analytic.solve(stats, RIDGE).weights) <= 1e-9


def test_recursive_forget_equals_retraining():
    features, labels = make_classification(n=500, d=20, seed=7)
    rec = analytic.init_recursive(20, RIDGE)
    for x, y in zip(np.array_split(features, 5), np.array_split(labels, 5)):
        rec = analytic.recursive_learn(rec, x, y)
    rec = analytic.recursive_forget(rec, features[:40], labels[:40])
    expected = ridge_oracle(features[40:], one_hot_columns(labels[40:], rec.class_ids), RIDGE)
    assert relative_error(rec.weights, expected) <= 1e-9
    np.testing.assert_array_equal(rec.class_counts, [np.sum(labels[40:] == c) for c in rec.class_ids])


def test_recursive_regression_and_resynchronization():
    rng = np.random.default_rng(8)
    features = rng.normal(size=(300, 12))
    targets = features @ rng.normal(size=(12, 2))
    rec = analytic.init_recursive(12, RIDGE, n_targets=2)
    for x, y in zip(np.array_split(features, 30), np.array_split(targets, 30)):
        rec = analytic.recursive_learn(rec, x, y)
    stats = analytic.accumulate(analytic.init_statistics(12, n_targets=2), features, targets)
    synced = analytic.recursive_from_statistics(stats, RIDGE)
    assert relative_error(rec.weights, synced.weights) <= 1e-10
    assert relative_error(rec.inverse, synced.inverse) <= 1e-10
    np.testing.assert_allclose(analytic.predict(analytic.recursive_solve(rec), features[:3]),
                               features[:3] @ synced.weights, rtol=1e-9)


def test_recursive_refuses_to_forget_what_was_not_learned():
    features, labels = make_classification(n=200, d=10, classes=(0, 1), seed=9)
    rec = analytic.recursive_learn(analytic.init_recursive(10, RIDGE), features, labels)
    before = (rec.inverse.copy(), rec.weights.copy())
    with pytest.raises(IntegrityError, match="never learned"):
        analytic.recursive_forget(rec, features[:2], np.array([5, 5]))
    with pytest.raises(IntegrityError, match="not positive definite"):
        analytic.recursive_forget(rec, 50 * features[:3], labels[:3])
    with pytest.raises(InputError, match="NaN"):
        analytic.recursive_learn(rec, np.full((1, 10), np.nan), np.array([0]))
    huge = features[:2].copy()
    huge[1, 3] = 1e160  # finite, but its square overflows float64
    with pytest.raises(InputError, match="too large"):
        analytic.recursive_learn(rec, huge, labels[:2])
    np.testing.assert_array_equal(rec.inverse, before[0])
    np.testing.assert_array_equal(rec.weights, before[1])
