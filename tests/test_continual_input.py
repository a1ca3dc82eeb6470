"""Bad input to a continual learner: a clear error, and the learner's state unchanged."""

import numpy as np
import pytest

import analytic
import continual


@pytest.fixture
def learned():
    rng = np.random.default_rng(0)
    features, labels = 1.0 + rng.normal(size=(60, 5)), np.repeat([0, 1, 2], 20)
    learner = continual.acil(np.arange(6), ridge=0.1)
    state = learner.learn(learner.init(), features, labels)
    return learner, state, rng


def assert_unchanged_and_usable(learner, state, weights_before, rng):
    np.testing.assert_array_equal(state.model.head.weights, weights_before)
    np.testing.assert_array_equal(state.learned_classes, [0, 1, 2])
    assert int(state.phase) == 1
    features, labels = rng.normal(size=(10, 5)), np.full(10, 4)
    assert learner.learn(state, features, labels).model.head.weights.shape == (5, 4)


def test_a_class_finished_in_an_earlier_phase_is_refused_in_strict_cil(learned):
    learner, state, rng = learned
    before = state.model.head.weights.copy()
    with pytest.raises(analytic.IntegrityError, match=r"classes \[1\] were finished in an earlier phase"):
        learner.learn(state, rng.normal(size=(4, 5)), np.array([1, 3, 3, 3]))
    assert_unchanged_and_usable(learner, state, before, rng)


def test_labels_outside_the_declared_classes_are_refused(learned):
    learner, state, rng = learned
    before = state.model.head.weights.copy()
    with pytest.raises(analytic.InputError, match=r"labels \[9\] are outside the declared classes"):
        learner.learn(state, rng.normal(size=(3, 5)), np.array([3, 9, 4]))
    assert_unchanged_and_usable(learner, state, before, rng)


def test_nan_features_are_refused(learned):
    learner, state, rng = learned
    before = state.model.head.weights.copy()
    features = rng.normal(size=(5, 5))
    features[3, 2] = np.nan
    with pytest.raises(analytic.InputError, match="features contain NaN .first in row 3"):
        learner.learn(state, features, np.full(5, 3))
    assert_unchanged_and_usable(learner, state, before, rng)


def test_an_empty_phase_is_refused(learned):
    learner, state, rng = learned
    before = state.model.head.weights.copy()
    with pytest.raises(analytic.InputError, match="empty phase"):
        learner.learn(state, np.zeros((0, 5)), np.zeros(0, np.int64))
    assert_unchanged_and_usable(learner, state, before, rng)


def test_generalized_learners_accept_reappearing_classes(learned):
    _, _, rng = learned
    learner = continual.g_air(np.arange(6))
    state = learner.learn(learner.init(), rng.normal(size=(8, 5)), np.repeat([0, 1], 4))
    state = learner.learn(state, rng.normal(size=(8, 5)), np.repeat([1, 2], 4))
    np.testing.assert_array_equal(state.learned_classes, [0, 1, 2])
