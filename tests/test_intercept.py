"""The exact intercept: ``solve(stats, ridge, intercept=True)`` against scikit-learn's ``Ridge(fit_intercept=True)``
on features with a large common offset (mean 50, as pooled CNN features have), on the host and on a device, under
jit, through forgetting and federated aggregation."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_classification, one_hot_columns, relative_error
from sklearn.linear_model import Ridge

import analytic
from analytic import internal
import federated
import unlearning
from analytic import InputError

CLASSES = (0, 3, 7, 11)
RIDGE = 0.1
DIM = 24
OFFSET = 50.0

solve = jax.jit(analytic.solve, static_argnames="intercept")
accumulate = jax.jit(analytic.accumulate)
predict = jax.jit(analytic.predict)


@pytest.fixture(scope="module")
def offset_data():
    return make_classification(n=2000, d=DIM, classes=CLASSES, offset=OFFSET)


def sklearn_head(features, targets, ridge=RIDGE):
    """scikit-learn's weights (d, m) and bias (m,) of ridge with an unregularized intercept."""
    model = Ridge(alpha=ridge, fit_intercept=True, solver="cholesky").fit(np.asarray(features, np.float64), targets)
    return model.coef_.T, model.intercept_


def near_mean(features):
    """A float64 shift near the features' mean (the mean of the first rows), as a float64 state should be given."""
    return features[:256].mean(axis=0)


def quantized(features):
    return np.ldexp(internal.quantize(features, 12), -12)


def assert_matches(head, features, targets, tolerance, ridge=RIDGE):
    weights, bias = sklearn_head(features, targets, ridge)
    assert relative_error(head.weights, weights) <= tolerance
    assert relative_error(head.bias, bias) <= tolerance


# ---------------------------------------------------------------------------------------------------------- host


@pytest.mark.parametrize("ridge", [RIDGE, 10.0])
def test_host_float64_with_a_shift_matches_sklearn(offset_data, ridge):
    features, labels = offset_data
    stats = analytic.accumulate(analytic.init_statistics(DIM, shift=near_mean(features)), features, labels)
    head = analytic.solve(stats, ridge, intercept=True)
    assert head.weights.dtype == head.bias.dtype == np.float64 and head.bias.shape == (len(CLASSES),)
    assert_matches(head, features, one_hot_columns(labels, CLASSES), 1e-10, ridge)  # measured 4e-13
    scores = Ridge(alpha=ridge, solver="cholesky").fit(features, one_hot_columns(labels, CLASSES)).predict(features)
    assert relative_error(analytic.predict(head, features), scores) <= 1e-12


def test_host_regression_matches_sklearn():
    rng = np.random.default_rng(1)
    features = OFFSET + rng.normal(size=(500, 16)) * np.geomspace(0.1, 3.0, 16)
    targets = features @ rng.normal(size=(16, 3)) + 7.0 + 0.1 * rng.normal(size=(500, 3))
    stats = analytic.init_statistics(16, n_targets=3, shift=near_mean(features))
    head = analytic.solve(analytic.accumulate(stats, features, targets), RIDGE, intercept=True)
    assert head.class_ids is None
    assert_matches(head, features, targets, 1e-10)


def test_unshifted_float64_state_loses_the_digits_its_gram_lost(offset_data):
    """Without a shift, G itself was rounded around n·μμᵀ: centring cannot recover those digits (measured
    7e-10)."""
    features, labels = offset_data
    head = analytic.solve(analytic.accumulate(analytic.init_statistics(DIM), features, labels), RIDGE, intercept=True)
    assert_matches(head, features, one_hot_columns(labels, CLASSES), 1e-8)


@pytest.mark.parametrize("regression", [False, True])
def test_fixed_precision_is_centred_exactly(offset_data, regression):
    features, labels = offset_data
    targets = (features[:, :2] - OFFSET) * 3.0 + 5.0 if regression else labels
    stats = analytic.init_statistics(DIM, precision="fixed", n_targets=2 if regression else None)
    head = analytic.solve(analytic.accumulate(stats, features, targets), RIDGE, intercept=True)
    expected = quantized(targets) if regression else one_hot_columns(labels, CLASSES)
    assert_matches(head, quantized(features), expected, 1e-10)  # measured 1e-13 (a float centring: 3e-11)


def test_intercept_false_is_unchanged(offset_data):
    features, labels = offset_data
    stats = analytic.accumulate(analytic.init_statistics(DIM), features, labels)
    head = analytic.solve(stats, RIDGE, intercept=False)
    assert head.bias is None
    np.testing.assert_array_equal(head.weights, analytic.solve(stats, RIDGE).weights)
    np.testing.assert_array_equal(analytic.predict(head, features), features @ head.weights)


