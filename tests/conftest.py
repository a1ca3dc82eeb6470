"""Shared test data: reproducible features with a realistic spread of scales."""

import numpy as np
import pytest


def make_classification(n=600, d=24, classes=(0, 3, 7, 11), seed=0, offset=2.0):
    """Features with per-class means, a common offset (as pooled CNN features have) and mixed scales."""
    rng = np.random.default_rng(seed)
    classes = np.asarray(classes)
    labels = classes[rng.integers(0, classes.size, n)]
    means = rng.normal(size=(classes.max() + 1, d))
    scales = np.geomspace(0.1, 3.0, d)
    features = offset + means[labels] + rng.normal(size=(n, d)) * scales
    return features, labels


def one_hot_columns(labels, class_ids):
    return (np.asarray(labels)[:, None] == np.asarray(class_ids)[None, :]).astype(np.float64)


def relative_error(actual, expected):
    return np.linalg.norm(np.asarray(actual, np.float64) - expected) / np.linalg.norm(expected)


def ridge_oracle(features, targets, ridge):
    """Float64 direct solve of (XᵀX + γI) W = XᵀY."""
    x = np.asarray(features, np.float64)
    return np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ targets)


@pytest.fixture
def data():
    return make_classification()
