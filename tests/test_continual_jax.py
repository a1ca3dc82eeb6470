"""Continual learning on device arrays: a jitted phase equals the host learner, an online stream runs as one scan."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_classification, one_hot_columns, relative_error, ridge_oracle

import analytic
import continual

CLASSES = (0, 1, 2, 3, 4, 5)
RIDGE = 0.1


def phases(labels):
    return [np.flatnonzero(np.isin(labels, pair)) for pair in ((0, 1), (2, 3), (4, 5))]


def test_device_acil_phases_equal_the_host_learner_bit_for_bit():
    features, labels = make_classification(n=900, d=16, classes=CLASSES, seed=1)
    features, labels = features.astype(np.float32), labels.astype(np.int32)
    host = continual.acil(CLASSES, precision="fixed")
    device = continual.acil(CLASSES, precision="fixed", device=True)
    host_state, device_state = host.init(), device.init()
    for rows in phases(labels):
        host_state = host.learn(host_state, features[rows], labels[rows])
        device_state = device.learn(device_state, jax.device_put(features[rows]), jax.device_put(labels[rows]))
        assert device_state.model.statistics.on_device
        seen = np.asarray(device_state.learned_classes)
        np.testing.assert_array_equal(device.predict(device_state, jax.device_put(features)),
                                      host.predict(host_state, features))
        assert np.isin(np.asarray(device.predict(device_state, jax.device_put(features))), seen).all()
    assert analytic.state_hash(device_state.model.statistics) == analytic.state_hash(host_state.model.statistics)


def test_device_acil_on_a_buffer_layer_is_the_joint_ridge_solution():
    features, labels = make_classification(n=900, d=16, classes=CLASSES, seed=2)
    layer = analytic.init_buffer(16, 64, seed=0)
    with jax.enable_x64(True):
        learner = continual.acil(CLASSES, expansion=layer, device=True)
        state = learner.init()
        for rows in phases(labels):
            state = learner.learn(state, jnp.asarray(features[rows]), jnp.asarray(labels[rows]))
        expanded = np.asarray(jax.jit(analytic.expansion.apply_expansion)(layer, jnp.asarray(features)))
        oracle = ridge_oracle(expanded, one_hot_columns(labels, CLASSES), RIDGE)
        assert relative_error(state.model.head.weights, oracle) <= 1e-10


def test_online_stream_runs_as_one_scan_with_test_then_train_predictions():
    features, labels = make_classification(n=640, d=16, classes=CLASSES, seed=3)
    with jax.enable_x64(True):
        head = jax.device_put(analytic.init_recursive(16, RIDGE, class_ids=CLASSES))
        final, predicted = continual.online_stream(head, features.reshape(20, 32, 16), labels.reshape(20, 32))
        assert predicted.shape == (20, 32)
        oracle = ridge_oracle(features, one_hot_columns(labels, CLASSES), RIDGE)
        assert relative_error(final.weights, oracle) <= 1e-10
        host = analytic.init_recursive(16, RIDGE)
        for t in range(20):
            rows = slice(32 * t, 32 * (t + 1))
            if t:
                expected = analytic.predict_labels(analytic.recursive_solve(host), features[rows])
                np.testing.assert_array_equal(predicted[t], expected)
            host = analytic.recursive_learn(host, features[rows], labels[rows])


def test_device_learner_refuses_bad_phases_without_copying_them():
    learner = continual.acil(CLASSES, precision="fixed", device=True)
    features = jnp.full((4, 16), jnp.nan, jnp.float32)
    with pytest.raises(analytic.InputError, match="NaN"):
        learner.learn(learner.init(), features, jnp.zeros(4, jnp.int32))
    with pytest.raises(analytic.InputError, match="declared"):
        learner.learn(learner.init(), jnp.zeros((4, 16), jnp.float32), jnp.full(4, 9, jnp.int32))