def test_a_factorization_serves_only_its_own_kind_of_solve(offset_data):
    features, labels = offset_data
    stats = analytic.accumulate(analytic.init_statistics(DIM), features, labels)
    centred = analytic.factorize(stats, RIDGE, intercept=True)
    assert centred.centred and not analytic.factorize(stats, RIDGE).centred
    direct = analytic.solve(stats, RIDGE, intercept=True)
    reused = analytic.solve(stats, RIDGE, centred, intercept=True)
    np.testing.assert_array_equal(reused.weights, direct.weights)
    np.testing.assert_array_equal(reused.bias, direct.bias)
    with pytest.raises(InputError, match="centred Gram, an intercept=False solve needs the raw"):
        analytic.solve(stats, RIDGE, centred)
    with pytest.raises(InputError, match="raw Gram, an intercept=True solve needs the centred"):
        analytic.solve(stats, RIDGE, analytic.factorize(stats, RIDGE), intercept=True)


@pytest.mark.parametrize("bad", ["yes", 1, None, np.array([True])])
def test_refuses_an_intercept_that_is_not_a_bool(data, bad):
    stats = analytic.accumulate(analytic.init_statistics(DIM), *data)
    before = analytic.state_hash(stats)
    with pytest.raises(InputError, match="intercept must be True or False"):
        analytic.solve(stats, RIDGE, intercept=bad)
    with pytest.raises(InputError, match="intercept must be True or False"):
        analytic.factorize(stats, RIDGE, intercept=bad)
    assert analytic.state_hash(stats) == before


def test_refuses_an_intercept_of_a_state_without_samples():
    empty = analytic.init_statistics(DIM, class_ids=CLASSES)
    before = analytic.state_hash(empty)
    with pytest.raises(InputError, match="holds no samples"):
        analytic.solve(empty, RIDGE, intercept=True)
    with pytest.raises(InputError, match="holds no samples"):
        analytic.factorize(jax.device_put(analytic.init_statistics(DIM, precision="fixed")), RIDGE, intercept=True)
    assert analytic.state_hash(empty) == before
    assert not np.any(analytic.solve(empty, RIDGE).weights)  # without an intercept: zero weights, as before


def test_heads_with_and_without_bias_save_and_load(tmp_path, data):
    stats = analytic.accumulate(analytic.init_statistics(DIM), *data)
    for intercept in (True, False):
        head = analytic.solve(stats, RIDGE, intercept=intercept)
        analytic.save(tmp_path / "head.npz", head)
        loaded = analytic.load(tmp_path / "head.npz")
        np.testing.assert_array_equal(loaded.weights, head.weights)
        assert (loaded.bias is None) == (not intercept)
        if intercept:
            np.testing.assert_array_equal(loaded.bias, head.bias)


# -------------------------------------------------------------------------------------------------------- device


def test_device_float64_under_jit_matches_sklearn(offset_data):
    features, labels = offset_data
    targets = one_hot_columns(labels, CLASSES)
    with jax.enable_x64(True):
        empty = analytic.init_statistics(DIM, class_ids=CLASSES, shift=near_mean(features))
        state = accumulate(accumulate(empty, features[:700], labels[:700]), features[700:], labels[700:])
        head = solve(state, RIDGE, intercept=True)
        assert head.weights.dtype == head.bias.dtype == jnp.float64
        assert_matches(head, features, targets, 1e-10)  # measured 8e-14
        scores = Ridge(alpha=RIDGE, solver="cholesky").fit(features, targets).predict(features)
        assert relative_error(predict(head, features), scores) <= 1e-12
        ridges = jnp.asarray([RIDGE, 10.0])
        batched = jax.vmap(functools.partial(analytic.solve, state, intercept=True))(ridges)
        for k, ridge in enumerate((RIDGE, 10.0)):
            weights, bias = sklearn_head(features, targets, ridge)
            assert relative_error(batched.weights[k], weights) <= 1e-10
            assert relative_error(batched.bias[k], bias) <= 1e-10


def test_device_fixed_precision_with_x64_is_centred_exactly(offset_data):
    features, labels = offset_data
    features32 = features.astype(np.float32)
    with jax.enable_x64(True):
        state = accumulate(analytic.init_statistics(DIM, class_ids=CLASSES, precision="fixed"), features32,
                           labels.astype(np.int32))
        head = solve(state, RIDGE, intercept=True)
        host = analytic.solve(jax.device_get(state), RIDGE, intercept=True)
        assert_matches(head, quantized(features32), one_hot_columns(labels, CLASSES), 1e-10)  # measured 1e-13
        assert relative_error(head.weights, host.weights) <= 1e-12


def test_device_float32_under_jit_is_close_to_sklearn(offset_data):
    features, labels = offset_data
    features32, labels32 = features.astype(np.float32), labels.astype(np.int32)
    empty = analytic.init_statistics(DIM, class_ids=CLASSES, precision="float32",
                                     shift=analytic.mean_shift(features32))
    state = accumulate(empty, features32, labels32)
    head = solve(state, RIDGE, intercept=True)
    assert head.weights.dtype == head.bias.dtype == jnp.float32
    # float32 sums (Kahan) and a float32 solve: measured 3e-5 weights, 5e-5 bias (without intercept: 1e-2)
    assert_matches(head, features32, one_hot_columns(labels, CLASSES), 1e-3)
    scores = predict(head, features32)
    assert scores.dtype == jnp.float32
    np.testing.assert_allclose(scores, features32 @ head.weights + head.bias[None, :], rtol=1e-5, atol=1e-5)


def test_jitted_intercept_of_an_empty_state_gives_nan_and_a_traced_flag_is_refused():
    empty = analytic.init_statistics(DIM, class_ids=CLASSES, precision="fixed")
    head = solve(empty, RIDGE, intercept=True)
    assert np.isnan(np.asarray(head.weights)).all() and np.isnan(np.asarray(head.bias)).all()
    with pytest.raises(InputError, match="static_argnames"):
        jax.jit(analytic.solve)(empty, RIDGE, intercept=True)  # intercept traced, not static


# ----------------------------------------------------------------------------------------- forgetting, federated


@pytest.mark.parametrize("k", [3, 900])  # a downdate of the kept factor, and a refactorization
def test_forgetting_with_intercept_equals_retraining_with_intercept(offset_data, k):
    features, labels = offset_data
    head = unlearning.init_unlearning_head(DIM, RIDGE, shift=near_mean(features))
    head = unlearning.factorize(unlearning.learn(head, features, labels))
    forgotten, _ = unlearning.forget_samples(head, features[:k], labels[:k])
    solved = unlearning.solve(forgotten, intercept=True)
    retained = np.unique(labels[k:])
    np.testing.assert_array_equal(solved.class_ids, retained)
    assert_matches(solved, features[k:], one_hot_columns(labels[k:], retained), 1e-10)
    retrained = analytic.accumulate(analytic.init_statistics(DIM, shift=near_mean(features)),
                                    features[k:], labels[k:])
    expected = analytic.solve(retrained, RIDGE, intercept=True)
    assert relative_error(solved.weights, expected.weights) <= 1e-12
    assert relative_error(solved.bias, expected.bias) <= 1e-12
    assert unlearning.solve(forgotten).bias is None
    with pytest.raises(InputError, match="intercept must be True or False"):
        unlearning.solve(forgotten, intercept="yes")


def aggregate_of(features, labels, n_clients, precision):
    parts = np.array_split(np.random.default_rng(4).permutation(len(labels)), n_clients)
    uploads = ((f"client-{k}", federated.encode_statistics(
        federated.client_statistics(features[rows], labels[rows], DIM, precision=precision), CLASSES))
        for k, rows in enumerate(parts))
    aggregate, rejected = federated.receive_many(federated.init_aggregate(DIM, precision=precision,
                                                                           class_ids=CLASSES), uploads)
    assert rejected == {}
    return aggregate


def test_federated_aggregate_with_intercept_equals_pooled(offset_data):
    features, labels = offset_data
    aggregate = aggregate_of(features, labels, 7, "fixed")
    pooled = analytic.accumulate(analytic.init_statistics(DIM, precision="fixed"), features, labels)
    head = federated.solve(aggregate, RIDGE, intercept=True)
    expected = analytic.solve(pooled, RIDGE, intercept=True)
    np.testing.assert_array_equal(head.weights, expected.weights)  # the same exact integers: the same head
    np.testing.assert_array_equal(head.bias, expected.bias)
    assert_matches(head, quantized(features), one_hot_columns(labels, CLASSES), 1e-10)
    summed = federated.solve(aggregate_of(features, labels, 7, "float64"), RIDGE, intercept=True)
    assert_matches(summed, features, one_hot_columns(labels, CLASSES), 1e-8)  # unshifted float64: as above
    assert federated.solve(aggregate, RIDGE).bias is None
